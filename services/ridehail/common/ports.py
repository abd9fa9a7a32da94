"""Local TCP ports: is one free, and a free one for a throw-away server."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it; another process may take it later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_port_run(n: int, host: str = "127.0.0.1", attempts: int = 200) -> int:
    """The first of ``n`` consecutive ports nothing listens on right now (for services that take
    ``base + i``); :class:`RuntimeError` if none is found in ``attempts`` tries."""
    for _ in range(attempts):
        base = free_port(host)
        if base + n - 1 <= 65535 and all(port_is_free(host, base + i) for i in range(1, n)):
            return base
    raise RuntimeError(f"found no {n} consecutive free ports on {host}")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
