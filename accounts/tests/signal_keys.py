"""Test-side key material in libsignal's serialised forms (no libsignal needed in Python).

The identity key is an Ed25519 key published as its Curve25519 (Montgomery) form, and its
signatures carry the Edwards sign bit in the top bit of the last byte: exactly what XEdDSA
verifiers (libsignal's, and ours in ``accounts.xeddsa``) accept. One-time prekeys are real
X25519 public keys; Kyber public keys are random bytes of the right shape (the server never
uses them, it only checks the identity key's signature over them).
"""

from __future__ import annotations

import base64
import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from accounts import xeddsa

_ids = itertools.count(1)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def ec_public_key() -> bytes:
    raw = (
        X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return b"\x05" + raw


def kyber_public_key() -> bytes:
    return b"\x08" + os.urandom(1568)


@dataclass
class SignalIdentity:
    private: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    registration_id: int = field(default_factory=lambda: 1 + next(_ids) % 16000)
    public_key: bytes = field(init=False)
    _sign_bit: int = field(init=False)

    def __post_init__(self) -> None:
        edwards = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        u, self._sign_bit = xeddsa.edwards_to_montgomery(edwards)
        self.public_key = b"\x05" + u

    def sign(self, message: bytes) -> bytes:
        signature = bytearray(self.private.sign(message))
        signature[63] |= self._sign_bit << 7
        return bytes(signature)

    def signed_key(self, key_id: int, public_key: bytes) -> dict[str, Any]:
        return {"id": key_id, "public_key": b64(public_key), "signature": b64(self.sign(public_key))}

    def upload(
        self,
        device_id: int,
        *,
        one_time: range | list[int] = range(1, 6),
        kyber: range | list[int] = range(1, 6),
        last_resort_id: int = 10_000,
        signed_prekey_id: int = 1,
        full: bool = True,
    ) -> dict[str, Any]:
        """A ``PUT keys`` body."""
        body: dict[str, Any] = {
            "device_id": device_id,
            "registration_id": self.registration_id,
            "identity_key": b64(self.public_key),
            "one_time_prekeys": [{"id": i, "public_key": b64(ec_public_key())} for i in one_time],
            "kyber_prekeys": [self.signed_key(i, kyber_public_key()) for i in kyber],
        }
        if full:
            body["signed_prekey"] = self.signed_key(signed_prekey_id, ec_public_key())
            body["last_resort_kyber_prekey"] = self.signed_key(last_resort_id, kyber_public_key())
        return body
