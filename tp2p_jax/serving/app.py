"""The HTTP application: the generation API, styles, health, metrics, and
the drawing page, on FastAPI.

  POST /v1/generate  multipart: file `sketch`; one of `style`, file
                     `style_image`, `style_mix` (A:B:T) for style-conditioned
                     runs; `direction` (AtoB/BtoA) -> image/png at the
                     sketch's size
  GET  /v1/styles    the run's classes with swatches, and what it accepts
  GET  /healthz      200 once warmed up, 503 before
  GET  /metrics      Prometheus text format
  GET  /             the drawing page (its scripts under /static/)

Every refusal is JSON {"error": {"code", "message"}} with a 4xx status,
decided before any model work.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from importlib import resources
from typing import Annotated, Any, AsyncIterator

import fastapi
from fastapi import File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
import numpy as np
import pydantic
from starlette.exceptions import HTTPException as StarletteHTTPException

from tp2p_jax.serving.batcher import DynamicBatcher
from tp2p_jax.serving.body_limit import BodySizeLimit
from tp2p_jax.serving.errors import RequestError
from tp2p_jax.serving.metrics import (CONTENT_TYPE, ERROR_CODE_STATE, MetricsMiddleware,
                                      ServerMetrics)
from tp2p_jax.serving.model import Job, ServedModel
from tp2p_jax.serving.uploads import decode_image

# The page's own files, served from memory by name (no request path ever
# reaches the file system).
_STATIC_TYPES = {"app.js": "text/javascript; charset=utf-8",
                 "style.css": "text/css; charset=utf-8"}
ENDPOINTS = ("/", "/v1/generate", "/v1/styles", "/healthz", "/metrics",
             *(f"/static/{name}" for name in _STATIC_TYPES))


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request may send.

  Attributes:
    max_upload_bytes: the whole request body.
    max_pixels: H * W of each uploaded image (from its header).
  """
  max_upload_bytes: int = 8 * 1024 * 1024
  max_pixels: int = 4096 * 4096


class ErrorDetail(pydantic.BaseModel):
  code: str
  message: str


class ErrorBody(pydantic.BaseModel):
  error: ErrorDetail


class StyleEntry(pydantic.BaseModel):
  name: str
  color: str
  swatch: str


class StylesBody(pydantic.BaseModel):
  styles: list[StyleEntry]
  style_image: bool
  mix: bool
  directions: list[str]
  image_size: int
  model: str
  step: int


def _static_files() -> dict[str, bytes]:
  folder = resources.files("tp2p_jax.serving") / "static"
  return {name: (folder / name).read_bytes() for name in ("index.html", *_STATIC_TYPES)}


def _error_response(request: fastapi.Request, error: RequestError) -> JSONResponse:
  # The metrics middleware counts errors by this code.
  setattr(request.state, ERROR_CODE_STATE, error.code)
  return JSONResponse(error.body(), status_code=error.status)


def _given(value: str | None) -> str | None:
  """An HTML form's empty field counts as not given."""
  return value if value else None


