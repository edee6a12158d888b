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
  GET  /docs         the API described on one self-contained page
                     (/openapi.json: the OpenAPI document)

Every refusal is JSON {"error": {"code", "message"}} with a 4xx status,
decided before any model work; 503 "server_busy" (with Retry-After) when
`Limits.max_queued` generation requests are already under way.

What a request may cost is bounded by `Limits`, not by what it sends:
images are decoded into at most `decode_side` on their longer side, at most
`max_decodes` at a time (decoding and PNG encoding share those threads;
images and outputs within `decode_side` have as many threads of their own,
so that small requests never wait behind large ones), outputs are encoded
at most `max_output_pixels`, and a request whose client has gone away is
dropped at the next step (before any image work if it left during its
upload, before the model if it has not reached it). `docs/serving.md` adds
up the worst case.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
from importlib import resources
from typing import Annotated, Any, AsyncIterator, Awaitable, Callable, TypeVar

import fastapi
from fastapi import File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
import numpy as np
import pydantic
from starlette.exceptions import HTTPException as StarletteHTTPException

from tp2p_jax.serving import api_page
from tp2p_jax.serving.access import Access, AccessGuard
from tp2p_jax.serving.batcher import DynamicBatcher
from tp2p_jax.serving.body_limit import BodySizeLimit
from tp2p_jax.serving.errors import RequestError
from tp2p_jax.serving.metrics import (CLIENT_GONE_STATUS, CONTENT_TYPE, ERROR_CODE_STATE,
                                      MetricsMiddleware, ServerMetrics)
from tp2p_jax.serving.model import Job, ServedModel
from tp2p_jax.serving.uploads import ImageLimits, decode_image, needs_shrinking

T = TypeVar("T")

# The page's own files, served from memory by name (no request path ever
# reaches the file system).
_STATIC_TYPES = {"app.js": "text/javascript; charset=utf-8",
                 "style.css": "text/css; charset=utf-8"}
ENDPOINTS = ("/", "/v1/generate", "/v1/styles", "/healthz", "/metrics", "/docs",
             "/openapi.json", *(f"/static/{name}" for name in _STATIC_TYPES))


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request may send, and what the server spends on requests.

  Attributes:
    max_upload_bytes: the whole request body.
    max_pixels: H * W of each uploaded image (from its header).
    max_side: the longer side of each uploaded image.
    max_aspect: longer / shorter side of each uploaded image.
    decode_side: images are decoded into at most this on their longer side
      (None: max(1024, 4 x the generator's and style encoder's input side),
      which the sketch preparation and style encoder never exceed).
    max_output_pixels: the output PNG is at the sketch's size unless that
      is more pixels than this; then at the largest size of the same aspect
      within it.
    max_decodes: images above `decode_side` decoded, prepared or PNG-encoded
      at a time (threads); as many threads again take the images whose
      longer side is within `decode_side` and the outputs of at most
      `decode_side`^2 pixels, so that a large upload never holds up a
      small one.
    max_queued: generation requests past their upload at once (waiting for
      a decode, decoding, in the batcher, in the model, encoding); one more
      is answered 503 "server_busy" with Retry-After.
    body_timeout_s: the longest a request body may take to arrive, from
      the end of its headers (408 "body_timeout").
  """
  max_upload_bytes: int = 8 * 1024 * 1024
  max_pixels: int = 4096 * 4096
  max_side: int = 8192
  max_aspect: float = 16.0
  decode_side: int | None = None
  max_output_pixels: int = 2048 * 2048
  max_decodes: int = 2
  max_queued: int = 32
  body_timeout_s: float = 60.0

  def __post_init__(self) -> None:
    for name in ("max_upload_bytes", "max_pixels", "max_side", "max_output_pixels",
                 "max_decodes", "max_queued"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.max_aspect < 1 or self.body_timeout_s <= 0:
      raise ValueError(f"need max_aspect >= 1 and body_timeout_s > 0, got {self}")

  def images(self, model: ServedModel) -> ImageLimits:
    """The per-image limits for `model`'s input sizes."""
    sides = [model.predictor.image_size]
    if model.has_encoder:
      sides.append(model.photo_size)
    decode_side = self.decode_side or max(1024, 4 * max(sides))
    return ImageLimits(self.max_pixels, self.max_side, self.max_aspect, decode_side)


class _ClientGone(Exception):
  """The client closed its connection before its answer."""


