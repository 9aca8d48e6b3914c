"""The SSH certificate grant kind, against fakes: its policy, where a request's key comes from,
that a pasted private key goes nowhere, and that nothing pretends a certificate can be recalled."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session, SQLModel, select

from bot.audit import AuditAction
from bot.domain.errors import Conflict, UserError
from bot.domain.grant_kinds import SshCertificateGrant
from bot.domain.requests import RequestStatus, ValidRequest
from bot.domain.ssh_keys import PrivateKeyPasted, SshKeyNotAllowed
from bot.lifecycle import EndReason
from bot.policy import PolicyError, parse_policy
from bot.store.models import AccessRequest, AuditEvent, Grant, SshPublicKey
from tests.unit.fakes import (
    APPROVER,
    EXAMPLE_POLICY,
    REQUESTER,
    Harness,
    make_lifecycle,
)
from tests.unit.test_ssh_keys import ED25519_FP, ED25519_LINE, P256_FP, P256_LINE

SSH_POLICY = (
    EXAMPLE_POLICY
    + """\
  ops-host:
    description: Shell on the ops hosts
    grant: {type: ssh_certificate, role: ops, principals: [ops], key_types: [ssh-ed25519]}
    approvers: [U0ALICE]
"""
)
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
MINUTES_30 = timedelta(minutes=30)


@pytest.fixture
def h() -> Harness:
    return make_lifecycle(SSH_POLICY)


def submit(h: Harness, public_key: str | None = None, resource: str = "ops-host") -> int:
    valid = ValidRequest(resource, MINUTES_30, "INC-9 disk full on ops-3")
    return h.lifecycle.submit(REQUESTER, valid, "C0ORIGIN", public_key=public_key).view.id


def rows(h: Harness, model: type[SQLModel]) -> list[Any]:
    with Session(h.engine) as session:
        return list(session.exec(select(model)))


def details(h: Harness, action: AuditAction) -> list[dict[str, Any]]:
    return [json.loads(e.details) for e in rows(h, AuditEvent) if e.action == action]


def everything_stored(h: Harness) -> str:
    return repr([rows(h, model) for model in (AccessRequest, AuditEvent, Grant, SshPublicKey)])


# -- the policy ---------------------------------------------------------------------------------


def test_an_ssh_resource_defaults_to_a_short_max_duration_and_keeps_an_explicit_one() -> None:
    policy = parse_policy(SSH_POLICY)
    resource = policy.resources["ops-host"]
    assert resource.max_duration == timedelta(hours=1)
    assert isinstance(resource.grant, SshCertificateGrant)
    assert resource.grant.sign_path == "ssh/sign/ops"
    assert not resource.grant.recallable and not resource.grant.renewable
    longer = parse_policy(SSH_POLICY + "    max_duration: 3h\n")
    assert longer.resources["ops-host"].max_duration == timedelta(hours=3)
    # Kinds without a default still need max_duration.
    with pytest.raises(PolicyError, match=r"orders-logs.max_duration: Field required"):
        parse_policy(SSH_POLICY.replace("    max_duration: 2h\n", ""))


@pytest.mark.parametrize(
    ("grant", "problem"),
    [
        ("{type: ssh_certificate, role: ops, principals: []}", "at least one Unix user"),
        ("{type: ssh_certificate, role: ops, principals: [Root!]}", "not a Unix user name"),
        ("{type: ssh_certificate, role: ../x, principals: [ops]}", "plain Vault name"),
        ("{type: ssh_certificate, role: ops, principals: [ops], key_types: [ssh-dss]}", "ssh-dss"),
        ("{type: ssh_certificate, role: ops, principals: [ops], min_rsa_bits: 1024}", "2048"),
        ("{type: ssh_certificate, principals: [ops]}", "role"),
        ("{type: ssh_certificate, role: ops, principals: [ops], users: [x]}", "Extra inputs"),
    ],
)
def test_a_bad_ssh_grant_is_refused_at_load_naming_the_key(grant: str, problem: str) -> None:
    text = SSH_POLICY.replace(
        "{type: ssh_certificate, role: ops, principals: [ops], key_types: [ssh-ed25519]}", grant
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yml")
    assert "p.yml: resources.ops-host.grant" in str(info.value)
    assert problem in str(info.value)


# -- where the key comes from -------------------------------------------------------------------


def test_without_a_key_the_request_is_refused_with_how_to_give_one(h: Harness) -> None:
    with pytest.raises(UserError, match="App Home") as info:
        submit(h)
    assert "ops-host" in str(info.value)
    assert rows(h, AccessRequest) == [] and rows(h, AuditEvent) == []


def test_a_pasted_private_key_is_refused_loudly_and_goes_nowhere(h: Harness) -> None:
    with pytest.raises(PrivateKeyPasted, match="private"):
        submit(h, public_key=PRIVATE_KEY)
    with pytest.raises(PrivateKeyPasted):
        h.lifecycle.register_ssh_key(REQUESTER, PRIVATE_KEY)
    assert rows(h, AccessRequest) == [] and rows(h, SshPublicKey) == []
    assert rows(h, AuditEvent) == []
    assert "b3BlbnNzaC1rZXkt" not in everything_stored(h)
    assert h.notifier.deliveries == [] and h.notifier.audits == []


def test_a_registered_key_is_used_and_a_pasted_one_wins(h: Harness) -> None:
    assert h.lifecycle.registered_key_fingerprint(REQUESTER) is None
    assert h.lifecycle.register_ssh_key(REQUESTER, ED25519_LINE + "  \n") == ED25519_FP
    assert h.lifecycle.registered_key_fingerprint(REQUESTER) == ED25519_FP
    (registered,) = details(h, AuditAction.SSH_KEY_REGISTERED)
    assert registered == {"fingerprint": ED25519_FP, "key_type": "ssh-ed25519", "bits": 256}

    first = submit(h)
    view = h.lifecycle.get(first)
    assert view.key_fingerprint == ED25519_FP and view.ends_by_expiry_only
    stored = {r.id: r.public_key for r in rows(h, AccessRequest)}
    assert stored[first] == " ".join(ED25519_LINE.split()[:2])  # the comment is not kept
    assert details(h, AuditAction.REQUESTED)[0]["key_fingerprint"] == ED25519_FP

    # The resource allows ed25519 only: a P-256 key is refused even though it is sound.
    with pytest.raises(SshKeyNotAllowed):
        submit(h, public_key=P256_LINE)
    # Registration checks the safe defaults only, so the P-256 key registers...
    assert h.lifecycle.register_ssh_key(REQUESTER, P256_LINE) == P256_FP
    assert [r.fingerprint for r in rows(h, SshPublicKey)] == [P256_FP]  # replaced, not added
    # ...but this resource still refuses it when it is used, and a pasted key wins.
    with pytest.raises(SshKeyNotAllowed):
        submit(h)
    second = submit(h, public_key=ED25519_LINE)
    assert h.lifecycle.get(second).key_fingerprint == ED25519_FP


def test_a_key_pasted_for_a_kind_that_signs_none_is_ignored(h: Harness) -> None:
    request_id = submit(h, public_key=ED25519_LINE, resource="payments-db")
    view = h.lifecycle.get(request_id)
    assert view.key_fingerprint is None and not view.ends_by_expiry_only
    assert [r.public_key for r in rows(h, AccessRequest)] == [None]


# -- issue, deliver, end ------------------------------------------------------------------------


def approved_ssh(h: Harness) -> int:
    request_id = submit(h, public_key=ED25519_LINE)
    assert h.lifecycle.decide(request_id, APPROVER, approve=True).status is RequestStatus.ACTIVE
    return request_id


def test_the_certificate_is_signed_for_the_key_and_sent_by_dm_never_wrapped(h: Harness) -> None:
    request_id = approved_ssh(h)
    (sign,) = [args for op, args in h.issuer.calls if op == "sign"]
    assert sign[1] == " ".join(ED25519_LINE.split()[:2])
    assert h.issuer.count("wrap") == 0  # the policy says wrapped; a certificate is no secret
    ((view, delivery),) = h.notifier.deliveries
    assert delivery.wrapping_token is None and delivery.values and delivery.verbatim
    assert delivery.instructions
    assert view.ends_by_expiry_only
    (issued,) = details(h, AuditAction.ISSUED)
    assert issued["serial"] and issued["principals"] == ["ops"]
    (delivered,) = details(h, AuditAction.DELIVERED)
    assert delivered["delivery"] == "dm" and delivered["collect_by"] is None
    far = h.clock.now() + timedelta(days=365)
    assert h.due("collection check", far) == [] and len(h.due("grant expiry", far)) == 1
    assert h.lifecycle.get(request_id).status is RequestStatus.ACTIVE


def test_a_certificate_cannot_be_extended(h: Harness) -> None:
    request_id = approved_ssh(h)
    with pytest.raises(Conflict, match="cannot be extended"):
        h.lifecycle.check_extension(request_id, REQUESTER, "15m")
    with pytest.raises(Conflict, match="cannot be extended"):
        h.lifecycle.request_extension(request_id, REQUESTER, "15m")


def test_revoke_now_ends_the_grant_and_says_the_certificate_lives_on(h: Harness) -> None:
    request_id = approved_ssh(h)
    view = h.lifecycle.revoke_early(request_id, REQUESTER)
    assert view.status is RequestStatus.ENDED and view.ends_by_expiry_only
    told = [text for user, text in h.notifier.tells if user == REQUESTER]
    assert any("cannot be recalled" in t and "stays valid until" in t for t in told)
    assert not any("credentials are gone" in t for t in told)
    audits = [text for _, _, text, _ in h.notifier.audits]
    assert any("revoked early" in t and "cannot be recalled" in t for t in audits)
    (revoked,) = details(h, AuditAction.REVOKED)
    assert revoked["recalled"] is False and revoked["confirmed_by_vault"] is True


def test_at_expiry_the_requester_hears_the_certificate_expired(h: Harness) -> None:
    request_id = approved_ssh(h)
    (grant,) = rows(h, Grant)
    assert h.lifecycle.end_grant(grant.id, EndReason.EXPIRED)
    told = [text for user, text in h.notifier.tells if user == REQUESTER]
    assert any(f"#{request_id}" in t and "certificate expired" in t for t in told)
    (expired,) = details(h, AuditAction.EXPIRED)
    assert expired["recalled"] is False
    audits = [text for _, _, text, _ in h.notifier.audits]
    assert not any("cannot be recalled" in t for t in audits)


def test_other_kinds_still_say_vault_confirmed_they_are_gone() -> None:
    h = make_lifecycle(SSH_POLICY)
    request_id = submit(h, resource="payments-db")
    h.lifecycle.decide(request_id, APPROVER, approve=True)
    h.lifecycle.revoke_early(request_id, REQUESTER)
    told = [text for user, text in h.notifier.tells if user == REQUESTER]
    assert any("Vault confirmed the credentials are gone" in t for t in told)
    (revoked,) = details(h, AuditAction.REVOKED)
    assert revoked["recalled"] is True
