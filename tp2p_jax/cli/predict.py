r"""Turns sketches into photos with a trained run's EMA generator.

  python -m tp2p_jax.cli.predict --workdir=runs/toycats --input=sketches/ --output=out/ \
      --style=ginger
  python -m tp2p_jax.cli.predict --workdir=RUN --input=cat.png --output=out/ --style_image=photo.jpg
  python -m tp2p_jax.cli.predict --workdir=RUN --input=cat.png --output=out/ \
      --style_mix=black:white:0.3
  python -m tp2p_jax.cli.predict --workdir=RUN --input=sketches/ --output=out/ --grid
  python -m tp2p_jax.cli.predict --workdir=CYCLEGAN_RUN --input=photos/ --output=out/ \
      --direction=BtoA

(`tp2p predict FLAGS` is the same.) Each input (a file, or every image in a
folder) is read in any format and mode, prepared in the training line style
(`--prepare=hand_drawn`, which also cleans up scans and photos of drawings;
`--prepare=pad` only resizes), generated at the run's image size in
fixed-size batches (one compilation for any number and size of inputs) and
written to `OUTPUT/<name>.png` at the input's own size. `--grid` writes
`OUTPUT/<name>_styles.png` instead: the sketch and its output in every
style class. Runs of generators without a style input (pix2pix, pix2pixHD)
take no style option; CycleGAN runs translate either way (`--direction`).
Runs imported from PyTorch checkpoints (`python -m tp2p_jax.cli.import_torch`)
without training data have no class averages: they style by `--style_image`.

Unreadable inputs are named on stderr and skipped; the last stdout line
counts the images written. Exit status: 1 if some inputs failed (each named
on stderr) and the others were written; 2 for a usage error (unknown or
missing flag, bad run, unknown class, missing input, no readable input, an
--output that is a file or not writable; one line on stderr, checked before
anything is generated or created), else 0.

`predict_files` is the same from Python, on a run loaded with
`tp2p_jax.inference.run_loading.load_trained_run`; `main(argv)` parses the
flags into its arguments.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
from typing import TYPE_CHECKING, Literal, Sequence

from absl import flags
import numpy as np

from tp2p_jax.cli import command
from tp2p_jax.cli.command import UsageError

if TYPE_CHECKING:
  from tp2p_jax.inference.run_loading import TrainedRun


@dataclasses.dataclass(frozen=True)
class PredictResult:
  """What `predict_files` did.

  Attributes:
    written: the PNGs written, in input order.
    failed: (input, reason) of each input that could not be read (skipped).
  """
  written: tuple[pathlib.Path, ...]
  failed: tuple[tuple[pathlib.Path, str], ...]


def _output_names(files: Sequence[pathlib.Path]) -> list[str]:
  """`<stem>` per input; inputs sharing a stem keep their suffix too."""
  stems = [f.stem for f in files]
  return [f.name.replace(".", "_") if stems.count(f.stem) > 1 else f.stem for f in files]


def style_grid(sketch: np.ndarray, outputs: np.ndarray, class_names: Sequence[str],
               pad: int = 2) -> np.ndarray:
  """[sketch | output in class 1 | ... | class C] under a header naming each
  column in full (small tiles are enlarged to fit it), uint8.

  Args:
    sketch: (S, S, 3) in [-1, 1].
    outputs: (C, S, S, 3) in [-1, 1].
  """
  from tp2p_jax.core.run_log import image_grid
  tiles = [sketch[None]] + [o[None] for o in outputs]
  return image_grid(tiles, pad=pad, captions=["sketch", *class_names])


def _check_options(run: TrainedRun, direction: str, style_options: Sequence[str]) -> None:
  """The options against what the run's predictor can do, whatever its
  method. `style_options`: the names of the style options given."""
  predictor = run.predictor
  if direction not in predictor.directions:
    raise UsageError(f"this run's generator ({predictor.model_name}) translates "
                     f"{'/'.join(predictor.directions)} only; --direction="
                     f"{direction} is not available")
  if predictor.style_dim is None and style_options:
    raise UsageError(f"this run's generator ({predictor.model_name}) takes no style input; "
                     f"drop {', '.join(f'--{name}' for name in style_options)}")


def _style_vector(run: TrainedRun, style: str | None,
                  style_image: str | os.PathLike[str] | None,
                  style_mix: str | None) -> np.ndarray:
  """The (E,) embedding that exactly one of `style`, `style_image` and
  `style_mix` asks for."""
  from tp2p_jax.data.image_files import describe_error, load_image
  from tp2p_jax.inference import style_choice, styles
  from tp2p_jax.core.run_dir import RunError
  try:
    style_choice.check_choice(run, style=style, has_style_image=style_image is not None,
                              style_mix=style_mix, alternative=" (or --grid)")
  except RunError:
    raise
  except ValueError as e:
    raise UsageError(str(e)) from None
  if style_image is not None:
    try:
      photo = load_image(style_image)
    except Exception as e:  # pylint: disable=broad-except
      raise UsageError(f"{os.fspath(style_image)}: cannot read the style image: "
                       f"{describe_error(e)}") from None
    return style_choice.photo_vector(run, photo)
  bank = styles.class_embeddings(run)
  try:
    return style_choice.class_vector(bank, style, style_mix)
  except ValueError as e:
    raise UsageError(str(e)) from None


def predict_files(run: TrainedRun, files: Sequence[str | os.PathLike[str]],
                  output_dir: str | os.PathLike[str], *, style: str | None = None,
                  style_image: str | os.PathLike[str] | None = None,
                  style_mix: str | None = None, grid: bool = False, batch_size: int = 8,
                  prepare: Literal["hand_drawn", "pad"] | None = None,
                  direction: str = "AtoB") -> PredictResult:
  """Generates an image for each file of `files` with the run's EMA generator.

  What the run's predictor can do decides which options apply, whatever its
  method: a style for style-conditioned generators, `direction` among its
  directions.

  Args:
    run: a loaded run (`tp2p_jax.inference.run_loading.load_trained_run`).
    files: input images, any format and size; each is written to
      `output_dir/<stem>.png` at its own size (inputs sharing a stem keep
      their suffix in the name).
    output_dir: folder for the outputs (created when there is something to
      write).
    style: a style class: its training-set average embedding.
    style_image: a reference photo: its embedding through the style encoder.
    style_mix: "CLASS_A:CLASS_B:T", the mix (1 - T) * A + T * B of two class
      averages. Style-conditioned runs need exactly one of the three (unless
      `grid`); other runs none.
    grid: write `output_dir/<stem>_styles.png` instead: the input and its
      output in every style class (the style options are then unused).
    batch_size: images per generator call (every call has this many: one
      compilation).
    prepare: "hand_drawn" (redrawn in the training line style) or "pad"
      (resized and padded on white); default: the run's
      (`run.predictor.prepare`).
    direction: which generator, one of `run.predictor.directions`.

  Returns:
    The PNGs written and the inputs that could not be read (skipped).

  Raises:
    UsageError: options the run cannot honour (a style for a generator
      without a style input, an unknown class, a direction it lacks, an
      unreadable style image, ...), a `batch_size` below 1, or an
      `output_dir` that is a file or not writable; raised before anything
      is generated or created.
    RunError: the run lacks what the options need (class averages or a
      trained style encoder of an imported run).
  """
  from tp2p_jax.data.image_files import describe_error, load_image, save_png
  from tp2p_jax.inference import run_loading, sketch_io, styles

  from tp2p_jax.cli import checks

  if batch_size < 1:
    raise UsageError(f"batch_size must be >= 1, got {batch_size}")
  out_dir = checks.output_dir_writable(output_dir, "output")
  given = {"style": style, "style_image": style_image, "style_mix": style_mix, "grid": grid}
  _check_options(run, direction, [name for name, value in given.items()
                                  if value is not None and value is not False])
  predictor = run.predictor
  # Every usage error before any work: the style (or the grid's classes) first.
  vector = bank = None
  if grid:
    run.require_class_styles()
    bank = styles.class_embeddings(run)
  elif predictor.style_dim is not None:
    vector = _style_vector(run, style, style_image, style_mix).astype(np.float32)

  paths = [pathlib.Path(f) for f in files]
  prepare_mode = prepare or predictor.prepare
  prepared, names, failed = [], [], []
  for path, name in zip(paths, _output_names(paths)):
    try:
      image = load_image(path)
    except Exception as e:  # pylint: disable=broad-except
      failed.append((path, describe_error(e)))
      continue
    prepared.append(sketch_io.prepare_sketch(image, predictor.image_size, prepare_mode))
    names.append(name)
  written: list[pathlib.Path] = []
  if prepared:
    # Only now: a run of unreadable inputs leaves no empty folder behind.
    os.makedirs(out_dir, exist_ok=True)
    sketches = np.stack([p.image for p in prepared])
    generate = lambda *x: predictor.generate(*x, direction=direction)  # noqa: E731
    if bank is not None:
      classes = [i for i in range(len(bank.names)) if bank.counts[i] > 0]
      per = len(classes)
      tiled = np.repeat(sketches, per, axis=0)
      vectors = np.tile(bank.means[classes], (len(prepared), 1))
      outputs = run_loading.in_fixed_batches(generate, [tiled, vectors], batch_size)
      for i, name in enumerate(names):
        figure = style_grid(sketches[i], outputs[i * per:(i + 1) * per],
                            [bank.names[c] for c in classes])
        written.append(out_dir / f"{name}_styles.png")
        save_png(written[-1], figure)
    else:
      inputs = [sketches]
      if vector is not None:
        inputs.append(np.repeat(vector[None], len(prepared), axis=0))
      outputs = run_loading.in_fixed_batches(generate, inputs, batch_size)
      for p, name, out in zip(prepared, names, outputs):
        written.append(out_dir / f"{name}.png")
        save_png(written[-1], sketch_io.restore_size(out, p))
  return PredictResult(written=tuple(written), failed=tuple(failed))


def _define_flags() -> flags.FlagValues:
  """The flags, in a registry of their own: `main` can then run repeatedly
  in one process (tests) beside other tools' flags of the same names."""
  fv = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "Run directory written by run_train.py.",
                      flag_values=fv)
  flags.DEFINE_string("input", None, "A sketch image, or a folder of them.", flag_values=fv)
  flags.DEFINE_string("output", None, "Folder for the generated images.", flag_values=fv)
  flags.DEFINE_string("style", None, "Style class name (its training-set average "
                      "embedding).", flag_values=fv)
  flags.DEFINE_string("style_image", None, "Reference photo whose style embedding (through "
                      "the style encoder) is used.", flag_values=fv)
  flags.DEFINE_string("style_mix", None, "CLASS_A:CLASS_B:T, the interpolation "
                      "(1 - T) * A + T * B of two class averages.", flag_values=fv)
  flags.DEFINE_bool("grid", False, "Write one figure per sketch with its output in every "
                    "style class.", flag_values=fv)
  flags.DEFINE_integer("batch_size", 8, "Images per generator call.", lower_bound=1,
                       flag_values=fv)
  command.define_generator_flags(fv)
  flags.DEFINE_enum("direction", "AtoB", ["AtoB", "BtoA"],
                    "CycleGAN: which generator (A->B or B->A).", flag_values=fv)
  return fv


