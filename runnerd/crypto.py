"""Secrets at rest: registry passwords and env values are encrypted in the
database with a key kept outside it.

New values are AES-256-GCM (`enc:v2:`, one C call each way: a trigger seals its
run's env on the request path, where Fernet's CBC + HMAC layers cost ~10 % of a
trigger's CPU); values written before that are Fernet (`enc:v1:`) and still
decrypt. Both use the one key file: Fernet takes it as it is, AES-GCM a key
derived from it with HKDF, so the two never share key material.

The key lives in `<data_dir>/secret.key` (made on first start, mode 0600) or in
`[storage] secret_key_file`. A check value in the database tells at start
whether the key is the one the data was written with: a lost or swapped key is
a clear error then, never garbage later.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FERNET_PREFIX = "enc:v1:"  # Fernet, as values were written before AES-GCM
AESGCM_PREFIX = "enc:v2:"  # AES-256-GCM: base64url(12-byte nonce + ciphertext + tag)
PREFIXES = (FERNET_PREFIX, AESGCM_PREFIX)
CHECK_PLAINTEXT = "runnerd secret key check"
NONCE_BYTES = 12
AESGCM_KEY_INFO = b"runnerd enc:v2 AES-256-GCM"


def is_encrypted(stored: str) -> bool:
    return stored.startswith(PREFIXES)


class SecretKeyError(Exception):
    """The key is missing, unreadable, malformed or not the database's."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise SecretKeyError(
                "the secret key is not a valid Fernet key (32 url-safe base64-encoded bytes)"
            ) from None
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=AESGCM_KEY_INFO
        ).derive(base64.urlsafe_b64decode(key))
        self._aesgcm = AESGCM(derived)

    def encrypt(self, value: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aesgcm.encrypt(nonce, value.encode("utf-8"), None)
        return AESGCM_PREFIX + base64.urlsafe_b64encode(sealed).decode("ascii")

    def decrypt(self, stored: str) -> str:
        """A stored value back to text; values stored before encryption pass through."""
        try:
            if stored.startswith(AESGCM_PREFIX):
                sealed = base64.b64decode(
                    stored[len(AESGCM_PREFIX) :], altchars=b"-_", validate=True
                )
                nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
                return self._aesgcm.decrypt(nonce, ciphertext, None).decode("utf-8")
            if stored.startswith(FERNET_PREFIX):
                token = stored[len(FERNET_PREFIX) :].encode("ascii")
                return self._fernet.decrypt(token).decode("utf-8")
        except (InvalidTag, InvalidToken, binascii.Error, ValueError):
            # ValueError: a truncated value (AES-GCM wants its 16-byte tag).
            raise SecretKeyError("a stored secret cannot be decrypted with this key") from None
        return stored

    def check_value(self) -> str:
        return self.encrypt(CHECK_PLAINTEXT)

    def matches(self, check_value: str) -> bool:
        try:
            return self.decrypt(check_value) == CHECK_PLAINTEXT
        except SecretKeyError:
            return False


def load_key(path: Path, *, create: bool) -> bytes:
    """Read the key file; make a new one (mode 0600) when it is missing and `create`."""
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        if not create:
            raise SecretKeyError(f"the secret key file {path} is missing") from None
        key = Fernet.generate_key()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
            f.flush()
            os.fsync(f.fileno())
        return key
    except OSError as e:
        raise SecretKeyError(f"the secret key file {path} cannot be read: {e.strerror}") from None
    try:
        Fernet(key)
    except (ValueError, TypeError):
        raise SecretKeyError(
            f"the secret key file {path} does not hold a valid Fernet key "
            "(32 url-safe base64-encoded bytes); restore it from your "
            "backup"
        ) from None
    return key
