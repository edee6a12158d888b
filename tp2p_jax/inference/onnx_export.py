"""A run's EMA generator as an ONNX model, converted from its JAX function by
`jax2onnx` (the `onnx` extra: `pip install -e ".[onnx]"`); the library behind
`tp2p export --format=onnx`.

The model has the signature of the `jax.export` artifact
(`tp2p_jax.inference.exporting`), in NHWC:

  inputs:  `images` (batch, S, S, 3) float32, RGB in [-1, 1]
           `style`  (batch, E) float32 (style-conditioned generators only)
           `seed`   (batch,) int32, each image's dropout seed (test mode
                    "train" of a generator with dropout only)
  output:  `output` (batch, S, S, 3) float32, RGB in [-1, 1]

`batch` is symbolic (any batch size); the weights are initializers inside
the model. The model's metadata (`metadata_props`) states the same: keys
`tp2p.inputs`, `tp2p.outputs`, `tp2p.layout` ("NHWC"), `tp2p.range`, and the
generator's `tp2p.model`, `tp2p.direction`, `tp2p.image_size`,
`tp2p.style_dim`, `tp2p.test_mode` (and `tp2p.step`, `tp2p.workdir` for a
run's export).

Nothing here is written by hand: every operation comes from jax2onnx's
conversion of the generator's traced function. Two adjustments: jax2onnx
replaces `flax.linen.pool`/`avg_pool` while it traces with versions that
accept only 'SAME'/'VALID' padding and a keyword `window_shape`, which the
padded, pad-excluding average pooling of pix2pixHD's input pyramid
(`tp2p_jax.models.layers.avg_pool_downsample`) is not; and it replaces
`flax.linen.Dropout.__call__` with an ONNX Dropout (the identity at
inference) outside flax's method interception, by which the train test
mode draws its seeded masks (`tp2p_jax.methods.test_mode`). flax's own
functions are put back for the generator's call, so that pooling traces to
`lax.reduce_window_sum` and the masks to integer hashing, which jax2onnx
converts (onnxruntime computes the same bits).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from typing import Any, Iterator, Mapping

import flax.linen as nn
import flax.linen.pooling as flax_pooling
import jax
import jax.numpy as jnp

from tp2p_jax.inference import exporting
from tp2p_jax.inference.run_loading import TrainedRun

# The ONNX graph's input and output names.
IMAGES = "images"
STYLE = "style"
SEED = "seed"
OUTPUT = "output"
# The symbolic batch dimension's name.
BATCH = "batch"
# ONNX operator set the models target (onnxruntime >= 1.20 runs it).
OPSET = 21

# flax's pooling functions and dropout call as flax defines them, taken
# before any conversion has replaced them (see the module docstring).
_FLAX_ORIGINALS = {(module, name): getattr(module, name)
                   for module in (nn, flax_pooling) for name in ("pool", "avg_pool")}
_FLAX_ORIGINALS[(nn.Dropout, "__call__")] = nn.Dropout.__call__


class OnnxExportError(RuntimeError):
  """The converter is missing or could not convert the generator; the
  message is one line."""


def converter_available() -> bool:
  """Whether jax2onnx and onnx import (the `onnx` extra is installed)."""
  try:
    import jax2onnx  # noqa: F401
    import onnx  # noqa: F401
  except ImportError:
    return False
  return True


def _require_converter() -> None:
  if not converter_available():
    raise OnnxExportError("ONNX export needs jax2onnx and onnx: pip install 'tp2p_jax[onnx]'")


@contextlib.contextmanager
def _flax_originals() -> Iterator[None]:
  """For the block: flax's own pooling functions and dropout call in place
  of the converter's (restored on exit, whatever they were)."""
  current = {key: getattr(*key) for key in _FLAX_ORIGINALS}
  try:
    for (module, name), function in _FLAX_ORIGINALS.items():
      setattr(module, name, function)
    yield
  finally:
    for (module, name), function in current.items():
      setattr(module, name, function)


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
  """For the block: jax2onnx and onnx_ir keep their warnings (plugins for
  libraries this JAX release has outgrown, types of folded constants) and
  prints (some plugins print DEBUG lines) off the console; errors still
  raise."""
  loggers = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir")]
  saved = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.CRITICAL)
  try:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
      warnings.simplefilter("ignore", DeprecationWarning)
      yield
  finally:
    for logger, level in zip(loggers, saved):
      logger.setLevel(level)


