r"""Prepares a sketch/photo pair dataset (TFDS array_record, no TensorFlow).

  python -m tp2p_jax.cli.prepare --source=folder --input=photos/ \
      --data_dir=data/ --image_size=256
  python -m tp2p_jax.cli.prepare --source=pix2pix --input=edges2cats/ \
      --data_dir=data/ --direction=BtoA
  python -m tp2p_jax.cli.prepare --source=tfds:oxford_iiit_pet \
      --input=~/tensorflow_datasets --data_dir=data/

Sources (see `tp2p_jax.data.prepared`):
  folder        photos, one subfolder per style class (flat folder: one
                class); sketches made by the classical sketcher.
  pix2pix       A|B side-by-side files, or pix2pixHD train_A/ + train_B/
                folders; --direction says which side is the sketch.
  tfds:NAME     a prepared TFDS image dataset; --input is its TFDS data_dir.
                oxford_iiit_pet keeps its cat breeds and masks sketches with
                its trimaps; cats_vs_dogs keeps its cats.

The build is deterministic. Progress bars go to stderr; the last stdout line
is one JSON object:

  {"dataset": "sketch_photo_pairs/CONFIG:VERSION", "written": N,
   "skipped": M, "skipped_files": [{"file": ..., "reason": ...}, ...],
   "classes": [...], "splits": {"train": n, "validation": m},
   "data_dir": DATASET_DIR, "seconds": s, "pairs_per_s": r}

where DATASET_DIR is what `tp2p_jax.data.prepared.PairedSource` and
`tfds.builder_from_directory` take. A missing or empty input, an input with
no usable image, a --data_dir that is a file or not writable, an existing
dataset without --overwrite, or bad flags are an error (one line on stderr,
exit status 2; nothing is written). Every input that does not become a pair
(not an image, too large, a broken symbolic link, a name that is not UTF-8,
...) is named on stderr with the reason and listed in `skipped_files`.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Sequence

from absl import flags
from absl import logging as absl_logging

from tp2p_jax.cli import checks, command
from tp2p_jax.core import storage

if TYPE_CHECKING:  # the real import loads TFDS, which --help does without
  from tp2p_jax.data.prepared import BuildResult


def _define_flags() -> flags.FlagValues:
  """The command's flags, in a registry of their own so that `main` can run
  repeatedly in one process (tests) beside other tools' flags."""
  fv = flags.FlagValues()
  flags.DEFINE_string(
      "source", None, "folder, pix2pix or tfds:NAME (e.g. tfds:oxford_iiit_pet).",
      flag_values=fv)
  flags.DEFINE_string(
      "input", None,
      "Input folder; for tfds:NAME the TFDS data_dir holding NAME (default: "
      "TFDS's own default).", flag_values=fv)
  flags.DEFINE_string(
      "data_dir", None, "TFDS data root to write the dataset into.", flag_values=fv)
  flags.DEFINE_integer("image_size", 256, "Stored image side.", flag_values=fv)
  flags.DEFINE_enum(
      "direction", "AtoB", ["AtoB", "BtoA"],
      "pix2pix: AtoB makes A (left half, or X_A/) the sketch; BtoA makes B.",
      flag_values=fv)
  flags.DEFINE_float(
      "val_fraction", 0.06,
      "Expected fraction of pairs in the validation split (by file-name hash).",
      flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Salt of the split hash.", flag_values=fv)
  flags.DEFINE_list(
      "tfds_splits", [], "tfds:NAME: source splits to read (default: all).",
      flag_values=fv)
  flags.DEFINE_bool(
      "overwrite", False, "Replace an existing dataset with the same settings.",
      flag_values=fv)
  flags.DEFINE_integer(
      "num_workers", os.cpu_count() or 1,
      "Processes that decode and sketch; 0 works in the main process.",
      flag_values=fv)
  flags.DEFINE_bool("progress", True, "Progress bars on stderr.", flag_values=fv)
  return fv


def parse_source(value: str | None) -> tuple[str, str]:
  """'folder' | 'pix2pix' | 'tfds:NAME' -> (source, tfds_name)."""
  if value in ("folder", "pix2pix"):
    return value, ""
  if value and value.startswith("tfds:") and len(value) > len("tfds:"):
    return "tfds", value[len("tfds:"):]
  raise ValueError(
      f"--source must be folder, pix2pix or tfds:NAME, got {value!r}")


def summary(result: BuildResult) -> dict[str, Any]:
  """The JSON object the command prints last, from a `BuildResult`."""
  return {
      "dataset": result.dataset,
      "written": result.written,
      "skipped": len(result.skipped),
      "skipped_files": [{"file": s.file, "reason": s.reason}
                        for s in result.skipped],
      "classes": list(result.classes),
      "class_counts": result.class_counts,
      "classes_without_pairs": list(result.classes_without_pairs()),
      "splits": result.splits,
      "data_dir": result.dataset_dir,
      "seconds": round(result.seconds, 3),
      "pairs_per_s": round(result.pairs_per_s, 2),
  }


# Fewer held-out pairs than this make validation metrics noise (a FID or a
# style accuracy over a handful of images moves by whole steps).
MIN_VALIDATION_PAIRS = 32


def dataset_warnings(result: BuildResult) -> list[str]:
  """What a user should know before training on `result`: a validation split
  too small to measure anything, and classes without training pairs (no
  class style for them)."""
  warnings = []
  val = result.splits.get("validation", 0)
  if val < MIN_VALIDATION_PAIRS:
    warnings.append(
        f"the validation split has {val} pair(s) of {result.written}: fewer than "
        f"{MIN_VALIDATION_PAIRS} held-out pairs make evaluation metrics noise; add photos or "
        "raise --val_fraction")
  missing = result.classes_without_pairs()
  if missing and len(missing) < len(result.classes):
    from tp2p_jax.data.toycats import STYLE_NAMES
    why = (" (class folders named after some of the toy cats' coats get all nine labels, so "
           "that runs share one label space)" if result.classes == STYLE_NAMES else "")
    warnings.append(
        f"{len(missing)} of the {len(result.classes)} classes have no training pairs: "
        f"{', '.join(missing)}{why}; a run on this data has no --style for them")
  return warnings


def run(source: str | None, input_path: str | None, data_dir: str | None, *,
        image_size: int = 256, direction: str = "AtoB", val_fraction: float = 0.06,
        seed: int = 0, tfds_splits: Sequence[str] = (), overwrite: bool = False,
        num_workers: int = 0, show_progress: bool = False) -> int:
  """Builds the dataset and reports like the command; returns its exit status.

  Args:
    source: "folder", "pix2pix" or "tfds:NAME" (the --source flag).
    input_path: the input folder, or for tfds:NAME the TFDS data_dir holding
      NAME (None: TFDS's default); "~" is expanded.
    data_dir: TFDS data root to write into.
    image_size, direction, val_fraction, seed, tfds_splits, overwrite,
      num_workers, show_progress: as `tp2p_jax.data.prepared.build` takes
      them (seed is its split hash salt; a negative num_workers is 0).

  Returns:
    0 when written: every skipped input named on stderr, the JSON summary
    (see the module docstring) as the last stdout line. 2 on an error: one
    "error: ..." line on stderr, nothing on stdout.
  """
  # Imported here so that --help answers without loading TFDS.
  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds
  from tp2p_jax.data import prepared
  # pylint: enable=g-import-not-at-top

  try:
    source, tfds_name = parse_source(source)
    if not data_dir:
      raise ValueError("--data_dir is required")
    if source != "tfds" and not input_path:
      raise ValueError("--input is required")
    input_path = os.path.expanduser(input_path) if input_path else None
    # Before the input is scanned: a mistake costs no decoding.
    if storage.is_url(data_dir):
      # array_record writes and reads local files only (google/array_record#120).
      raise command.UsageError(
          f"--data_dir={data_dir}: prepare writes a local folder; prepare into one, copy it "
          "to the bucket (e.g. gcloud storage cp -r DIR gs://...), and train with "
          "--config.data.data_dir=gs://... (each host reads a local copy it makes once)")
    checks.output_dir_writable(data_dir, "data_dir")
    # Our own bars count pairs; TFDS's would only repeat them.
    tfds.display_progress_bar(False)
    # TFDS prints its own summary to stdout, which is reserved for the JSON.
    with contextlib.redirect_stdout(sys.stderr):
      result = prepared.build(
          source, input_path, os.path.abspath(data_dir),
          image_size=image_size, direction=direction,
          val_fraction=val_fraction, seed=seed, tfds_name=tfds_name,
          tfds_splits=tuple(tfds_splits), overwrite=overwrite,
          num_workers=max(0, num_workers), show_progress=show_progress)
  except (prepared.InputError, ValueError, FileNotFoundError) as e:
    return command.fail(str(e))
  for skipped in result.skipped:
    print(f"skipped {skipped.file}: {skipped.reason}", file=sys.stderr)
  for warning in dataset_warnings(result):
    print(f"warning: {warning}", file=sys.stderr)
  print(json.dumps(summary(result)))
  return 0


def _prepare(fv: flags.FlagValues) -> int:
  # TFDS warns through absl about every custom config, repeating it in full.
  absl_logging.set_verbosity(absl_logging.ERROR)  # restored by command.run
  return run(fv.source, fv.input, fv.data_dir, image_size=fv.image_size,
             direction=fv.direction, val_fraction=fv.val_fraction, seed=fv.seed,
             tfds_splits=fv.tfds_splits, overwrite=fv.overwrite,
             num_workers=fv.num_workers, show_progress=fv.progress)


def main(argv: Sequence[str]) -> int:
  """Runs the command on argv (argv[0] is the program name); returns the
  exit status: 0 written (or help shown), 2 a user's mistake (one line on
  stderr)."""
  return command.run(argv, __doc__, lambda argv: _define_flags(), _prepare)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
