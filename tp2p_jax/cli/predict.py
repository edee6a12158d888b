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
written to `OUTPUT/<name>.png` at the input's own size (inputs sharing a
name keep their suffix, cat.png.png and cat.jpg.png, as a log line says; no
output may replace an input or one of the run's own files). `--grid` writes
`OUTPUT/<name>_styles.png` instead: the sketch and its output in every
style class. Runs of generators without a style input (pix2pix, pix2pixHD)
take no style option; CycleGAN runs translate either way (`--direction`).
Runs imported from PyTorch checkpoints (`python -m tp2p_jax.cli.import_torch`)
without training data have no class averages: they style by `--style_image`.

`--test_mode=train` runs the generator as pix2pix's and pix2pixHD's
test.py do without --eval (each image normalised with its own BatchNorm
statistics, dropout on, seeded by `--seed` and the input's position in the
sorted list); `--test_mode=eval` with running statistics and no dropout.
The default is the run's `config.test_mode` (train for pix2pix and
pix2pixHD runs, eval for TransPix2Pix and CycleGAN).

Each batch of `--batch_size` images (rounded up to a multiple of the
device count) is split over all of this process's devices, with the
weights replicated on each; inputs are decoded in a background thread and
outputs encoded and written in a small thread pool while the devices work.
Several processes (hosts) share one folder of inputs with the multi-process
flags of `run_train.py` (--coordinator_address=HOST:PORT --num_processes=N
--process_id=I, or --jax_distributed): process I takes the inputs at
positions I, I + N, I + 2N, ... of the sorted list and writes their
outputs; each process prints its own summary. Inputs, outputs and the run
directory may be local paths or gs:// URLs.