class _ImageWorkers:
  """Threads that decode, prepare and encode images: at most `count` at a
  time, and work not yet started is dropped when its request is."""

  def __init__(self, count: int, name: str) -> None:
    self._pool = concurrent.futures.ThreadPoolExecutor(count, thread_name_prefix=name)

  async def run(self, fn: Callable[[], T]) -> T:
    work = self._pool.submit(fn)
    try:
      return await asyncio.shield(asyncio.wrap_future(work))
    except asyncio.CancelledError:
      if not work.cancel():
        # Already running: the request's files stay open until it stops.
        with contextlib.suppress(BaseException):
          await asyncio.wrap_future(work)
      raise

  def shutdown(self) -> None:
    self._pool.shutdown(wait=True, cancel_futures=True)


async def _until_disconnect(receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
  """Returns when the client closes its connection (the body is read by
  then, so the next message the server has is the disconnect)."""
  while (await receive())["type"] != "http.disconnect":
    pass


async def _unless_client_leaves(receive: Callable[[], Awaitable[dict[str, Any]]],
                                work: Callable[[], Awaitable[T]]) -> T:
  """`work()`'s result, or `_ClientGone` as soon as the client leaves (the
  work is then cancelled: what has not started never will). A client that
  left during its upload (its hang-up already read) is found before `work`
  starts."""
  watch = asyncio.ensure_future(_until_disconnect(receive))

  async def unless_gone() -> T:
    # The watch's first step ran just before this one (tasks start in the
    # order they were made) and has ended if the server saw the client go.
    if watch.done():
      raise _ClientGone()
    return await work()

  task = asyncio.ensure_future(unless_gone())
  try:
    await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
      return task.result()
    raise _ClientGone()
  finally:
    for pending in (task, watch):
      pending.cancel()
    await asyncio.gather(task, watch, return_exceptions=True)


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


def _warm_up_and_freeze(model: ServedModel) -> None:
  """Warms `model` up, then takes every object then alive out of the
  garbage collector's sight (`gc.freeze`) until the server stops.

  Python's full collections walk every tracked object, and after JAX and
  the run are loaded that is some 300,000 of them: 160-330 ms on a shared
  2-core machine, holding the event loop and the model thread. Clients
  connecting and disconnecting by the hundred a second (a reconnecting
  flood) promote enough objects to start one every few seconds, and those
  pauses were the slowest requests' latency. Frozen, the start-up heap is
  never walked again; collections see only what serving creates. A young
  collection first, so that little garbage is frozen with it (a full one
  found none after warm-up and costs the pause itself).
  """
  model.warm_up()
  gc.collect(1)
  gc.freeze()


def _static_files() -> dict[str, bytes]:
  folder = resources.files("tp2p_jax.serving") / "static"
  return {name: (folder / name).read_bytes() for name in ("index.html", *_STATIC_TYPES)}


def _error_response(request: fastapi.Request, error: RequestError) -> JSONResponse:
  # The metrics middleware counts errors by this code.
  setattr(request.state, ERROR_CODE_STATE, error.code)
  return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _given(value: str | None) -> str | None:
  """An HTML form's empty field counts as not given."""
  return value if value else None


def create_app(model: ServedModel, *, batch_timeout_ms: float = 5.0,
               limits: Limits = Limits(), access: Access = Access()) -> fastapi.FastAPI:
  """The application on `model`.

  Args:
    model: the run to serve; warmed up in a background thread at start-up
      unless it already is (health reports 503 until then). Its compiled
      batch size is the most requests per generator call (1: batching off).
    batch_timeout_ms: how long a batch that is not full waits for more.
    limits: upload limits and the server's spending per request.
    access: token, Host and Origin rules (default: none but same-origin
      pages).
  """
  if batch_timeout_ms < 0:
    raise ValueError(f"batch_timeout_ms must be >= 0, got {batch_timeout_ms}")
  metrics = ServerMetrics(model.batch_size)
  batcher: DynamicBatcher[Job, np.ndarray] = DynamicBatcher(
      model.run_batch, model.batch_size, batch_timeout_ms / 1000.0, metrics.observe_batch)
  image_limits = limits.images(model)
  # Large images and outputs (above the decode side) on their own threads.
  workers = _ImageWorkers(limits.max_decodes, "images")
  small_workers = _ImageWorkers(limits.max_decodes, "small-images")
  small_output_pixels = image_limits.decode_side ** 2
  in_flight = [0]
  files = _static_files()

  @contextlib.asynccontextmanager
  async def lifespan(_: fastapi.FastAPI) -> AsyncIterator[None]:
    batcher.start()
    warming = asyncio.get_running_loop().run_in_executor(None, _warm_up_and_freeze, model)
    try:
      yield
    finally:
      await batcher.stop()
      workers.shutdown()
      small_workers.shutdown()
      with contextlib.suppress(Exception):
        await warming
      # Process-wide: another server still running in this process (tests)
      # is then merely unfrozen, and the start-up objects collectable again.
      gc.unfreeze()

  # FastAPI's own /docs and /redoc load their scripts from a CDN.
  app = fastapi.FastAPI(title="tp2p_jax", summary="Sketch to photo with a trained run's "
                        "EMA generator.", version="1", lifespan=lifespan, docs_url=None,
                        redoc_url=None)
  error_responses: dict[int | str, dict[str, Any]] = {
      status: {"model": ErrorBody, "description": description}
      for status, description in (
          (400, "A malformed request (the message names it)"),
          (401, "A bearer token is needed (the server runs with one)"),
          (403, "A page from an origin the server does not allow"),
          (408, "The body did not arrive within the server's deadline"),
          (413, "An upload or image above the limits"),
          (503, "Still warming up, or too busy (see Retry-After)"))}

  @app.exception_handler(RequestError)
  async def request_error(request: fastapi.Request, error: RequestError) -> JSONResponse:
    return _error_response(request, error)

  @app.exception_handler(_ClientGone)
  async def client_gone(request: fastapi.Request, error: _ClientGone) -> Response:
    del request, error
    return Response(status_code=CLIENT_GONE_STATUS)  # nobody is there to read it

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
            "sketch's size (scaled down to the server's output limit above it)"},
      **error_responses})
  async def generate(
      request: fastapi.Request,
      sketch: Annotated[UploadFile, File(description="The drawing (PNG, JPEG, ...; within "
                                                     "the server's pixel, side and aspect "
                                                     "limits).")],
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
    if not model.ready:
      raise RequestError(503, "warming_up", "the model is still compiling; retry shortly",
                         headers={"Retry-After": "5"})
    if in_flight[0] >= limits.max_queued:
      raise RequestError(503, "server_busy", f"{limits.max_queued} requests are already "
                         "being worked on; retry shortly", headers={"Retry-After": "1"})
    # The uploads stay in their spooled files (on disk above 1 MiB) until a
    # decode thread reads them.
    sketch_file = sketch.file
    photo_file = style_image.file if style_image is not None else None

    def decode_and_prepare() -> Job:
      image = decode_image(sketch_file, "sketch", image_limits)
      photo = (decode_image(photo_file, "style_image", image_limits).pixels
               if photo_file is not None else None)
      return model.make_job(image.pixels, style=style, style_photo=photo,
                            style_mix=style_mix, direction=direction, sketch_size=image.size)

    def decode_and_prepare_if_small() -> Job | None:
      # The header says whether an upload is shrunk on decoding (the costly
      # part of a large image); the small ones are decoded right here.
      if any(needs_shrinking(f, name, image_limits) for f, name in
             ((sketch_file, "sketch"), (photo_file, "style_image")) if f is not None):
        return None
      return decode_and_prepare()

    async def work() -> bytes:
      job = await small_workers.run(decode_and_prepare_if_small)
      if job is None:
        job = await workers.run(decode_and_prepare)
      output = await batcher.submit(job)
      h, w = model.output_size(job, limits.max_output_pixels)
      lane = small_workers if h * w <= small_output_pixels else workers
      return await lane.run(lambda: model.finish(job, output, limits.max_output_pixels))

    in_flight[0] += 1
    try:
      png = await _unless_client_leaves(request.receive, work)
    finally:
      in_flight[0] -= 1
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

  @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
  async def api_docs() -> HTMLResponse:
    return HTMLResponse(api_page.render(app.openapi()))

  @app.get("/", response_class=HTMLResponse, include_in_schema=False)
  async def page() -> HTMLResponse:
    return HTMLResponse(files["index.html"])

  @app.get("/static/{name}", include_in_schema=False)
  async def static(name: str) -> Response:
    if name not in _STATIC_TYPES:
      raise RequestError(404, "not_found", f"no file {name!r}")
    return Response(files[name], media_type=_STATIC_TYPES[name])

  # Outermost last: metrics see every answer, CORS answers preflights, the
  # guard refuses before any body is read.
  app.add_middleware(BodySizeLimit, max_bytes=limits.max_upload_bytes,
                     timeout_s=limits.body_timeout_s)
  app.add_middleware(AccessGuard, access=access)
  if access.allowed_origins:
    app.add_middleware(CORSMiddleware, allow_origins=list(access.allowed_origins),
                       allow_methods=["GET", "POST"], allow_headers=["Authorization"])
  app.add_middleware(MetricsMiddleware, metrics=metrics, endpoints=ENDPOINTS)
  app.state.metrics = metrics
  app.state.batcher = batcher
  app.state.limits = limits
  return app
