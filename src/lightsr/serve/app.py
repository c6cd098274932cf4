"""The HTTP API and the web page, as a FastAPI application (see :func:`create_app`)."""

from __future__ import annotations

import asyncio
import hmac
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from lightsr import __version__
from lightsr.errors import ImageError
from lightsr.imageinfo import image_info, sniff_format
from lightsr.serve.engine import FORMATS, ModelPool
from lightsr.serve.errors import ServeError
from lightsr.serve.jobs import DONE, FINISHED, Job, JobQueue
from lightsr.serve.schemas import ErrorBody, Health, JobStatus, ModelsInfo, ServedModel

STATIC = Path(__file__).parent / "static"
# The page loads nothing but its own files and the images it makes.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)

DESCRIPTION = """\
Super-resolution over HTTP. `POST /v1/upscale` answers with the image; `POST /v1/jobs`
queues it and answers at once with a job to follow (`GET /v1/jobs/{id}`: queue position,
tile progress) and whose result to fetch (`GET /v1/jobs/{id}/result`).

Each model runs a bounded number of jobs at once (one by default); the rest wait in order.
Uploads are limited in bytes and in pixels (read from the file header, before decoding);
every request and job has a time limit. Errors are JSON:
`{"error": {"status": 413, "code": "too_many_pixels", "message": "..."}}`.
With `lightsr serve --token`, `/v1` requests need `Authorization: Bearer <token>`.
"""


@dataclass(frozen=True)
class Limits:
    """What one client may ask of the server.

    Attributes:
        max_upload: bytes in one request body.
        max_pixels: width × height of one uploaded image (checked before decoding).
        time_limit: seconds for one request (upload included) and for one job.
        jobs_per_model: jobs of one model that run at once.
        max_waiting: jobs that may wait to start, all models together.
        keep_seconds: how long a finished job's result can be fetched.
        keep_bytes: results kept in memory, all jobs together.
    """

    max_upload: int = 32 << 20
    max_pixels: int = 2048 * 2048
    time_limit: float = 300.0
    jobs_per_model: int = 1
    max_waiting: int = 32
    keep_seconds: float = 600.0
    keep_bytes: int = 256 << 20


def create_app(pool: ModelPool, limits: Limits | None = None, token: str | None = None) -> FastAPI:
    """The application: the page at ``/``, the API under ``/v1``, docs at ``/docs``.

    Args:
        pool: the served models.
        limits: request and queue limits.
        token: when set, ``/v1`` requests need ``Authorization: Bearer <token>``.
    """
    limits = limits or Limits()
    queue = JobQueue(
        pool.run,
        pool.names,
        limits.jobs_per_model,
        limits.max_waiting,
        limits.keep_seconds,
        limits.keep_bytes,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The catalog takes seconds to build: start on it before /v1/models first asks.
        threading.Thread(target=pool.catalog, name="lightsr-catalog", daemon=True).start()
        yield
        queue.close()

    app = FastAPIOffline(
        title="lightsr",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
    )
    app.add_middleware(RequestLimits, max_bytes=limits.max_upload, seconds=limits.time_limit)
    _add_error_handlers(app)
    _add_page(app)

    @app.get("/healthz", tags=["server"])
    async def healthz() -> Health:
        """Whether the server is up, and how busy."""
        stats = queue.stats()
        return Health(
            status="ok",
            version=__version__,
            auth=token is not None,
            waiting=stats["waiting"],
            running=stats["running"],
        )

    app.include_router(_api(pool, queue, limits, token))
    return app


# ----------------------------------------------------------------------------- the API

# Errors every /v1 route may answer, for the OpenAPI page.
_COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or wrong bearer token (`--token`)"},
    422: {"model": ErrorBody, "description": "invalid field"},
}
_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "empty or damaged image (`bad_image`)"},
    413: {
        "model": ErrorBody,
        "description": "body over the upload limit (`upload_too_large`) or image over the "
        "pixel limit (`too_many_pixels`)",
    },
    415: {"model": ErrorBody, "description": "not a PNG, JPEG, WebP, TIFF or BMP image"},
    422: {
        "model": ErrorBody,
        "description": "invalid field, unknown model (`unknown_model`), scale not served "
        "(`unsupported_scale`), image the model cannot take (`cannot_upscale`) or format "
        "that cannot hold it (`unsupported_format`)",
    },
    503: {"model": ErrorBody, "description": "queue full (`queue_full`, with Retry-After)"},
    504: {"model": ErrorBody, "description": "over the time limit (`time_limit`)"},
}
_IMAGE_CONTENT = {"content": {media: {} for _, media in FORMATS.values()}}


