"""Ed25519 signature verification (RFC 8032, section 5.1.7) in pure Python: the device's only crypto.

Why pure Python and not ``cryptography`` or ``PyNaCl`` (measured, see ``docs/BUNDLE.md``): the device
verifies one signature per start, over a 32-byte digest of the manifest. ``cryptography`` (4.7 MB wheel;
manylinux aarch64 and armv7l glibc >= 2.31 only) costs more to import than this module takes to verify,
PyNaCl publishes no armv7l wheel at all (a libsodium build on the Pi), and both would grow a base install
that must stay small. This verifier is ~150 lines of integer arithmetic with no dependency, works on every
Python the device runs, and is checked against the RFC 8032 test vectors (``tests/test_bundle_security.py``).

Verification handles public data only (public key, message, signature), so timing side channels do not
matter here. It is strict: a signature whose ``S`` is not below the group order, or a public key that is
not a canonical point encoding, is refused (no malleability); the check is the cofactorless equation
``[S]B == R + [k]A``, done by encoding ``[S]B - [k]A`` and comparing bytes with ``R`` (as ref10/libsodium).

The signing side (:func:`_sign`, used by ``ecgret-convert sign-bundle`` on the publisher's workstation) is
here only so that both sides share one implementation of the curve; it is not constant-time and is never
called on the device.
"""

from __future__ import annotations

import hashlib

__all__ = ["verify", "public_key_from_seed", "BadSignature"]

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_GY = 4 * pow(5, _P - 2, _P) % _P


class BadSignature(ValueError):
    """The signature, the public key or their encodings are invalid."""


def _recover_x(y: int, sign: int) -> int:
    if y >= _P:
        raise BadSignature("point y coordinate not canonical")
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        if sign:
            raise BadSignature("invalid point encoding")
        return 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        raise BadSignature("not a point on the curve")
    if (x & 1) != sign:
        x = _P - x
    return x


# Points in extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, x*y = T/Z (RFC 8032, 5.1.4).
_B = (_recover_x(_GY, 0), _GY, 1, _recover_x(_GY, 0) * _GY % _P)
_ZERO = (0, 1, 1, 0)


def _add(p, q):
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _double(p):
    a = p[0] * p[0] % _P
    b = p[1] * p[1] % _P
    c = 2 * p[2] * p[2] % _P
    h = a + b
    e = h - (p[0] + p[1]) ** 2 % _P
    g = a - b
    f = c + g
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _neg(p):
    return ((-p[0]) % _P, p[1], p[2], (-p[3]) % _P)


def _double_scalarmult(a: int, p, b: int, q):
    """[a]P + [b]Q, one pass of doublings (Straus-Shamir): 253 doublings, about 190 additions."""
    pq = _add(p, q)
    r = _ZERO
    for i in range(max(a.bit_length(), b.bit_length()) - 1, -1, -1):
        r = _double(r)
        ba, bb = (a >> i) & 1, (b >> i) & 1
        if ba and bb:
            r = _add(r, pq)
        elif ba:
            r = _add(r, p)
        elif bb:
            r = _add(r, q)
    return r


def _scalarmult(a: int, p):
    return _double_scalarmult(a, p, 0, _ZERO)


def _encode(p) -> bytes:
    zi = pow(p[2], _P - 2, _P)
    x, y = p[0] * zi % _P, p[1] * zi % _P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def _decode(s: bytes):
    if len(s) != 32:
        raise BadSignature("a point is 32 bytes")
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    return (x, y, 1, x * y % _P)


def _h(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little")


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise :class:`BadSignature` unless ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    public_key, signature = bytes(public_key), bytes(signature)
    if len(public_key) != 32:
        raise BadSignature("an Ed25519 public key is 32 bytes")
    if len(signature) != 64:
        raise BadSignature("an Ed25519 signature is 64 bytes")
    a = _decode(public_key)
    r_bytes, s = signature[:32], int.from_bytes(signature[32:], "little")
    if s >= _L:
        raise BadSignature("signature S is not reduced")
    k = _h(r_bytes, public_key, bytes(message)) % _L
    if _encode(_double_scalarmult(s, _B, k, _neg(a))) != r_bytes:
        raise BadSignature("signature does not match")


# ------------------------------------------------------------------ publisher side (workstation only)


def _expand(seed: bytes) -> tuple[int, bytes]:
    if len(seed) != 32:
        raise ValueError("an Ed25519 private key (seed) is 32 bytes")
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def public_key_from_seed(seed: bytes) -> bytes:
    """The 32-byte public key of a 32-byte private key (seed)."""
    a, _ = _expand(seed)
    return _encode(_scalarmult(a, _B))


def _sign(seed: bytes, message: bytes) -> bytes:
    """RFC 8032 5.1.6 signing. Workstation only (not constant-time); the device only verifies."""
    a, prefix = _expand(seed)
    pub = _encode(_scalarmult(a, _B))
    r = _h(prefix, message) % _L
    rb = _encode(_scalarmult(r, _B))
    k = _h(rb, pub, message) % _L
    return rb + int.to_bytes((r + k * a) % _L, 32, "little")
