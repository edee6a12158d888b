"""Style embeddings for inference: class averages, reference photos, mixes.

The class-average embeddings (the mean style-encoder embedding of each
class's training photos) are computed once per run and stored in
`<workdir>/style_encoder/class_embeddings.npz`; the encoder is frozen after
stage 1, so they never go stale.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import zipfile

import jax
import numpy as np

from tp2p_jax.core.atomic_files import write_npz_atomically
from tp2p_jax.data import pipeline
from tp2p_jax.data.sources import sources_from_config
from tp2p_jax.core.run_dir import RunError
from tp2p_jax.inference.run_loading import TrainedRun

log = logging.getLogger("tp2p_jax.inference")

CLASS_EMBEDDINGS_FILE = os.path.join("style_encoder", "class_embeddings.npz")


@dataclasses.dataclass(frozen=True)
class ClassEmbeddings:
  """Mean embedding of each style class.

  Attributes:
    names: class names in label order (C,).
    means: (C, E) float32 mean raw embeddings (the generator's input scale).
    counts: (C,) number of photos averaged per class (0: class unseen).
  """
  names: tuple[str, ...]
  means: np.ndarray
  counts: np.ndarray

  def index(self, name: str) -> int:
    """Label of a class name; `ValueError` listing the known ones."""
    if name not in self.names:
      raise ValueError(f"unknown style class {name!r}; this run's classes: "
                       f"{', '.join(self.names)}")
    i = self.names.index(name)
    if self.counts[i] == 0:
      seen = [n for n, c in zip(self.names, self.counts) if c > 0]
      raise ValueError(f"style class {name!r} had no training photos, so it has no "
                       f"average embedding; classes with photos: {', '.join(seen)}, or "
                       "style by a reference photo")
    return i

  def of(self, name: str) -> np.ndarray:
    """(E,) class-average embedding of `name`."""
    return self.means[self.index(name)]


def parse_style_mix(text: str) -> tuple[str, str, float]:
  """'CLASS_A:CLASS_B:t' -> (a, b, t), t in [0, 1] (0 = all A).

  Class names may contain ':' only if they are not the last two fields.
  """
  parts = text.rsplit(":", 2)
  if len(parts) != 3:
    raise ValueError(f"--style_mix expects CLASS_A:CLASS_B:T, got {text!r}")
  a, b, t = parts
  try:
    weight = float(t)
  except ValueError:
    raise ValueError(f"--style_mix weight {t!r} is not a number") from None
  if not 0.0 <= weight <= 1.0:
    raise ValueError(f"--style_mix weight must be in [0, 1], got {weight}")
  return a, b, weight


def mix(embeddings: ClassEmbeddings, a: str, b: str, t: float) -> np.ndarray:
  """(1 - t) * mean(a) + t * mean(b), shape (E,)."""
  return ((1.0 - t) * embeddings.of(a) + t * embeddings.of(b)).astype(np.float32)


def compute_class_embeddings(run: TrainedRun, max_examples: int = 2048,
                             batch_size: int = 64) -> ClassEmbeddings:
  """Averages the frozen encoder's embeddings of the first `max_examples`
  training photos per class (source order, no augmentation)."""
  c = run.config
  train_source, _ = sources_from_config(c.data, image_size=c.image_size, seed=c.seed)
  num_classes = len(run.class_names)
  embed = jax.jit(run.embed)
  sums = np.zeros((num_classes, run.predictor.style_dim), np.float64)
  counts = np.zeros((num_classes,), np.int64)
  for batch in pipeline.make_eval_batches(train_source, batch_size=batch_size,
                                          image_size=c.image_size, num_examples=max_examples):
    e = np.asarray(embed(batch["real_b"]), np.float64)
    np.add.at(sums, batch["label"], e)
    np.add.at(counts, batch["label"], 1)
  means = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
  return ClassEmbeddings(run.class_names, means, counts)


def _read(path: str, names: tuple[str, ...], dim: int) -> ClassEmbeddings | None:
  try:
    with np.load(path, allow_pickle=False) as f:
      stored = tuple(str(n) for n in f["names"])
      means, counts = np.asarray(f["means"], np.float32), np.asarray(f["counts"])
  except FileNotFoundError:
    return None
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    log.warning("ignoring unreadable %s (%s); recomputing", path, e)
    return None
  if stored != names or means.shape != (len(names), dim):
    log.warning("%s does not match the run's classes; recomputing", path)
    return None
  return ClassEmbeddings(stored, means, counts)


def class_embeddings(run: TrainedRun, max_examples: int = 2048) -> ClassEmbeddings:
  """The run's class-average embeddings, computed and stored on first use."""
  path = os.path.join(run.workdir, CLASS_EMBEDDINGS_FILE)
  cached = _read(path, run.class_names, run.predictor.style_dim)
  if cached is not None:
    return cached
  log.info("computing class-average style embeddings (once per run) -> %s", path)
  result = compute_class_embeddings(run, max_examples)
  if not result.counts.any():
    raise RunError(f"{run.workdir}: the training data has no labelled photos")
  try:
    write_npz_atomically(path, {"names": np.asarray(result.names), "means": result.means,
                                "counts": result.counts})
  except OSError as e:
    log.warning("could not store %s: %s", path, e)
  return result
