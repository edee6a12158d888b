"""What a run writes besides checkpoints: `metrics.jsonl` (one JSON object per
logged step), TensorBoard event files (tensorboardX, no TensorFlow), and
sample grids as PNG."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Mapping, Sequence

import numpy as np

from tp2p_jax.core import storage
from tp2p_jax.core.atomic_files import write_text_atomically
from tp2p_jax.data.image_files import float_to_uint8


class MetricsWriter:
  """Appends `{"step": s, **metrics}` rows to `<workdir>/<name>.jsonl` and
  scalars to TensorBoard under `<workdir>/tensorboard/<name>`.

  `resume_step`: rows after this step (written by a run that was killed
  before its next checkpoint) are dropped, so a resumed run's file has each
  step once.

  On an object store (`gs://`), which has no append, the rows are kept in
  memory and the whole file is uploaded at each write (a 400k-step run
  logging every 100 steps: 4,000 rows, ~2 MB); TensorBoard's event file is
  written to a local folder and uploaded after each flush (tensorboardX's
  own GCS writer does not work without TensorFlow).
  """

  def __init__(self, workdir: str, name: str = "metrics", resume_step: int = 0,
               enabled: bool = True):
    self.enabled = enabled
    self.path = storage.join(workdir, f"{name}.jsonl")
    self._remote = storage.is_url(workdir)
    self._rows: list[str] = []
    self._tb = None
    self._tb_local: str | None = None
    self._tb_target = storage.join(workdir, "tensorboard", name)
    if not enabled:
      return
    target = storage.path(self.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
      rows = [line + "\n" for line in target.read_text().splitlines() if line.strip()]
      kept = [r for r in rows if json.loads(r).get("step", 0) <= resume_step]
      if len(kept) != len(rows):
        write_text_atomically(self.path, "".join(kept))
      self._rows = kept
    from tensorboardX import SummaryWriter
    if self._remote:
      self._tb_local = tempfile.mkdtemp(prefix="tp2p-tensorboard-")
    self._tb = SummaryWriter(self._tb_local or self._tb_target,
                             purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    row = json.dumps({"step": int(step), **{k: float(v) for k, v in metrics.items()}}) + "\n"
    if self._remote:
      self._rows.append(row)
      write_text_atomically(self.path, "".join(self._rows))
    else:
      with open(self.path, "a") as f:
        f.write(row)
    for k, v in metrics.items():
      self._tb.add_scalar(k, float(v), int(step))
    self._tb.flush()
    self._upload_events()

  def _upload_events(self) -> None:
    """Copies the local event files to the run directory (object stores)."""
    if self._tb_local is None:
      return
    for name in sorted(os.listdir(self._tb_local)):
      storage.copy_file(os.path.join(self._tb_local, name), storage.join(self._tb_target, name))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None
      try:
        self._upload_events()
      finally:
        if self._tb_local is not None:
          shutil.rmtree(self._tb_local, ignore_errors=True)
          self._tb_local = None


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] float images -> uint8 [0, 255]."""
  return float_to_uint8(images, "-1..1")


def image_grid(columns: Sequence[np.ndarray], pad: int = 2,
               captions: Sequence[str] | None = None) -> np.ndarray:
  """Grid whose row i holds `columns[j][i]` side by side (e.g. sketch | output
  | target), from (N, H, W, 3) arrays in [-1, 1]; white padding; uint8.

  `captions`: one name per column, written in full in a header row; tiles
  narrower than their longest caption are enlarged by the smallest integer
  factor that fits it (nearest neighbour), so a 32x32 toy run's grid reads
  "tortoiseshell", not "torto".
  """
  cols = [to_uint8(c) for c in columns]
  header = None
  if captions is not None:
    if len(captions) != len(cols):
      raise ValueError(f"{len(captions)} captions for {len(cols)} columns")
    scale = _caption_scale(captions, cols[0].shape[2], pad)
    if scale > 1:
      cols = [c.repeat(scale, axis=1).repeat(scale, axis=2) for c in cols]
  n, h, w, _ = cols[0].shape
  grid = np.full((n * (h + pad) + pad, len(cols) * (w + pad) + pad, 3), 255, np.uint8)
  for j, col in enumerate(cols):
    for i in range(n):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      grid[y:y + h, x:x + w] = col[i]
  if captions is not None:
    header = _caption_row(captions, w, pad)
    grid = np.concatenate([header, grid], axis=0)
  return grid


_CAPTION_HEIGHT = 14


def _caption_width(text: str) -> float:
  from PIL import Image, ImageDraw
  return ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text)


def _caption_scale(captions: Sequence[str], tile_width: int, pad: int) -> int:
  widest = max(_caption_width(c) for c in captions) + pad
  return max(1, -(-int(np.ceil(widest)) // tile_width))


def _caption_row(captions: Sequence[str], tile_width: int, pad: int) -> np.ndarray:
  """White strip with each caption centred over its column."""
  from PIL import Image, ImageDraw
  strip = Image.new("RGB", (len(captions) * (tile_width + pad) + pad, _CAPTION_HEIGHT),
                    "white")
  draw = ImageDraw.Draw(strip)
  for i, text in enumerate(captions):
    x = pad + i * (tile_width + pad) + (tile_width - _caption_width(text)) / 2
    draw.text((max(x, pad + i * (tile_width + pad)), 1), text, fill="black")
  return np.asarray(strip)