def _check_before_loading(fv: flags.FlagValues) -> list[pathlib.Path]:
  """Every check that needs no run, so that a mistake is reported before
  the checkpoint is restored; returns the input files.

  Raises:
    UsageError: a missing run directory, input or style image, an input
      with no readable image, an unwritable --output, a malformed
      --style_mix.
  """
  from tp2p_jax.cli import checks
  from tp2p_jax.data.image_files import IMAGE_SUFFIXES, image_files_in, unreadable_reason
  from tp2p_jax.inference import styles
  checks.run_dir(fv.workdir)
  checks.input_path(fv.input, "input")
  checks.output_dir_writable(fv.output, "output")
  if fv.style_image:
    checks.input_file(fv.style_image, "style_image")
    reason = unreadable_reason(fv.style_image)
    if reason is not None:
      raise UsageError(f"--style_image={fv.style_image}: cannot read: {reason}")
  if fv.style_mix:
    try:
      styles.parse_style_mix(fv.style_mix)
    except ValueError as e:
      raise UsageError(str(e)) from None
  files = image_files_in(fv.input)
  if not files:
    raise UsageError(f"--input={fv.input}: no image files in the folder (suffixes: "
                     f"{', '.join(sorted(IMAGE_SUFFIXES))})")
  out_dir = pathlib.Path(fv.output).expanduser().resolve()
  inputs = {f.resolve() for f in files}
  suffix = "_styles.png" if fv.grid else ".png"
  for name in _output_names(files):
    if out_dir / f"{name}{suffix}" in inputs:
      raise UsageError(f"--output={fv.output}: writing {name}{suffix} there would overwrite "
                       "that input; choose another folder")
  # Headers only, up to the first readable one: cheap for any number of files.
  if not any(unreadable_reason(f) is None for f in files):
    reason = unreadable_reason(files[0])
    if len(files) == 1:
      raise UsageError(f"--input={files[0]}: cannot read: {reason}")
    raise UsageError(f"--input={fv.input}: none of its {len(files)} image files can be "
                     f"read, e.g. {files[0].name}: {reason}")
  return files


