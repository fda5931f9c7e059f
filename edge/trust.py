"""Who may publish bundles: the trusted Ed25519 keys and the check of a bundle's ``signature.json``.

A bundle's identity is ``bundle_id = sha256(manifest.json bytes)``; the manifest holds the sha256 of every
other file, so one signature over the id covers the whole bundle. The signed message is
``b"ecgret-bundle-signature-v1\\0" + sha256(manifest bytes)`` (domain-separated: a signature made with the
key for anything else can never pass for a bundle's). ``signature.json``::

    {"format": "ecgret-bundle-signature", "format_version": 1, "algorithm": "ed25519",
     "bundle_id": "<64 hex>", "public_key": "<64 hex>", "key_id": "<16 hex>", "signature": "<128 hex>",
     "signed": "ISO-8601", "publisher": "free text, not authenticated"}

Trusted keys: :data:`TRUSTED_KEYS` (shipped with ecgret) plus the public keys listed in the file named by
``$ECGRET_TRUSTED_KEYS`` (one hex key a line, ``#`` comments; for a clinic that publishes its own bundles).
:data:`REVOKED_KEYS` are never trusted, wherever they are listed. Key rotation: ``docs/BUNDLE.md``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError

__all__ = [
    "Trust",
    "TRUSTED_KEYS",
    "REVOKED_KEYS",
    "SIGNATURE_FILE",
    "check_signature",
    "signed_message",
    "key_id",
    "trusted_keys",
    "ENV_TRUSTED_KEYS",
]

SIGNATURE_FILE = "signature.json"
SIGNATURE_FORMAT = "ecgret-bundle-signature"
SIGNATURE_VERSION = 1
DOMAIN = b"ecgret-bundle-signature-v1\0"
ENV_TRUSTED_KEYS = "ECGRET_TRUSTED_KEYS"
MAX_SIGNATURE_BYTES = 64 << 10

# key id (first 16 hex digits of sha256 of the raw public key) -> (public key hex, who holds it)
TRUSTED_KEYS: dict[str, tuple[str, str]] = {
    "2f0a9bc3c4f15ac2": (
        "ad6a2e963c0015e9e1b0bedb8af4afeae5c079eda1a437afaba845786752bf0b",
        "ecgret default bundle publisher (2026)",
    ),
    # the second default-bundle key (2026-12): the first key's private part was not carried to the build machine
    # that re-made the bundle; it is not compromised, so bundles it signed stay trusted (docs/BUNDLE.md)
    "f2a363d8735b6ace": (
        "2fa8e7845d473a9031dbadd8ac60e8c45bfde0f9b4c2f6efec7d4bf33529c664",
        "ecgret default bundle publisher (2026, key 2)",
    ),
}
REVOKED_KEYS: frozenset[str] = frozenset()  # key ids; see docs/BUNDLE.md "Rotating keys"

_HEX = re.compile(r"[0-9a-f]+\Z")


@dataclass(frozen=True)
class Trust:
    """What the signature says about a bundle. ``status``: ``"trusted"`` (a valid signature by a trusted key),
    ``"untrusted"`` (a valid signature by a key that is not trusted), ``"revoked"`` (by a revoked key) or
    ``"unsigned"`` (no signature file)."""

    status: str
    key_id: str | None = None
    publisher: str | None = None

    @property
    def trusted(self) -> bool:
        """Whether the bundle carries a valid signature by a trusted, unrevoked key."""
        return self.status == "trusted"

    def describe(self) -> str:
        """The verdict in words for ``ecgret info`` and warnings: who signed and whether that is trusted."""
        if self.status == "trusted":
            return f"signed by {self.publisher} (key {self.key_id}), trusted"
        if self.status == "unsigned":
            return "UNSIGNED: no signature.json; its origin is not verified"
        return f"signed by a {self.status.upper()} key {self.key_id}: its origin is not verified"

    def to_dict(self) -> dict:
        """``{"status", "trusted", "key_id", "publisher"}``."""
        return {"status": self.status, "trusted": self.trusted, "key_id": self.key_id, "publisher": self.publisher}


def key_id(public_key: bytes) -> str:
    """A public key's id: the first 16 hex digits of the sha256 of its 32 bytes."""
    return hashlib.sha256(bytes(public_key)).hexdigest()[:16]


def signed_message(manifest_bytes: bytes) -> bytes:
    """What a bundle's signature signs: the domain tag and the manifest's sha256."""
    return DOMAIN + hashlib.sha256(manifest_bytes).digest()