class UpscaleForm:
    """The multipart fields of an upscale request."""

    def __init__(
        self,
        image: Annotated[UploadFile, File(description="PNG, JPEG, WebP, TIFF or BMP file")],
        model: Annotated[str | None, Form(description="a served model (default: first)")] = None,
        scale: Annotated[
            float | None,
            Form(
                ge=1, le=8, description="default: 4; a non-integer one (2.5) for any-scale models"
            ),
        ] = None,
        format: Annotated[Literal["png", "webp", "jpeg"], Form(description="output")] = "png",
        quality: Annotated[
            int | None, Form(ge=1, le=101, description="JPEG/WebP quality (101: lossless WebP)")
        ] = None,
    ) -> None:
        self.image = image
        self.model = model
        self.scale = scale
        self.format = format
        self.quality = quality


def _api(pool: ModelPool, queue: JobQueue, limits: Limits, token: str | None) -> APIRouter:
    api = APIRouter(
        prefix="/v1",
        dependencies=[Depends(_bearer(token))] if token else [],
        responses=_COMMON_ERRORS,
    )

    async def submit(form: UpscaleForm) -> Job:
        model = form.model or pool.names[0]
        scale = pool.check(model, form.scale)
        data = await form.image.read()
        name = _safe_name(form.image.filename)
        job = Job(
            model=model,
            scale=scale,
            format=form.format,
            filename=name,
            input_size=_check_upload(data, name, limits.max_pixels),
            data=data,
            time_limit=limits.time_limit,
            quality=form.quality,
        )
        return queue.submit(job)

    @api.get("/models", tags=["models"])
    async def models(
        catalog: Annotated[bool, Query(description="include `lightsr models --json`")] = True,
    ) -> ModelsInfo:
        """The models this server serves, and every model lightsr knows."""
        served = [
            ServedModel(
                name=name,
                scales=list(scales),
                default_scale=pool.default_scale(name),
                variant=pool.get(name, pool.default_scale(name)).name,
                label=pool.label(name),
                arbitrary_scale=pool.arbitrary(name),
            )
            for name, scales in pool.scales.items()
        ]
        known = await asyncio.to_thread(pool.catalog) if catalog else None
        return ModelsInfo(served=served, default_model=pool.names[0], catalog=known)

    @api.post(
        "/upscale",
        tags=["upscale"],
        response_class=Response,
        responses={200: {"description": "the upscaled image", **_IMAGE_CONTENT}, **_UPLOAD_ERRORS},
    )
    async def upscale(form: Annotated[UpscaleForm, Depends()]) -> Response:
        """Upscale one image and answer with the result (waits in the queue as needed)."""
        job = await submit(form)
        try:
            await queue.wait(job)
        finally:  # also when the request's time is up: stop the job, keep nothing
            queue.cancel(job)
            queue.forget(job)
        return _result(job)

    @api.post("/jobs", tags=["jobs"], status_code=202, responses=_UPLOAD_ERRORS)
    async def submit_job(form: Annotated[UpscaleForm, Depends()], response: Response) -> JobStatus:
        """Queue one image; follow it with `GET /v1/jobs/{id}`."""
        job = await submit(form)
        response.headers["Location"] = f"/v1/jobs/{job.id}"
        return _status(job, queue)

    @api.get("/jobs/{job_id}", tags=["jobs"], responses={404: {"model": ErrorBody}})
    async def job_status(job_id: str) -> JobStatus:
        """Where the job stands: queue position, tile progress, result or error."""
        return _status(queue.get(job_id), queue)

    @api.get(
        "/jobs/{job_id}/result",
        tags=["jobs"],
        response_class=Response,
        responses={
            200: {"description": "the upscaled image", **_IMAGE_CONTENT},
            404: {"model": ErrorBody},
            409: {"model": ErrorBody, "description": "not finished yet (`not_ready`)"},
            **_UPLOAD_ERRORS,
        },
    )
    async def job_result(job_id: str) -> Response:
        """The upscaled image of a finished job, or the error it failed with."""
        job = queue.get(job_id)
        if job.state not in FINISHED:
            raise ServeError(409, "not_ready", f"job {job_id} is {job.state}")
        return _result(job)

    @api.delete("/jobs/{job_id}", tags=["jobs"], responses={404: {"model": ErrorBody}})
    async def cancel_job(job_id: str) -> JobStatus:
        """Cancel a job: at once if waiting, after its current tile if running."""
        job = queue.get(job_id)
        queue.cancel(job)
        return _status(job, queue)

    return api


