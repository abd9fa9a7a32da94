"""Password policy and hashing (Argon2id via pwdlib, parameters at or above OWASP's minimum).

Hashing costs ~16 ms of CPU at m=19 MiB, t=2, p=1: callers run it in a worker thread
(``run_in_threadpool``), never on the event loop.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from importlib import resources

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

MIN_LENGTH = 8
MAX_LENGTH = 256


class PasswordRejected(ValueError):
    """The password breaks the policy; ``str(exc)`` is a reason safe to show the user."""


@functools.cache
def common_passwords() -> frozenset[str]:
    """A few hundred very common passwords (lower-cased); the full breach lists are too big to ship."""
    text = resources.files("ridehail.auth").joinpath("common_passwords.json").read_text("utf-8")
    return frozenset(p.lower() for p in json.loads(text))


def has_unsafe_characters(value: str) -> bool:
    """True for text Postgres or UTF-8 cannot hold (NUL, lone surrogates) or other control characters."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return any(unicodedata.category(ch) == "Cc" for ch in value)


def check_password_policy(password: str, email: str | None = None) -> None:
    """Raise PasswordRejected unless ``password`` is acceptable. No composition rules (NIST/ASVS)."""
    if has_unsafe_characters(password):
        raise PasswordRejected("password contains control or invalid characters")
    if len(password) < MIN_LENGTH:
        raise PasswordRejected(f"password must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordRejected(f"password must be at most {MAX_LENGTH} characters")
    lowered = password.lower()
    if lowered in common_passwords():
        raise PasswordRejected("password is too common")
    if len(set(password)) < 3:
        raise PasswordRejected("password is too repetitive")
    if email and (lowered == email.lower() or lowered == email.split("@", 1)[0].lower()):
        raise PasswordRejected("password must not be the email address")


class PasswordHasher:
    """Argon2id hashing with explicit parameters, plus a dummy hash for unknown users."""

    def __init__(self, memory_kib: int = 19456, time_cost: int = 2, parallelism: int = 1) -> None:
        if memory_kib < 19456 or time_cost < 2 or parallelism < 1:
            raise ValueError("Argon2id parameters below the OWASP minimum (m=19456 KiB, t=2, p=1)")
        self.memory_kib = memory_kib
        self.time_cost = time_cost
        self.parallelism = parallelism
        self._hash = PasswordHash((Argon2Hasher(memory_cost=memory_kib, time_cost=time_cost, parallelism=parallelism),))
        self._dummy_hash: str | None = None

    def hash(self, password: str) -> str:
        return self._hash.hash(password)

    def verify(self, password: str, password_hash: str) -> bool:
        try:
            return self._hash.verify(password, password_hash)
        except Exception:  # an unparsable stored hash never verifies
            return False

    def verify_and_update(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        """Verify, and return a new hash if the stored one uses weaker parameters than today's."""
        try:
            return self._hash.verify_and_update(password, password_hash)
        except Exception:
            return False, None

    def dummy_verify(self, password: str) -> bool:
        """Spend the same work as a real verification (for unknown users); always False."""
        if self._dummy_hash is None:
            self._dummy_hash = self.hash("dummy-password-for-timing-equalisation")
        self._hash.verify(password.encode("utf-8", "surrogatepass"), self._dummy_hash)
        return False
