"""A trained run as the server holds it: the EMA generator compiled once per
direction for one batch size, its style bank, and the same sketch
preparation and output restoring as `predict`.

Request handlers call `make_job` (every check, then the sketch's
preparation; no model work), the batcher calls `run_batch` on the model
thread with up to `batch_size` jobs, and the handlers turn each output into
a PNG at the upload's size (`finish`). Every model call goes to the
programs `warm_up` compiled, padded to the compiled batch size, so no
request ever compiles.
"""
from __future__ import annotations

import base64
import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from tp2p_jax.data.image_files import float_to_uint8
from tp2p_jax.data.toycats import render_example
from tp2p_jax.inference import run_loading, sketch_io, style_choice, styles
from tp2p_jax.inference.run_loading import TrainedRun
from tp2p_jax.methods.base import encoder_outputs
from tp2p_jax.methods.test_mode import image_seeds
from tp2p_jax.serving.errors import RequestError
from tp2p_jax.serving.uploads import encode_png

log = logging.getLogger("tp2p_jax.serving")

# Outputs above this many pixels are PNG-compressed at zlib's fastest level.
_FAST_PNG_PIXELS = 1 << 20


@dataclasses.dataclass(frozen=True)
class Job:
  """One request's work for the model thread.

  Attributes:
    sketch: the prepared sketch ((S, S, 3) float32 in [-1, 1]) and how to
      map the output back to the upload's size.
    style: (E,) float32 embedding, or None (a reference photo is embedded on
      the model thread; generators without a style input take none).
    style_photo: (P, P, 3) float32 in [-1, 1] at the style encoder's input
      size, or None.
    direction: which generator.
  """
  sketch: sketch_io.PreparedSketch
  style: np.ndarray | None
  style_photo: np.ndarray | None
  direction: str


@dataclasses.dataclass(frozen=True)
class StyleInfo:
  """A style class as the page shows it.

  Attributes:
    name: the class name.
    color: "#rrggbb", the mean colour of the centre of `swatch`.
    swatch: a PNG data URL: the generator's output in this class for a
      probe sketch (S x S).
  """
  name: str
  color: str
  swatch: str


