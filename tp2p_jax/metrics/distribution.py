"""Distribution distances between feature sets: FID and KID.

Features are (N, D) arrays, typically Inception pool3 features (D = 2048)
from `tp2p_jax.models.inception`. Everything here runs in float64 numpy on
the host; the O(D^3) matrix square root is not worth an accelerator.

* FID (Heusel et al. 2017): Frechet distance between Gaussians fitted to the
  two sets, numerically as in pytorch-fid.
* KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial
  kernel ``k(x, y) = (x . y / D + 1)^3``, averaged over random subsets, as in
  torch-fidelity.
"""
from __future__ import annotations

from collections.abc import Callable
import logging
import os
import zipfile

import numpy as np

from tp2p_jax.core.atomic_files import write_npz_atomically
from scipy import linalg

_log = logging.getLogger(__name__)

# pytorch-fid's regulariser for a numerically singular covariance product.
FID_EPS = 1e-6


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance of a feature set.

  Args:
    features: (N, D) features, N >= 2.

  Returns:
    ``(mu, sigma)``: (D,) float64 mean and (D, D) float64 unbiased
    (N - 1 normalised) covariance, as pytorch-fid.
  """
  f = np.asarray(features, dtype=np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"Expected (N, D) features with N >= 2, got shape {f.shape}")
  return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def fid(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
    eps: float = FID_EPS,
) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

  ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``.

  Like pytorch-fid: if the square root of the product is not finite (a
  near-singular product), both covariances get ``eps * I`` added and it is
  recomputed; a complex result with negligible imaginary diagonal (from
  rounding) keeps its real part.

  Args:
    mu1: (D,) mean.
    sigma1: (D, D) covariance.
    mu2: (D,) mean.
    sigma2: (D, D) covariance.
    eps: Diagonal offset for the singular case.

  Returns:
    The distance (>= 0 up to rounding), in squared feature units.

  Raises:
    ValueError: Shapes disagree, or the square root has a significant
      imaginary component (the inputs are not covariance matrices).
  """
  mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
  mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
  if mu1.shape != mu2.shape or mu1.ndim != 1:
    raise ValueError(f"Mean vectors have different lengths: {mu1.shape}, {mu2.shape}")
  d = mu1.shape[0]
  if sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(
        f"Covariances must be ({d}, {d}), got {sigma1.shape} and {sigma2.shape}")

  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    _log.warning("FID: singular product of covariances; adding %g to the diagonal", eps)
    offset = np.eye(d) * eps
    covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(
          f"FID: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(features_1: np.ndarray, features_2: np.ndarray) -> float:
  """FID between two (N_i, D) feature sets (N_i >= 2, same D)."""
  return fid(*feature_statistics(features_1), *feature_statistics(features_2))


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """(m, D), (n, D) -> (m, n) cubic kernel ``(x . y / D + 1)^3``."""
  return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD^2 between two equal-size samples, torch-fidelity's estimator.

  Within-set terms drop the diagonal (m (m - 1) pairs); the cross term keeps
  all m^2 pairs, which is already unbiased as x and y are independent.
  """
  m = x.shape[0]
  k_xx = _polynomial_kernel(x, x)
  k_yy = _polynomial_kernel(y, y)
  k_xy = _polynomial_kernel(x, y)
  within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
  return float(within - 2.0 * k_xy.sum() / (m * m))


def kid(
    features_1: np.ndarray, features_2: np.ndarray, num_subsets: int = 100,
    subset_size: int = 1000, seed: int = 0,
) -> tuple[float, float]:
  """Kernel Inception Distance: mean and std of unbiased MMD^2 over subsets.

  Each of `num_subsets` rounds draws `subset_size` rows without replacement
  from each set (``np.random.RandomState(seed).choice``, first from set 1,
  then set 2, as torch-fidelity) and computes the unbiased MMD^2 with
  ``k(x, y) = (x . y / D + 1)^3``. The estimate can be slightly negative when
  the distributions match.

  If a set has fewer than `subset_size` rows the subsets shrink to the smaller
  set's size (as clean-fid does) and a warning is logged; values computed
  with different subset sizes have different variances, so report the size.

  Args:
    features_1: (N1, D) features, N1 >= 2.
    features_2: (N2, D) features, N2 >= 2.
    num_subsets: Number of subsets averaged.
    subset_size: Rows per subset.
    seed: Seed of the subset sampler.

  Returns:
    ``(mean, std)`` over subsets (std with ddof 0; 0 for a single subset).
  """
  f1 = np.asarray(features_1, dtype=np.float64)
  f2 = np.asarray(features_2, dtype=np.float64)
  if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
    raise ValueError(f"Expected (N, D) feature sets with equal D, got {f1.shape}, {f2.shape}")
  if num_subsets < 1:
    raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
  n1, n2 = f1.shape[0], f2.shape[0]
  m = min(subset_size, n1, n2)
  if m < 2:
    raise ValueError(f"KID needs at least 2 samples per set, got {n1} and {n2}")
  if m < subset_size:
    _log.warning("KID: subset_size %d exceeds the set sizes (%d, %d); using %d",
                 subset_size, n1, n2, m)
  rng = np.random.RandomState(seed)
  mmds = np.empty(num_subsets, dtype=np.float64)
  for i in range(num_subsets):
    x = f1[rng.choice(n1, m, replace=False)]
    y = f2[rng.choice(n2, m, replace=False)]
    mmds[i] = _mmd2_unbiased(x, y)
  return float(mmds.mean()), float(mmds.std())


def _read_statistics(path: str) -> tuple[np.ndarray, np.ndarray] | None:
  """``(mu, sigma)`` from a cache file, or None if absent or unusable."""
  if not os.path.exists(path):
    return None
  try:
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
      raise ValueError("not an .npz archive")
    with data:
      mu = np.asarray(data["mu"], dtype=np.float64)
      sigma = np.asarray(data["sigma"], dtype=np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
      raise ValueError(f"inconsistent shapes mu {mu.shape}, sigma {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
      raise ValueError("non-finite values")
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    _log.warning("Ignoring corrupt statistics cache %s (%s); recomputing", path, e)
    return None
  return mu, sigma


def cached_statistics(
    cache_path: str | os.PathLike[str],
    compute_fn: Callable[[], tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
  """Feature statistics from an ``.npz`` cache, computed and stored if needed.

  The cache holds float64 arrays ``mu`` (D,) and ``sigma`` (D, D) and is read
  with ``allow_pickle=False``. A missing, unreadable or malformed file is
  (re)computed with `compute_fn` and written atomically (temp file + rename),
  so an interrupted run never leaves a half-written cache behind. A failed
  write only logs a warning.

  Args:
    cache_path: The cache file (written exactly at this path; no ``.npz``
      suffix is appended).
    compute_fn: Returns ``(mu, sigma)``, e.g. ``lambda:
      feature_statistics(features)``.

  Returns:
    ``(mu, sigma)`` as float64 arrays.
  """
  path = os.fspath(cache_path)
  cached = _read_statistics(path)
  if cached is not None:
    return cached
  mu, sigma = compute_fn()
  mu = np.asarray(mu, dtype=np.float64)
  sigma = np.asarray(sigma, dtype=np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise ValueError(f"compute_fn returned mu {mu.shape}, sigma {sigma.shape}")
  try:
    write_npz_atomically(path, {"mu": mu, "sigma": sigma})
  except OSError as e:
    _log.warning("Could not write statistics cache %s: %s", path, e)
  return mu, sigma


def fid_and_kid(real_features: np.ndarray, fake_features: np.ndarray) -> dict[str, float]:
  """{"fid", "kid", "kid_std", "kid_subset_size"} of generated vs real
  (N, D) Inception features: KID over subsets of min(1000, N) rows."""
  subset = min(1000, len(real_features))
  kid_mean, kid_std = kid(real_features, fake_features, subset_size=subset)
  return {"fid": fid_from_features(real_features, fake_features), "kid": kid_mean,
          "kid_std": kid_std, "kid_subset_size": subset}

