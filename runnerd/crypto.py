"""Secrets at rest: registry passwords and env values are Fernet-encrypted in the
database with a key kept outside it.

The key lives in `<data_dir>/secret.key` (made on first start, mode 0600) or in
`[storage] secret_key_file`. A check value in the database tells at start
whether the key is the one the data was written with: a lost or swapped key is
a clear error then, never garbage later.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

PREFIX = "enc:v1:"  # marks a stored value as encrypted
CHECK_PLAINTEXT = "runnerd secret key check"


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

    def encrypt(self, value: str) -> str:
        return PREFIX + self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def decrypt(self, stored: str) -> str:
        """A stored value back to text; values stored before encryption pass through."""
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise SecretKeyError("a stored secret cannot be decrypted with this key") from None

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
