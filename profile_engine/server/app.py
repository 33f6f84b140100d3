"""The ASGI application: the API, the web page, static files, access rules and error answers."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from profile_engine.errors import ErrorKind, ProfileEngineError, first_line
from profile_engine.server import api, pages
from profile_engine.server.api import Engine, JSONText
from profile_engine.server.security import AccessGuard
from profile_engine.server.timing import ServerTiming

log = logging.getLogger(__name__)

STATUS_OF_KIND = {
    ErrorKind.BAD_INPUT: 400,
    ErrorKind.TRANSIENT: 503,
    ErrorKind.NEEDS_OPERATOR: 500,
}


def _version() -> str:
    try:
        return version("profile-engine")
    except PackageNotFoundError:
        return "dev"


def create_app(engine: Engine, token: str | None) -> FastAPI:
    app = FastAPI(
        title="profile-engine",
        version=_version(),
        summary="Live customer profiles: counts, lookups, search, SQL and export while the "
        "log is folded.",
        # The interactive docs pages load their JavaScript from a CDN; the description at
        # /openapi.json is enough, and nothing here fetches from the internet.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.engine = engine
    app.state.token = token
    app.state.token_required = token is not None
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(packages=[("profile_engine.server", "static")]), name="static")
    app.add_exception_handler(ProfileEngineError, _error_answer)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_answer)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_answer)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _bug_answer)
    app.add_middleware(AccessGuard, token=token)
    app.add_middleware(ServerTiming)  # outermost: the refusals are timed too
    return app


def status_of(error: ProfileEngineError) -> int:
    if isinstance(error, api.NotFound):
        return 404
    return STATUS_OF_KIND[error.kind]


def _is_page(request: Request) -> bool:
    path = request.url.path
    return not (path.startswith("/api/") or path in ("/metrics", "/openapi.json"))


async def _error_answer(request: Request, error: ProfileEngineError) -> Response:
    status = status_of(error)
    if _is_page(request):
        return pages.error_page(request, str(error), status)
    headers = {"Retry-After": "2"} if error.kind == ErrorKind.TRANSIENT else None
    body = {"error": str(error), "kind": error.kind.value}
    return JSONText(body, status_code=status, headers=headers)


async def _validation_answer(request: Request, error: RequestValidationError) -> Response:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ()) if part not in ("query", "body"))
        problems.append(f"{where}: {item.get('msg', 'invalid')}" if where else item.get("msg"))
    message = "; ".join(str(p) for p in problems) or "invalid request"
    if _is_page(request):
        return pages.error_page(request, message, 400)
    return JSONText({"error": message, "kind": ErrorKind.BAD_INPUT.value}, status_code=400)


async def _http_answer(request: Request, error: StarletteHTTPException) -> Response:
    """Unknown paths and methods answer like every other error (JSON, or a page)."""
    message = {404: f"nothing at {request.url.path}", 405: f"{request.method} is not allowed "
               f"on {request.url.path}"}.get(error.status_code, str(error.detail))  # fmt: skip
    if _is_page(request) and error.status_code == 404:
        return pages.error_page(request, message, 404)
    body = {"error": message, "kind": ErrorKind.BAD_INPUT.value}
    return JSONText(body, status_code=error.status_code, headers=error.headers)


async def _bug_answer(request: Request, error: Exception) -> Response:
    log.exception("unexpected error answering %s", request.url.path, exc_info=error)
    message = f"internal error: {type(error).__name__}: {first_line(error)}"
    if _is_page(request):
        return pages.error_page(request, message, 500)
    return JSONText({"error": message, "kind": ErrorKind.NEEDS_OPERATOR.value}, status_code=500)
