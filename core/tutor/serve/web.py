"""The web tutor page at `/`: static files shipped in the wheel (serve/static/), the libraries it uses vendored with their licences.

The page is public code with no data in it, so it needs no key; it asks the
user for one and sends it with every API call. Everything a model writes is
rendered as Markdown, then sanitised, before it reaches the page (app.js).
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"
# The page's own policy, also sent as a header: no inline script, nothing from elsewhere.
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; font-src 'self' data:; "
          "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


def is_page(path: str) -> bool:
    return path == "/" or path.startswith("/static/")


def add_routes(app) -> None:
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    headers = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers=headers)

    @app.middleware("http")
    async def page_headers(request, call_next):
        response = await call_next(request)
        if request.url.path.startswith("/static/"):
            response.headers.update(headers)
        return response

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
