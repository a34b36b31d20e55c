"""XEdDSA signature checks over Curve25519 identity keys, as the Signal protocol makes them.

A Signal identity key is a Curve25519 (Montgomery) public key, serialised as 33 bytes: the type
byte ``0x05`` and the 32-byte little-endian u-coordinate. Its owner signs prekeys with XEdDSA
(https://signal.org/docs/specifications/xeddsa/): an Ed25519 signature made with the Edwards
form of the same private key, whose public point's sign bit travels in the top bit of the
signature's last byte (Ed25519's ``s`` is below 2^253, so that bit is free).

Verification therefore converts the Montgomery u-coordinate to the Edwards y-coordinate
(``y = (u - 1) / (u + 1) mod p``), takes the sign bit from the signature, clears it, and runs a
standard Ed25519 verification (OpenSSL, through ``cryptography``). This is what libsignal's
``PublicKey.verify`` does for ``0x05`` keys.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DJB_TYPE = 0x05
PUBLIC_KEY_LENGTH = 33
SIGNATURE_LENGTH = 64
_P = 2**255 - 19


def montgomery_to_edwards(u_bytes: bytes, sign_bit: int) -> bytes | None:
    """The 32-byte Ed25519 encoding of the Edwards point for ``u`` (None when there is none)."""
    u = (int.from_bytes(u_bytes, "little") & ((1 << 255) - 1)) % _P
    if u == _P - 1:  # u + 1 == 0: no Edwards point
        return None
    y = (u - 1) * pow(u + 1, _P - 2, _P) % _P
    return (y | (sign_bit << 255)).to_bytes(32, "little")


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid XEdDSA signature of ``message`` by ``public_key``."""
    if len(public_key) != PUBLIC_KEY_LENGTH or public_key[0] != DJB_TYPE:
        return False
    if len(signature) != SIGNATURE_LENGTH:
        return False
    sign_bit = signature[63] >> 7
    edwards = montgomery_to_edwards(public_key[1:], sign_bit)
    if edwards is None:
        return False
    fixed = signature[:63] + bytes([signature[63] & 0x7F])
    try:
        Ed25519PublicKey.from_public_bytes(edwards).verify(fixed, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def edwards_to_montgomery(edwards: bytes) -> tuple[bytes, int]:
    """(u-coordinate bytes, sign bit) of an Ed25519 public key: for test clients that sign with
    an ordinary Ed25519 key and publish it as a Curve25519 identity key."""
    value = int.from_bytes(edwards, "little")
    sign_bit = value >> 255
    y = value & ((1 << 255) - 1)
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return u.to_bytes(32, "little"), sign_bit
