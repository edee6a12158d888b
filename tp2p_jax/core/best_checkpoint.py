"""The run's best checkpoint by a held-out metric (`keep_best`): one step
under `<run>/best/`, in the format of `checkpoints/`, with the validation
metrics it was judged by saved inside it.

It lives apart from `checkpoints/`, so the rolling deletion there never
touches it; a resumed run reads the best value so far from it and replaces
it only with a strictly better step.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping

from tp2p_jax.core import storage
from tp2p_jax.core.checkpoints import Checkpointer

log = logging.getLogger("tp2p_jax.train")

BEST_DIR = "best"

# Every metric `keep_best` may name, and whether lower ("min") or higher
# ("max") is better. Validation writes them under `eval/`.
METRIC_DIRECTIONS: Mapping[str, str] = {
    "eval/l1": "min", "eval/psnr": "max", "eval/ssim": "max", "eval/lpips": "min",
    "eval/fid": "min", "eval/kid": "min", "eval/style_accuracy": "max",
}


def keep_best_problem(keep_best: str, eval_every: int) -> str | None:
  """Why `keep_best` cannot work with `eval_every` (one line naming the
  config fields), or None: "" (off) or a metric of `METRIC_DIRECTIONS`
  with validation on."""
  if not keep_best:
    return None
  if keep_best not in METRIC_DIRECTIONS:
    return (f"--config.keep_best={keep_best!r}: not a validation metric; one of "
            f"{', '.join(METRIC_DIRECTIONS)} (or '' for none)")
  if eval_every <= 0:
    return (f"--config.keep_best={keep_best!r} needs validation: set --config.eval_every "
            "to a number of steps (e.g. the checkpoint_every)")
  return None


def is_better(metric: str, value: float, best: float | None) -> bool:
  """Whether `value` of `metric` beats `best` strictly (None: nothing yet)."""
  if best is None:
    return True
  return value < best if METRIC_DIRECTIONS[metric] == "min" else value > best


class BestCheckpoint:
  """`<workdir>/best/`: the best step by `metric` so far (a writer's).

  Attributes:
    metric: the `METRIC_DIRECTIONS` name it is judged by.
    step, value: the kept step and its value, None before the first.
  """

  def __init__(self, workdir: str, metric: str):
    self.metric = metric
    self._ckpt = Checkpointer(storage.join(workdir, BEST_DIR), keep=1, writer=True,
                              best=(metric, METRIC_DIRECTIONS[metric]))
    self.step: int | None = self._ckpt.latest_step()
    self.value: float | None = None
    if self.step is not None:
      saved = self._ckpt.metrics(self.step) or {}
      self.value = saved.get(metric)
      if self.value is None:  # kept for another metric (keep_best changed on resume)
        log.warning("%s/%d holds no %s score (kept for another metric); the next "
                    "validation replaces it", self._ckpt.directory, self.step, metric)

  def offer(self, step: int, metrics: Mapping[str, float], state: Any, data_state: str,
            config: dict[str, Any]) -> bool:
    """Saves `state` as the best if `metrics[metric]` beats the best so far
    (all processes call it; all decide alike from the same metrics).
    Returns whether it did."""
    value = float(metrics[self.metric])
    if not math.isfinite(value):
      return False
    if self.value is not None and not is_better(self.metric, value, self.value):
      return False
    self._ckpt.save(step, state, data_state, config,
                    metrics={k: float(v) for k, v in metrics.items()})
    log.info("best %s so far: %.6g at step %d (%s)", self.metric, value, step,
             self._ckpt.directory)
    self.step, self.value = step, value
    return True

  def close(self) -> None:
    self._ckpt.close()
