"""API keys: made once, shown once, stored only as a hash.

A secret is 32 random bytes, so a plain SHA-256 is enough to make the stored
hash useless to whoever reads the database (no dictionary to try against it),
and lets a request's key be looked up by its hash in one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets

SECRET_PREFIX = "rnd_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def secret_from_header(authorization: str | None) -> str | None:
    """`Bearer <key>` or a bare key → the key; anything else → None."""
    if not authorization:
        return None
    value = authorization.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        value = rest.strip()
    return value or None
