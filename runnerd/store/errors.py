"""The store's errors, and the translation of SQLite's broken rules into them."""

from __future__ import annotations

import sqlite3
from typing import Literal


class StoreError(Exception):
    pass


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    """A uniqueness or state rule was broken; the message says which, naming the field."""


class conflict_as:
    """Turn a broken rule in its block into Conflict with the message given for its
    kind: uniqueness (`message`), a foreign key, a CHECK. Any other stays as it is."""

    def __init__(
        self, message: str, *, foreign_key: str | None = None, check: str | None = None
    ) -> None:
        self.messages = {
            sqlite3.SQLITE_CONSTRAINT_UNIQUE: message,
            sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY: foreign_key,
            sqlite3.SQLITE_CONSTRAINT_CHECK: check,
        }

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> Literal[False]:
        if isinstance(error, sqlite3.IntegrityError):
            message = self.messages.get(error.sqlite_errorcode)
            if message is not None:
                raise Conflict(message) from None
        return False
