"""Unpaired two-domain sources for CycleGAN.

Records have the pipeline's paired layout (see `tp2p_jax.data.pipeline`), so
the same grain pipeline batches them: `sketch` carries the domain-A image and
`photo` the domain-B image (-> `real_a`, `real_b`), but the two are drawn
independently: record i pairs A image i with B image perm[i] for a fixed
seeded permutation, so no pairing is learnt from the order. `label` is 0.

Two origins (registered as data sources in `tp2p_jax.data.sources`):
* "toycats": the procedural toy cats, A = sketches, B = photos; the
  permutation breaks each sketch's link to its own photo.
* "folders": `<data_dir>/trainA/`, `trainB/` (and `testA/`, `testB/` for
  held-out samples, else the train folders), the CycleGAN release's layout;
  any PIL-readable images of any size (the pipeline resizes them).
"""
from __future__ import annotations

import os
from typing import Any

import grain.python as grain
import numpy as np

from tp2p_jax.data.image_files import (IMAGE_SUFFIXES, ImageReadError, describe_error,
                                       load_image)


class ImageFolderSource(grain.RandomAccessDataSource):
  """The image files directly inside a folder, sorted by name; records are
  {'image': uint8 (H, W, 3)}. Unreadable files raise `ImageReadError` naming
  the file."""

  def __init__(self, directory: str):
    if not os.path.isdir(directory):
      raise ValueError(f"{directory}: not a folder")
    self._directory = directory
    self._files = sorted(f for f in os.listdir(directory)
                         if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES)
    if not self._files:
      raise ValueError(f"{directory}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")

  def __len__(self) -> int:
    return len(self._files)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    path = os.path.join(self._directory, self._files[int(index)])
    try:
      return {"image": load_image(path)}
    except Exception as e:  # pylint: disable=broad-except
      raise ImageReadError(f"{path}: cannot read: {describe_error(e)}") from None

  def __repr__(self) -> str:
    return f"ImageFolderSource({self._directory!r}, num_files={len(self._files)})"


class UnpairedSource(grain.RandomAccessDataSource):
  """A-images and B-images drawn independently (see the module docstring).

  Args:
    source_a, source_b: random-access sources of records holding an image
      under `key_a` / `key_b`.
    seed: seeds the permutation of B.
  Length: max(len(A), len(B)); the shorter side wraps around.
  """

  def __init__(self, source_a: Any, source_b: Any, *, seed: int, key_a: str = "image",
               key_b: str = "image"):
    self._a, self._b, self._key_a, self._key_b = source_a, source_b, key_a, key_b
    self._seed = int(seed)
    self._len = max(len(source_a), len(source_b))
    self._perm_b = np.random.default_rng(self._seed).permutation(self._len)

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    a = self._a[index % len(self._a)][self._key_a]
    b = self._b[int(self._perm_b[index]) % len(self._b)][self._key_b]
    return {"sketch": a, "photo": b, "label": np.int32(0)}

  def __repr__(self) -> str:
    return f"UnpairedSource(a={self._a!r}, b={self._b!r}, seed={self._seed})"


def toycats_unpaired(train: Any, held_out: Any, *, seed: int
                     ) -> tuple[UnpairedSource, UnpairedSource]:
  """(train, held-out) toy cats as two domains: sketches (A) and photos (B)
  of paired toy-cat sources, unpaired by the permutation."""
  return (UnpairedSource(train, train, seed=seed, key_a="sketch", key_b="photo"),
          UnpairedSource(held_out, held_out, seed=seed + 1, key_a="sketch", key_b="photo"))


def folder_sources(data_dir: str, *, seed: int) -> tuple[UnpairedSource, UnpairedSource]:
  """(train, held-out) from `data_dir`/trainA, trainB (and testA, testB for
  held-out samples, else train's), a local folder."""
  if not data_dir:
    raise ValueError("data.source='folders' needs data.data_dir holding trainA/ and trainB/")
  train = UnpairedSource(ImageFolderSource(os.path.join(data_dir, "trainA")),
                         ImageFolderSource(os.path.join(data_dir, "trainB")), seed=seed)
  if os.path.isdir(os.path.join(data_dir, "testA")) and os.path.isdir(
      os.path.join(data_dir, "testB")):
    held_out = UnpairedSource(ImageFolderSource(os.path.join(data_dir, "testA")),
                              ImageFolderSource(os.path.join(data_dir, "testB")),
                              seed=seed + 1)
  else:
    held_out = train
  return train, held_out
