"""The operations dashboard: `GET /dashboard` and its assets, served from the package.

The page holds no data of its own: its scripts read the admin API (the same endpoints and the
same roles as every other admin client) with the token the operator signs in with, kept in the
browser's session storage only. So the assets are served without a token, and every figure the
page shows comes from an admin endpoint. Everything ships in the package — no CDN, no third-party
script — and the page is served with a strict Content-Security-Policy and the usual security
headers. Only the files listed in `ASSETS` are served; any other path is a 404.
"""

from __future__ import annotations

from importlib import resources

from hybridroute.api.http import Receive, Scope, Send
from hybridroute.errors import NotFound
from hybridroute.runtime import Runtime

__all__ = ["ASSETS", "DASHBOARD_PATHS", "SECURITY_HEADERS", "dashboard_asset"]

_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cache-control", b"no-cache"),
)


def _load() -> dict[str, tuple[bytes, bytes]]:
    folder = resources.files("hybridroute.api").joinpath("static")
    assets: dict[str, tuple[bytes, bytes]] = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in _TYPES:
            assets[item.name] = (_TYPES[suffix], item.read_bytes())
    return assets


ASSETS = _load()
DASHBOARD_PATHS = ("/dashboard", "/dashboard/", *(f"/dashboard/{name}" for name in ASSETS))


async def dashboard_asset(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    name = scope["path"].removeprefix("/dashboard").strip("/") or "index.html"
    asset = ASSETS.get(name)
    if asset is None:  # the route table lists only known files; kept as a second guard
        raise NotFound(f"no dashboard file {name!r}")
    content_type, body = asset
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
