"""The OpenSSH public key a user pastes to get a certificate: parsed, checked, never echoed.

An SSH certificate grant signs whatever public key the requester hands over, so this is the one
place that decides what counts as an acceptable key. The line is decoded down to the wire format
(RFC 4253 section 6.6, RFC 5656, RFC 8709) rather than matched with a pattern: the type named in
front must be the type inside the blob, an RSA modulus has the size it claims, an ECDSA point lies
on its curve. A blob that does not decode is refused, so OpenBao only ever sees well-formed keys.

People paste the wrong file. A private key pasted by mistake is refused before anything else is
looked at, with a message that says so plainly and asks them to rotate it: it has passed through
Slack. No error raised here ever contains the pasted text, so a refused paste cannot end up in a
log line, an audit record or a reply.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from bot.domain.errors import UserError

ED25519 = "ssh-ed25519"
RSA = "ssh-rsa"
ECDSA_P256 = "ecdsa-sha2-nistp256"
ECDSA_P384 = "ecdsa-sha2-nistp384"
ECDSA_P521 = "ecdsa-sha2-nistp521"

SUPPORTED_KEY_TYPES = frozenset({ED25519, RSA, ECDSA_P256, ECDSA_P384, ECDSA_P521})
DEFAULT_ALLOWED_KEY_TYPES = SUPPORTED_KEY_TYPES
DEFAULT_MIN_RSA_BITS = 3072
# Below this no policy may go: OpenSSH itself refuses RSA keys under 1024 bits, and 2048 is the
# floor every current guideline agrees on.
ABSOLUTE_MIN_RSA_BITS = 2048
# A 16384-bit RSA line is about 2.8 KiB; anything far beyond that is not a single public key.
MAX_INPUT_CHARS = 16 * 1024
MAX_COMMENT_CHARS = 100

_ED25519_KEY_BYTES = 32
_CERT_SUFFIX = "-cert-v01@openssh.com"

_GENERATE_HINT = (
    "Generate one with `ssh-keygen -t ed25519` and paste the contents of the `.pub` file."
)

# Markers of private key material. Searched for anywhere in the text, case-insensitively, so a
# fragment (only the END line, only the body of an OpenSSH key, a PuTTY file) is still caught.
_PRIVATE_KEY_MARKERS = re.compile(
    r"(?:BEGIN|END)\s+(?:[A-Z0-9]+\s+)*PRIVATE\s+KEY"  # PEM: OPENSSH, RSA, EC, DSA, ENCRYPTED
    r"|PRIVATE\s+KEY\s*-----"  # the tail of an armour line whose start was cut off
    r"|PuTTY-User-Key-File-"  # PuTTY .ppk header
    r"|Private-Lines\s*:"  # PuTTY .ppk private section
    r"|b3BlbnNzaC1rZXktdjE",  # base64 of the "openssh-key-v1" magic that starts the key body
    re.IGNORECASE,
)
_PEM_ARMOUR = re.compile(r"-{4,}\s*(?:BEGIN|END)\b", re.IGNORECASE)


@dataclass(frozen=True)
class _Curve:
    """A NIST prime curve y^2 = x^3 - 3x + b (mod p), enough to check a point is on it."""

    name: str
    bits: int
    p: int
    b: int

    @property
    def coordinate_bytes(self) -> int:
        return (self.bits + 7) // 8

    def contains(self, x: int, y: int) -> bool:
        if not (0 <= x < self.p and 0 <= y < self.p):
            return False
        return (y * y - (x * x * x - 3 * x + self.b)) % self.p == 0


# Curve constants from FIPS 186-4 / SEC 2 (the tests check real ssh-keygen keys against them).
_CURVES = {
    ECDSA_P256: _Curve(
        name="nistp256",
        bits=256,
        p=2**256 - 2**224 + 2**192 + 2**96 - 1,
        b=0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
    ),
    ECDSA_P384: _Curve(
        name="nistp384",
        bits=384,
        p=2**384 - 2**128 - 2**96 + 2**32 - 1,
        b=int(
            "B3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875A"
            "C656398D8A2ED19D2A85C8EDD3EC2AEF",
            16,
        ),
    ),
    ECDSA_P521: _Curve(
        name="nistp521",
        bits=521,
        p=2**521 - 1,
        b=int(
            "0051953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF1"
            "09E156193951EC7E937B1652C0BD3BB1BF073573DF883D2C34F1EF451FD46B503F00",
            16,
        ),
    ),
}


class SshKeyError(UserError):
    """The pasted text is not an acceptable SSH public key. The message never quotes it."""


class PrivateKeyPasted(SshKeyError):
    """The text contains private key material: refused loudly, and the user told to rotate it."""

    def __init__(self) -> None:
        """The message is fixed: it must not depend on (let alone contain) the pasted text."""
        super().__init__(
            ":rotating_light: That was a *private* key, not a public one. It was refused, and it "
            "was not stored or logged, but it has passed through Slack: consider it exposed. "
            "Delete that key pair, generate a new one (`ssh-keygen -t ed25519`), replace the old "
            "public key wherever it is trusted, and paste only the contents of the `.pub` file."
        )


class SshKeyNotAllowed(SshKeyError):
    """A well-formed public key that the policy does not accept (type or size)."""


@dataclass(frozen=True)
class SshKeyPolicy:
    """Which public keys a resource accepts; the policy file supplies it, defaults are safe."""

    allowed_types: frozenset[str] = DEFAULT_ALLOWED_KEY_TYPES
    min_rsa_bits: int = DEFAULT_MIN_RSA_BITS

    def __post_init__(self) -> None:
        """A policy that names a type this module cannot check, or weak RSA, is a config bug."""
        unknown = set(self.allowed_types) - SUPPORTED_KEY_TYPES
        if unknown:
            raise ValueError(
                f"unsupported SSH key types {sorted(unknown)}; "
                f"supported: {sorted(SUPPORTED_KEY_TYPES)}"
            )
        if not self.allowed_types:
            raise ValueError("an SSH key policy must allow at least one key type")
        if self.min_rsa_bits < ABSOLUTE_MIN_RSA_BITS:
            raise ValueError(f"min_rsa_bits must be at least {ABSOLUTE_MIN_RSA_BITS}")

    @classmethod
    def of(cls, allowed_types: Iterable[str], min_rsa_bits: int) -> SshKeyPolicy:
        """Build from plain values (a list from YAML, say)."""
        return cls(allowed_types=frozenset(allowed_types), min_rsa_bits=min_rsa_bits)


DEFAULT_SSH_KEY_POLICY = SshKeyPolicy()


@dataclass(frozen=True)
class SshPublicKey:
    """A validated public key. ``line`` is what gets signed; ``comment`` is only for display."""

    key_type: str
    bits: int
    blob_base64: str
    fingerprint: str
    comment: str = ""

    @property
    def line(self) -> str:
        """``type base64``: the key without its comment, as sent to OpenBao's ssh/sign."""
        return f"{self.key_type} {self.blob_base64}"

    @property
    def line_with_comment(self) -> str:
        """The normalised line with the sanitised comment, when there is one."""
        return f"{self.line} {self.comment}" if self.comment else self.line


