"""JSON bodies of the HTTP API (they also document it in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    status: int = Field(description="HTTP status code, repeated")
    code: str = Field(description="stable machine-readable name, e.g. `too_many_pixels`")
    message: str = Field(description="one human-readable line")


class ErrorBody(BaseModel):
    """Every error response (4xx and 5xx) has this body."""

    error: ErrorDetail


class Size(BaseModel):
    width: int
    height: int


class Progress(BaseModel):
    done: int = Field(description="tiles finished (a small image is one tile)")
    total: int = Field(description="tiles in all; 0 until the job starts")


class JobStatus(BaseModel):
    """Where a job stands."""

    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    position: int | None = Field(
        description="while queued: 1 for the next job of its model to start, 2 after it, ..."
    )
    model: str
    scale: float = Field(description="an integer, or any factor for any-scale models")
    format: Literal["png", "webp", "jpeg"]
    input: Size
    output: Size | None = Field(description="set once done")
    progress: Progress
    seconds: float = Field(description="since the job was submitted")
    error: ErrorDetail | None = Field(description="why the job failed or was cancelled")
    result_url: str | None = Field(description="where to GET the image once done")


class ServedModel(BaseModel):
    name: str = Field(description="the value of the `model` field of an upscale request")
    scales: list[int] = Field(description="integer scales (every one from 1 to 8 for any-scale)")
    default_scale: int
    arbitrary_scale: bool = Field(
        default=False, description="whether any scale from 1 to 8 is served (`anyscale`)"
    )
    variant: str = Field(description="network variant (`lightsr models`), or `bicubic`")
    label: str = Field(description="how the page names it (`Real photo (...)` for `real`)")


class ModelsInfo(BaseModel):
    """What this server serves, and what `lightsr models --json` shows."""

    served: list[ServedModel]
    default_model: str
    catalog: dict[str, list[dict[str, Any]]] | None = Field(
        description="every network variant and published checkpoint (`lightsr models --json`); "
        "null with `?catalog=false`"
    )


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    auth: bool = Field(description="whether /v1 requests need a bearer token")
    waiting: int = Field(description="jobs waiting to start")
    running: int = Field(description="jobs running now")