Unreadable inputs (a folder's broken links, symbolic link loops and FIFOs
among them, none of them opened) are named on stderr and skipped. The second-to-last
stdout line counts the images written; the last is JSON: `written`,
`failed`, `output`, `step`, `devices` (this process's devices used),
`processes`, `process_index`, `batch_size` (the global batch per generator
call), `test_mode`, `seconds` and `images_per_s` (images written per second, from the
first input read to the last output written; see `PredictResult`).

Exit status: 1 if some inputs failed (each named on stderr) and the others
were written; 2 for a usage error (unknown or missing flag, bad run,
unknown class, missing input, no readable input, an --output that is a
file or not writable; one line on stderr, checked before anything is
generated or created), else 0.

`predict_files` is the same from Python, on a run loaded with
`tp2p_jax.inference.run_loading.load_trained_run`; `main(argv)` parses the
flags into its arguments.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Literal, Sequence

from absl import flags
from etils import epath
import numpy as np

from tp2p_jax.cli import command
from tp2p_jax.cli.command import UsageError

if TYPE_CHECKING:
  import jax

  from tp2p_jax.inference.run_loading import TrainedRun

@dataclasses.dataclass(frozen=True)
class PredictResult:
  """What `predict_files` did.

  Attributes:
    written: the PNGs written, in input order (this process's share).
    failed: (input, reason) of each input that could not be read (skipped).
    devices: the devices each batch was split over.
    batch_size: images per generator call, over all devices (`--grid`:
      sketch-and-style pairs).
    seconds: wall time from the first input read to the last output
      written: reading, decoding and preparing the inputs, generating
      (the first batch's compilation, or its load from the compilation
      cache, included), encoding and writing. Loading the run and
      resolving the style come before and are not counted.
  """
  written: tuple[epath.Path, ...]
  failed: tuple[tuple[epath.Path, str], ...]
  devices: int = 1
  batch_size: int = 1
  seconds: float = 0.0

  @property
  def images_per_s(self) -> float:
    """Images written per second of `seconds` (0 when none were)."""
    return len(self.written) / self.seconds if self.written and self.seconds > 0 else 0.0


def _output_names(files: Sequence[epath.Path]) -> list[str]:
  """A distinct output name per input, in input order (the output is
  `<name>.png`, or `<name>_styles.png` under --grid).

  The input's stem (cat.png -> cat); inputs that share a stem keep their
  suffix, all of them (cat.png, cat.jpg -> cat.png, cat.jpg, written
  cat.png.png and cat.jpg.png). Should a name still be taken (cat.png.bmp
  beside those), the later input gets `~2`, `~3`, ... after it. Names are
  compared ignoring case, as a case-insensitive file system would.
  """
  stems: dict[str, int] = {}
  for f in files:
    stems[f.stem.casefold()] = stems.get(f.stem.casefold(), 0) + 1
  wanted = [f.stem if stems[f.stem.casefold()] == 1 else f.name for f in files]
  all_wanted = {w.casefold() for w in wanted}
  taken: set[str] = set()
  names = []
  for name in wanted:
    candidate, k = name, 1
    while candidate.casefold() in taken or (k > 1 and candidate.casefold() in all_wanted):
      k += 1
      candidate = f"{name}~{k}"
    taken.add(candidate.casefold())
    names.append(candidate)
  return names


def _log_renamed(files: Sequence[epath.Path], names: Sequence[str], suffix: str) -> None:
  """One log line naming the inputs whose output is not `<stem><suffix>`."""
  renamed = [f"{f.name} -> {n}{suffix}" for f, n in zip(files, names) if n != f.stem]
  if renamed:
    shown = ", ".join(renamed[:5]) + (f", ... ({len(renamed)} in all)" if len(renamed) > 5 else "")
    logging.getLogger("tp2p_jax").info(
        "%d input(s) share a name with another input; their outputs keep the input's suffix: "
        "%s", len(renamed), shown)


def _check_outputs(files: Sequence[epath.Path], output_dir: str | os.PathLike[str],
                   grid: bool, style_image: str | os.PathLike[str] | None,
                   workdir: str | os.PathLike[str] | None) -> list[str]:
  """Every output against the inputs, the run's own files and each other
  (`output_paths.check_outputs`); returns the output names."""
  from tp2p_jax.cli import output_paths
  from tp2p_jax.core import storage
  out_dir = storage.path(output_dir)
  suffix = "_styles.png" if grid else ".png"
  names = _output_names(files)
  outputs = [output_paths.Output("output", output_dir, out_dir / f"{name}{suffix}",
                                 f"{name}{suffix} there") for name in names]
  inputs = [(str(f), f) for f in files]
  if style_image:
    inputs.append((f"--style_image={os.fspath(style_image)}", style_image))
  output_paths.check_outputs(outputs, inputs=inputs, run=workdir, kind="folder")
  return names


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
  from tp2p_jax.data.image_files import describe_error
  from tp2p_jax.inference import files, style_choice, styles
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
      photo = files.read_image(style_image)
    except files.SpecialFileError as e:
      raise UsageError(f"{os.fspath(style_image)}: cannot read the style image: it is "
                       f"{e}") from None
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
                  direction: str = "AtoB", devices: Sequence[jax.Device] | None = None
                  ) -> PredictResult:
  """Generates an image for each file of `files` with the run's EMA generator.

  What the run's predictor can do decides which options apply, whatever its
  method: a style for style-conditioned generators, `direction` among its
  directions. The generator runs in the predictor's `test_mode`
  (`run_loading.with_test_mode`); in train mode the input at position k of
  `files` gets the dropout seed `image_seeds(predictor.seed, k)`, so no
  output depends on the batch size, the device count or the other inputs.

  Every generator call takes one batch split over `devices` (weights
  replicated); inputs are decoded up to two batches ahead in a background
  thread, and outputs encoded and written by two threads (at most two
  batches waiting), while the devices work. In a multi-process job (after
  `jax.distributed.initialize`) this process takes the inputs at positions
  `jax.process_index()` + k * `jax.process_count()` (k = 0, 1, ...) only.

  Args:
    run: a loaded run (`tp2p_jax.inference.run_loading.load_trained_run`).
    files: input images, any format and size (local paths or URLs such as
      gs://); each is written to `output_dir/<stem>.png` at its own size
      (inputs sharing a stem keep their suffix: cat.png.png, cat.jpg.png;
      see `_output_names`, logged).
    output_dir: folder for the outputs (created when there is something to
      write); a local path or a URL.
    style: a style class: its training-set average embedding.
    style_image: a reference photo: its embedding through the style encoder.
    style_mix: "CLASS_A:CLASS_B:T", the mix (1 - T) * A + T * B of two class
      averages. Style-conditioned runs need exactly one of the three (unless
      `grid`); other runs none.
    grid: write `output_dir/<stem>_styles.png` instead: the input and its
      output in every style class (the style options are then unused).
    batch_size: images per generator call over all devices, rounded up to a
      multiple of their number (every call has this many: one compilation).
    prepare: "hand_drawn" (redrawn in the training line style) or "pad"
      (resized and padded on white); default: the run's
      (`run.predictor.prepare`).
    direction: which generator, one of `run.predictor.directions`.
    devices: the devices to split each batch over (default: all of this
      process's, `jax.local_devices()`).

  Returns:
    The PNGs written and the inputs that could not be read (skipped), with
    the devices, batch size and wall time (`PredictResult`).

  Raises:
    UsageError: options the run cannot honour (a style for a generator
      without a style input, an unknown class, a direction it lacks, an
      unreadable style image, ...), a `batch_size` below 1, an
      `output_dir` that is a file or not writable, or an output that would
      replace an input or one of the run's own files, or that is a link to
      a device (`output_paths.check_outputs`); raised before anything is
      generated or created.
    RunError: the run lacks what the options need (class averages or a
      trained style encoder of an imported run).
    OSError: an output could not be written (a full disk).
  """
  from tp2p_jax.cli import checks
  from tp2p_jax.core import storage
  from tp2p_jax.inference import parallel, run_loading, styles
  from tp2p_jax.methods.test_mode import image_seeds

  if batch_size < 1:
    raise UsageError(f"batch_size must be >= 1, got {batch_size}")
  checks.output_dir_writable(output_dir, "output")
  out_dir = storage.path(output_dir)
  paths = [storage.path(f) for f in files]
  names = _check_outputs(paths, output_dir, grid, style_image, run.workdir)
  _log_renamed(paths, names, "_styles.png" if grid else ".png")
  given = {"style": style, "style_image": style_image, "style_mix": style_mix, "grid": grid}
  _check_options(run, direction, [name for name, value in given.items()
                                  if value is not None and value is not False])
  # Every usage error before any work: the style (or the grid's classes) first.
  vector = bank = None
  if grid:
    run.require_class_styles()
    bank = styles.class_embeddings(run)
  elif run.predictor.style_dim is not None:
    vector = _style_vector(run, style, style_image, style_mix).astype(np.float32)

  mesh = parallel.local_mesh(devices)
  predictor = run_loading.replicated_on(run, mesh).predictor
  global_batch = parallel.global_batch_size(batch_size, mesh)
  share = parallel.process_share(list(zip(paths, names)))
  # Train mode's dropout seeds follow each input's place in the whole sorted
  # list, whatever the process, batch or device count.
  positions = parallel.process_share(range(len(paths)))
  prepare_mode = prepare or predictor.prepare
  generate = lambda x, seeds, *style: predictor.generate(  # noqa: E731
      x, *style, direction=direction, seeds=seeds)
  classes = per = None
  if bank is not None:
    classes = [i for i in range(len(bank.names)) if bank.counts[i] > 0]
    per = len(classes)
  # Sketches per generator call: a grid makes `per` images of each.
  per_call = global_batch if per is None else max(1, global_batch // per)
  written: list[epath.Path] = []
  failed: list[tuple[epath.Path, str]] = []

  def generated(chunk: list[tuple[str, Any, int]], writer: parallel.BoundedWriter) -> None:
    if not written:
      # Only now: a run of unreadable inputs leaves no empty folder behind.
      out_dir.mkdir(parents=True, exist_ok=True)
    sketches = np.stack([p.image for _, p, _ in chunk])
    seeds = image_seeds(predictor.seed, [k for _, _, k in chunk])
    if bank is not None:
      tiled = np.repeat(sketches, per, axis=0)
      vectors = np.tile(bank.means[classes], (len(chunk), 1))
      outputs = run_loading.in_fixed_batches(generate, [tiled, np.repeat(seeds, per), vectors],
                                             global_batch, mesh=mesh)
      names = [bank.names[c] for c in classes]
      for i, (name, _, _) in enumerate(chunk):
        written.append(out_dir / f"{name}_styles.png")
        writer.submit(_write_grid, written[-1], sketches[i], outputs[i * per:(i + 1) * per],
                      names)
    else:
      inputs = [sketches, seeds]
      if vector is not None:
        inputs.append(np.repeat(vector[None], len(chunk), axis=0))
      outputs = run_loading.in_fixed_batches(generate, inputs, global_batch, mesh=mesh)
      for (name, prepared, _), out in zip(chunk, outputs):
        written.append(out_dir / f"{name}.png")
        writer.submit(_write_restored, written[-1], out, prepared)

  start = time.perf_counter()
  stream = parallel.prefetch(_prepared(share, predictor.image_size, prepare_mode),
                             depth=2 * per_call)
  with contextlib.closing(stream), parallel.BoundedWriter(
      workers=2, max_pending=2 * per_call) as writer:
    chunk: list[tuple[str, Any, int]] = []
    for (path, name, prepared, reason), position in zip(stream, positions):
      if prepared is None:
        failed.append((path, reason))
        continue
      chunk.append((name, prepared, position))
      if len(chunk) == per_call:
        generated(chunk, writer)
        chunk = []
    if chunk:
      generated(chunk, writer)
  return PredictResult(written=tuple(written), failed=tuple(failed),
                       devices=mesh.devices.size, batch_size=global_batch,
                       seconds=time.perf_counter() - start)


def _prepared(inputs: Sequence[tuple[epath.Path, str]], image_size: int, mode: str):
  """(path, name, PreparedSketch, None) per readable input, (path, name,
  None, reason) per unreadable one, in order (runs in the prefetch thread)."""
  from tp2p_jax.data.image_files import describe_error
  from tp2p_jax.inference import files, sketch_io
  for path, name in inputs:
    try:
      image = files.read_image(path)
    except files.SpecialFileError as e:  # a FIFO, device, link loop: never opened
      yield path, name, None, str(e)
      continue
    except Exception as e:  # pylint: disable=broad-except
      yield path, name, None, describe_error(e)
      continue
    yield path, name, sketch_io.prepare_sketch(image, image_size, mode), None


def _write_restored(path: epath.Path, output: np.ndarray, prepared: Any) -> None:
  """An output (S, S, 3) float32 in [-1, 1] as a PNG at its input's size."""
  from tp2p_jax.data.image_files import save_png
  from tp2p_jax.inference import sketch_io
  save_png(path, sketch_io.restore_size(output, prepared))


def _write_grid(path: epath.Path, sketch: np.ndarray, outputs: np.ndarray,
                class_names: Sequence[str]) -> None:
  """`style_grid` of a sketch (S, S, 3) and its outputs (C, S, S, 3), both
  in [-1, 1], as a PNG."""
  from tp2p_jax.data.image_files import save_png
  save_png(path, style_grid(sketch, outputs, class_names))


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
  flags.DEFINE_integer("batch_size", 8, "Images per generator call over all of this "
                       "process's devices, rounded up to a multiple of their number (each "
                       "device takes an equal share).", lower_bound=1, flag_values=fv)
  command.define_generator_flags(fv)
  command.define_test_mode_flags(fv)
  flags.DEFINE_enum("direction", "AtoB", ["AtoB", "BtoA"],
                    "CycleGAN: which generator (A->B or B->A).", flag_values=fv)
  command.define_job_flags(fv, "the inputs (process i takes inputs i, i + N, ...)")
  return fv


def _check_before_loading(fv: flags.FlagValues) -> list[epath.Path]:
  """Every check that needs no run, so that a mistake is reported before
  the checkpoint is restored; returns the input files.

  Raises:
    UsageError: a missing run directory, input or style image, an input
      or style image that is a FIFO or device, an input with no readable
      image, an unwritable --output, an output that would replace an input
      or one of the run's own files, a malformed --style_mix.
  """
  from tp2p_jax.cli import checks
  from tp2p_jax.data.image_files import IMAGE_SUFFIXES
  from tp2p_jax.inference import files as files_lib, styles
  checks.run_dir(fv.workdir)
  checks.input_path(fv.input, "input")
  checks.output_dir_writable(fv.output, "output")
  if fv.style_image:
    checks.input_file(fv.style_image, "style_image")
    reason = files_lib.header_problem(fv.style_image)
    if reason is not None:
      raise UsageError(f"--style_image={fv.style_image}: cannot read: {reason}")
  if fv.style_mix:
    try:
      styles.parse_style_mix(fv.style_mix)
    except ValueError as e:
      raise UsageError(str(e)) from None
  files = files_lib.image_files(fv.input)
  if not files:
    raise UsageError(f"--input={fv.input}: no image files in the folder (suffixes: "
                     f"{', '.join(sorted(IMAGE_SUFFIXES))})")
  _check_outputs(files, fv.output, fv.grid, fv.style_image or None, fv.workdir)
  # Headers only, up to the first readable one: cheap for any number of files.
  if not any(files_lib.header_problem(f) is None for f in files):
    reason = files_lib.header_problem(files[0])
    if len(files) == 1:
      raise UsageError(f"--input={files[0]}: cannot read: {reason}")
    raise UsageError(f"--input={fv.input}: none of its {len(files)} image files can be "
                     f"read, e.g. {files[0].name}: {reason}")
  return files


def _predict(fv: flags.FlagValues) -> int:
  import jax

  from tp2p_jax.inference import parallel
  from tp2p_jax.inference.run_loading import load_trained_run, with_test_mode
  checkpoint = command.checkpoint_choice(fv)
  files = _check_before_loading(fv)
  command.join_job(fv)
  run = load_trained_run(fv.workdir, checkpoint, fv.dtype, mesh=parallel.local_mesh())
  run = with_test_mode(run, fv.test_mode, fv.seed)
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
  print(f"wrote {len(result.written)} image(s) to {epath.Path(fv.output)} "
        f"(run step {run.step})"
        + (f"; {len(result.failed)} input(s) failed" if result.failed else ""))
  print(json.dumps({"written": len(result.written), "failed": len(result.failed),
                    "output": os.fspath(epath.Path(fv.output)), "step": run.step,
                    "devices": result.devices, "processes": jax.process_count(),
                    "process_index": jax.process_index(), "batch_size": result.batch_size,
                    "test_mode": run.predictor.test_mode,
                    "seconds": round(result.seconds, 3),
                    "images_per_s": round(result.images_per_s, 3)}))
  return 1 if result.failed else 0


def main(argv: Sequence[str]) -> int:
  """Runs the command line on `argv` (argv[0] is the program name).

  Returns:
    The exit status: 0 all written (or help shown; a JSON summary on the
    last stdout line), 1 some input could not be read (each named on
    stderr), 2 usage error (one line on stderr).
  """
  from tp2p_jax.core.run_dir import RunError
  return command.run(argv, __doc__, lambda argv: _define_flags(), _predict,
                     required=("workdir", "input", "output"),
                     usage_errors=(RunError, FileNotFoundError))


if __name__ == "__main__":
  sys.exit(main(sys.argv))