_BEARER = HTTPBearer(auto_error=False, description="the token given to `lightsr serve`")


def _bearer(token: str) -> Callable[..., Awaitable[None]]:
    expected = token.encode()

    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, expected):
            raise ServeError(
                401, "unauthorized", "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
            )

    return check


def _check_upload(data: bytes, name: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) of an upload, from its header: refuse it before anything decodes it."""
    try:
        info = image_info(data, name)
    except ImageError as exc:
        status, code = (
            (415, "not_an_image") if data and not sniff_format(data) else (400, "bad_image")
        )
        raise ServeError(status, code, str(exc)) from None
    if info.pixels > max_pixels:
        raise ServeError(
            413,
            "too_many_pixels",
            f"{name}: {info.width}x{info.height} ({info.pixels / 1e6:.1f} MP) is over this "
            f"server's limit of {max_pixels / 1e6:.1f} MP",
        )
    return info.width, info.height


def _safe_name(filename: str | None) -> str:
    """The upload's file name without folders or unusual characters (used in messages and
    the download name only: nothing is read or written under a name from a request)."""
    name = re.split(r"[\\/]", filename or "")[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:100] or "image"


def _result(job: Job) -> Response:
    if job.state != DONE:
        raise job.error or ServeError(500, "internal_error", f"job {job.id} is {job.state}")
    extension, media_type = FORMATS[job.format]
    download = f"{job.filename.rsplit('.', 1)[0]}_x{job.scale:g}{extension}"
    headers = {"Content-Disposition": f'attachment; filename="{download}"', "X-Job-Id": job.id}
    return Response(job.result, media_type=media_type, headers=headers)


def _status(job: Job, queue: JobQueue) -> JobStatus:
    done = job.state == DONE
    return JobStatus(
        id=job.id,
        state=job.state,
        position=queue.position(job),
        model=job.model,
        scale=job.scale,
        format=job.format,
        input={"width": job.input_size[0], "height": job.input_size[1]},
        output=(
            {"width": job.output_size[0], "height": job.output_size[1]}
            if done and job.output_size
            else None
        ),
        progress={"done": job.tiles_done, "total": job.tiles_total},
        seconds=round(time.monotonic() - job.submitted, 3),
        error=job.error.to_dict()["error"] if job.error else None,
        result_url=f"/v1/jobs/{job.id}/result" if done else None,
    )


# ----------------------------------------------------------------------------- the page


def _add_page(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        html = (STATIC / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_POLICY})


# ----------------------------------------------------------------------------- errors

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


def error_response(error: ServeError) -> JSONResponse:
    """The JSON response of ``error``."""
    return JSONResponse(error.to_dict(), status_code=error.status, headers=error.headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"] if part != "body")
        return error_response(ServeError(422, "invalid_request", f"{field}: {first['msg']}"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(ServeError(exc.status_code, code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        return error_response(ServeError(500, "internal_error", "internal error; see the log"))


# ----------------------------------------------------------------------------- limits

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _BodyTooLarge(Exception):
    """The request body went over the limit (the middleware has answered already)."""


class RequestLimits:
    """ASGI middleware: bodies over ``max_bytes`` get 413, requests (uploads included) that
    take over ``seconds`` get 504, so a slow or huge client cannot hold the server.

    The declared Content-Length is checked first; the bytes actually received are counted
    too, since a chunked body declares none.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int, seconds: float):
        self.app = app
        self.max_bytes = max_bytes
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = ServeError(
            413,
            "upload_too_large",
            f"the request body is over the {self.max_bytes / 2**20:g} MiB limit",
        )
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(too_large)(scope, receive, send)
            return
        started = answered = False
        received = 0

        async def answer(error: ServeError) -> None:
            nonlocal answered
            if not (started or answered):
                answered = True
                await error_response(error)(scope, receive, send)

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await answer(too_large)
                raise _BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if answered:  # the middleware's error went out: drop the app's own answer
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(self.seconds):
                await self.app(scope, counted_receive, tracked_send)
        except TimeoutError:
            limit = f"the request took over the {self.seconds:g} s limit"
            await answer(ServeError(504, "time_limit", limit))
        except _BodyTooLarge:
            pass