def generator_to_onnx(generator: nn.Module, variables: Mapping[str, Any], image_size: int,
                      style_dim: int | None = None,
                      metadata: Mapping[str, Any] | None = None, mode: str = "eval") -> Any:
  """The ONNX model (`onnx.ModelProto`) of the generator at test time,
  `test_mode.apply_generator(generator, variables, images, style, mode,
  seed)`, in float32, with a symbolic batch.

  Args:
    generator: netG (any registered generator; its compute dtype is kept).
    variables: its variables ({"params", "batch_stats", ...}), baked in as
      initializers.
    image_size: S: images are (batch, S, S, 3) float32 in [-1, 1].
    style_dim: E for a style-conditioned generator (a second input `style`,
      (batch, E) float32), None for one without a style input.
    metadata: more `tp2p.<key>` entries for the model's metadata (values
      written as JSON unless strings).
    mode: the test mode, "eval" or "train"; in train mode a generator with
      dropout (`test_mode.draws_dropout`) takes a third input `seed`
      (batch,) int32, each image's dropout seed.

  Raises:
    OnnxExportError: jax2onnx is not installed, or it cannot convert an
      operation of the generator (the message names it, one line).
  """
  _require_converter()
  from jax2onnx import to_onnx
  (batch,) = jax.export.symbolic_shape(BATCH)
  generator_call = exporting.test_time_generator(
      generator, jax.tree.map(jnp.asarray, variables), image_size, style_dim, mode, batch)

  def generate(*inputs: jax.Array) -> jax.Array:
    with _flax_originals():
      return generator_call.call(*inputs)

  inputs = list(generator_call.inputs)
  names = [IMAGES, *([STYLE] if style_dim is not None else []),
           *([SEED] if generator_call.seeded else [])]
  try:
    with _quiet_converter():
      model = to_onnx(generate, inputs, model_name="tp2p_generator", opset=OPSET,
                      input_names=names, output_names=[OUTPUT])
  except Exception as e:  # the converter's own errors (unsupported primitives, ...)
    text = str(e).strip().splitlines()
    raise OnnxExportError(f"jax2onnx could not convert the generator: {type(e).__name__}"
                          f"{': ' + text[0] if text else ''}") from e
  style_shape = f"{STYLE}: ({BATCH}, {style_dim}) float32" if style_dim is not None else None
  seed_shape = f"{SEED}: {exporting.SEED_INPUT}" if generator_call.seeded else None
  props = {
      "inputs": "; ".join(filter(None, [f"{IMAGES}: ({BATCH}, {image_size}, {image_size}, 3) "
                                        "float32 RGB in [-1, 1]", style_shape, seed_shape])),
      "outputs": f"{OUTPUT}: ({BATCH}, {image_size}, {image_size}, 3) float32 RGB in [-1, 1]",
      "layout": "NHWC", "range": "[-1, 1]", "image_size": image_size, "style_dim": style_dim,
      "test_mode": mode, **(metadata or {})}
  del model.metadata_props[:]
  for key, value in props.items():
    entry = model.metadata_props.add()
    entry.key = f"tp2p.{key}"
    entry.value = value if isinstance(value, str) else json.dumps(value)
  model.doc_string = (f"tp2p_jax generator: {props['inputs']} -> {props['outputs']}; "
                      f"NHWC, symbolic batch '{BATCH}'.")
  return model


def export_onnx(run: TrainedRun, direction: str = "AtoB") -> Any:
  """The ONNX model (`onnx.ModelProto`) of the run's EMA generator for
  `direction` in its predictor's test mode (see `generator_to_onnx`), with
  the run's model name,
  direction, step and workdir in its metadata.

  Raises:
    ValueError: a direction the run lacks.
    OnnxExportError: jax2onnx is missing or cannot convert the generator.
  """
  predictor = run.predictor
  if direction not in predictor.directions:
    raise ValueError(f"this run's generator translates {'/'.join(predictor.directions)}, "
                     f"not {direction}")
  return generator_to_onnx(predictor.generator, predictor.variables[direction],
                           predictor.image_size, predictor.style_dim,
                           {"model": predictor.model_name, "direction": direction,
                            "step": run.step, "workdir": str(run.workdir)},
                           predictor.test_mode)


def write_onnx_export(run: TrainedRun, output: str, direction: str = "AtoB") -> dict:
  """Writes `output` (the ONNX model), `output.styles.npz` (class-average
  styles of a style-conditioned run, as `exporting.write_export`) and
  `output.json`, each atomically; returns the JSON summary.

  Raises:
    ValueError: a direction the run lacks.
    IsADirectoryError: one of the three paths is a folder (checked before
      the generator is converted).
    OnnxExportError: jax2onnx is missing or cannot convert the generator.
    OSError: a file cannot be written.
  """
  predictor = run.predictor
  exporting.check_artifact_paths(output)
  model = export_onnx(run, direction)
  s, e = predictor.image_size, predictor.style_dim
  inputs = [{"name": IMAGES, "shape": [BATCH, s, s, 3], "dtype": "float32"}]
  if e is not None:
    inputs.append({"name": STYLE, "shape": [BATCH, e], "dtype": "float32"})
  seeded = SEED in [i.name for i in model.graph.input]
  if seeded:
    inputs.append({"name": SEED, "shape": [BATCH], "dtype": "int32"})
  summary = {"format": "onnx", "model": predictor.model_name, "direction": direction,
             "step": run.step, "workdir": run.workdir, "image_size": s, "style_dim": e,
             **exporting.test_mode_summary(predictor.test_mode, seeded),
             "opset": OPSET, "layout": "NHWC", "inputs": inputs,
             "outputs": [{"name": OUTPUT, "shape": [BATCH, s, s, 3], "dtype": "float32"}]}
  return exporting.write_artifact(run, output, model.SerializeToString(), summary)