def create_app(model: ServedModel, *, batch_timeout_ms: float = 5.0,
               limits: Limits = Limits()) -> fastapi.FastAPI:
  """The application on `model`.

  Args:
    model: the run to serve; warmed up in a background thread at start-up
      unless it already is (health reports 503 until then). Its compiled
      batch size is the most requests per generator call (1: batching off).
    batch_timeout_ms: how long a batch that is not full waits for more.
    limits: upload limits.
  """
  if batch_timeout_ms < 0:
    raise ValueError(f"batch_timeout_ms must be >= 0, got {batch_timeout_ms}")
  metrics = ServerMetrics(model.batch_size)
  batcher: DynamicBatcher[Job, np.ndarray] = DynamicBatcher(
      model.run_batch, model.batch_size, batch_timeout_ms / 1000.0, metrics.observe_batch)
  files = _static_files()

  @contextlib.asynccontextmanager
  async def lifespan(_: fastapi.FastAPI) -> AsyncIterator[None]:
    batcher.start()
    warming = asyncio.get_running_loop().run_in_executor(None, model.warm_up)
    try:
      yield
    finally:
      await batcher.stop()
      with contextlib.suppress(Exception):
        await warming

  app = fastapi.FastAPI(title="tp2p_jax", summary="Sketch to photo with a trained run's "
                        "EMA generator.", version="1", lifespan=lifespan)
  error_responses: dict[int | str, dict[str, Any]] = {
      status: {"model": ErrorBody, "description": description}
      for status, description in ((400, "A malformed request (the message names it)"),
                                  (413, "An upload or image above the limits"),
                                  (503, "Still warming up"))}

  @app.exception_handler(RequestError)
  async def request_error(request: fastapi.Request, error: RequestError) -> JSONResponse:
    return _error_response(request, error)

  @app.exception_handler(RequestValidationError)
  async def invalid_form(request: fastapi.Request, error: RequestValidationError
                         ) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}"
                         for e in error.errors())
    return _error_response(request, RequestError(400, "invalid_form", problems))

  @app.exception_handler(Exception)
  async def internal_error(request: fastapi.Request, error: Exception) -> JSONResponse:
    # A bug, not the request's fault: JSON like every other error, the
    # traceback in the server's log (Starlette re-raises it to the server).
    return _error_response(request, RequestError(
        500, "internal_error", f"the server failed on this request ({type(error).__name__}); "
        "its log has the details"))

  @app.exception_handler(StarletteHTTPException)
  async def http_error(request: fastapi.Request, error: StarletteHTTPException
                       ) -> JSONResponse:
    return _error_response(request, RequestError(error.status_code,
                                                 f"http_{error.status_code}",
                                                 str(error.detail)))

  @app.post("/v1/generate", response_class=Response, responses={
      200: {"content": {"image/png": {}}, "description": "The generated photo, at the "
            "sketch's size"}, **error_responses})
  async def generate(
      sketch: Annotated[UploadFile, File(description="The drawing (PNG, JPEG, ...; any "
                                                     "size).")],
      style: Annotated[str | None, Form(description="A style class (GET /v1/styles).")] = None,
      style_image: Annotated[UploadFile | None, File(description="A reference photo whose "
                                                                 "style to use.")] = None,
      style_mix: Annotated[str | None, Form(description="A:B:T, (1 - T) * A + T * B of two "
                                                        "classes.")] = None,
      direction: Annotated[str, Form(description="Two-way (CycleGAN) runs: AtoB or "
                                                 "BtoA.")] = "AtoB") -> Response:
    style, style_mix = _given(style), _given(style_mix)
    if style_image is not None and not style_image.filename and not style_image.size:
      style_image = None  # an empty file input of an HTML form
    model.check_options(style=style, has_style_image=style_image is not None,
                        style_mix=style_mix, direction=direction)
    sketch_bytes = await sketch.read()
    photo_bytes = await style_image.read() if style_image is not None else None

    def decode_and_prepare() -> Job:
      image = decode_image(sketch_bytes, "sketch", limits.max_pixels)
      photo = (decode_image(photo_bytes, "style_image", limits.max_pixels)
               if photo_bytes is not None else None)
      return model.make_job(image, style=style, style_photo=photo, style_mix=style_mix,
                            direction=direction)

    job = await run_in_threadpool(decode_and_prepare)
    output = await batcher.submit(job)
    png = await run_in_threadpool(model.finish, job, output)
    return Response(png, media_type="image/png")

  @app.get("/v1/styles", response_model=StylesBody)
  async def list_styles() -> StylesBody:
    infos = model.style_infos
    return StylesBody(styles=[StyleEntry(**dataclasses.asdict(i)) for i in infos],
                      style_image=model.has_encoder, mix=len(model.style_names) >= 2,
                      directions=list(model.predictor.directions),
                      image_size=model.predictor.image_size,
                      model=model.predictor.model_name, step=model.run.step)

  @app.get("/healthz", responses={503: {"model": ErrorBody}})
  async def healthz() -> dict[str, Any]:
    if not model.ready:
      raise RequestError(503, "warming_up", "the model is still compiling")
    return {"status": "ok", "step": model.run.step, "batch_size": model.batch_size}

  @app.get("/metrics", response_class=Response,
           responses={200: {"content": {CONTENT_TYPE: {}}}})
  async def metrics_text() -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)

  @app.get("/", response_class=HTMLResponse, include_in_schema=False)
  async def page() -> HTMLResponse:
    return HTMLResponse(files["index.html"])

  @app.get("/static/{name}", include_in_schema=False)
  async def static(name: str) -> Response:
    if name not in _STATIC_TYPES:
      raise RequestError(404, "not_found", f"no file {name!r}")
    return Response(files[name], media_type=_STATIC_TYPES[name])

  app.add_middleware(BodySizeLimit, max_bytes=limits.max_upload_bytes)
  app.add_middleware(MetricsMiddleware, metrics=metrics, endpoints=ENDPOINTS)
  app.state.metrics = metrics
  app.state.batcher = batcher
  return app
