"""Reading a prepared dataset: its directory, class names and splits as
grain random-access sources (array_record through TFDS; no TensorFlow)."""
from __future__ import annotations

import os
import pathlib
from typing import Any

import grain.python as grain
import numpy as np
import tensorflow_datasets as tfds

from tp2p_jax.data.prepared.config import DATASET_NAME, TRAIN
from tp2p_jax.data.prepared.tfds_photos import decode_text

def resolve_dataset_dir(path: str | os.PathLike[str]) -> str:
  """The prepared dataset directory for `path`.

  `path` is either the dataset directory itself (it holds dataset_info.json)
  or a TFDS data root holding exactly one sketch_photo_pairs dataset.
  """
  root = pathlib.Path(path)
  if (root / "dataset_info.json").is_file():
    return os.fspath(root)
  found = sorted(root.glob(f"{DATASET_NAME}/*/*/dataset_info.json"))
  if len(found) == 1:
    return os.fspath(found[0].parent)
  if not found:
    raise FileNotFoundError(f"no {DATASET_NAME} dataset under {root}")
  raise ValueError(
      f"{len(found)} {DATASET_NAME} datasets under {root}; pick one of "
      f"{[os.fspath(f.parent) for f in found]}")


def class_names(data_dir: str | os.PathLike[str]) -> tuple[str, ...]:
  """Label names (index = label) of a prepared dataset (see
  `resolve_dataset_dir` for `data_dir`)."""
  builder = tfds.builder_from_directory(resolve_dataset_dir(data_dir))
  return tuple(builder.info.features["label"].names)


class PairedSource(grain.RandomAccessDataSource):
  """A prepared split as a source of the input pipeline's records.

  Records: {'sketch': uint8 (S, S, 3), 'photo': uint8 (S, S, 3),
  'label': int32 scalar array, 'filename': str}. Reads through
  `tfds.builder_from_directory(dir).as_data_source(split)` (array_record
  random access, no TensorFlow). Picklable (workers reopen the files) and
  with a repr that depends only on the dataset and split.
  """

  def __init__(self, data_dir: str | os.PathLike[str], split: str = TRAIN):
    self._dir = resolve_dataset_dir(data_dir)
    self._split = split
    self._source = self._open()

  def _open(self) -> Any:
    builder = tfds.builder_from_directory(self._dir)
    if self._split not in builder.info.splits:
      raise ValueError(
          f"split {self._split!r} not in {self._dir}; it has "
          f"{sorted(builder.info.splits)}")
    return builder.as_data_source(self._split)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    n = len(self._source)
    if index < 0:
      index += n
    if not 0 <= index < n:
      raise IndexError(f"index {index} out of range for {n} records")
    record = self._source[index]
    return {
        "sketch": np.asarray(record["sketch"], np.uint8),
        "photo": np.asarray(record["photo"], np.uint8),
        "label": np.asarray(record["label"], np.int32),
        "filename": decode_text(record["filename"]),
    }

  def __getstate__(self) -> dict[str, str]:
    return {"dir": self._dir, "split": self._split}

  def __setstate__(self, state: dict[str, str]) -> None:
    self._dir, self._split = state["dir"], state["split"]
    self._source = self._open()

  def __repr__(self) -> str:
    return (f"PairedSource(data_dir={self._dir!r}, split={self._split!r}, "
            f"num_records={len(self)})")
