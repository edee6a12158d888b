r"""Turns sketches into photos with a trained run's EMA generator.

  python -m tp2p_jax.predict --workdir=runs/toycats --input=sketches/ --output=out/ \
      --style=ginger
  python -m tp2p_jax.predict --workdir=RUN --input=cat.png --output=out/ --style_image=photo.jpg
  python -m tp2p_jax.predict --workdir=RUN --input=cat.png --output=out/ \
      --style_mix=black:white:0.3
  python -m tp2p_jax.predict --workdir=RUN --input=sketches/ --output=out/ --grid
  python -m tp2p_jax.predict --workdir=CYCLEGAN_RUN --input=photos/ --output=out/ \
      --direction=BtoA

Each input (a file, or every image in a folder) is read in any format and
mode, prepared in the training line style (`--prepare=hand_drawn`, which
also cleans up scans and photos of drawings; `--prepare=pad` only resizes),
generated at the run's image size in fixed-size batches (one compilation
for any number and size of inputs) and written to `OUTPUT/<name>.png` at the
input's own size. `--grid` writes `OUTPUT/<name>_styles.png` instead: the
sketch and its output in every style class. Runs of generators without a
style input (pix2pix, pix2pixHD) take no style option; CycleGAN runs
translate either way (`--direction`). Runs imported from PyTorch checkpoints
(`python -m tp2p_jax.import_torch`) without training data have no class
averages: they style by `--style_image`.

Unreadable inputs are named on stderr and skipped; the exit status is 1 if
any input failed, 2 for a usage error (bad run, unknown class), else 0.
"""
from __future__ import annotations

import logging
import os
import pathlib
import sys
from typing import Any, Callable, Sequence

from absl import app, flags
import numpy as np

from tp2p_jax.console import quiet_libraries
from tp2p_jax.xla_flags import set_default_xla_flags
from PIL import Image, ImageDraw

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by run_train.py.")
_INPUT = flags.DEFINE_string("input", None, "A sketch image, or a folder of them.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for the generated images.")
_STYLE = flags.DEFINE_string("style", None, "Style class name (its training-set average "
                             "embedding).")
_STYLE_IMAGE = flags.DEFINE_string("style_image", None, "Reference photo whose style "
                                   "embedding (through the style encoder) is used.")
_STYLE_MIX = flags.DEFINE_string("style_mix", None, "CLASS_A:CLASS_B:T, the interpolation "
                                 "(1 - T) * A + T * B of two class averages.")
_GRID = flags.DEFINE_bool("grid", False, "Write one figure per sketch with its output in "
                          "every style class.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per generator call.")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"],
                           "Generator compute dtype (default: the run's).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_PREPARE = flags.DEFINE_enum("prepare", None, ["hand_drawn", "pad"],
                             "hand_drawn: redraw any drawing/scan in the training line "
                             "style (default for sketch models); pad: only resize and pad "
                             "on white (default for CycleGAN).")
_DIRECTION = flags.DEFINE_enum("direction", "AtoB", ["AtoB", "BtoA"],
                               "CycleGAN: which generator (A->B or B->A).")

log = logging.getLogger("tp2p_jax.predict")


class UsageError(ValueError):
  """A user error reported as one line, exit status 2."""


def _output_names(files: Sequence[pathlib.Path]) -> list[str]:
  """`<stem>` per input; inputs sharing a stem keep their suffix too."""
  stems = [f.stem for f in files]
  return [f.name.replace(".", "_") if stems.count(f.stem) > 1 else f.stem for f in files]


