"""Evaluation of style-encoder embeddings: centroids, EER, accuracy, 2-D maps.

Embeddings are (N, D) float arrays, labels (N,) integer class ids in
[0, C). All computation is host-side numpy; embeddings are L2-normalised
before use, so only their direction matters.

* `class_centroids` / `cosine_scores`: cosine similarity of every embedding
  to every class centroid, (N, C), in [-1, 1].
* `equal_error_rate`: verification EER from those scores, treating each
  embedding's score to its own class centroid as a genuine trial and its
  scores to the C - 1 other centroids as impostor trials.
* `project_2d` / `save_projection_plot`: a 2-D map (UMAP when the ``umap``
  package is installed, else PCA) drawn to a PNG with matplotlib when
  installed, else with Pillow.
"""
from __future__ import annotations

from collections.abc import Sequence
import colorsys
import os
from typing import Literal

import numpy as np

from tp2p_jax.core.atomic_files import replacing

# Guards the normalisation of all-zero vectors (which stay zero).
_NORM_EPS = 1e-12

# matplotlib's "tab10" palette, so both plot backends colour classes alike.
_TAB10: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
    (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127),
    (188, 189, 34), (23, 190, 207))


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
  """Scales vectors along `axis` to unit L2 norm (zero vectors stay zero)."""
  x = np.asarray(x, dtype=np.float64)
  norm = np.linalg.norm(x, axis=axis, keepdims=True)
  return x / np.maximum(norm, _NORM_EPS)


def _check_labels(labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.shape != (n,):
    raise ValueError(f"Expected ({n},) labels, got shape {labels.shape}")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"Labels must be integers, got {labels.dtype}")
  if n and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"Labels must lie in [0, {num_classes}), got "
                     f"[{labels.min()}, {labels.max()}]")
  return labels.astype(np.int64)


def class_centroids(
    embeddings: np.ndarray, labels: np.ndarray, num_classes: int,
) -> np.ndarray:
  """Unit-norm class centroids: normalised mean of normalised embeddings.

  Args:
    embeddings: (N, D) embeddings.
    labels: (N,) integer class ids in [0, num_classes).
    num_classes: C.

  Returns:
    (C, D) float64 rows of unit L2 norm; the zero vector for a class without
    examples (so all its cosine scores are 0).
  """
  emb = l2_normalize(embeddings)
  if emb.ndim != 2:
    raise ValueError(f"Expected (N, D) embeddings, got shape {emb.shape}")
  labels = _check_labels(labels, emb.shape[0], num_classes)
  sums = np.zeros((num_classes, emb.shape[1]), dtype=np.float64)
  np.add.at(sums, labels, emb)
  # The mean's 1/count is irrelevant after normalisation.
  return l2_normalize(sums)


