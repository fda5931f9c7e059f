"""Signing bundles (``ecgret-convert sign-bundle``, or ``write_bundle(sign_key=...)`` / ``$ECGRET_SIGNING_KEY``).

An Ed25519 signature of the bundle id (the sha256 of ``manifest.json``, which hashes every other file) goes into
``signature.json`` (format: :mod:`edge.trust`). The private key is a JSON file (``{"format":
"ecgret-signing-key", "private_key": hex, "public_key": hex, ...}``, mode 0600) that lives with the
publisher, never in the repository (``runs/`` and ``~/.config`` are the places; ``runs/`` is gitignored).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from edge.atomicio import atomic_write
from edge.bundle import SIGNATURE_FILE
from edge.bundle_format import MANIFEST_FILE
from edge.errors import BundleError

__all__ = ["ENV_SIGNING_KEY", "KEY_FORMAT", "generate_signing_key", "read_signing_key", "sign_bundle"]

ENV_SIGNING_KEY = "ECGRET_SIGNING_KEY"
KEY_FORMAT = "ecgret-signing-key"


def generate_signing_key(path, publisher: str) -> dict:
    """Create a new Ed25519 signing key file at ``path`` (refused if it exists; mode 0600). Returns its
    public part (``public_key``, ``key_id``, ``publisher``)."""
    from edge.ed25519 import public_key_from_seed
    from edge.trust import key_id

    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    seed = os.urandom(32)
    pub = public_key_from_seed(seed)
    doc = {
        "format": KEY_FORMAT,
        "algorithm": "ed25519",
        "private_key": seed.hex(),
        "public_key": pub.hex(),
        "key_id": key_id(pub),
        "publisher": str(publisher),
        "created": datetime.now(UTC).replace(microsecond=0).isoformat(),
    }
    try:
        atomic_write(p, json.dumps(doc, indent=1) + "\n", mode=0o600, overwrite=False)
    except FileExistsError:
        raise BundleError(f"{p}: exists; a signing key is never overwritten") from None
    return {k: doc[k] for k in ("public_key", "key_id", "publisher")}


def read_signing_key(path) -> tuple[bytes, dict]:
    """(32-byte private seed, the key file's public fields). A key readable by group or others is refused."""
    from edge.ed25519 import public_key_from_seed
    from edge.trust import key_id

    p = Path(path).expanduser()
    try:
        st = os.stat(p)
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BundleError(f"{p}: signing key unreadable ({e})") from None
    if os.name == "posix" and st.st_mode & 0o077:
        raise BundleError(f"{p}: signing key is readable by others (mode {st.st_mode & 0o777:o}); chmod 600 it")
    if not isinstance(doc, dict) or doc.get("format") != KEY_FORMAT or doc.get("algorithm") != "ed25519":
        raise BundleError(f"{p}: not an {KEY_FORMAT} file")
    try:
        seed = bytes.fromhex(doc["private_key"])
        if len(seed) != 32:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{p}: private_key: not 64 hex digits") from None
    pub = public_key_from_seed(seed)
    if doc.get("public_key") not in (None, pub.hex()):
        raise BundleError(f"{p}: public_key does not belong to private_key")
    return seed, {"public_key": pub.hex(), "key_id": key_id(pub), "publisher": str(doc.get("publisher") or "")}


def sign_bundle(bundle_dir, key_path) -> dict:
    """Check the bundle at ``bundle_dir`` (everything ``load_bundle`` checks) and write its
    ``signature.json`` with the key at ``key_path``. Returns the signature document."""
    from edge.bundle import load_bundle
    from edge.ed25519 import _sign, verify
    from edge.trust import SIGNATURE_FORMAT, SIGNATURE_VERSION, signed_message

    d = Path(bundle_dir)
    seed, pub = read_signing_key(key_path)
    b = load_bundle(d, threads=1, ignore_signature=True)  # never sign a bundle that does not load
    mbytes = (d / MANIFEST_FILE).read_bytes()
    if hashlib.sha256(mbytes).hexdigest() != b.id:
        raise BundleError(f"{d / MANIFEST_FILE}: changed while it was being checked; sign again")
    msg = signed_message(mbytes)
    sig = _sign(seed, msg)
    verify(bytes.fromhex(pub["public_key"]), msg, sig)
    doc = {
        "format": SIGNATURE_FORMAT,
        "format_version": SIGNATURE_VERSION,
        "algorithm": "ed25519",
        "bundle_id": hashlib.sha256(mbytes).hexdigest(),
        "public_key": pub["public_key"],
        "key_id": pub["key_id"],
        "signature": sig.hex(),
        "publisher": pub["publisher"],
        "signed": datetime.now(UTC).replace(microsecond=0).isoformat(),
    }
    atomic_write(d / SIGNATURE_FILE, json.dumps(doc, indent=2) + "\n", mode=0o644)
    if (d / MANIFEST_FILE).read_bytes() != mbytes:
        raise BundleError(f"{d / MANIFEST_FILE}: changed while it was being signed; sign again")
    return doc