class ServedModel:
  """A run's generator ready to serve.

  Args:
    run: a loaded run (`run_loading.load_trained_run`).
    batch_size: the compiled batch size (the most requests per call).
    prepare: sketch preparation ("hand_drawn" or "pad"); default: the run's.
  """

  def __init__(self, run: TrainedRun, batch_size: int, prepare: str | None = None) -> None:
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.run = run
    self.predictor = run.predictor
    self.batch_size = batch_size
    self.prepare = prepare or self.predictor.prepare
    if self.prepare not in sketch_io.PREPARE_MODES:
      raise ValueError(f"unknown sketch preparation {self.prepare!r}")
    self.has_style = self.predictor.style_dim is not None
    self.has_encoder = self.has_style and self.predictor.style_encoder is not None
    # Class averages are read (or computed once, a pass over the training
    # data) now, not on a request.
    self.bank: styles.ClassEmbeddings | None = None
    if self.has_style and not run_loading.names_no_dataset(run.config):
      self.bank = styles.class_embeddings(run)
    self._generate: dict[str, Callable[..., Any]] = {}
    self._embed: Callable[..., Any] | None = None
    self.style_infos: tuple[StyleInfo, ...] = ()
    self._ready = threading.Event()

  @property
  def ready(self) -> bool:
    """Whether `warm_up` has finished (the server then reports healthy)."""
    return self._ready.is_set()

  @property
  def style_names(self) -> tuple[str, ...]:
    """The classes a request may name (those with an average embedding)."""
    if self.bank is None:
      return ()
    return tuple(n for n, c in zip(self.bank.names, self.bank.counts) if c > 0)

  @property
  def photo_size(self) -> int:
    """Side of the square reference photos the style encoder takes."""
    return int(self.predictor.style_encoder.image_size)

  # --- start-up ---------------------------------------------------------------------

  def _compile_generator(self, direction: str) -> Callable[..., Any]:
    """`generate(images (B, S, S, 3), seeds (B,) int32, [style (B, E)]) ->
    (B, S, S, 3)` in the predictor's test mode, compiled ahead of time for
    B = batch_size: another shape is an error, never a compilation."""
    s, b = self.predictor.image_size, self.batch_size
    specs = [jax.ShapeDtypeStruct((b, s, s, 3), jnp.float32),
             jax.ShapeDtypeStruct((b,), jnp.int32)]
    if self.has_style:
      specs.append(jax.ShapeDtypeStruct((b, self.predictor.style_dim), jnp.float32))
    variables = self.predictor.variables[direction]

    def generate(v: Any, images: jax.Array, seeds: jax.Array, *style: jax.Array) -> jax.Array:
      return self.predictor.generate(images, *style, direction=direction, variables=v,
                                     seeds=seeds)

    compiled = jax.jit(generate).lower(variables, *specs).compile()
    return lambda *inputs: compiled(variables, *inputs)

  def _compile_encoder(self) -> Callable[..., Any]:
    """`embed(photos (1, P, P, 3)) -> (1, E)`, compiled ahead of time."""
    p = self.photo_size
    encoder, variables = self.predictor.style_encoder, self.predictor.style_variables

    def embed(v: Any, photos: jax.Array) -> jax.Array:
      return encoder_outputs(encoder, v, photos)["embedding"]

    compiled = jax.jit(embed).lower(
        variables, jax.ShapeDtypeStruct((1, p, p, 3), jnp.float32)).compile()
    return lambda photos: compiled(variables, photos)

  def warm_up(self) -> None:
    """Compiles every program requests use, runs each once, and renders the
    style swatches; then `ready` is True. Idempotent."""
    if self.ready:
      return
    start = time.perf_counter()
    for direction in self.predictor.directions:
      self._generate[direction] = self._compile_generator(direction)
    if self.has_encoder:
      self._embed = self._compile_encoder()
      self._embed(np.zeros((1, self.photo_size, self.photo_size, 3), np.float32))
    compiled = time.perf_counter()
    self.style_infos = self._render_swatches()
    if not self.style_infos:
      s = self.predictor.image_size
      for direction in self.predictor.directions:
        self._call_generator(direction, np.zeros((1, s, s, 3), np.float32), None)
    log.info("warm-up: compiled the generator (batch %d) in %.1f s, first calls %.1f s",
             self.batch_size, compiled - start, time.perf_counter() - compiled)
    self._ready.set()

  def _render_swatches(self) -> tuple[StyleInfo, ...]:
    """Each class's output on a probe sketch (a toy cat), as the page's
    style buttons show it."""
    names = self.style_names
    if not names:
      return ()
    s = self.predictor.image_size
    probe = render_example(0, s, background="studio")["sketch"]
    sketches = np.repeat((probe.astype(np.float32) / 127.5 - 1.0)[None], len(names), axis=0)
    vectors = np.stack([self.bank.of(n) for n in names]).astype(np.float32)
    outputs = self._call_generator(self.predictor.directions[0], sketches, vectors)
    infos = []
    for name, out in zip(names, outputs):
      image = float_to_uint8(out)
      centre = image[s // 4:3 * s // 4, s // 4:3 * s // 4].reshape(-1, 3).mean(axis=0)
      color = "#" + "".join(f"{int(round(c)):02x}" for c in centre)
      data = base64.b64encode(encode_png(image)).decode("ascii")
      infos.append(StyleInfo(name, color, f"data:image/png;base64,{data}"))
    return tuple(infos)

  # --- requests ---------------------------------------------------------------------

  def check_options(self, *, style: str | None, has_style_image: bool,
                    style_mix: str | None, direction: str) -> None:
    """Refuses options this run cannot honour (no model work).

    Raises:
      RequestError: 400 "unknown_direction", "style_not_accepted",
        "invalid_style" (none or several of the three given, a malformed mix,
        an unknown class, a reference photo for a run without a trained
        style encoder).
    """
    if direction not in self.predictor.directions:
      raise RequestError(400, "unknown_direction",
                         f"direction: {direction!r} is not available; this run's "
                         f"generator translates {'/'.join(self.predictor.directions)}")
    given = [n for n, v in (("style", style), ("style_image", has_style_image),
                            ("style_mix", style_mix)) if v]
    if not self.has_style:
      if given:
        raise RequestError(400, "style_not_accepted",
                           f"this run's generator ({self.predictor.model_name}) takes no "
                           f"style input; drop {', '.join(given)}")
      return
    try:
      style_choice.check_choice(self.run, style=style, has_style_image=has_style_image,
                                style_mix=style_mix, prefix="")
      if not has_style_image:
        # A class without training photos has no average to use.
        for name in ([style] if style is not None
                     else styles.parse_style_mix(style_mix)[:2]):
          self.bank.index(name)
    except ValueError as e:
      raise RequestError(400, "invalid_style", str(e)) from None

  def make_job(self, sketch: np.ndarray, *, style: str | None = None,
               style_photo: np.ndarray | None = None, style_mix: str | None = None,
               direction: str = "AtoB", sketch_size: tuple[int, int] | None = None) -> Job:
    """One request's checked options and prepared inputs.

    Args:
      sketch: uint8 (H, W, 3) RGB, any size.
      style: a class name; style_photo: a reference photo, uint8 (H, W, 3);
        style_mix: "A:B:T". Exactly one for style-conditioned runs, none
        for the others.
      direction: which generator.
      sketch_size: the upload's (height, width) when `sketch` is a reduced
        decode of it (`uploads.decode_image`); the output is restored to
        this size. Default: the sketch's own.

    Raises:
      RequestError: as `check_options`; 503 "warming_up" before `warm_up`.
    """
    self.check_options(style=style, has_style_image=style_photo is not None,
                       style_mix=style_mix, direction=direction)
    if not self.ready:
      raise RequestError(503, "warming_up", "the model is still compiling; retry shortly",
                         headers={"Retry-After": "5"})
    vector = photo = None
    if self.has_style and style_photo is None:
      vector = style_choice.class_vector(self.bank, style, style_mix)
    elif style_photo is not None:
      # Resized here to the encoder's input, so that one compiled program
      # embeds photos of every size.
      p = self.photo_size
      resized = np.asarray(Image.fromarray(style_photo).resize((p, p),
                                                               Image.Resampling.LANCZOS))
      photo = resized.astype(np.float32) / 127.5 - 1.0
    prepared = sketch_io.prepare_sketch(sketch, self.predictor.image_size, self.prepare)
    if sketch_size is not None:
      # The box stays the reduced sketch's: that is where the drawing sits
      # in the square the generator saw.
      prepared = dataclasses.replace(prepared, size=tuple(sketch_size))
    return Job(prepared, vector, photo, direction)

  def _call_generator(self, direction: str, sketches: np.ndarray,
                      vectors: np.ndarray | None) -> np.ndarray:
    """(N, S, S, 3) sketches [and (N, E) styles] -> (N, S, S, 3) outputs in
    [-1, 1], through the compiled program in padded batches. In train mode
    every request is the first image of its own input (dropout seed
    `image_seeds(seed, 0)`), so a sketch's output does not depend on the
    requests it is batched with."""
    seeds = np.repeat(image_seeds(self.predictor.seed, [0]), len(sketches))
    arrays = [sketches, seeds] + ([] if vectors is None else [vectors])
    return run_loading.in_fixed_batches(self._generate[direction], arrays, self.batch_size)

  def run_batch(self, jobs: Sequence[Job]) -> list[np.ndarray]:
    """The model thread's work: each job's output, (S, S, 3) float32 in
    [-1, 1], in order."""
    results: list[np.ndarray | None] = [None] * len(jobs)
    for direction in dict.fromkeys(j.direction for j in jobs):
      rows = [i for i, j in enumerate(jobs) if j.direction == direction]
      sketches = np.stack([jobs[i].sketch.image for i in rows])
      vectors = None
      if self.has_style:
        vectors = np.stack([self._style_of(jobs[i]) for i in rows])
      outputs = self._call_generator(direction, sketches, vectors)
      for i, out in zip(rows, outputs):
        results[i] = out
    return results

  @staticmethod
  def output_size(job: Job, max_pixels: int | None = None) -> tuple[int, int]:
    """The (height, width) of `finish`'s PNG: the upload's, or the largest
    of the same aspect within `max_pixels`."""
    h, w = job.sketch.size
    if max_pixels is not None and h * w > max_pixels:
      scale = (max_pixels / (h * w)) ** 0.5
      h, w = max(1, int(h * scale)), max(1, int(w * scale))
    return h, w

  @staticmethod
  def finish(job: Job, output: np.ndarray, max_pixels: int | None = None) -> bytes:
    """A job's output (S, S, 3) in [-1, 1] -> PNG bytes at the upload's size
    (`sketch_io.restore_size`'s pixels), or, where that is above
    `max_pixels`, at the largest size of the same aspect within it: the
    generator made S x S pixels, so a larger PNG is only interpolation,
    whose CPU and memory the server bounds."""
    top, left, bh, bw = job.sketch.box
    crop = Image.fromarray(float_to_uint8(np.asarray(output[top:top + bh, left:left + bw])))
    h, w = ServedModel.output_size(job, max_pixels)
    if (h, w) != (bh, bw):
      # Straight into PIL's raster and on to the encoder: one full-size copy.
      crop = crop.resize((w, h), Image.Resampling.LANCZOS)
    # zlib's default level takes seconds on a few megapixels of smooth
    # interpolation; the fastest one is within ~25% of its size there.
    return encode_png(crop, compress_level=6 if h * w <= _FAST_PNG_PIXELS else 1)

  def _style_of(self, job: Job) -> np.ndarray:
    """A job's (E,) float32 style: its class or mix embedding, or its
    reference photo through the compiled encoder (on the model thread)."""
    if job.style is not None:
      return job.style
    return np.asarray(self._embed(job.style_photo[None]), np.float32)[0]
