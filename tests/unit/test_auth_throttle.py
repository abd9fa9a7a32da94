"""Login throttles: per-account exponential backoff and per-address sliding windows (clock injected)."""

from __future__ import annotations

from ridehail.auth.throttle import AccountBackoff, WindowLimiter, retry_after_header


def test_backoff_starts_after_the_free_failures_and_doubles() -> None:
    backoff = AccountBackoff(free_failures=3, base_s=1.0, max_s=10.0)
    waits = [backoff.failure("a@example.com", now=100.0) for _ in range(7)]
    assert waits == [0.0, 0.0, 0.0, 1.0, 2.0, 4.0, 8.0]
    assert backoff.retry_after("a@example.com", now=100.0) == 8.0
    assert backoff.retry_after("a@example.com", now=104.0) == 4.0
    assert backoff.retry_after("a@example.com", now=108.0) == 0.0
    assert backoff.failure("a@example.com", now=108.0) == 10.0  # capped
    assert backoff.retry_after("b@example.com", now=108.0) == 0.0  # other accounts untouched


def test_success_and_idle_time_clear_the_backoff() -> None:
    backoff = AccountBackoff(free_failures=0, base_s=2.0, forget_after_s=60.0)
    backoff.failure("a", now=0.0)
    assert backoff.retry_after("a", now=0.0) == 2.0
    backoff.success("a")
    assert backoff.retry_after("a", now=0.0) == 0.0 and backoff.failures("a") == 0
    backoff.failure("b", now=0.0)
    backoff.failure("b", now=1.0)
    assert backoff.failures("b") == 2
    assert backoff.failure("b", now=100.0) == 2.0  # forgotten after 60 s idle: counts from 1 again
    assert backoff.failures("b") == 1


def test_backoff_memory_is_bounded() -> None:
    backoff = AccountBackoff(free_failures=0, max_keys=100)
    for i in range(1000):
        backoff.failure(f"user{i}", now=0.0)
    assert len(backoff._state) == 100
    assert backoff.failures("user999") == 1 and backoff.failures("user0") == 0


def test_window_limiter_counts_per_key_and_slides() -> None:
    limiter = WindowLimiter(limit=3, window_s=60.0)
    assert [limiter.hit("1.2.3.4", now=t) for t in (0.0, 10.0, 20.0)] == [0.0, 0.0, 0.0]
    assert limiter.hit("1.2.3.4", now=30.0) == 30.0  # the oldest event leaves at t=60
    assert limiter.hit("5.6.7.8", now=30.0) == 0.0
    assert limiter.hit("1.2.3.4", now=60.0) == 0.0
    assert limiter.retry_after("1.2.3.4", now=61.0) == 9.0


def test_retry_after_header_rounds_up_to_whole_seconds() -> None:
    assert retry_after_header(0.001) == "1"
    assert retry_after_header(1.2) == "2"
    assert retry_after_header(30.0) == "30"


def test_a_released_place_is_free_again_and_others_stay_counted() -> None:
    limiter = WindowLimiter(limit=2, window_s=60.0)
    assert limiter.hit("1.2.3.4", now=1.0) == 0.0  # taken before the outcome is known
    assert limiter.hit("1.2.3.4", now=2.0) == 0.0
    assert limiter.hit("1.2.3.4", now=3.0) == 58.0  # full: the third attempt waits for t=61
    limiter.release("1.2.3.4", at=1.0)  # the first attempt turned out fine
    assert limiter.retry_after("1.2.3.4", now=3.0) == 0.0
    assert limiter.hit("1.2.3.4", now=3.0) == 0.0
    assert limiter.retry_after("1.2.3.4", now=4.0) == 58.0  # the attempt at t=2 still counts
    limiter.release("1.2.3.4", at=99.0)  # nothing counted then: no effect
    limiter.release("9.9.9.9", at=1.0)
    assert limiter.retry_after("1.2.3.4", now=4.0) == 58.0