def _label_strip(names: Sequence[str], tile: int, pad: int) -> np.ndarray:
  """White strip with one caption per tile, for the style grid."""
  height = 14
  strip = Image.new("RGB", (len(names) * (tile + pad) + pad, height), "white")
  draw = ImageDraw.Draw(strip)
  for i, name in enumerate(names):
    draw.text((pad + i * (tile + pad) + 2, 1), name[: max(3, tile // 6)], fill="black")
  return np.asarray(strip)


def style_grid(sketch: np.ndarray, outputs: np.ndarray, class_names: Sequence[str],
               pad: int = 2) -> np.ndarray:
  """[sketch | output in class 1 | ... | class C] with captions, uint8.

  Args:
    sketch: (S, S, 3) in [-1, 1].
    outputs: (C, S, S, 3) in [-1, 1].
  """
  from tp2p_jax.train.run_log import image_grid
  tiles = [sketch[None]] + [o[None] for o in outputs]
  row = image_grid(tiles, pad=pad)
  captions = _label_strip(["sketch", *class_names], sketch.shape[0], pad)
  return np.concatenate([captions, row], axis=0)


def _style_vectors(run, num: int) -> np.ndarray:
  """(num, E) embeddings from --style / --style_image / --style_mix."""
  from tp2p_jax.data.image_files import describe_error, load_image
  from tp2p_jax.inference import run_loading, styles
  given = [f for f in (_STYLE, _STYLE_IMAGE, _STYLE_MIX) if f.value]
  if len(given) != 1:
    if run_loading.names_no_dataset(run.config):
      # An imported run: no classes to name, only reference photos.
      run.require_style_encoder()
      raise UsageError("give --style_image=PHOTO (this run has no class-average style "
                       "embeddings)")
    raise UsageError("give exactly one of --style=CLASS, --style_image=PHOTO, "
                     "--style_mix=A:B:T (or --grid); this run's classes: "
                     f"{', '.join(run.class_names)}")
  if _STYLE_IMAGE.value:
    try:
      photo = load_image(_STYLE_IMAGE.value)
    except Exception as e:  # pylint: disable=broad-except
      raise UsageError(f"{_STYLE_IMAGE.value}: cannot read the style image: "
                       f"{describe_error(e)}") from None
    vector = np.asarray(run.embed(photo[None].astype(np.float32) / 127.5 - 1.0))[0]
  else:
    run.require_class_styles()
    bank = styles.class_embeddings(run)
    try:
      if _STYLE.value:
        vector = bank.of(_STYLE.value)
      else:
        vector = styles.mix(bank, *styles.parse_style_mix(_STYLE_MIX.value))
    except ValueError as e:
      raise UsageError(str(e)) from None
  return np.repeat(vector[None].astype(np.float32), num, axis=0)


def _is_cyclegan(run) -> bool:
  from tp2p_jax.inference.cyclegan_loading import CycleGANRun
  return isinstance(run, CycleGANRun)


def _load(workdir: str) -> tuple[Any, Callable[..., Any]]:
  """(run, translate): translate maps (B, S, S, 3) in [-1, 1] (and (B, E)
  styles for a style-conditioned generator) to outputs, in `--direction`."""
  from tp2p_jax.inference import cyclegan_loading, run_loading
  from tp2p_jax.train.builders import is_cyclegan
  style_flags = [f"--{f.name}" for f in (_STYLE, _STYLE_IMAGE, _STYLE_MIX, _GRID) if f.value]
  config = run_loading.read_run_config(workdir)
  if is_cyclegan(config):
    if style_flags:
      raise UsageError(f"CycleGAN takes no style input; drop {', '.join(style_flags)}")
    if _DIRECTION.value == "BtoA" and "generator_b" in run_loading.imported_fresh(config):
      raise UsageError("this run was imported without G_BA (--generator_b), so it translates "
                       "AtoB only")
    cycle = cyclegan_loading.load_cyclegan_run(workdir, _STEP.value, _DTYPE.value)
    return cycle, lambda x: cycle.translate(x, _DIRECTION.value)
  run = run_loading.load_trained_run(workdir, _STEP.value, _DTYPE.value)
  if _DIRECTION.value != "AtoB":
    raise UsageError(f"this run's generator ({run.model_name}) translates one way "
                     "(AtoB, as trained); --direction=BtoA is for CycleGAN runs")
  if not run.takes_style and style_flags:
    raise UsageError(f"this run's generator ({run.model_name}) takes no style input; "
                     f"drop {', '.join(style_flags)}")
  return run, run.generate


def predict(argv_files: Sequence[pathlib.Path]) -> int:
  """Runs the CLI on the given input files; returns the exit status."""
  from tp2p_jax.data.image_files import describe_error, load_image, save_png
  from tp2p_jax.inference import run_loading, sketch_io, styles

  run, translate = _load(_WORKDIR.value)
  size = run.image_size
  prepare_mode = _PREPARE.value or ("pad" if _is_cyclegan(run) else "hand_drawn")
  prepared, names, failed = [], [], 0
  for path, name in zip(argv_files, _output_names(argv_files)):
    try:
      image = load_image(path)
    except Exception as e:  # pylint: disable=broad-except
      print(f"error: {path}: cannot read: {describe_error(e)}", file=sys.stderr)
      failed += 1
      continue
    prepared.append(sketch_io.prepare_sketch(image, size, prepare_mode))
    names.append(name)
  out_dir = pathlib.Path(_OUTPUT.value)
  if prepared:
    sketches = np.stack([p.image for p in prepared])
    if _GRID.value:
      run.require_class_styles()
      bank = styles.class_embeddings(run)
      classes = [i for i in range(len(bank.names)) if bank.counts[i] > 0]
      per = len(classes)
      tiled = np.repeat(sketches, per, axis=0)
      vectors = np.tile(bank.means[classes], (len(prepared), 1))
      outputs = run_loading.in_fixed_batches(run.generate, [tiled, vectors],
                                             _BATCH_SIZE.value)
      for i, name in enumerate(names):
        grid = style_grid(sketches[i], outputs[i * per:(i + 1) * per],
                          [bank.names[c] for c in classes])
        save_png(out_dir / f"{name}_styles.png", grid)
    else:
      inputs = [sketches]
      if not _is_cyclegan(run) and run.takes_style:
        inputs.append(_style_vectors(run, len(prepared)))
      outputs = run_loading.in_fixed_batches(translate, inputs, _BATCH_SIZE.value)
      for p, name, out in zip(prepared, names, outputs):
        save_png(out_dir / f"{name}.png", sketch_io.restore_size(out, p))
  print(f"wrote {len(prepared)} image(s) to {out_dir} (run step {run.step})"
        + (f"; {failed} input(s) failed" if failed else ""))
  return 1 if failed else 0


def main(argv: list[str]) -> None:
  set_default_xla_flags()  # before JAX starts its backends
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from tp2p_jax.data.image_files import image_files_in
  from tp2p_jax.inference.run_loading import RunError
  quiet_libraries()
  try:
    for flag in (_WORKDIR, _INPUT, _OUTPUT):
      if not flag.value:
        raise UsageError(f"--{flag.name} is required")
    files = image_files_in(_INPUT.value)
    if not files:
      raise UsageError(f"{_INPUT.value}: no image files")
    os.makedirs(_OUTPUT.value, exist_ok=True)
    status = predict(files)
  except (UsageError, RunError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    status = 2
  sys.exit(status)


if __name__ == "__main__":
  app.run(main)
