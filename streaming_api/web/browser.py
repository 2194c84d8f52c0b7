"""The browser page: GET / and its static files, open to all (the data endpoints still need a token)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Only this origin's own files: the page works offline and runs no code from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # The token lives in the fragment, which browsers never send; no Referer leaks the rest either.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index, name="index")
    app.router.add_static("/static/", STATIC_DIR, name="static")
