"""OpenBao's SSH CA and a real sshd, end to end: the ground an SSH certificate grant stands on.

A certificate signed by `ssh/sign/<role>` must let its principal log in, must not let the same
person in as any other local user, and must stop working by itself when its TTL runs out: the
SSH engine issues no lease, so expiry is the only revocation there is.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import hvac.exceptions
import pytest

from tests.integration.services import OpenBaoServer
from tests.integration.sshd import (
    OTHER_PRINCIPAL,
    PRINCIPAL,
    SshCa,
    SshdServer,
    certificate_details,
    certificate_key_id,
    certificate_principals,
    generate_key,
    require_root,
    running_sshd,
    setup_ssh_ca,
    sign_public_key,
    ssh_keygen,
    try_login,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ssh_ca(openbao: OpenBaoServer) -> SshCa:
    """The SSH engine on a mount of its own (the OpenBao server is shared by the session)."""
    require_root()
    return setup_ssh_ca(openbao.client(), mount=f"ssh-{secrets.token_hex(4)}")


@pytest.fixture(scope="module")
def sshd(ssh_ca: SshCa) -> Iterator[SshdServer]:
    """A loopback sshd that trusts only the CA above, for the two principals' local users."""
    with running_sshd(ssh_ca.public_key, ssh_ca.allowed_users) as server:
        yield server


@pytest.fixture
def user_key(tmp_path: Path) -> Path:
    """A fresh ed25519 key pair, as a requester would generate it; the private key path."""
    return generate_key(tmp_path, "requester")


def sign(
    openbao: OpenBaoServer,
    ssh_ca: SshCa,
    key: Path,
    principal: str,
    ttl: str,
    key_id: str,
) -> tuple[Path, dict[str, object]]:
    """Sign ``key``'s public half; write the certificate where ssh looks for it."""
    response = sign_public_key(
        openbao.client(),
        ssh_ca,
        key.with_suffix(".pub").read_text(),
        principals=[principal],
        ttl=ttl,
        key_id=key_id,
    )
    cert = key.parent / f"{key.name}-cert.pub"
    cert.write_text(str(response["data"]["signed_key"]).strip() + "\n")
    return cert, response


def valid_before(cert: Path) -> datetime:
    """The end of the certificate's validity, in local time as ssh-keygen prints it."""
    for line in certificate_details(cert).splitlines():
        stripped = line.strip()
        if stripped.startswith("Valid: from"):
            return datetime.fromisoformat(stripped.rsplit(" to ", 1)[1])
    raise AssertionError(f"no validity in:\n{certificate_details(cert)}")


def test_certificate_logs_in_as_its_principal_and_only_as_it(
    openbao: OpenBaoServer, ssh_ca: SshCa, sshd: SshdServer, user_key: Path
) -> None:
    key_id = f"debug-access-req-{secrets.token_hex(3)}"
    cert, response = sign(openbao, ssh_ca, user_key, PRINCIPAL, "5m", key_id)

    data = response["data"]
    assert isinstance(data, dict)
    assert str(data["signed_key"]).startswith("ssh-ed25519-cert-v01@openssh.com ")
    assert str(data["serial_number"])
    # Nothing to revoke: the certificate's own validity is the only limit.
    assert not response.get("lease_id")
    assert not response.get("renewable")

    assert certificate_principals(cert) == [PRINCIPAL]
    assert certificate_key_id(cert) == key_id
    assert "permit-pty" in certificate_details(cert)

    accepted = try_login(sshd, PRINCIPAL, user_key, cert)
    assert accepted.ok, f"{accepted.stderr}\n--- sshd ---\n{sshd.log_text()[-3000:]}"

    # OTHER_PRINCIPAL is a real local user the role could sign for, but this cert is not for it.
    other_user = try_login(sshd, OTHER_PRINCIPAL, user_key, cert)
    assert not other_user.ok
    assert "Permission denied" in other_user.stderr


def test_the_key_alone_or_a_certificate_from_another_ca_gets_nowhere(
    openbao: OpenBaoServer, ssh_ca: SshCa, sshd: SshdServer, user_key: Path, tmp_path: Path
) -> None:
    rogue_ca = generate_key(tmp_path, "rogue-ca")
    ssh_keygen(
        "-q", "-s", str(rogue_ca), "-I", "rogue", "-n", PRINCIPAL, str(user_key.with_suffix(".pub"))
    )
    rogue_cert = user_key.parent / f"{user_key.name}-cert.pub"
    assert certificate_principals(rogue_cert) == [PRINCIPAL]

    refused = try_login(sshd, PRINCIPAL, user_key, rogue_cert)
    assert not refused.ok
    assert "Permission denied" in refused.stderr

    no_cert = try_login(sshd, PRINCIPAL, user_key, tmp_path / "missing-cert.pub")
    assert not no_cert.ok

    # Sanity check of the same fixture: the real CA's certificate does get in.
    cert, _ = sign(openbao, ssh_ca, user_key, PRINCIPAL, "1m", "control")
    assert try_login(sshd, PRINCIPAL, user_key, cert).ok


def test_openbao_will_not_sign_for_a_user_the_role_does_not_allow(
    openbao: OpenBaoServer, ssh_ca: SshCa, user_key: Path
) -> None:
    with pytest.raises(hvac.exceptions.InvalidRequest):
        sign(openbao, ssh_ca, user_key, "root", "1m", "not-allowed")


def test_expired_certificate_is_refused(
    openbao: OpenBaoServer, ssh_ca: SshCa, sshd: SshdServer, user_key: Path
) -> None:
    cert, _ = sign(openbao, ssh_ca, user_key, PRINCIPAL, "4s", "short-lived")
    expires = valid_before(cert)

    before = try_login(sshd, PRINCIPAL, user_key, cert)
    assert before.ok, f"{before.stderr}\n--- sshd ---\n{sshd.log_text()[-3000:]}"
    assert datetime.now() < expires

    deadline = time.monotonic() + 15
    after = before
    while after.ok and time.monotonic() < deadline:
        time.sleep(0.25)
        after = try_login(sshd, PRINCIPAL, user_key, cert)
    refused_at = datetime.now()

    assert not after.ok, "certificate still accepted 15 s after signing with ttl=4s"
    assert "Permission denied" in after.stderr
    # ssh-keygen prints whole seconds: the refusal must not come before the printed end.
    assert refused_at >= expires
    assert "expired" in sshd.log_text().lower()
