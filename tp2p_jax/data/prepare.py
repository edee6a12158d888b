r"""Prepares a sketch/photo pair dataset (TFDS array_record, no TensorFlow).

  python -m tp2p_jax.data.prepare --source=folder --input=photos/ \
      --data_dir=data/ --image_size=256
  python -m tp2p_jax.data.prepare --source=pix2pix --input=edges2cats/ \
      --data_dir=data/ --direction=BtoA
  python -m tp2p_jax.data.prepare --source=tfds:oxford_iiit_pet \
      --input=~/tensorflow_datasets --data_dir=data/

Sources (see `tp2p_jax.data.paired_dataset`):
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

where DATASET_DIR is what `paired_dataset.PairedSource` and
`tfds.builder_from_directory` take. A missing or empty input, an input with
no usable image, or an existing dataset without --overwrite is an error
(message on stderr, exit status 1).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

_SOURCE = flags.DEFINE_string(
    "source", None, "folder, pix2pix or tfds:NAME (e.g. tfds:oxford_iiit_pet).")
_INPUT = flags.DEFINE_string(
    "input", None,
    "Input folder; for tfds:NAME the TFDS data_dir holding NAME (default: "
    "TFDS's own default).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data root to write the dataset into.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Stored image side.")
_DIRECTION = flags.DEFINE_enum(
    "direction", "AtoB", ["AtoB", "BtoA"],
    "pix2pix: AtoB makes A (left half, or X_A/) the sketch; BtoA makes B.")
_VAL_FRACTION = flags.DEFINE_float(
    "val_fraction", 0.06,
    "Expected fraction of pairs in the validation split (by file-name hash).")
_SEED = flags.DEFINE_integer("seed", 0, "Salt of the split hash.")
_TFDS_SPLITS = flags.DEFINE_list(
    "tfds_splits", [], "tfds:NAME: source splits to read (default: all).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace an existing dataset with the same settings.")
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", os.cpu_count() or 1,
    "Processes that decode and sketch; 0 works in the main process.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Progress bars on stderr.")


def _parse_source(value: str | None) -> tuple[str, str]:
  """'folder' | 'pix2pix' | 'tfds:NAME' -> (source, tfds_name)."""
  if value in ("folder", "pix2pix"):
    return value, ""
  if value and value.startswith("tfds:") and len(value) > len("tfds:"):
    return "tfds", value[len("tfds:"):]
  raise ValueError(
      f"--source must be folder, pix2pix or tfds:NAME, got {value!r}")


def _fail(message: str) -> int:
  print(f"prepare: error: {message}", file=sys.stderr)
  return 1


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # TFDS warns through absl about every custom config, repeating it in full.
  absl_logging.set_verbosity(absl_logging.ERROR)
  # Imported here so that --help answers without loading TFDS.
  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds
  from tp2p_jax.data import paired_dataset
  # pylint: enable=g-import-not-at-top

  try:
    source, tfds_name = _parse_source(_SOURCE.value)
    if not _DATA_DIR.value:
      raise ValueError("--data_dir is required")
    if source != "tfds" and not _INPUT.value:
      raise ValueError("--input is required")
    input_path = (os.path.expanduser(_INPUT.value) if _INPUT.value else None)
    # Our own bars count pairs; TFDS's would only repeat them.
    tfds.display_progress_bar(False)
    # TFDS prints its own summary to stdout, which is reserved for the JSON.
    with contextlib.redirect_stdout(sys.stderr):
      result = paired_dataset.build(
          source, input_path, os.path.abspath(_DATA_DIR.value),
          image_size=_IMAGE_SIZE.value, direction=_DIRECTION.value,
          val_fraction=_VAL_FRACTION.value, seed=_SEED.value,
          tfds_name=tfds_name, tfds_splits=tuple(_TFDS_SPLITS.value),
          overwrite=_OVERWRITE.value, num_workers=max(0, _NUM_WORKERS.value),
          show_progress=_PROGRESS.value)
  except (paired_dataset.InputError, ValueError, FileNotFoundError) as e:
    return _fail(str(e))
  for skipped in result.skipped:
    print(f"skipped {skipped.file}: {skipped.reason}", file=sys.stderr)
  print(json.dumps({
      "dataset": result.dataset,
      "written": result.written,
      "skipped": len(result.skipped),
      "skipped_files": [{"file": s.file, "reason": s.reason}
                        for s in result.skipped],
      "classes": list(result.classes),
      "splits": result.splits,
      "data_dir": result.dataset_dir,
      "seconds": round(result.seconds, 3),
      "pairs_per_s": round(result.pairs_per_s, 2),
  }))
  return 0


if __name__ == "__main__":
  app.run(main)