def cosine_scores(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
  """Cosine similarity of each embedding to each centroid.

  Args:
    embeddings: (N, D).
    centroids: (C, D), e.g. from `class_centroids` (renormalised here anyway).

  Returns:
    (N, C) float64 in [-1, 1].
  """
  emb = l2_normalize(embeddings)
  cen = l2_normalize(centroids)
  if emb.ndim != 2 or cen.ndim != 2 or emb.shape[1] != cen.shape[1]:
    raise ValueError(f"Expected (N, D) and (C, D), got {emb.shape} and {cen.shape}")
  return emb @ cen.T


def genuine_impostor_scores(
    scores: np.ndarray, labels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
  """Splits an (N, C) score matrix into trials.

  Returns:
    ``(genuine, impostor)``: (N,) scores to the own class and (N * (C - 1),)
    scores to all other classes.
  """
  scores = np.asarray(scores, dtype=np.float64)
  if scores.ndim != 2:
    raise ValueError(f"Expected (N, C) scores, got shape {scores.shape}")
  n, c = scores.shape
  labels = _check_labels(labels, n, c)
  own = np.zeros((n, c), dtype=bool)
  own[np.arange(n), labels] = True
  return scores[own], scores[~own]


def eer_from_trials(genuine: np.ndarray, impostor: np.ndarray) -> float:
  """Equal error rate of a score-threshold verifier.

  A trial is accepted when its score is >= the threshold. Sweeping the
  threshold from +inf down through every distinct score traces the ROC as a
  polyline of (FAR, FRR) points, FAR = accepted impostors / all impostors,
  FRR = rejected genuine / all genuine, starting at (0, 1). The EER is where
  that polyline crosses FAR == FRR, linearly interpolated between the two
  points around the crossing (tied genuine/impostor scores make a diagonal
  segment).

  Args:
    genuine: (G,) scores of same-class trials, G >= 1.
    impostor: (I,) scores of different-class trials, I >= 1.

  Returns:
    EER in [0, 1]; 0 when every genuine score exceeds every impostor score,
    about 0.5 for uninformative scores, 1 when the order is fully reversed.
  """
  g = np.asarray(genuine, dtype=np.float64).reshape(-1)
  i = np.asarray(impostor, dtype=np.float64).reshape(-1)
  if g.size == 0 or i.size == 0:
    raise ValueError(f"EER needs genuine and impostor trials, got {g.size} and {i.size}")
  if not (np.isfinite(g).all() and np.isfinite(i).all()):
    raise ValueError("EER scores must be finite")
  thresholds = np.unique(np.concatenate([g, i]))[::-1]
  # Counts of scores >= each threshold, via sorted search (O(n log n)).
  g_sorted, i_sorted = np.sort(g), np.sort(i)
  accepted_g = g.size - np.searchsorted(g_sorted, thresholds, side="left")
  accepted_i = i.size - np.searchsorted(i_sorted, thresholds, side="left")
  far = np.concatenate([[0.0], accepted_i / i.size])
  frr = np.concatenate([[1.0], 1.0 - accepted_g / g.size])
  gap = frr - far  # Starts at 1, ends at -1; non-increasing.
  k = int(np.argmax(gap <= 0))
  if gap[k] == 0:
    return float(far[k])
  t = gap[k - 1] / (gap[k - 1] - gap[k])
  return float(far[k - 1] + t * (far[k] - far[k - 1]))


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> float:
  """Verification EER from an (N, C) score matrix (C >= 2).

  Genuine trials: ``scores[n, labels[n]]``; impostor trials: every other
  entry of row n. See `eer_from_trials` for the threshold sweep.

  Args:
    scores: (N, C) similarities, e.g. `cosine_scores`; higher = more alike.
    labels: (N,) class ids in [0, C).

  Returns:
    EER in [0, 1].
  """
  if np.ndim(scores) == 2 and np.shape(scores)[1] < 2:
    raise ValueError("EER needs at least 2 classes")
  return eer_from_trials(*genuine_impostor_scores(scores, labels))


def classification_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of rows whose highest score is at their own class.

  Args:
    scores: (N, C) scores, N >= 1.
    labels: (N,) class ids in [0, C).

  Returns:
    Accuracy in [0, 1]; ties go to the lowest class id (``argmax``).
  """
  scores = np.asarray(scores)
  if scores.ndim != 2 or scores.shape[0] == 0:
    raise ValueError(f"Expected non-empty (N, C) scores, got shape {scores.shape}")
  labels = _check_labels(labels, scores.shape[0], scores.shape[1])
  return float(np.mean(np.argmax(scores, axis=1) == labels))


def _pca_2d(x: np.ndarray) -> np.ndarray:
  """First two principal components via SVD, signs fixed for determinism."""
  centered = x - x.mean(axis=0, keepdims=True)
  _, _, vt = np.linalg.svd(centered, full_matrices=False)
  components = vt[:2]
  # SVD signs are arbitrary; make each component's largest loading positive.
  rows = np.arange(components.shape[0])
  signs = np.sign(components[rows, np.argmax(np.abs(components), axis=1)])
  components = components * np.where(signs == 0, 1.0, signs)[:, None]
  points = centered @ components.T
  if points.shape[1] < 2:  # D == 1 or N == 1: pad the missing axis.
    points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
  return points


def umap_available() -> bool:
  """Whether the optional ``umap-learn`` package can be imported."""
  try:
    import umap  # noqa: F401
  except ImportError:
    return False
  return True


def project_2d(
    embeddings: np.ndarray, method: Literal["auto", "umap", "pca"] = "auto",
    seed: int = 0,
) -> tuple[np.ndarray, str]:
  """Projects embeddings to 2-D for plotting.

  Args:
    embeddings: (N, D), N >= 1. L2-normalised first (the encoder's metric is
      cosine).
    method: "umap" (requires ``umap-learn``), "pca" (numpy SVD), or "auto"
      (UMAP when importable and N >= 4, else PCA).
    seed: UMAP random state.

  Returns:
    ``(points, method_used)``: (N, 2) float64 coordinates and "umap"/"pca".

  Raises:
    ImportError: `method` is "umap" and ``umap`` is not installed.
  """
  x = l2_normalize(embeddings)
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(f"Expected non-empty (N, D) embeddings, got shape {x.shape}")
  if method not in ("auto", "umap", "pca"):
    raise ValueError(f"method must be 'auto', 'umap' or 'pca', got {method!r}")
  use_umap = method == "umap" or (method == "auto" and x.shape[0] >= 4 and umap_available())
  if use_umap:
    import umap  # Optional dependency; ImportError is the documented failure.
    reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, x.shape[0] - 1)),
                        metric="cosine", random_state=seed)
    return np.asarray(reducer.fit_transform(x), dtype=np.float64), "umap"
  return _pca_2d(x), "pca"


def class_color(index: int) -> tuple[int, int, int]:
  """RGB colour of class `index`: tab10, then evenly spaced hues."""
  if index < len(_TAB10):
    return _TAB10[index]
  hue = (index * 0.618033988749895) % 1.0  # Golden-ratio spacing.
  r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.85)
  return int(r * 255), int(g * 255), int(b * 255)


def matplotlib_available() -> bool:
  """Whether matplotlib can be imported."""
  try:
    import matplotlib  # noqa: F401
  except ImportError:
    return False
  return True


def _plot_matplotlib(points: np.ndarray, labels: np.ndarray,
                     class_names: Sequence[str], path: str, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg", force=False)
  from matplotlib import pyplot as plt
  fig, ax = plt.subplots(figsize=(8, 6), dpi=100)
  try:
    for c, name in enumerate(class_names):
      sel = labels == c
      if np.any(sel):
        ax.scatter(points[sel, 0], points[sel, 1], s=12,
                   color=np.array(class_color(c)) / 255.0, label=name)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small",
              markerscale=1.5, frameon=False)
    fig.tight_layout()
    with replacing(path, "wb") as f:
      fig.savefig(f, format="png")
  finally:
    plt.close(fig)


def _plot_pil(points: np.ndarray, labels: np.ndarray,
              class_names: Sequence[str], path: str, title: str) -> None:
  from PIL import Image, ImageDraw, ImageFont
  font = ImageFont.load_default()
  line_h = 14
  legend_w = 24 + 7 * max((len(n) for n in class_names), default=0)
  plot, margin, top = 560, 20, 28 if title else 12
  width = margin + plot + margin + legend_w
  height = max(top + plot + margin, top + line_h * len(class_names) + margin)
  img = Image.new("RGB", (width, height), "white")
  draw = ImageDraw.Draw(img)
  if title:
    draw.text((margin, 8), title, fill="black", font=font)
  draw.rectangle([margin, top, margin + plot, top + plot], outline=(160, 160, 160))
  if points.shape[0]:
    # One scale for both axes keeps distances in the map faithful.
    lo, hi = points.min(axis=0), points.max(axis=0)
    centre = (lo + hi) / 2
    inner = plot - 20
    scale = inner / max(float(np.max(hi - lo)), 1e-12)
    xs = margin + plot / 2 + (points[:, 0] - centre[0]) * scale
    # Image y grows downwards; flip so the map matches the usual axes.
    ys = top + plot / 2 - (points[:, 1] - centre[1]) * scale
    for x, y, c in zip(xs, ys, labels):
      draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=class_color(int(c)))
  lx = margin + plot + margin
  for c, name in enumerate(class_names):
    y = top + c * line_h
    draw.ellipse([lx, y + 3, lx + 8, y + 11], fill=class_color(c))
    draw.text((lx + 14, y), name, fill="black", font=font)
  with replacing(path, "wb") as f:
    img.save(f, format="PNG")


def save_projection_plot(
    points: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
    path: str | os.PathLike[str], title: str = "",
    backend: Literal["auto", "matplotlib", "pil"] = "auto",
) -> str:
  """Draws a 2-D embedding map as a PNG: one coloured dot per point + legend.

  Args:
    points: (N, 2) coordinates, e.g. from `project_2d`.
    labels: (N,) class ids in [0, len(class_names)).
    class_names: Legend entries, one per class.
    path: Output PNG file; parent directories are created.
    title: Optional title.
    backend: "matplotlib", "pil" (Pillow only, no extra dependency), or
      "auto" (matplotlib when importable, else Pillow).

  Returns:
    The backend used, "matplotlib" or "pil".
  """
  points = np.asarray(points, dtype=np.float64)
  if points.ndim != 2 or points.shape[1] != 2:
    raise ValueError(f"Expected (N, 2) points, got shape {points.shape}")
  if not np.isfinite(points).all():
    raise ValueError("Projection points must be finite")
  labels = _check_labels(labels, points.shape[0], len(class_names))
  if backend not in ("auto", "matplotlib", "pil"):
    raise ValueError(f"backend must be 'auto', 'matplotlib' or 'pil', got {backend!r}")
  if backend == "auto":
    backend = "matplotlib" if matplotlib_available() else "pil"
  path = os.fspath(path)  # `replacing` creates the folder, local or gs://
  draw = _plot_matplotlib if backend == "matplotlib" else _plot_pil
  draw(points, labels, list(class_names), path, title)
  return backend
