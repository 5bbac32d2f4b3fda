"""The review web app (FastAPI): the page, its JSON API and the slide tiles.

Routes: ``/`` the page; ``/api/queues`` progress; ``/api/next`` the next item of a queue;
``/api/answer`` (POST, JSON) store one answer; ``/api/item/{id}`` an item with its answers;
``/slides/{id}.dzi`` and ``/slides/{id}_files/{level}/{col}_{row}.jpeg`` Deep Zoom of a slide
named in the database (by its uid: no path ever comes from the request); ``/static`` the
viewer (OpenSeadragon, shipped in the package).

With a token, every request needs it: ``?token=`` (the page then sets an HttpOnly cookie),
the ``X-Mitoscope-Token`` header or that cookie; otherwise 401.
"""

import hmac
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from .store import ANSWERS, PRIMARY_QUEUES, ReviewStore, check_reviewer
from .tiles import NotServable, TileServer

HERE = Path(__file__).parent
COOKIE = "mitoscope_token"
#: keys of the page (also shown on it): key -> answer
KEYS = {"m": "mitotic", "a": "atypical", "n": "not", "e": "equivocal"}


def create_app(
    store: ReviewStore,
    slides_dir: str | Path,
    *,
    token: str | None = None,
    reviewer: str = "",
) -> Any:
    """The FastAPI application reviewing ``store``'s detections on the slides in ``slides_dir``."""
    import jinja2
    from fastapi import Body, FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles

    tiles = TileServer(slides_dir)
    slide_names = {it.slide: it.slide_name for it in store.items}
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
    )
    app = FastAPI(title="mitoscope review", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def _security(request: Request, call_next: Any) -> Any:
        set_cookie = False
        if token:
            given = (
                request.headers.get("x-mitoscope-token")
                or request.cookies.get(COOKIE)
                or request.query_params.get("token")
                or ""
            )
            if not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"detail": "token required"}, status_code=401)
            set_cookie = request.query_params.get("token") == token
        response = await call_next(request)
        if set_cookie:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
        )
        return response

    def _bad(exc: Exception, status: int = 400) -> Any:
        raise HTTPException(status_code=status, detail=str(exc))

    @app.get("/", response_class=HTMLResponse)
    def page() -> Any:
        html = env.get_template("review.html.j2").render(
            run=store.path.parent.name + "/" + store.path.name,
            reviewer=reviewer,
            queues=[*store.queues, "second"],
            keys=KEYS,
            n_items=len(store.items),
        )
        return HTMLResponse(html)

    @app.get("/api/queues")
    def queues() -> Any:
        return {"queues": store.progress(), "primary": list(PRIMARY_QUEUES)}

    @app.get("/api/next")
    def next_item(queue: str, reviewer: str, skip: str = "") -> Any:
        try:
            name = check_reviewer(reviewer, store.machine)
            skipped = tuple(int(s) for s in skip.split(",") if s.strip())[:1000]
            item = store.next_item(queue, name, skip=skipped)
        except (InvalidInputError, ValueError) as exc:
            _bad(exc)
        if item is None:
            return {"item": None, "progress": store.progress()}
        return {
            "item": item.to_dict(),
            "answers": store.history(item.uid),
            "progress": store.progress(),
        }

    @app.get("/api/item/{uid}")
    def get_item(uid: int) -> Any:
        item = store.by_uid.get(uid)
        if item is None:
            raise HTTPException(status_code=404, detail="no such item")
        return {"item": item.to_dict(), "answers": store.history(uid)}

    @app.post("/api/answer")
    def answer(request: Request, body: Any = Body(...)) -> Any:
        # JSON only: a cross-site form post cannot send it without a CORS preflight
        if "application/json" not in request.headers.get("content-type", ""):
            raise HTTPException(status_code=415, detail="JSON body required")
        if not isinstance(body, dict):
            raise HTTPException(status_code=400, detail="expected {item, answer, reviewer}")
        try:
            label = store.answer(int(body.get("item")), str(body.get("reviewer", "")),
                                 str(body.get("answer", "")))  # fmt: skip
        except (InvalidInputError, TypeError, ValueError) as exc:
            _bad(exc)
        return {"label": label, "progress": store.progress()}

    def _slide(uid: int) -> str:
        name = slide_names.get(uid)
        if name is None:
            raise HTTPException(status_code=404, detail="no such slide")
        return name

    @app.get("/slides/{uid}.dzi")
    def dzi(uid: int) -> Any:
        try:
            return Response(tiles.dzi(_slide(uid)), media_type="application/xml")
        except NotServable:
            raise HTTPException(status_code=404, detail="slide not found") from None

    @app.get("/slides/{uid}_files/{level}/{col}_{row}.jpeg")
    def tile(uid: int, level: int, col: int, row: int) -> Any:
        try:
            data = tiles.tile(_slide(uid), level, col, row)
        except NotServable:
            raise HTTPException(status_code=404, detail="tile not found") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.state.store = store
    app.state.answers = ANSWERS
    return app


def serve(
    run: str | Path,
    slides_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    reviewer: str = "",
    threshold: float | None = None,
    queue_file: str | Path | None = None,
) -> None:
    """Run the review app with uvicorn until interrupted."""
    import uvicorn

    check_host(host, token)
    slides = Path(slides_dir)
    if not slides.is_dir():
        raise InvalidInputError(f"--slides {slides_dir}: not a directory")
    store = ReviewStore(run, threshold=threshold, queue_file=queue_file)
    app = create_app(store, slides, token=token, reviewer=reviewer)
    url = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    print(f"mitoscope review: {len(store.items)} detections in {store.path}; open {url}")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def check_host(host: str, token: str | None) -> None:
    """Only loopback without a token: any other address needs ``--token``."""
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        raise InvalidInputError(
            f"--host {host} exposes the review app beyond this computer; pass --token SECRET"
        )
    if token is not None and len(token) < 8:
        raise InvalidInputError("--token must be at least 8 characters")
