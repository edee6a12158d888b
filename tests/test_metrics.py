"""Tests for tp2p_jax.metrics: image metrics, Inception features, FID/KID, EER."""
from __future__ import annotations

import logging
import math
import os
import pathlib
from typing import Any

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from tp2p_jax.metrics import distribution
from tp2p_jax.metrics import embedding
from tp2p_jax.metrics import image
from tp2p_jax.models import inception
from tp2p_jax.metrics import lpips_vgg as lpips_lib


def _images(seed: int, shape: tuple[int, ...] = (2, 32, 32, 3),
            lo: float = -1.0, hi: float = 1.0) -> jax.Array:
  return jax.random.uniform(jax.random.key(seed), shape, minval=lo, maxval=hi)


def _smooth_images(seed: int, size: int = 48) -> np.ndarray:
  """(2, size, size, 3) smooth gradients with texture, in [-0.8, 0.8]."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
  out = []
  for _ in range(2):
    f = rng.uniform(2, 6, size=3)
    chans = [np.sin(f[c] * np.pi * xx + c) * np.cos(f[(c + 1) % 3] * np.pi * yy)
             for c in range(3)]
    out.append(np.stack(chans, axis=-1) * 0.8)
  return np.asarray(out, dtype=np.float32)


# ----------------------------------------------------------------------------
# Image metrics.


@pytest.fixture(scope="module")
def lpips_variables() -> Any:
  """Random LPIPS weights (non-negative heads, like the trained ones)."""
  x = jnp.zeros((1, 32, 32, 3))
  variables = jax.jit(lpips_lib.LPIPS().init)(jax.random.key(0), x, x)
  return jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.abs(v) if "lin" in jax.tree_util.keystr(path) else v,
      variables)


def test_identical_images(lpips_variables: Any) -> None:
  x = _images(0)
  np.testing.assert_array_equal(image.l1(x, x), [0.0, 0.0])
  psnr = image.psnr(x, x)
  assert psnr.shape == (2,) and np.all(np.isposinf(psnr))
  np.testing.assert_allclose(image.ssim(x, x), [1.0, 1.0], atol=1e-6)
  d = image.lpips(x, x, lpips_variables)
  assert d.shape == (2,)
  np.testing.assert_allclose(d, [0.0, 0.0], atol=1e-7)


def test_lpips_different_images_positive_and_symmetric(lpips_variables: Any) -> None:
  x, y = _images(0), _images(1)
  xy = image.lpips(x, y, lpips_variables)
  yx = image.lpips(y, x, lpips_variables)
  assert np.all(xy > 0)
  np.testing.assert_allclose(xy, yx, rtol=1e-5)


def test_psnr_known_value() -> None:
  # A constant offset of 0.2 on [-1, 1] is 0.1 on [0, 1]: MSE 0.01 -> 20 dB.
  x = _images(2, lo=-0.9, hi=0.7)
  np.testing.assert_allclose(image.psnr(x, x + 0.2), [20.0, 20.0], atol=1e-3)
  # Per-image, not per-batch: different offsets give different values.
  offsets = jnp.asarray([0.2, 0.02]).reshape(2, 1, 1, 1)
  np.testing.assert_allclose(image.psnr(x, x + offsets), [20.0, 40.0], atol=1e-2)


def test_psnr_clips_to_unit_range() -> None:
  x = jnp.full((1, 8, 8, 3), 1.0)
  assert np.isposinf(image.psnr(x, x + 5.0))[0]


def test_psnr_aggregate_handles_identical_pairs() -> None:
  s = image.summarize_psnr(np.asarray([np.inf, 20.0, 30.0]))
  assert s.count == 3 and s.num_identical == 1
  assert s.mean_finite == pytest.approx(25.0)
  assert s.mean == pytest.approx((image.PSNR_CAP_DB + 50.0) / 3)
  assert image.mean_psnr([np.inf, np.inf]) == image.PSNR_CAP_DB
  all_same = image.summarize_psnr([np.inf])
  assert math.isnan(all_same.mean_finite) and all_same.num_identical == 1
  assert image.mean_psnr(image.psnr(_images(0), _images(1))) < 20.0
  with pytest.raises(ValueError):
    image.summarize_psnr([np.nan, 10.0])
  with pytest.raises(ValueError):
    image.summarize_psnr([])


def test_ssim_decreases_with_noise() -> None:
  x = jnp.asarray(_smooth_images(0))
  noise = jax.random.normal(jax.random.key(3), x.shape)
  values = [np.asarray(image.ssim(x, jnp.clip(x + s * noise, -1, 1)))
            for s in (0.0, 0.05, 0.2, 0.5)]
  np.testing.assert_allclose(values[0], 1.0, atol=1e-6)
  for a, b in zip(values, values[1:]):
    assert np.all(b < a)
  assert np.all(values[-1] < 0.5)


def test_ssim_too_small_raises() -> None:
  x = jnp.zeros((1, 8, 8, 3))
  with pytest.raises(ValueError, match="11"):
    image.ssim(x, x)


def test_l1_known_value() -> None:
  x = _images(4, lo=-0.5, hi=0.5)
  offsets = jnp.asarray([0.1, -0.3]).reshape(2, 1, 1, 1)
  np.testing.assert_allclose(image.l1(x, x + offsets), [0.1, 0.3], atol=1e-6)


def test_shape_mismatch_raises() -> None:
  with pytest.raises(ValueError, match="equal shapes"):
    image.l1(jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 8, 3)))


# ----------------------------------------------------------------------------
# Inception features and weight files.


@pytest.fixture(scope="module")
def inception_variables() -> dict[str, Any]:
  """Random weights with non-trivial BatchNorm parameters and statistics."""
  variables = inception.init_inception_variables(seed=0)
  rng = np.random.default_rng(0)

  def perturb(path: tuple[str, ...], v: Any) -> np.ndarray:
    v = np.asarray(v)
    if path[-1] in ("scale", "var"):
      return rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
    if path[-1] in ("bias", "mean"):
      return rng.normal(0.0, 0.1, v.shape).astype(np.float32)
    return v

  return {
      col: traverse_util.unflatten_dict({
          p: perturb(p, v) for p, v in traverse_util.flatten_dict(tree).items()})
      for col, tree in variables.items()}


def _torch_style_state_dict(variables: dict[str, Any]) -> dict[str, np.ndarray]:
  """Writes flax variables under torch names, independently of the library."""
  suffix = {"kernel": "weight", "scale": "weight", "bias": "bias",
            "mean": "running_mean", "var": "running_var"}
  out: dict[str, np.ndarray] = {}
  for col in ("params", "batch_stats"):
    for path, v in traverse_util.flatten_dict(variables[col]).items():
      v = np.asarray(v)
      if path[-1] == "kernel":
        v = np.transpose(v, (3, 2, 0, 1))  # HWIO -> OIHW
      out[".".join(path[:-1] + (suffix[path[-1]],))] = v
  return out


def test_inception_parameter_layout(inception_variables: dict[str, Any]) -> None:
  sd = _torch_style_state_dict(inception_variables)
  assert len(sd) == 94 * 5  # 94 conv+bn blocks in the pool3 trunk.
  assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
  assert sd["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
  assert sd["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
  assert sd["Mixed_7c.branch_pool.bn.running_var"].shape == (192,)
  n_params = sum(int(np.prod(v.shape)) for k, v in sd.items() if k.endswith("weight")
                 or k.endswith(".bias"))
  assert n_params == 21_785_568


def test_inception_features_shape_and_determinism(
    inception_variables: dict[str, Any]) -> None:
  x = _images(5, (2, 40, 56, 3))
  f1 = inception.inception_features(x, inception_variables, input_size=75)
  f2 = inception.inception_features(x, inception_variables, input_size=75)
  assert f1.shape == (2, inception.FEATURE_DIM) and f1.dtype == jnp.float32
  np.testing.assert_array_equal(f1, f2)
  assert np.all(np.isfinite(f1)) and np.all(f1 >= 0)
  assert not np.allclose(f1[0], f1[1])


def test_inception_features_default_size(inception_variables: dict[str, Any]) -> None:
  x = _images(6, (2, 64, 64, 3))
  f = inception.inception_features(x, inception_variables)
  assert f.shape == (2, 2048) and np.all(np.isfinite(f))


def test_torchvision_blocks_differ(inception_variables: dict[str, Any]) -> None:
  x = _images(7, (1, 75, 75, 3))
  fid_f = inception.inception_features(x, inception_variables, input_size=75)
  tv_f = inception.inception_features(x, inception_variables, input_size=75,
                                      fid_blocks=False)
  assert not np.allclose(fid_f, tv_f)


def test_preprocess_resize(inception_variables: dict[str, Any]) -> None:
  x = _images(8, (2, 20, 30, 3))
  y = inception.preprocess(x, 75)
  assert y.shape == (2, 75, 75, 3)
  assert float(y.min()) >= -1.0 and float(y.max()) <= 1.0
  same = _images(8, (1, 75, 75, 3))
  np.testing.assert_array_equal(inception.preprocess(same, 75), same)
  with pytest.raises(ValueError):
    inception.inception_features(_images(0, (1, 64, 64, 3)), inception_variables,
                                 input_size=64)


def _torch_bilinear_resize(x: np.ndarray, size: int) -> np.ndarray:
  """F.interpolate(mode="bilinear", align_corners=False) on NHWC, in numpy."""
  for axis in (1, 2):
    n_in = x.shape[axis]
    src = np.maximum((np.arange(size) + 0.5) * n_in / size - 0.5, 0.0)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0).reshape([-1 if a == axis else 1 for a in range(4)])
    x = np.take(x, i0, axis=axis) * (1 - lam) + np.take(x, i1, axis=axis) * lam
  return x


@pytest.mark.parametrize("in_size", [37, 128, 400])
def test_preprocess_matches_torch_bilinear(in_size: int) -> None:
  # Up- and downsampling. The tolerance only absorbs float32 rounding in the
  # resize; a wrong pixel-centre convention would be off by ~1e-1.
  x = np.asarray(_images(10, (1, in_size, in_size, 3)))
  np.testing.assert_allclose(inception.preprocess(jnp.asarray(x), 299),
                             _torch_bilinear_resize(x.astype(np.float64), 299), atol=5e-5)


def test_npz_round_trip_with_torch_names(
    inception_variables: dict[str, Any], tmp_path: pathlib.Path) -> None:
  sd = _torch_style_state_dict(inception_variables)
  # Entries a full torchvision / pytorch-fid checkpoint carries that are not
  # part of the pool3 trunk.
  sd["fc.weight"] = np.zeros((1008, 2048), np.float32)
  sd["fc.bias"] = np.zeros((1008,), np.float32)
  sd["AuxLogits.conv0.conv.weight"] = np.zeros((128, 768, 1, 1), np.float32)
  sd["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.asarray(7, np.int64)
  path = tmp_path / "inception.npz"
  np.savez(path, **sd)

  loaded = inception.load_inception_weights(path)
  flat_in = traverse_util.flatten_dict(inception_variables)
  flat_out = traverse_util.flatten_dict(loaded)
  assert flat_in.keys() == flat_out.keys()
  for k in flat_in:
    np.testing.assert_array_equal(flat_out[k], flat_in[k], err_msg=str(k))

  # OIHW -> HWIO element by element on a non-square kernel.
  w = sd["Mixed_6b.branch7x7_2.conv.weight"]  # (O=128, I=128, H=1, W=7)
  k = loaded["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]
  assert k.shape == (1, 7, 128, 128)
  o, i, h, wi = 5, 17, 0, 4
  assert k[h, wi, i, o] == w[o, i, h, wi]

  # The library's inverse matches the independent writer.
  back = inception.to_torch_state_dict(loaded)
  assert back.keys() == {k for k in sd if not k.startswith(("fc.", "AuxLogits."))
                         and not k.endswith("num_batches_tracked")}
  for name, v in back.items():
    np.testing.assert_array_equal(v, sd[name], err_msg=name)

  x = _images(9, (2, 75, 75, 3))
  np.testing.assert_array_equal(
      inception.inception_features(x, loaded, input_size=75),
      inception.inception_features(x, inception_variables, input_size=75))


def test_missing_key_error_names_file_and_key(
    inception_variables: dict[str, Any], tmp_path: pathlib.Path) -> None:
  sd = _torch_style_state_dict(inception_variables)
  del sd["Mixed_6e.branch_pool.bn.running_var"]
  path = tmp_path / "missing.npz"
  np.savez(path, **sd)
  with pytest.raises(inception.InceptionWeightError) as e:
    inception.load_inception_weights(path)
  assert str(path) in str(e.value)
  assert "Mixed_6e.branch_pool.bn.running_var" in str(e.value)


def test_mismatched_and_unexpected_keys(
    inception_variables: dict[str, Any], tmp_path: pathlib.Path) -> None:
  sd = _torch_style_state_dict(inception_variables)
  # Saved without the OIHW transpose.
  sd["Mixed_5b.branch5x5_2.conv.weight"] = np.asarray(
      inception_variables["params"]["Mixed_5b"]["branch5x5_2"]["conv"]["kernel"])
  with pytest.raises(inception.InceptionWeightError, match="Mixed_5b.branch5x5_2.conv.weight"):
    inception.convert_torch_state_dict(sd)

  sd = _torch_style_state_dict(inception_variables)
  sd["module.Conv2d_1a_3x3.conv.weight"] = sd["Conv2d_1a_3x3.conv.weight"]
  with pytest.raises(inception.InceptionWeightError, match="unexpected key 'module.Conv2d"):
    inception.convert_torch_state_dict(sd)

  bad = tmp_path / "not_an_archive.npz"
  bad.write_bytes(b"certainly not a zip file")
  with pytest.raises(inception.InceptionWeightError, match="not_an_archive.npz"):
    inception.load_inception_weights(bad)
  with pytest.raises(FileNotFoundError, match="nowhere.npz"):
    inception.load_inception_weights(tmp_path / "nowhere.npz")


# ----------------------------------------------------------------------------
# FID and KID.


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
  a = rng.normal(size=(d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def _sqrt_spd(a: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh(a)
  return (v * np.sqrt(np.maximum(w, 0))) @ v.T


def test_fid_of_set_with_itself_is_zero() -> None:
  rng = np.random.default_rng(0)
  f = rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16)) * 3.0 + 5.0
  mu, sigma = distribution.feature_statistics(f)
  scale = float(np.trace(sigma))
  assert abs(distribution.fid(mu, sigma, mu, sigma)) < 1e-6 * scale
  assert abs(distribution.fid_from_features(f, f)) < 1e-6 * scale


def test_fid_closed_form_diagonal() -> None:
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
  expected = 1.0 + 0.0 + 4.0 + np.sum(s1 + s2 - 2.0 * np.sqrt(s1 * s2))
  assert distribution.fid(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_fid_closed_form_general_and_symmetric() -> None:
  rng = np.random.default_rng(1)
  d = 12
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
  r1 = _sqrt_spd(s1)
  expected = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
              - 2.0 * np.trace(_sqrt_spd(r1 @ s2 @ r1)))
  ab = distribution.fid(mu1, s1, mu2, s2)
  ba = distribution.fid(mu2, s2, mu1, s1)
  assert ab == pytest.approx(expected, rel=1e-8)
  assert ab == pytest.approx(ba, rel=1e-10)


def test_fid_rank_deficient_covariance_is_finite() -> None:
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(6, 10)), rng.normal(size=(6, 10)) + 0.5
  value = distribution.fid_from_features(a, b)
  assert np.isfinite(value) and value > 0


def test_fid_shape_errors() -> None:
  with pytest.raises(ValueError):
    distribution.fid(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(ValueError):
    distribution.feature_statistics(np.zeros((1, 4)))


def test_kid_same_distribution_near_zero_and_shift_positive() -> None:
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
  mean, std = distribution.kid(x, y, num_subsets=50, subset_size=200)
  assert std > 0 and abs(mean) < 3 * std
  shifted_mean, shifted_std = distribution.kid(x, y + 1.0, num_subsets=50, subset_size=200)
  assert shifted_mean > 10 * shifted_std and shifted_mean > 100 * abs(mean)
  # Seeded: repeatable.
  assert distribution.kid(x, y, num_subsets=5, subset_size=50, seed=4) == \
      distribution.kid(x, y, num_subsets=5, subset_size=50, seed=4)


def test_kid_exact_value_single_subset() -> None:
  x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [2.0, 0.5]])
  y = np.array([[0.5, 0.5], [1.0, 2.0], [0.0, 0.0], [3.0, 1.0]])
  d = x.shape[1]

  def k(a: np.ndarray, b: np.ndarray) -> float:
    return (float(np.dot(a, b)) / d + 1.0) ** 3

  m = len(x)
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  expected = (xx + yy) / (m * (m - 1)) - 2.0 * xy / (m * m)
  mean, std = distribution.kid(x, y, num_subsets=1, subset_size=m)
  assert mean == pytest.approx(expected, rel=1e-12)
  assert std == 0.0


def test_kid_shrinks_subsets_for_small_sets(caplog: pytest.LogCaptureFixture) -> None:
  rng = np.random.default_rng(5)
  x, y = rng.normal(size=(30, 4)), rng.normal(size=(20, 4))
  with caplog.at_level(logging.WARNING):
    mean, std = distribution.kid(x, y, num_subsets=3)
  assert np.isfinite(mean) and np.isfinite(std)
  assert "using 20" in caplog.text


def test_cached_statistics(tmp_path: pathlib.Path) -> None:
  rng = np.random.default_rng(6)
  f = rng.normal(size=(50, 5))
  calls = []

  def compute() -> tuple[np.ndarray, np.ndarray]:
    calls.append(1)
    return distribution.feature_statistics(f)

  path = tmp_path / "sub" / "stats.npz"
  mu, sigma = distribution.cached_statistics(path, compute)
  assert path.exists() and len(calls) == 1

  def fail() -> tuple[np.ndarray, np.ndarray]:
    raise AssertionError("cache should have been used")

  mu2, sigma2 = distribution.cached_statistics(path, fail)
  np.testing.assert_array_equal(mu, mu2)
  np.testing.assert_array_equal(sigma, sigma2)
  with np.load(path, allow_pickle=False) as data:
    assert sorted(data.files) == ["mu", "sigma"]

  for corrupt in (b"garbage", b""):
    path.write_bytes(corrupt)
    mu3, _ = distribution.cached_statistics(path, compute)
    np.testing.assert_array_equal(mu, mu3)
  np.savez(path, mu=np.zeros(3), sigma=np.eye(4))  # Inconsistent shapes.
  distribution.cached_statistics(path, compute)
  assert len(calls) == 4
  assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]
  np.testing.assert_array_equal(distribution.cached_statistics(path, fail)[0], mu)


# ----------------------------------------------------------------------------
# Style-embedding metrics.


def test_class_centroids_normalisation() -> None:
  emb = np.array([[2.0, 0.0], [0.0, 5.0], [-3.0, 0.0]])
  labels = np.array([0, 0, 1])
  c = embedding.class_centroids(emb, labels, num_classes=3)
  assert c.shape == (3, 2)
  np.testing.assert_allclose(c[0], [1 / np.sqrt(2), 1 / np.sqrt(2)])
  np.testing.assert_allclose(c[1], [-1.0, 0.0])
  np.testing.assert_array_equal(c[2], [0.0, 0.0])  # No examples.
  np.testing.assert_allclose(np.linalg.norm(c[:2], axis=1), 1.0)
  with pytest.raises(ValueError):
    embedding.class_centroids(emb, np.array([0, 1, 3]), num_classes=3)


def test_cosine_scores_and_accuracy() -> None:
  emb = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
  cen = np.array([[1.0, 0.0], [0.0, 1.0]])
  s = embedding.cosine_scores(emb, cen)
  np.testing.assert_allclose(s, [[1, 0], [0, 1], [1 / np.sqrt(2), 1 / np.sqrt(2)]])
  assert embedding.classification_accuracy(s, np.array([0, 1, 0])) == 1.0
  assert embedding.classification_accuracy(s, np.array([1, 1, 1])) == pytest.approx(1 / 3)


def test_eer_perfect_separation() -> None:
  rng = np.random.default_rng(7)
  labels = rng.integers(0, 4, size=40)
  scores = rng.uniform(-1.0, 0.0, size=(40, 4))
  scores[np.arange(40), labels] = rng.uniform(0.1, 1.0, size=40)
  assert embedding.equal_error_rate(scores, labels) == 0.0
  # Fully reversed order.
  assert embedding.eer_from_trials([0.0, 0.1], [0.5, 0.9, 0.7]) == 1.0


def test_eer_random_scores_near_half() -> None:
  rng = np.random.default_rng(8)
  scores = rng.uniform(size=(3000, 5))
  labels = rng.integers(0, 5, size=3000)
  assert abs(embedding.equal_error_rate(scores, labels) - 0.5) < 0.03


def test_eer_hand_computed() -> None:
  # Genuine [0.9, 0.5], impostors [0.8, 0.2, 0.1, 0.05]. ROC (FAR, FRR):
  # (0, 1) -> (0, .5) -> (.25, .5) -> (.25, 0) -> ...; FAR == FRR halfway along
  # the vertical segment at FAR = .25, so EER = 0.25.
  scores = np.array([[0.9, 0.8, 0.2], [0.1, 0.5, 0.05]])
  labels = np.array([0, 1])
  g, i = embedding.genuine_impostor_scores(scores, labels)
  np.testing.assert_array_equal(np.sort(g), [0.5, 0.9])
  np.testing.assert_array_equal(np.sort(i), [0.05, 0.1, 0.2, 0.8])
  assert embedding.equal_error_rate(scores, labels) == pytest.approx(0.25)
  # Crossing exactly at a ROC vertex.
  assert embedding.eer_from_trials([0.9, 0.8, 0.6, 0.3],
                                   [0.7, 0.5, 0.4, 0.2]) == pytest.approx(0.25)
  # All scores tied: one diagonal segment from (0, 1) to (1, 0).
  assert embedding.eer_from_trials([0.5, 0.5], [0.5, 0.5, 0.5]) == pytest.approx(0.5)


def test_eer_matches_brute_force_threshold_sweep() -> None:
  rng = np.random.default_rng(9)
  g = rng.normal(1.0, 1.0, size=300)
  i = rng.normal(0.0, 1.0, size=900)
  eer = embedding.eer_from_trials(g, i)
  ts = np.linspace(-5, 6, 20001)
  far = np.mean(i[None, :] >= ts[:, None], axis=1)
  frr = np.mean(g[None, :] < ts[:, None], axis=1)
  best = np.argmin(np.abs(far - frr))
  assert abs(eer - (far[best] + frr[best]) / 2) < 2.0 / len(g)
  assert 0.25 < eer < 0.4  # Two unit Gaussians 1 apart: Phi(-0.5) ~ 0.31.


def test_project_2d_pca() -> None:
  rng = np.random.default_rng(10)
  # Unit vectors in a random 2-D subspace of R^8: PCA must keep all
  # pairwise distances.
  basis, _ = np.linalg.qr(rng.normal(size=(8, 2)))
  theta = rng.uniform(0, 2 * np.pi, size=30)
  emb = np.stack([np.cos(theta), np.sin(theta)], axis=1) @ basis.T
  points, method = embedding.project_2d(emb, method="pca")
  assert method == "pca" and points.shape == (30, 2)

  def dists(p: np.ndarray) -> np.ndarray:
    return np.linalg.norm(p[:, None] - p[None], axis=-1)

  np.testing.assert_allclose(dists(points), dists(emb), atol=1e-9)
  np.testing.assert_allclose(embedding.project_2d(emb * 3.0, method="pca")[0], points,
                             atol=1e-12)
  one_dim, _ = embedding.project_2d(np.array([[1.0], [2.0]]), method="pca")
  assert one_dim.shape == (2, 2)


def test_project_2d_falls_back_to_pca(monkeypatch: pytest.MonkeyPatch) -> None:
  monkeypatch.setattr(embedding, "umap_available", lambda: False)
  emb = np.random.default_rng(11).normal(size=(12, 6))
  points, method = embedding.project_2d(emb)
  assert method == "pca" and points.shape == (12, 2)
  monkeypatch.undo()
  if not embedding.umap_available():
    with pytest.raises(ImportError):
      embedding.project_2d(emb, method="umap")


def test_save_projection_plot_pil(tmp_path: pathlib.Path) -> None:
  rng = np.random.default_rng(12)
  points = rng.normal(size=(30, 2))
  labels = np.repeat(np.arange(3), 10)
  path = tmp_path / "plots" / "emb.png"
  used = embedding.save_projection_plot(points, labels, ["calico", "tabby", "tuxedo"],
                                        path, title="style space", backend="pil")
  assert used == "pil"
  with Image.open(path) as im:
    assert im.format == "PNG"
    im.verify()
  with Image.open(path) as im:
    colours = {c for _, c in im.convert("RGB").getcolors(maxcolors=1 << 20)}
  for c in range(3):
    assert embedding.class_color(c) in colours


def test_save_projection_plot_auto_backend(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
  monkeypatch.setattr(embedding, "matplotlib_available", lambda: False)
  path = tmp_path / "auto.png"
  used = embedding.save_projection_plot(np.zeros((2, 2)), np.array([0, 1]), ["a", "b"], path)
  assert used == "pil"
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError):
    embedding.save_projection_plot(np.zeros((2, 3)), np.array([0, 1]), ["a", "b"], path)


def test_save_projection_plot_matplotlib(tmp_path: pathlib.Path) -> None:
  pytest.importorskip("matplotlib")
  path = tmp_path / "mpl.png"
  used = embedding.save_projection_plot(np.random.default_rng(0).normal(size=(6, 2)),
                                        np.array([0, 0, 1, 1, 2, 2]), ["a", "b", "c"],
                                        path, backend="matplotlib")
  assert used == "matplotlib"
  with Image.open(path) as im:
    assert im.format == "PNG"