def contains_private_key(text: str) -> bool:
    """Whether ``text`` holds (a fragment of) private key material in any common format."""
    return _PRIVATE_KEY_MARKERS.search(text) is not None


def parse_public_key(text: str, policy: SshKeyPolicy = DEFAULT_SSH_KEY_POLICY) -> SshPublicKey:
    """Parse one OpenSSH public key line (``type base64 [comment]``) and check it against policy.

    Raises ``PrivateKeyPasted`` for private key material (checked first, on the whole text, so
    even an over-long paste is recognised), ``SshKeyNotAllowed`` for a sound key the policy
    refuses, and ``SshKeyError`` for anything that is not exactly one public key.
    """
    if contains_private_key(text):
        raise PrivateKeyPasted()
    if len(text) > MAX_INPUT_CHARS:
        raise SshKeyError(
            f"That is far too long for an SSH public key (at most {MAX_INPUT_CHARS // 1024} KiB). "
            + _GENERATE_HINT
        )
    line = _single_line(text)
    fields = line.split(maxsplit=2)
    stated_type = fields[0]
    _check_type_is_acceptable(stated_type, policy)
    if len(fields) < 2:
        raise SshKeyError("The key data is missing after the key type. " + _GENERATE_HINT)
    blob_base64 = fields[1]
    comment = fields[2] if len(fields) == 3 else ""
    if _mentions_another_key(comment):
        raise SshKeyError("Please paste exactly one public key, not several.")

    blob = _decode_base64(blob_base64)
    bits = _decode_blob(stated_type, blob)
    _check_size(stated_type, bits, policy)

    canonical_base64 = base64.b64encode(blob).decode("ascii")
    return SshPublicKey(
        key_type=stated_type,
        bits=bits,
        blob_base64=canonical_base64,
        fingerprint=fingerprint_sha256(blob),
        comment=_sanitise_comment(comment),
    )


