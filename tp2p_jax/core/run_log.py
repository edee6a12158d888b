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


def image_grid(columns: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
  """Grid whose row i holds `columns[j][i]` side by side (e.g. sketch | output
  | target), from (N, H, W, 3) arrays in [-1, 1]; white padding; uint8."""
  cols = [to_uint8(c) for c in columns]
  n, h, w, _ = cols[0].shape
  grid = np.full((n * (h + pad) + pad, len(cols) * (w + pad) + pad, 3), 255, np.uint8)
  for j, col in enumerate(cols):
    for i in range(n):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      grid[y:y + h, x:x + w] = col[i]
  return grid
