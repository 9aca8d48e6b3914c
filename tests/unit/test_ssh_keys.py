"""The public key a user pastes for an SSH certificate: what is accepted, what is refused, and
that a refusal never repeats what was pasted (above all a private key pasted by mistake).

Keys come from the real `ssh-keygen`, and its `-l` fingerprint is the oracle for ours. A few
public keys are embedded too (with the fingerprints ssh-keygen printed for them) so the core
cases run even where ssh-keygen is missing.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from bot.domain.errors import UserError
from bot.domain.ssh_keys import (
    DEFAULT_SSH_KEY_POLICY,
    MAX_INPUT_CHARS,
    SUPPORTED_KEY_TYPES,
    PrivateKeyPasted,
    SshKeyError,
    SshKeyNotAllowed,
    SshKeyPolicy,
    SshPublicKey,
    contains_private_key,
    fingerprint_sha256,
    parse_public_key,
)

# Generated with `ssh-keygen -t ... -C me@host`; fingerprints from `ssh-keygen -lf`.
ED25519_LINE = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILf7yoy9NNwjOEzBHP+0G/7/3wFjHvr+yc21bRwt1pP8 me@host"
)
ED25519_FP = "SHA256:YFzVUx5tc1y+v1o5NjvgIHr53yJzQAEICL42IrZMtmM"
RSA3072_LINE = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQC4Wnba3VIN7K1jYO8d740Pt0PzSCQIprSMdmjyTbML4clHL4JVkxab"
    "VRBoBM+z0F+NJvVYSbL0TNdk1PyC73qWbWyOOwmtiOHT8+vSKpE4effwFf4aasS3OONAaVOkvqjBjo3LzH69PIwEfrhJ"
    "6aDJXzS2WUyQy6fe21ztF0TQqpQ729chn1QxKCrEyAmYksOPfvGBgNDnumslETu0SyZW6sfS0QAV27M4uKNSnl1oxp7+"
    "QQxufNO+nT/OrGeM/zqFmDfiQnUsWR9BNt6em/miaAKErNhxwHTXMV/AmjzNZg9u+11OAmR7Cb++YEahq9drQEC83/Hk"
    "KRnf8v8rnKz5daiGRmXxCr2dJylBzYL71d0+V3kkuVW8ZBb69At+/2TsAoBEzQUWuFD4U5rDwSRzT5JsDz5nzc7N2HJo"
    "mE1qvqWMA47VtCWcDYeoJBwf1d2NCLGesrsInu4chlKwNKGRzAQCh++o46zs3Jjg2rWEU0CI1i+GaAv1/HBrS0QFSXc="
    " me@host"
)
RSA3072_FP = "SHA256:qRm5nPOYVDX3DUxAzGeoXcFhyQwRJ51hzGznRtilWxA"
P256_LINE = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEAtb4LUaXhhrAfa2Qwo"
    "rpUTZRr/lSHz1iy9SK4QvHmlpD1cJF5k8FEpCXPrUHD4ALODz6V+34HfHBE3FsR6xd4= me@host"
)
P256_FP = "SHA256:KPXziEJjGCkpuCNn7OwY16d93ENZvkCmA6xfYrklxMg"

needs_ssh_keygen = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None,
    reason="ssh-keygen not installed (scripts/test.sh installs it)",
)


def ssh_keygen(*args: str) -> str:
    """Run ssh-keygen quietly; return stdout (raise with its stderr on failure)."""
    result = subprocess.run(
        ["ssh-keygen", *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        raise AssertionError(f"ssh-keygen {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def generate(directory: Path, name: str, *type_args: str, key_format: str | None = None) -> Path:
    """A fresh key pair in ``directory``; returns the private key path (``.pub`` beside it)."""
    path = directory / name
    extra = ["-m", key_format] if key_format else []
    ssh_keygen("-q", "-N", "", "-C", f"{name}@test", "-f", str(path), *type_args, *extra)
    return path


def ssh_keygen_fingerprint(pub: Path) -> tuple[int, str]:
    """(bits, SHA256:...) as `ssh-keygen -lf` reports them: the oracle."""
    bits, fingerprint, *_ = ssh_keygen("-l", "-E", "sha256", "-f", str(pub)).split()
    return int(bits), fingerprint


def blob_line(key_type: str, *fields: bytes) -> str:
    """A public key line whose blob is the given SSH wire-format strings."""
    blob = b"".join(len(f).to_bytes(4, "big") + f for f in fields)
    return f"{key_type} {base64.b64encode(blob).decode()}"


def assert_not_echoed(err: BaseException, pasted: str) -> None:
    """No 12-character window of the pasted text appears in the message, repr or any cause.

    Key type names are our own vocabulary (messages may name the type), so they are cut out
    of the pasted text before comparing.
    """
    shown = str(err) + repr(err) + repr(err.args)
    for name in SUPPORTED_KEY_TYPES:
        pasted = pasted.replace(name, " ")
    for segment in pasted.split():
        for start in range(0, max(len(segment) - 12, 0) + 1, 3):
            window = segment[start : start + 12]
            if len(window) == 12:
                assert window not in shown, f"error message repeats pasted text {window!r}"
    assert err.__cause__ is None
    assert err.__context__ is None


def refused(text: str, policy: SshKeyPolicy = DEFAULT_SSH_KEY_POLICY) -> SshKeyError:
    """Parse, expecting a refusal that is a UserError and does not echo the input."""
    with pytest.raises(SshKeyError) as info:
        parse_public_key(text, policy)
    assert isinstance(info.value, UserError)
    assert_not_echoed(info.value, text)
    return info.value


# ---------------------------------------------------------------------------- accepted keys


@pytest.mark.parametrize(
    ("line", "key_type", "bits", "fingerprint"),
    [
        (ED25519_LINE, "ssh-ed25519", 256, ED25519_FP),
        (RSA3072_LINE, "ssh-rsa", 3072, RSA3072_FP),
        (P256_LINE, "ecdsa-sha2-nistp256", 256, P256_FP),
    ],
)
def test_embedded_keys_parse_with_ssh_keygens_fingerprint(
    line: str, key_type: str, bits: int, fingerprint: str
) -> None:
    key = parse_public_key(line)
    assert (key.key_type, key.bits, key.fingerprint) == (key_type, bits, fingerprint)
    assert key.line == " ".join(line.split()[:2])
    assert key.comment == "me@host"
    assert key.line_with_comment == line


@needs_ssh_keygen
@pytest.mark.parametrize(
    ("type_args", "key_type", "bits"),
    [
        (("-t", "ed25519"), "ssh-ed25519", 256),
        (("-t", "ecdsa", "-b", "256"), "ecdsa-sha2-nistp256", 256),
        (("-t", "ecdsa", "-b", "384"), "ecdsa-sha2-nistp384", 384),
        (("-t", "ecdsa", "-b", "521"), "ecdsa-sha2-nistp521", 521),
        (("-t", "rsa", "-b", "3072"), "ssh-rsa", 3072),
        (("-t", "rsa", "-b", "4096"), "ssh-rsa", 4096),
    ],
)
def test_generated_keys_match_ssh_keygen(
    tmp_path: Path, type_args: tuple[str, ...], key_type: str, bits: int
) -> None:
    private = generate(tmp_path, "user", *type_args)
    pub = private.with_suffix(".pub")
    key = parse_public_key(pub.read_text())
    assert (key.bits, key.fingerprint) == ssh_keygen_fingerprint(pub)
    assert key.key_type == key_type
    assert key.bits == bits
    # The normalised line (no comment) is still the same key to ssh-keygen.
    bare = tmp_path / "bare.pub"
    bare.write_text(key.line + "\n")
    assert ssh_keygen_fingerprint(bare) == (key.bits, key.fingerprint)


def test_fingerprint_is_unpadded_base64_of_the_sha256_of_the_blob() -> None:
    assert fingerprint_sha256(b"") == "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"


@pytest.mark.parametrize(
    "wrap",
    [
        "{}",
        "{}\n",
        "  {}\r\n",
        "`{}`",
        "```{}```",
        "```\n{}\n```",
        "\n\n{}\n\n",
    ],
)
def test_whitespace_and_slack_code_formatting_are_tolerated(wrap: str) -> None:
    assert parse_public_key(wrap.format(ED25519_LINE)).fingerprint == ED25519_FP


def test_a_key_without_comment_is_fine() -> None:
    key = parse_public_key(" ".join(ED25519_LINE.split()[:2]))
    assert key.comment == ""
    assert key.line_with_comment == key.line


def test_tabs_separate_fields_like_in_openssh() -> None:
    key_type, data, comment = ED25519_LINE.split()
    assert parse_public_key(f"{key_type}\t{data}\t{comment}").fingerprint == ED25519_FP


def test_comment_is_sanitised_and_kept_out_of_the_signed_line() -> None:
    key_type, data, _ = ED25519_LINE.split()
    long_tail = "x" * 500
    key = parse_public_key(f"{key_type} {data} <!channel> *bold*  `code` josé@laptop {long_tail}")
    assert key.line == f"{key_type} {data}"
    assert not set("<>*`") & set(key.comment)
    assert "josé@laptop" in key.comment
    assert len(key.comment) <= 100


def test_result_is_frozen() -> None:
    key = parse_public_key(ED25519_LINE)
    with pytest.raises(FrozenInstanceError):
        key.bits = 1  # type: ignore[misc]
    assert isinstance(key, SshPublicKey)


def test_base64_is_normalised_to_canonical_form() -> None:
    key = parse_public_key(P256_LINE)
    assert key.blob_base64 == P256_LINE.split()[1]


# ---------------------------------------------------------------------------- policy


def test_rsa_below_the_default_minimum_is_refused_and_allowed_when_the_policy_says_so() -> None:
    n = (1 << 2047) | 1  # a 2048-bit odd modulus
    line = blob_line("ssh-rsa", b"ssh-rsa", b"\x01\x00\x01", b"\x00" + n.to_bytes(256, "big"))
    err = refused(line)
    assert isinstance(err, SshKeyNotAllowed)
    assert "2048" in str(err) and "3072" in str(err)
    assert parse_public_key(line, SshKeyPolicy.of(["ssh-rsa"], 2048)).bits == 2048


@needs_ssh_keygen
def test_real_2048_bit_rsa_key_is_refused_by_default(tmp_path: Path) -> None:
    pub = generate(tmp_path, "small", "-t", "rsa", "-b", "2048").with_suffix(".pub")
    assert isinstance(refused(pub.read_text()), SshKeyNotAllowed)


def test_a_type_the_policy_leaves_out_is_refused_naming_what_is_allowed() -> None:
    err = refused(RSA3072_LINE, SshKeyPolicy.of(["ssh-ed25519"], 3072))
    assert isinstance(err, SshKeyNotAllowed)
    assert "ssh-rsa" in str(err) and "ssh-ed25519" in str(err)
    assert parse_public_key(ED25519_LINE, SshKeyPolicy.of(["ssh-ed25519"], 3072))


@pytest.mark.parametrize(
    ("types", "min_bits"),
    [
        (["ssh-dss"], 3072),
        (["ssh-ed25519-cert-v01@openssh.com"], 3072),
        (["made-up"], 3072),
        ([], 3072),
        (["ssh-rsa"], 1024),
    ],
)
def test_a_policy_that_would_weaken_the_rules_is_a_configuration_error(
    types: list[str], min_bits: int
) -> None:
    with pytest.raises(ValueError, match=r"unsupported|at least"):
        SshKeyPolicy.of(types, min_bits)


# ---------------------------------------------------------------------------- private keys


def _private_key_texts(tmp_path: Path) -> dict[str, str]:
    texts = {
        "openssh-ed25519": generate(tmp_path, "ed", "-t", "ed25519").read_text(),
        "openssh-rsa": generate(tmp_path, "rsa", "-t", "rsa", "-b", "3072").read_text(),
        "pem-rsa": generate(
            tmp_path, "pemrsa", "-t", "rsa", "-b", "3072", key_format="PEM"
        ).read_text(),
        "pem-ec": generate(tmp_path, "pemec", "-t", "ecdsa", key_format="PEM").read_text(),
        "pkcs8": generate(tmp_path, "p8", "-t", "ecdsa", key_format="PKCS8").read_text(),
    }
    encrypted = tmp_path / "enc"
    ssh_keygen(
        "-q", "-t", "rsa", "-b", "3072", "-N", "correct horse", "-m", "PKCS8", "-f", str(encrypted)
    )
    texts["pkcs8-encrypted"] = encrypted.read_text()
    return texts


@needs_ssh_keygen
def test_real_private_keys_in_every_format_are_refused_loudly(tmp_path: Path) -> None:
    texts = _private_key_texts(tmp_path)
    assert "BEGIN RSA PRIVATE KEY" in texts["pem-rsa"]
    assert "BEGIN EC PRIVATE KEY" in texts["pem-ec"]
    assert "BEGIN PRIVATE KEY" in texts["pkcs8"]
    assert "BEGIN ENCRYPTED PRIVATE KEY" in texts["pkcs8-encrypted"]
    for name, text in texts.items():
        lines = text.strip().splitlines()
        body = "\n".join(lines[1:-1])
        variants = {
            "whole": text,
            "header only": lines[0],
            "end line only": lines[-1],
            "first half": "\n".join(lines[: len(lines) // 2]),
            "after the public key": ED25519_LINE + "\n" + text,
            "inside a code block": f"```{text}```",
            "over the size limit": text + "A" * (MAX_INPUT_CHARS + 1),
        }
        if name.startswith("openssh"):
            variants["body without armour"] = body
            variants["first body line"] = lines[1]
        for variant, pasted in variants.items():
            assert contains_private_key(pasted), (name, variant)
            err = refused(pasted)
            assert isinstance(err, PrivateKeyPasted), (name, variant)
            assert_not_echoed(err, body)


@pytest.mark.parametrize(
    "pasted",
    [
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA",
        "-----BEGIN DSA PRIVATE KEY-----",
        "-----BEGIN EC PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----",
        "-----END OPENSSH PRIVATE KEY-----",
        "PRIVATE KEY-----\n",
        "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----",
        "-----begin openssh private key-----",
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: me\nPublic-Lines: 2\n",
        "Private-Lines: 1\nAAAAIFtpuNotReallyAKey",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
        f"{ED25519_LINE} -----BEGIN OPENSSH PRIVATE KEY-----",
    ],
)
def test_private_key_markers_anywhere_are_refused(pasted: str) -> None:
    err = refused(pasted)
    assert isinstance(err, PrivateKeyPasted)
    message = str(err)
    assert "private" in message.lower()
    assert "not stored or logged" in message
    assert "exposed" in message
    assert "ssh-keygen" in message


def test_the_private_key_message_is_the_same_whatever_was_pasted() -> None:
    first = refused("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA")
    second = refused("PuTTY-User-Key-File-2: ssh-rsa")
    assert str(first) == str(second)
    assert first.args == second.args


def test_ordinary_public_keys_are_not_mistaken_for_private_ones() -> None:
    for line in (ED25519_LINE, RSA3072_LINE, P256_LINE, f"{ED25519_LINE} my private key"):
        assert not contains_private_key(line)
        parse_public_key(line)


# ---------------------------------------------------------------------------- refused input

ED_TYPE, ED_DATA, _ = ED25519_LINE.split()
ED_BLOB = base64.b64decode(ED_DATA)
ED_POINT = ED_BLOB[-32:]
P256_BLOB = base64.b64decode(P256_LINE.split()[1])


@pytest.mark.parametrize(
    ("pasted", "needle"),
    [
        ("", "paste your SSH public key"),
        ("   \n\t ", "paste your SSH public key"),
        ("``````", "paste your SSH public key"),
        ("hello there", "does not look like an OpenSSH public key"),
        (ED_DATA, "does not look like an OpenSSH public key"),
        ("ssh-ed25519", "missing"),
        (f"{ED25519_LINE}\n{P256_LINE}", "exactly one"),
        (f"{ED25519_LINE} {P256_LINE}", "exactly one"),
        (f"{ED25519_LINE}\n# another line", "exactly one"),
        ("ssh-ed25519 !!!notbase64!!!", "not valid base64"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILf7yoy9NNwjOEzBHP", "not valid base64"),
        ("ssh-ed25519 ====", "not valid base64"),
        (f"ecdsa-sha2-nistp256 {ED_DATA}", "not a `ecdsa-sha2-nistp256` key"),
        (f"ssh-rsa {ED_DATA}", "not a `ssh-rsa` key"),
        (blob_line("ssh-ed25519", b"ssh-ed25519", ED_POINT[:31]), "damaged"),
        (blob_line("ssh-ed25519", b"ssh-ed25519", ED_POINT + b"\x00"), "damaged"),
        (blob_line("ssh-ed25519", b"ssh-ed25519", ED_POINT, b"extra"), "damaged"),
        (blob_line("ssh-ed25519", b"ssh-ed25519"), "damaged"),
        ("ssh-ed25519 " + base64.b64encode(ED_BLOB[:-5]).decode(), "damaged"),
        ("ssh-ed25519 " + base64.b64encode(b"\xff\xff\xff\xff").decode(), "not a `ssh-ed25519`"),
        (blob_line("ssh-rsa", b"ssh-rsa", b"\x01\x00\x01"), "damaged"),
        (blob_line("ssh-rsa", b"ssh-rsa", b"\x80\x01", b"\x00" + b"\xff" * 384), "damaged"),
        (blob_line("ssh-rsa", b"ssh-rsa", b"\x02", b"\x00" + b"\xff" * 384), "damaged"),
        (blob_line("ssh-rsa", b"ssh-rsa", b"\x01\x00\x01", b"\x00" + b"\xfe" * 384), "damaged"),
        (blob_line("ecdsa-sha2-nistp256", b"ecdsa-sha2-nistp256", b"nistp384"), "damaged"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "DSA"),
        ("ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAx", "certificate"),
        ("ssh-rsa-cert-v01@openssh.com AAAA me", "certificate"),
        ("sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t", "OpenSSH public"),
        (f'from="10.0.0.1" {ED25519_LINE}', "does not look like an OpenSSH public key"),
        ("---- BEGIN SSH2 PUBLIC KEY ----", "PEM or RFC 4716"),
        ("-----BEGIN PUBLIC KEY-----", "PEM or RFC 4716"),
        ("ssh-ed25519 " + "A" * MAX_INPUT_CHARS, "too long"),
        (ED25519_LINE.replace(" me@host", "\x00me@host"), "control or invisible"),
        (ED25519_LINE.replace(" me@host", " me\x1b[31m@host"), "control or invisible"),
        (ED25519_LINE.replace(" me@host", " me\u202e@host"), "control or invisible"),
        (ED25519_LINE.replace("AAAAC3", "AAAA\u200bC3"), "control or invisible"),
        (ED25519_LINE.replace(" me@host", "\u2028me@host"), "exactly one"),
    ],
)
def test_refusals_explain_without_repeating_the_input(pasted: str, needle: str) -> None:
    err = refused(pasted)
    assert needle in str(err)
    assert not isinstance(err, PrivateKeyPasted)


def _flip_last_byte(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 0x01])


def test_an_ecdsa_point_off_the_curve_is_refused() -> None:
    line = "ecdsa-sha2-nistp256 " + base64.b64encode(_flip_last_byte(P256_BLOB)).decode()
    assert "damaged" in str(refused(line))


def test_a_compressed_ecdsa_point_is_refused() -> None:
    x = P256_BLOB[-64:-32]
    line = blob_line("ecdsa-sha2-nistp256", b"ecdsa-sha2-nistp256", b"nistp256", b"\x02" + x)
    assert "damaged" in str(refused(line))


@needs_ssh_keygen
def test_a_real_certificate_is_refused(tmp_path: Path) -> None:
    ca = generate(tmp_path, "ca", "-t", "ed25519")
    user = generate(tmp_path, "user", "-t", "ed25519")
    ssh_keygen("-q", "-s", str(ca), "-I", "id", "-n", "alice", str(user.with_suffix(".pub")))
    cert = tmp_path / "user-cert.pub"
    assert "certificate" in str(refused(cert.read_text()))


@needs_ssh_keygen
def test_rfc4716_export_is_refused(tmp_path: Path) -> None:
    pub = generate(tmp_path, "user", "-t", "ed25519").with_suffix(".pub")
    exported = ssh_keygen("-e", "-f", str(pub))
    assert "BEGIN SSH2 PUBLIC KEY" in exported
    err = refused(exported)
    assert not isinstance(err, PrivateKeyPasted)