MAX_KEYS_BYTES = 256 << 10  # a keys file: 1,000 lines of a key and a comment fit many times over


def _read_keys_file(p: Path) -> str:
    """The text of ``$ECGRET_TRUSTED_KEYS``: a regular file (a link to one is fine: an administrator's choice) of at
    most :data:`MAX_KEYS_BYTES`, opened without blocking (a FIFO hung every command) and read no further."""
    import stat

    where = f"{p}: trusted keys ({ENV_TRUSTED_KEYS})"
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise BundleError(f"{where}: unreadable ({e.strerror or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BundleError(f"{where}: not a regular file")
        data = os.read(fd, MAX_KEYS_BYTES + 1)
    except OSError as e:
        raise BundleError(f"{where}: unreadable ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEYS_BYTES:
        raise BundleError(f"{where}: over {MAX_KEYS_BYTES // 1024} KiB; a keys file holds one key a line")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{where}: not UTF-8 text") from None


def trusted_keys() -> dict[str, tuple[str, str]]:
    """The shipped keys plus those of ``$ECGRET_TRUSTED_KEYS``, revoked ones removed."""
    keys = dict(TRUSTED_KEYS)
    extra = os.environ.get(ENV_TRUSTED_KEYS)
    if extra:
        p = Path(extra).expanduser()
        text = _read_keys_file(p)
        for n, line in enumerate(text.splitlines()[:1000], 1):
            word = line.split("#", 1)[0].strip()
            if not word:
                continue
            h = word.lower()
            if len(h) != 64 or not _HEX.match(h):
                raise BundleError(f"{p}: line {n}: not a 64-hex-digit Ed25519 public key")
            keys[key_id(bytes.fromhex(h))] = (h, f"a key of {p.name}")
    return {k: v for k, v in keys.items() if k not in REVOKED_KEYS}


def _hexfield(doc: dict, k: str, n: int, where) -> bytes:
    v = doc.get(k)
    if not isinstance(v, str) or len(v) != 2 * n or not _HEX.match(v):
        raise BundleError(f"{where}: {k}: must be {2 * n} lowercase hex digits")
    return bytes.fromhex(v)


def check_signature(sig_bytes: bytes | None, manifest_bytes: bytes, where) -> Trust:
    """Verify ``signature.json`` (its bytes, or None when absent) against the manifest bytes.

    A signature that is present but malformed, made for another manifest, or that does not verify is a
    :class:`BundleError` (tampering), whatever the trust policy. A valid one gives its key's :class:`Trust`."""
    if sig_bytes is None:
        return Trust("unsigned")
    from .ed25519 import BadSignature, verify
    from .schema import JSONLimitError, loads_bounded

    try:
        doc = loads_bounded(sig_bytes, max_bytes=MAX_SIGNATURE_BYTES, max_depth=4)
    except JSONLimitError as e:
        raise BundleError(f"{where}: {e}") from None
    if not isinstance(doc, dict):
        raise BundleError(f"{where}: signature: not a JSON object")
    if doc.get("format") != SIGNATURE_FORMAT or doc.get("format_version") != SIGNATURE_VERSION:
        raise BundleError(f"{where}: format: not an {SIGNATURE_FORMAT} version {SIGNATURE_VERSION} file")
    if doc.get("algorithm") != "ed25519":
        raise BundleError(f"{where}: algorithm: only 'ed25519' is accepted")
    bid = _hexfield(doc, "bundle_id", 32, where)
    pub = _hexfield(doc, "public_key", 32, where)
    sig = _hexfield(doc, "signature", 64, where)
    if bid != hashlib.sha256(manifest_bytes).digest():
        raise BundleError(
            f"{where}: bundle_id: the signature is for another manifest (manifest.json was changed "
            "after signing, or the signature belongs to another bundle)"
        )
    kid = key_id(pub)
    if doc.get("key_id") not in (None, kid):
        raise BundleError(f"{where}: key_id: does not match public_key")
    try:
        verify(pub, signed_message(manifest_bytes), sig)
    except BadSignature as e:
        raise BundleError(f"{where}: signature: invalid ({e}); the bundle was tampered with") from None
    if kid in REVOKED_KEYS:
        return Trust("revoked", kid, None)
    keys = trusted_keys()
    if kid in keys and keys[kid][0] == pub.hex():
        return Trust("trusted", kid, keys[kid][1])
    return Trust("untrusted", kid, None)
