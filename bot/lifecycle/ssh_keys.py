"""The SSH public keys requests bring: registered once on the App Home, or pasted in the form.

A resource whose grant signs a key (``grant.key_policy()`` is not None) needs one with every
request. Whatever the user pasted is parsed by ``bot.domain.ssh_keys`` before anything is
stored: a private key pasted by mistake is refused with the domain's loud message, and neither
it nor any other refused text reaches the database, the audit trail or a log line. Only the
normalised public key line (no comment) is stored, and the audit trail records its fingerprint.
"""

from __future__ import annotations

from sqlmodel import Session

from bot.audit import AuditAction, append_event
from bot.domain.ssh_keys import (
    DEFAULT_SSH_KEY_POLICY,
    SshKeyError,
    SshPublicKey,
    parse_public_key,
)
from bot.lifecycle.edges import Edges
from bot.lifecycle.lock import check_not_locked
from bot.policy import Resource
from bot.store.db import transaction
from bot.store.models import SshPublicKey as RegisteredKey


class SshKeys:
    def __init__(self, edges: Edges) -> None:
        self.edges = edges

    def register(self, user: str, text: str) -> SshPublicKey:
        """Keep ``user``'s public key for later requests (replacing an earlier one). Checked
        against the safe defaults here, and against each resource's own rules when used."""
        key = parse_public_key(text, DEFAULT_SSH_KEY_POLICY)
        now = self.edges.clock.now()
        with transaction(self.edges.engine) as session:
            # A locked account plants no key for its owner's requests after the unlock.
            check_not_locked(session, user, "register an SSH key")
            row = session.get(RegisteredKey, user) or RegisteredKey(
                user=user, public_key="", fingerprint="", registered_at=now
            )
            row.public_key, row.fingerprint, row.registered_at = key.line, key.fingerprint, now
            session.add(row)
            append_event(
                session,
                at=now,
                actor=user,
                action=AuditAction.SSH_KEY_REGISTERED,
                details={
                    "fingerprint": key.fingerprint,
                    "key_type": key.key_type,
                    "bits": key.bits,
                },
            )
        return key

    def registered_fingerprint(self, user: str) -> str | None:
        """The fingerprint of the key ``user`` registered, if any (for the App Home)."""
        with Session(self.edges.engine) as session:
            row = session.get(RegisteredKey, user)
        return row.fingerprint if row else None

    def key_for_request(
        self, user: str, resource_name: str, resource: Resource, pasted: str | None
    ) -> SshPublicKey | None:
        """The key a request for ``resource`` signs: the pasted one, else the registered one.
        None when the resource's grant signs no key (a pasted key is then ignored)."""
        policy = resource.grant.key_policy()
        if policy is None:
            return None
        text = pasted if pasted and pasted.strip() else None
        if text is None:
            with Session(self.edges.engine) as session:
                row = session.get(RegisteredKey, user)
            text = row.public_key if row else None
        if text is None:
            raise SshKeyError(needs_public_key(resource_name))
        return parse_public_key(text, policy)


def needs_public_key(resource_name: str) -> str:
    """How to give a key, for a request that came without one."""
    return (
        f"`{resource_name}` gives SSH certificates, so it needs your SSH *public* key. Register "
        "it once on the debug-access App Home (*Register SSH key*), or paste it in the request "
        "form (`/debug-access` with no arguments)."
    )
