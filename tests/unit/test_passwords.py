"""Password policy and Argon2id hashing."""

from __future__ import annotations

import re

import pytest
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from ridehail.auth.passwords import (
    MAX_LENGTH,
    PasswordHasher,
    PasswordRejected,
    check_password_policy,
    common_passwords,
)

ARGON2_FORMAT = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$")


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher()


def test_hash_uses_argon2id_at_or_above_the_owasp_minimum(hasher: PasswordHasher) -> None:
    stored = hasher.hash("correct horse battery")
    match = ARGON2_FORMAT.match(stored)
    assert match, stored
    memory, time_cost, parallelism = map(int, match.groups())
    assert (memory, time_cost, parallelism) == (19456, 2, 1)
    assert hasher.verify("correct horse battery", stored)
    assert not hasher.verify("correct horse battery ", stored)
    assert not hasher.verify("Correct horse battery", stored)


def test_hashes_are_salted(hasher: PasswordHasher) -> None:
    assert hasher.hash("same password here") != hasher.hash("same password here")


def test_parameters_below_the_minimum_are_refused() -> None:
    for kwargs in ({"memory_kib": 8192}, {"time_cost": 1}, {"parallelism": 0}):
        with pytest.raises(ValueError, match="OWASP"):
            PasswordHasher(**kwargs)  # type: ignore[arg-type]


def test_unparsable_stored_hash_never_verifies(hasher: PasswordHasher) -> None:
    for stored in ("", "!login-code-only", "$argon2id$garbage", "plaintext"):
        assert hasher.verify("anything at all", stored) is False
        assert hasher.verify_and_update("anything at all", stored) == (False, None)


def test_dummy_verify_always_fails(hasher: PasswordHasher) -> None:
    assert hasher.dummy_verify("dummy-password-for-timing-equalisation") is False
    assert hasher.dummy_verify("whatever") is False


def test_weaker_legacy_hash_is_upgraded_on_login(hasher: PasswordHasher) -> None:
    legacy = PasswordHash((Argon2Hasher(memory_cost=8192, time_cost=1, parallelism=1),)).hash("an old password")
    ok, new_hash = hasher.verify_and_update("an old password", legacy)
    assert ok and new_hash is not None
    assert "m=19456,t=2,p=1" in new_hash
    current = hasher.hash("a fresh password")
    assert hasher.verify_and_update("a fresh password", current) == (True, None)


@pytest.mark.parametrize(
    "password",
    [
        "eight ch",
        "x" * 6 + "yz",
        "a" * 60 + "bc" * 34,  # 128 characters
        "z" * 250 + "abcdef",  # MAX_LENGTH characters
        "pässwörd-ñandú",
        "🚕🚗🚙🚕🚕🚕🚕🚕",
        "日本語のパスワードです",
        "with 'quotes' and; DROP TABLE users; --",
        "Ωmega 👩‍👩‍👧 family",
    ],
)
def test_acceptable_passwords(password: str) -> None:
    assert len(password) <= MAX_LENGTH
    check_password_policy(password, "someone@example.com")


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "at least 8"),
        ("1234567", "at least 8"),
        ("a" * 200 + "b" * 57, "at most 256"),
        ("password", "too common"),
        ("PassWord123", "too common"),
        ("qwertyuiop", "too common"),
        ("aaaaaaaaaaaa", "repetitive"),
        ("11111111", "too common"),
        ("abababababab", "repetitive"),
        ("nul\x00inside", "control"),
        ("tab\tinside pw", "control"),
        ("lone \ud800 surrogate", "invalid"),
        ("someone@example.com", "email"),
        ("SOMEONE", "at least 8"),
        ("someone-long", None),
    ],
)
def test_rejected_passwords(password: str, reason: str | None) -> None:
    if reason is None:
        check_password_policy(password, "someone@example.com")
        return
    with pytest.raises(PasswordRejected, match=reason):
        check_password_policy(password, "someone@example.com")


def test_local_part_of_the_email_is_rejected_as_password() -> None:
    with pytest.raises(PasswordRejected, match="email"):
        check_password_policy("Margaret.Hamilton", "margaret.hamilton@example.com")


def test_common_password_list_is_shipped_and_lowercase() -> None:
    words = common_passwords()
    assert 200 <= len(words) <= 1000
    assert all(w == w.lower() for w in words)
    assert {"password", "12345678", "iloveyou", "qwertyuiop"} <= words