def fingerprint_of(line: str) -> str:
    """The fingerprint of a key line this module produced (``SshPublicKey.line``)."""
    return fingerprint_sha256(base64.b64decode(line.split()[1]))


def fingerprint_sha256(blob: bytes) -> str:
    """OpenSSH's fingerprint: ``SHA256:`` and unpadded base64 of the digest of the key blob."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


# ---------------------------------------------------------------------------- the text


def _single_line(text: str) -> str:
    """The one non-empty line of the paste, with Slack code formatting removed."""
    stripped = text.strip()
    # Slack users often paste inside a code block or inline code.
    if stripped.startswith("```") and stripped.endswith("```") and len(stripped) >= 6:
        stripped = stripped[3:-3].strip()
    elif stripped.startswith("`") and stripped.endswith("`") and len(stripped) >= 2:
        stripped = stripped[1:-1].strip()
    if not stripped:
        raise SshKeyError("Please paste your SSH public key. " + _GENERATE_HINT)
    lines = [part.strip() for part in stripped.splitlines() if part.strip()]
    if len(lines) > 1:
        raise SshKeyError(
            "Please paste exactly one public key, on a single line (the whole `.pub` file is "
            "one line)."
        )
    line = lines[0]
    if _PEM_ARMOUR.search(line) or line.startswith("----"):
        raise SshKeyError(
            "That looks like a PEM or RFC 4716 key file. Please paste the OpenSSH one-line "
            "format (`ssh-ed25519 AAAA…`), e.g. the `.pub` file `ssh-keygen` wrote."
        )
    for ch in line:
        if ch != "\t" and unicodedata.category(ch) in {"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"}:
            raise SshKeyError(
                "The key contains control or invisible characters; please copy it again "
                "straight from the `.pub` file."
            )
    return line


def _check_type_is_acceptable(stated_type: str, policy: SshKeyPolicy) -> None:
    """Refuse certificates, DSA and unknown types by name, before decoding anything."""
    if stated_type.endswith(_CERT_SUFFIX):
        raise SshKeyError(
            "That is an SSH *certificate*, not a public key. Paste the key itself (the `.pub` "
            "file, not `-cert.pub`); the bot issues the certificate."
        )
    if stated_type == "ssh-dss":
        raise SshKeyNotAllowed(
            "DSA (`ssh-dss`) keys are obsolete and disabled in OpenSSH. " + _GENERATE_HINT
        )
    if stated_type not in SUPPORTED_KEY_TYPES:
        raise SshKeyError(
            "That does not look like an OpenSSH public key: it should start with a key type such "
            "as `ssh-ed25519`. " + _GENERATE_HINT
        )
    if stated_type not in policy.allowed_types:
        allowed = ", ".join(f"`{name}`" for name in sorted(policy.allowed_types))
        raise SshKeyNotAllowed(f"`{stated_type}` keys are not accepted here; use one of {allowed}.")


def _mentions_another_key(comment: str) -> bool:
    """Two keys pasted on one line: the second one's type shows up inside the 'comment'."""
    return any(
        word in SUPPORTED_KEY_TYPES or word == "ssh-dss" or word.endswith(_CERT_SUFFIX)
        for word in comment.split()
    )


