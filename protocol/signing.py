"""Ed25519 keys, key ids and the canonical form that signatures cover.

Signing and verifying go through PyNaCl (libsodium): on a Pi Zero it costs a
few MiB where `cryptography`'s own OpenSSL cost over 8 (docs/benchmarks.md,
"Agent footprint"). Only the controller reads and writes its private key as
PEM (PKCS#8), through `cryptography`, which it installs and an edge does not.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey as NaclSigningKey
from nacl.signing import VerifyKey

from protocol.errors import ProtocolError


def canonical_json(obj: Any) -> bytes:
    """JSON with sorted keys, no whitespace, UTF-8: what the signature covers."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    if not isinstance(text, str):
        raise ProtocolError("base64url text expected")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"not base64url: {exc}") from exc


def key_id(public_raw: bytes) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    kid: str
    key: VerifyKey

    @classmethod
    def from_b64(cls, text: str, kid: str | None = None) -> PublicKey:
        raw = unb64url(text)
        if len(raw) != 32:
            raise ProtocolError("an Ed25519 public key is 32 bytes (43 base64url characters)")
        actual = key_id(raw)
        if kid is not None and kid != actual:
            raise ProtocolError(f"key id {kid!r} does not match the key (its id is {actual!r})")
        return cls(actual, VerifyKey(raw))

    @property
    def raw(self) -> bytes:
        return bytes(self.key)

    @property
    def b64(self) -> str:
        return b64url(self.raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        if len(signature) != 64:  # libsodium would read past a short one as the message
            return False
        try:
            self.key.verify(message, signature)
        except BadSignatureError:
            return False
        return True


class SigningKey:
    """The controller's private key; only the controller holds one."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ProtocolError("an Ed25519 private key is a 32-byte seed")
        self._private = NaclSigningKey(seed)
        raw = bytes(self._private.verify_key)
        self.public = PublicKey(key_id(raw), self._private.verify_key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(bytes(NaclSigningKey.generate()))

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        # imported here: the controller's extra installs it, an edge never needs it
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"not a PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ProtocolError("the signing key must be an Ed25519 key")
        return cls(key.private_bytes_raw())

    def to_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(bytes(self._private)).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def kid(self) -> str:
        return self.public.kid

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message).signature


class Keyring:
    """The public keys an edge trusts, by key id (several during a rotation)."""

    def __init__(self, keys: Iterable[PublicKey] = ()) -> None:
        self._keys: dict[str, PublicKey] = {k.kid: k for k in keys}

    @classmethod
    def from_mapping(cls, keys: Mapping[str, str]) -> Keyring:
        return cls(PublicKey.from_b64(b64, kid) for kid, b64 in keys.items())

    def get(self, kid: str) -> PublicKey | None:
        return self._keys.get(kid)

    def __len__(self) -> int:
        return len(self._keys)

    def kids(self) -> list[str]:
        return sorted(self._keys)