def _predict(fv: flags.FlagValues) -> int:
  from tp2p_jax.inference.run_loading import load_trained_run
  files = _check_before_loading(fv)
  run = load_trained_run(fv.workdir, fv.step, fv.dtype)
  # An empty --style= counts as not given.
  result = predict_files(run, files, fv.output, style=fv.style or None,
                         style_image=fv.style_image or None, style_mix=fv.style_mix or None,
                         grid=fv.grid, batch_size=fv.batch_size, prepare=fv.prepare,
                         direction=fv.direction)
  if result.failed and not result.written:
    # Every header passed but no image decoded (e.g. all truncated).
    path, reason = result.failed[0]
    raise UsageError(f"--input={fv.input}: no input could be read ({len(result.failed)} "
                     f"failed), e.g. {path}: {reason}")
  for path, reason in result.failed:
    print(f"error: {path}: cannot read: {reason}", file=sys.stderr)
  print(f"wrote {len(result.written)} image(s) to {pathlib.Path(fv.output)} "
        f"(run step {run.step})"
        + (f"; {len(result.failed)} input(s) failed" if result.failed else ""))
  return 1 if result.failed else 0


def main(argv: Sequence[str]) -> int:
  """Runs the command line on `argv` (argv[0] is the program name).

  Returns:
    The exit status: 0 all written (or help shown), 1 some input could not
    be read (each named on stderr), 2 usage error (one line on stderr).
  """
  from tp2p_jax.core.run_dir import RunError
  return command.run(argv, __doc__, lambda argv: _define_flags(), _predict,
                     required=("workdir", "input", "output"),
                     usage_errors=(RunError, FileNotFoundError))


if __name__ == "__main__":
  sys.exit(main(sys.argv))