def _decode_base64(data: str) -> bytes:
    """Strict base64; the binascii error is dropped so no traceback carries the input."""
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        blob = None
    if not blob:
        raise SshKeyError(
            "The key data is not valid base64; the key may have been cut off or changed while "
            "copying. " + _GENERATE_HINT
        )
    return blob


def _sanitise_comment(comment: str) -> str:
    """A display-safe comment: printable, no chat markup, bounded length."""
    kept = "".join(
        ch
        for ch in comment
        if ch not in "<>&`*_~|" and (ch == " " or unicodedata.category(ch)[0] not in "CZ")
    )
    return " ".join(kept.split())[:MAX_COMMENT_CHARS]


# ---------------------------------------------------------------------------- the wire format


class _Malformed(Exception):
    """Internal: the blob ended early or held an impossible value (never leaves this module)."""


class _WireReader:
    """Reads SSH wire-format fields (RFC 4251 section 5) from a key blob."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def _take(self, count: int) -> bytes:
        end = self._offset + count
        if count < 0 or end > len(self._data):
            raise _Malformed
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def read_string(self) -> bytes:
        length = int.from_bytes(self._take(4), "big")
        return self._take(length)

    def read_text(self) -> str:
        raw = self.read_string()
        if not raw or not raw.isascii():
            raise _Malformed
        return raw.decode("ascii")

    def read_mpint(self) -> int:
        raw = self.read_string()
        if raw and raw[0] & 0x80:
            raise _Malformed  # negative: never a valid RSA exponent or modulus
        return int.from_bytes(raw, "big")

    def expect_end(self) -> None:
        if self._offset != len(self._data):
            raise _Malformed


def _decode_blob(stated_type: str, blob: bytes) -> int:
    """Decode the whole key blob, which must be of ``stated_type``; return its size in bits."""
    reader = _WireReader(blob)
    try:
        embedded_type = reader.read_text()
    except _Malformed:
        embedded_type = None
    if embedded_type != stated_type:
        raise SshKeyError(
            f"The key data is not a `{stated_type}` key although the line says so; "
            "the key may have been damaged while copying. " + _GENERATE_HINT
        )
    try:
        bits = _read_key_fields(stated_type, reader)
        reader.expect_end()
    except _Malformed:
        bits = None
    if bits is None:
        raise SshKeyError(
            f"The `{stated_type}` key data is damaged (it does not decode to a valid key); copy "
            "it again from the `.pub` file. " + _GENERATE_HINT
        )
    return bits


def _read_key_fields(key_type: str, reader: _WireReader) -> int:
    """The fields after the type string (RFC 8709, RFC 4253, RFC 5656); the size in bits."""
    if key_type == ED25519:
        if len(reader.read_string()) != _ED25519_KEY_BYTES:
            raise _Malformed
        return 256
    if key_type == RSA:
        exponent = reader.read_mpint()
        modulus = reader.read_mpint()
        if exponent < 3 or exponent % 2 == 0 or modulus % 2 == 0 or exponent >= modulus:
            raise _Malformed
        return modulus.bit_length()
    curve = _CURVES[key_type]
    if reader.read_text() != curve.name:
        raise _Malformed
    point = reader.read_string()
    size = curve.coordinate_bytes
    if len(point) != 1 + 2 * size or point[0] != 0x04:
        raise _Malformed  # OpenSSH only writes uncompressed points
    x = int.from_bytes(point[1 : 1 + size], "big")
    y = int.from_bytes(point[1 + size :], "big")
    if not curve.contains(x, y):
        raise _Malformed
    return curve.bits


def _check_size(key_type: str, bits: int, policy: SshKeyPolicy) -> None:
    """RSA keys below the policy's minimum are refused; other types have fixed sizes."""
    if key_type == RSA and bits < policy.min_rsa_bits:
        raise SshKeyNotAllowed(
            f"This RSA key has {bits} bits; at least {policy.min_rsa_bits} are required. "
            + _GENERATE_HINT
        )
