"""What a run writes besides checkpoints: `metrics.jsonl` (one JSON object per
logged step), TensorBoard event files (tensorboardX, no TensorFlow), and
sample grids as PNG."""
from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np

from tp2p_jax.data.image_files import float_to_uint8


class MetricsWriter:
  """Appends `{"step": s, **metrics}` rows to `<workdir>/<name>.jsonl` and
  scalars to TensorBoard under `<workdir>/tensorboard/<name>`.

  `resume_step`: rows after this step (written by a run that was killed
  before its next checkpoint) are dropped, so a resumed run's file has each
  step once.
  """

  def __init__(self, workdir: str, name: str = "metrics", resume_step: int = 0,
               enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, f"{name}.jsonl")
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(self.path):
      with open(self.path) as f:
        rows = [line for line in f if line.strip()]
      kept = [r for r in rows if json.loads(r).get("step", 0) <= resume_step]
      if len(kept) != len(rows):
        with open(self.path, "w") as f:
          f.writelines(kept)
    from tensorboardX import SummaryWriter
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard", name),
                             purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    for k, v in metrics.items():
      self._tb.add_scalar(k, float(v), int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


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
