"""Secrets at rest: new values are AES-256-GCM (`enc:v2:`), values written as Fernet
before it (`enc:v1:`) still decrypt, and nothing decrypts with another key."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from runnerd.crypto import (
    AESGCM_PREFIX,
    FERNET_PREFIX,
    SecretBox,
    SecretKeyError,
    is_encrypted,
)
from runnerd.store import Store


def fernet_value(key: bytes, text: str) -> str:
    """A value as runnerd stored it before AES-GCM."""
    return FERNET_PREFIX + Fernet(key).encrypt(text.encode()).decode()


def test_new_values_are_aes_gcm_and_read_back() -> None:
    box = SecretBox(Fernet.generate_key())
    for text in ("", "s3cret", "ünïcødé ✓", "x" * 100_000):
        stored = box.encrypt(text)
        assert stored.startswith(AESGCM_PREFIX) and is_encrypted(stored)
        assert text not in stored[len(AESGCM_PREFIX) :] or text == ""
        assert box.decrypt(stored) == text


def test_each_encryption_has_its_own_nonce() -> None:
    box = SecretBox(Fernet.generate_key())
    assert box.encrypt("same") != box.encrypt("same")


def test_values_written_as_fernet_before_still_decrypt() -> None:
    key = Fernet.generate_key()
    assert SecretBox(key).decrypt(fernet_value(key, "old secret")) == "old secret"


def test_a_check_value_of_either_format_matches_its_key_only() -> None:
    key, other = Fernet.generate_key(), Fernet.generate_key()
    box = SecretBox(key)
    for check in (box.check_value(), fernet_value(key, "runnerd secret key check")):
        assert box.matches(check)
        assert not SecretBox(other).matches(check)


@pytest.mark.parametrize("fmt", ["aes-gcm", "fernet"])
def test_another_key_cannot_decrypt_and_says_so(fmt: str) -> None:
    key = Fernet.generate_key()
    stored = SecretBox(key).encrypt("v") if fmt == "aes-gcm" else fernet_value(key, "v")
    with pytest.raises(SecretKeyError, match="cannot be decrypted with this key"):
        SecretBox(Fernet.generate_key()).decrypt(stored)


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s[:-4] + ("AAAA" if not s.endswith("AAAA") else "BBBB"),  # tag changed
        lambda s: s[: len(AESGCM_PREFIX) + 8],  # truncated below nonce + tag
        lambda s: s + "!",  # not base64
    ],
    ids=["tampered", "truncated", "not-base64"],
)
def test_a_damaged_aes_gcm_value_is_a_key_error_not_garbage(
    damage: Callable[[str], str],
) -> None:
    box = SecretBox(Fernet.generate_key())
    with pytest.raises(SecretKeyError):
        box.decrypt(damage(box.encrypt("value")))


def test_values_stored_before_encryption_pass_through() -> None:
    box = SecretBox(Fernet.generate_key())
    assert not is_encrypted("plain") and box.decrypt("plain") == "plain"


async def test_a_database_written_with_fernet_values_reads_on_after_the_upgrade(
    tmp_path: Path,
) -> None:
    """A database whose env values and key check runnerd stored as Fernet opens with
    its key, reads them, and stores what is written next as AES-GCM."""
    path = tmp_path / "runnerd.db"
    async with Store(path) as store:
        runner = await store.create_runner(
            {
                "name": "old",
                "image_name": "team/job",
                "image_tag": "1",
                "run_command": "true",
                "argv": None,
                "entrypoint": None,
                "timeout_seconds": 60,
                "instance_type": "standard-s",
            },
            [("TOKEN", "placeholder")],
        )
    key = (tmp_path / "secret.key").read_bytes().strip()
    with sqlite3.connect(path) as db:  # as an older runnerd wrote them
        db.execute("UPDATE runner_env_variables SET env_val = ?", (fernet_value(key, "old-token"),))
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'secret_check'",
            (fernet_value(key, "runnerd secret key check"),),
        )
    async with Store(path) as store:
        assert [(e.env_key, e.env_val) for e in await store.list_env(runner.id)] == [
            ("TOKEN", "old-token")
        ]
        await store.create_env(runner.id, "NEW", "new-value")
    with sqlite3.connect(path) as db:
        stored = dict(db.execute("SELECT env_key, env_val FROM runner_env_variables"))
    assert stored["TOKEN"].startswith(FERNET_PREFIX)  # not rewritten behind the user
    assert stored["NEW"].startswith(AESGCM_PREFIX)
