"""What every aggregate of the store shares: the connections and the secret box."""

from __future__ import annotations

import json
from typing import Any

from ..crypto import SecretBox
from .connection import Database


class Aggregate:
    """A part of `Store` (runners, runs, ...): its methods, its SQL. The facade
    `Store` inherits them all, so callers keep one object."""

    _db: Database
    _box: SecretBox | None

    @property
    def box(self) -> SecretBox:
        assert self._box is not None, "store is not open"
        return self._box


def json_or_null(value: Any) -> str | None:
    return None if value is None else json.dumps(value)
