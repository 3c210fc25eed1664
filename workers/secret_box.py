"""Sealing the secrets of scheduled exports' destinations: AES-256-GCM, keyed from the settings, with rotation.

A sealed secret is `v1` | the key's id (the first 8 bytes of its SHA-256) | a 12-byte random nonce |
the ciphertext and its tag. The row's id is the associated data, so a sealed secret only opens on
the row it was sealed for. The key id tells which key opens it: the current SECRETS_ENCRYPTION_KEY
or one of SECRETS_ENCRYPTION_OLD_KEYS, so keys can be rotated without a moment of downtime.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.settings import Settings

_VERSION = b"v1"
_NONCE_BYTES = 12
_KEY_ID_BYTES = 8


class SecretBoxError(Exception):
    """A sealed secret that no configured key opens (a lost or wrong key, or a tampered value)."""


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:_KEY_ID_BYTES]


class SecretBox:
    def __init__(self, current: str, old: tuple[str, ...] = ()):
        self._current = bytes.fromhex(current)
        self._keys = {_key_id(k): AESGCM(k) for k in (self._current, *(bytes.fromhex(o) for o in old))}

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        return cls(settings.SECRETS_ENCRYPTION_KEY, settings.SECRETS_ENCRYPTION_OLD_KEYS)

    def seal(self, secret: str, row_id: str) -> bytes:
        key_id = _key_id(self._current)
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + key_id + nonce + self._keys[key_id].encrypt(nonce, secret.encode(), row_id.encode())

    def open(self, sealed: bytes, row_id: str) -> str:
        sealed = bytes(sealed)
        if not sealed.startswith(_VERSION):
            raise SecretBoxError("the stored secret is not in a format this version knows")
        key_id = sealed[len(_VERSION) : len(_VERSION) + _KEY_ID_BYTES]
        rest = sealed[len(_VERSION) + _KEY_ID_BYTES :]
        aead = self._keys.get(key_id)
        if aead is None:
            raise SecretBoxError(
                "the stored secret was sealed with a key that is neither SECRETS_ENCRYPTION_KEY nor one of"
                " SECRETS_ENCRYPTION_OLD_KEYS: set the destination's secret again"
            )
        try:
            return aead.decrypt(rest[:_NONCE_BYTES], rest[_NONCE_BYTES:], row_id.encode()).decode()
        except InvalidTag:
            raise SecretBoxError("the stored secret does not open: it was altered, or belongs to another row") from None

    def is_current(self, sealed: bytes) -> bool:
        """Whether `sealed` is sealed with the current key (else a reseal moves it onto it)."""
        return bytes(sealed)[len(_VERSION) : len(_VERSION) + _KEY_ID_BYTES] == _key_id(self._current)
