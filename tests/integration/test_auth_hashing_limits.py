"""Password hashing under concurrent load, against the real server: the per-address login limit holds
for parallel attempts (the attempt is counted before the hash), and Argon2 runs at most
``password_hash_concurrency`` at a time however many requests arrive together."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from ridehail.auth.passwords import PasswordHasher
from tests.fixtures.auth import AuthService, serve_auth
from tests.integration.auth_http import PASSWORD, login, new_email, register

pytestmark = pytest.mark.integration

BAD_CREDENTIALS = (400,)  # the status a wrong password gets (RFC 6749 invalid_grant)


class CountingHasher(PasswordHasher):
    """The real Argon2 hasher, counting how many hashes run at the same moment (across threads)."""

    def __init__(self, like: PasswordHasher) -> None:
        super().__init__(like.memory_kib, like.time_cost, like.parallelism)
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.calls = 0

    def _enter(self) -> None:
        with self._lock:
            self.running += 1
            self.calls += 1
            self.peak = max(self.peak, self.running)

    def _leave(self) -> None:
        with self._lock:
            self.running -= 1

    def hash(self, password: str) -> str:
        self._enter()
        try:
            return super().hash(password)
        finally:
            self._leave()

    def verify_and_update(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        self._enter()
        try:
            return super().verify_and_update(password, password_hash)
        finally:
            self._leave()

    def dummy_verify(self, password: str) -> bool:
        self._enter()
        try:
            return super().dummy_verify(password)
        finally:
            self._leave()


def counting(service: AuthService) -> CountingHasher:
    hasher = CountingHasher(service.state.hasher)
    hasher.dummy_verify("warm the dummy hash up")  # its first use hashes once more: not part of the count
    hasher.calls = hasher.peak = 0
    service.state.hasher = hasher
    return hasher


def parallel_client(service: AuthService) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.AsyncClient(base_url=service.base_url, timeout=60.0, limits=limits)


async def test_parallel_logins_from_one_address_stop_at_its_limit(database_url: str) -> None:
    with serve_auth(database_url, ip_attempts_per_minute=3) as service:
        hasher = counting(service)
        async with parallel_client(service) as c:
            results = await asyncio.gather(*(login(c, new_email(f"spray{i}"), "wrong password!") for i in range(12)))
        codes = sorted(r.status_code for r in results)
        # the limit is 3 failed logins a minute: 3 guesses are checked, 9 are refused before any hash
        assert [c for c in codes if c in BAD_CREDENTIALS] == [codes[0]] * 3, codes
        assert codes.count(429) == 9, codes
        assert hasher.calls == 3


async def test_parallel_login_code_guesses_stop_at_the_address_limit(database_url: str) -> None:
    with serve_auth(database_url, ip_attempts_per_minute=3) as service:
        async with parallel_client(service) as c:
            results = await asyncio.gather(*(c.post("/auth/exchange", json={"code": f"guess-{i}"}) for i in range(12)))
        codes = sorted(r.status_code for r in results)
        assert codes.count(429) == 9 and codes.count(401) == 3, codes


async def test_a_successful_login_does_not_use_up_the_address_budget(database_url: str) -> None:
    with serve_auth(database_url, ip_attempts_per_minute=2) as service:
        async with parallel_client(service) as c:
            email = new_email()
            assert (await register(c, email)).status_code == 201
            for _ in range(4):  # successes are not failures: they never fill the window
                assert (await login(c, email, PASSWORD)).status_code == 200
            for i in range(2):
                assert (await login(c, new_email(f"miss{i}"), "wrong password!")).status_code in BAD_CREDENTIALS
            assert (await login(c, email, PASSWORD)).status_code == 429


async def test_password_hashes_run_at_most_the_configured_number_at_once(database_url: str) -> None:
    with serve_auth(database_url, password_hash_concurrency=2) as service:
        hasher = counting(service)
        async with parallel_client(service) as c:
            logins = [login(c, new_email(f"many{i}"), "wrong password!") for i in range(10)]
            signups = [register(c, new_email(f"signup{i}")) for i in range(6)]
            results: list[Any] = await asyncio.gather(*logins, *signups)
        assert [r.status_code for r in results[:10]] == [results[0].status_code] * 10
        assert results[0].status_code in BAD_CREDENTIALS
        assert [r.status_code for r in results[10:]] == [201] * 6
        assert hasher.calls == 16
        assert hasher.peak <= 2, f"{hasher.peak} Argon2 hashes ran at once"


async def test_a_full_hash_queue_answers_503_with_retry_after(database_url: str) -> None:
    with serve_auth(database_url, password_hash_concurrency=1, password_hash_queue=1) as service:
        hasher = counting(service)
        async with parallel_client(service) as c:
            results = await asyncio.gather(*(login(c, new_email(f"queue{i}"), "wrong password!") for i in range(8)))
            codes = [r.status_code for r in results]
            busy = [r for r in results if r.status_code == 503]
            assert busy and all(r.headers["retry-after"] == "1" for r in busy), codes
            assert all(r.json()["error"] == "temporarily_unavailable" for r in busy)
            assert set(codes) <= {503, *BAD_CREDENTIALS}, codes
            assert hasher.calls == len(results) - len(busy) and hasher.peak == 1
            # a refused login was never checked: it cost the account nothing, and later it goes through
            assert (await login(c, new_email("later"), "wrong password!")).status_code in BAD_CREDENTIALS


async def test_a_registration_refused_as_busy_does_not_use_up_the_address_budget(database_url: str) -> None:
    settings = {"password_hash_concurrency": 1, "password_hash_queue": 0, "ip_attempts_per_minute": 3}
    with serve_auth(database_url, **settings) as service:
        async with parallel_client(service) as c:
            wave = await asyncio.gather(*(register(c, new_email(f"wave{i}")) for i in range(3)))
            codes = sorted(r.status_code for r in wave)
            assert 201 in codes and set(codes) <= {201, 503}, codes
            # the address may register 3 times a minute; only the registrations that ran count
            for i in range(3 - codes.count(201)):
                assert (await register(c, new_email(f"after{i}"))).status_code == 201
            assert (await register(c, new_email("one-too-many"))).status_code == 429
