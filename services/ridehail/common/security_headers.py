"""Security headers on every response of an app (ASGI middleware), and the Content-Security-Policy
of an HTML page built from the page itself.

Every response gets ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``. A
response that sets no ``Content-Security-Policy`` of its own gets one: JSON, files and errors the
strictest (``default-src 'none'``: nothing loads, nothing frames it); an HTML page one that allows
its own origin plus, for each inline ``<script>`` and ``<style>`` element, exactly that element
(by its SHA-256 hash, CSP level 2): never ``'unsafe-inline'`` and never ``'unsafe-eval'``. A page
whose code needs more (the map's websocket on another port, an opt-in tile server, the API docs'
CDN) builds its policy with :func:`html_policy` and sets it itself.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

STRICT_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
REFERRER_POLICY = "no-referrer"
DOCS_CDN = ("https://cdn.jsdelivr.net",)  # FastAPI's Swagger UI page loads its assets from there

# Inline elements as the browser hashes them: the exact text between the tags.
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script\s*>", re.S | re.I)
_INLINE_STYLE = re.compile(rb"<style[^>]*>(.*?)</style\s*>", re.S | re.I)


def _sha256(content: bytes) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(content).digest()).decode() + "'"


def inline_hashes(html: bytes) -> tuple[list[str], list[str]]:
    """CSP hash sources of the page's inline scripts and inline style elements (in page order)."""
    scripts = list(dict.fromkeys(_sha256(m) for m in _INLINE_SCRIPT.findall(html)))
    styles = list(dict.fromkeys(_sha256(m) for m in _INLINE_STYLE.findall(html)))
    return scripts, styles


def html_policy(
    html: bytes,
    *,
    connect: Iterable[str] = (),
    img: Iterable[str] = (),
    script: Iterable[str] = (),
    style: Iterable[str] = (),
) -> str:
    """The CSP of one HTML page: its own origin, its inline elements by hash, and the extra sources."""
    scripts, styles = inline_hashes(html)
    directives = [
        "default-src 'none'",
        " ".join(["script-src 'self'", *script, *scripts]),
        " ".join(["style-src 'self'", *style, *styles]),
        " ".join(["img-src 'self' data:", *img]),
        " ".join(["connect-src 'self'", *connect]),
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ]
    return "; ".join(directives)


class SecurityHeaders:
    """Adds the headers above to every HTTP response; HTML without a policy is buffered (pages are
    small) to hash its inline elements."""

    def __init__(self, app: ASGIApp, html_sources: dict[str, dict[str, tuple[str, ...]]] | None = None) -> None:
        self.app = app
        self.html_sources = html_sources or {}  # path -> extra sources per directive (e.g. the docs' CDN)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_with_headers(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _ALWAYS]
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", REFERRER_POLICY.encode())]
                names = {k.lower() for k, _ in headers}
                content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if b"content-security-policy" not in names:
                    if content_type.startswith(b"text/html"):
                        start = {**message, "headers": headers}
                        return  # wait for the body: the policy hashes its inline elements
                    headers.append((b"content-security-policy", STRICT_POLICY.encode()))
                await send({**message, "headers": headers})
                return
            if start is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = b"".join(chunks)
                extra = self.html_sources.get(scope.get("path", ""), {})
                policy = html_policy(body, **extra)
                headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                headers += [(b"content-security-policy", policy.encode()), (b"content-length", str(len(body)).encode())]
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, send_with_headers)


_ALWAYS = {b"x-content-type-options", b"referrer-policy"}
