"""The review server: a Starlette app over a :class:`ReviewStore`, served by uvicorn.

Every request needs the one-time token printed with the URL (as Jupyter does): the first
page load carries it as ``?token=``, which sets a same-site cookie for the rest. Videos
are the dataset's own mp4 files, served with byte ranges so the browser seeks inside
them to the episode's segment (Chromium plays the AV1 and H.264 LeRobot datasets use).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from episcribe.errors import UserError
from episcribe.review.store import ReviewError, ReviewStore

COOKIE = "episcribe_review"
ASSETS = resources.files("episcribe.review") / "assets"
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


class TokenGate:
    """403 for any request without the token (query parameter or the cookie it sets)."""

    def __init__(self, app: ASGIApp, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        # Cookies ignore the port: one name per server, so two reviews side by side work.
        cookie_name = f"{COOKIE}_{request.url.port}"
        given = request.query_params.get("token") or request.cookies.get(cookie_name) or ""
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            response = PlainTextResponse(
                "episcribe review: this page needs the token in the URL that "
                "`episcribe review` printed\n",
                status_code=403,
            )
            return await response(scope, receive, send)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start" and "token" in request.query_params:
                cookie = f"{cookie_name}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message["headers"] = [*message["headers"], (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def create_app(store: ReviewStore, token: str) -> Starlette:
    # The store's work is file I/O and validation: in the thread pool, so that videos keep
    # streaming meanwhile; one lock keeps saves in the order they were made.
    lock = asyncio.Lock()

    def page(name: str):
        async def handler(request: Request):
            return HTMLResponse((ASSETS / name).read_text(encoding="utf-8"))

        return handler

    async def asset(request: Request):
        name = request.path_params["name"]
        path = ASSETS / name
        if "/" in name or Path(name).suffix not in ASSET_TYPES or not path.is_file():
            return PlainTextResponse("not found\n", status_code=404)
        return PlainTextResponse(
            path.read_text(encoding="utf-8"), media_type=ASSET_TYPES[Path(name).suffix]
        )

    async def episodes(request: Request):
        listed = await run_in_threadpool(store.summaries)
        return JSONResponse({"dataset": store.dataset.name, "episodes": listed})

    async def episode(request: Request):
        return JSONResponse(await run_in_threadpool(store.episode_view, request.path_params["n"]))

    async def save(request: Request):
        body = await request.json()
        async with lock:
            try:
                record = await run_in_threadpool(
                    store.save,
                    request.path_params["n"],
                    body.get("rows"),
                    body.get("state", "corrected"),
                    body.get("note", ""),
                )
            except ReviewError as exc:
                return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse(record)

    async def video(request: Request):
        path = store.video_path(request.path_params["n"], request.path_params["camera"])
        return FileResponse(path, media_type="video/mp4")

    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    return Starlette(
        routes=[
            Route("/", page("list.html")),
            Route("/episode/{n:int}", page("episode.html")),
            Route("/assets/{name}", asset),
            Route("/api/episodes", episodes),
            Route("/api/episodes/{n:int}", episode),
            Route("/api/episodes/{n:int}", save, methods=["PUT"]),
            Route("/video/{n:int}/{camera}", video),
        ],
        middleware=[Middleware(TokenGate, token=token)],
        exception_handlers={UserError: user_error},
    )


def serve(store: ReviewStore, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until interrupted; print the URL with its one-time token first."""
    import uvicorn

    token = secrets.token_urlsafe(24)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)  # before the URL is printed: a client may connect at once
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(
        f"episcribe review: {store.dataset.name}, {len(store.episodes())} episodes; open\n"
        f"    http://{shown}:{sock.getsockname()[1]}/?token={token}\n"
        "Ctrl-C stops the server; corrections are saved as you make them.",
        flush=True,
    )
    config = uvicorn.Config(create_app(store, token), log_level="warning", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
