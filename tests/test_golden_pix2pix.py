"""Golden tests of the pix2pix family: junyanz's U-Net, ResNet generator and
PatchGAN, NVIDIA pix2pixHD's global generator, local enhancer and
multi-scale discriminator, against our modules on the same weights (eval
and train outputs, input gradients, BatchNorm statistics within 1e-4
relative); and the importers' refusals. Fixtures: tests/golden/, written by
tools/make_golden_fixtures.py (tools/golden/pix2pix_cases.py) from the
originals."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.golden_check import GOLDEN_DIR, RTOL, assert_close, check, load
from tp2p_jax.interop.synthetic import synthetic_state_dict
from tp2p_jax.interop.torch_weights import WeightImportError, convert, import_network

# The development loop keeps one network of each kind; the others are slow.
FIXTURES = [
    pytest.param("unet_256", marks=pytest.mark.slow), pytest.param("unet_128", marks=pytest.mark.slow),
    "patchgan_basic_batch", "patchgan_basic_instance", pytest.param("patchgan_n_layers_5", marks=pytest.mark.slow),
    pytest.param("resnet_9blocks", marks=pytest.mark.slow), "resnet_6blocks",
    "pix2pixhd_global", pytest.param("pix2pixhd_global_batch", marks=pytest.mark.slow), pytest.param("pix2pixhd_local", marks=pytest.mark.slow),
    pytest.param("pix2pixhd_multiscale_d", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", FIXTURES)
def test_matches_original(name: str) -> None:
  errors = check(name)
  assert errors and max(errors.values()) < 1e-4
  # Every output, the input gradient and (with BatchNorm) the statistics.
  assert any(k.startswith("eval/") for k in errors)
  assert any(k.startswith("grad/") for k in errors)


def _weights(name: str) -> dict[str, np.ndarray]:
  """The recipe's state_dict for a fixture's original."""
  return synthetic_state_dict(load(name)["layout"])


def _kind(name: str) -> str:
  return load(name)["meta"]["kind"]


def _refusal(kind: str, state_dict: dict[str, np.ndarray], **options) -> str:
  """The importer's message, checked to be one line."""
  with pytest.raises(WeightImportError) as info:
    convert(kind, state_dict, **options)
  message = str(info.value)
  assert "\n" not in message and message.startswith(kind)
  return message


@pytest.mark.parametrize("name, tensor", [
    ("unet_128", "model.model.1.model.3.model.1.weight"),
    ("resnet_9blocks", "model.11.conv_block.5.weight"),
    ("pix2pixhd_local", "model1_2.1.conv_block.1.bias"),
    ("pix2pixhd_multiscale_d", "scale1_layer2.0.weight"),
])
def test_wrong_shape_is_refused_by_name(name: str, tensor: str) -> None:
  sd = _weights(name)
  shape = sd[tensor].shape
  sd[tensor] = np.zeros((shape[0] + 1, *shape[1:]), np.float32)
  assert repr(tensor) in _refusal(_kind(name), sd)


@pytest.mark.parametrize("name", ["unet_256", "resnet_6blocks", "patchgan_basic_instance",
                                  "pix2pixhd_global", "pix2pixhd_multiscale_d"])
def test_unknown_tensor_is_refused_by_name(name: str) -> None:
  sd = _weights(name)
  sd["model.extra.weight"] = np.zeros((3, 3), np.float32)
  assert "'model.extra.weight'" in _refusal(_kind(name), sd)


def test_missing_tensors_are_named() -> None:
  sd = _weights("patchgan_basic_batch")
  del sd["model.6.running_var"]
  assert "'model.6.running_var'" in _refusal("patchgan", sd)
  # A bias the network needs (instance norm): the unfilled variable is named.
  sd = _weights("unet_128")
  del sd["model.model.1.model.3.model.1.bias"]
  assert "params/down2/conv/bias" in _refusal("unet_128", sd)
  sd = _weights("pix2pixhd_local")
  del sd["model1_2.6.weight"]
  assert "'model1_2.6.weight'" in _refusal("pix2pixhd_local", sd)


@pytest.mark.parametrize("name", ["unet_256", "pix2pixhd_local"])
def test_data_parallel_prefix_is_stripped(name: str) -> None:
  plain = convert(_kind(name), _weights(name), **load(name)["meta"]["options"])
  prefixed = convert(_kind(name), {f"module.{k}": v for k, v in _weights(name).items()},
                     **load(name)["meta"]["options"])
  assert prefixed.sources == plain.sources
  jax.tree_util.tree_map(np.testing.assert_array_equal, prefixed.variables, plain.variables)


@pytest.mark.parametrize("name, options, word", [
    ("unet_256", {"norm": "instance"}, "norm='instance'"),
    ("unet_128", {"norm": "batch"}, "norm='batch'"),
    ("resnet_6blocks", {"use_dropout": False}, "use_dropout=False"),
    ("resnet_9blocks", {"use_dropout": True}, "use_dropout=True"),
    ("patchgan_n_layers_5", {"n_layers": 3}, "n_layers=3"),
    ("pix2pixhd_global", {"n_downsample_global": 4}, "n_downsample_global=4"),
    ("pix2pixhd_global_batch", {"norm": "instance"}, "norm='instance'"),
    ("pix2pixhd_local", {"n_local_enhancers": 2}, "n_local_enhancers=2"),
    ("pix2pixhd_local", {"n_blocks_local": 3}, "n_blocks_local=3"),
    ("pix2pixhd_multiscale_d", {"num_d": 2}, "num_d=2"),
])
def test_contradicting_options_are_refused(name: str, options: dict, word: str) -> None:
  message = _refusal(_kind(name), _weights(name), **options)
  assert word in message and "contradicts" in message


@pytest.mark.parametrize("name, kind, word", [
    ("unet_128", "unet_256", "7 levels"),
    ("resnet_6blocks", "resnet_9blocks", "6 residual blocks"),
    ("pix2pixhd_global", "pix2pixhd_local", "model1_1"),
    ("unet_256", "patchgan", "'model.0.weight'"),
])
def test_wrong_kind_is_refused(name: str, kind: str, word: str) -> None:
  assert word in _refusal(kind, _weights(name))


def test_options_the_tensors_agree_with_are_accepted() -> None:
  conversion = convert("pix2pixhd_local", _weights("pix2pixhd_local"), norm="instance",
                       n_downsample_global=2, n_blocks_global=1, n_local_enhancers=1,
                       n_blocks_local=2)
  g = conversion.module
  assert (g.ngf_global, g.n_downsample_global, g.n_blocks_global, g.n_local_enhancers,
          g.n_blocks_local, g.norm, g.out_channels) == (16, 2, 1, 1, 2, "instance", 3)


def test_what_the_tensors_determine_is_read_off() -> None:
  u = convert("unet_128", _weights("unet_128")).module
  assert (u.num_downs, u.ngf, u.norm, u.out_channels) == (7, 8, "instance", 3)
  r = convert("resnet_6blocks", _weights("resnet_6blocks")).module
  assert (r.base_features, r.n_blocks, r.norm, r.dropout, r.out_channels) == (
      8, 6, "batch", 0.5, 3)
  d = convert("patchgan", _weights("patchgan_n_layers_5")).module
  assert (d.base_features, d.n_layers, d.norm, d.padding_mode, d.pad) == (
      8, 5, "batch", "zeros", 1)
  m = convert("pix2pixhd_multiscale_discriminator", _weights("pix2pixhd_multiscale_d")).module
  assert (m.num_d, m.base_features, m.n_layers, m.norm, m.pad) == (3, 8, 3, "instance", 2)


def _flat_layout(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """pix2pixHD's getIntermFeat names (scale{i}_layer{j}.{k}) as saved without
  it (layer{i}.{index in the flat Sequential})."""
  out = {}
  for key, value in state_dict.items():
    i, j, k, leaf = re.fullmatch(r"scale(\d+)_layer(\d+)\.(\d+)\.(\w+)", key).groups()
    j, k = int(j), int(k)
    out[f"layer{i}.{(0 if j == 0 else 3 * j - 1) + k}.{leaf}"] = value
  return out


def test_multiscale_discriminator_without_interm_features() -> None:
  sd = _weights("pix2pixhd_multiscale_d")
  interm = convert("pix2pixhd_multiscale_discriminator", sd)
  flat = convert("pix2pixhd_multiscale_discriminator", _flat_layout(sd))
  # The release's coarsest scale is scale0 (layer0); ours is the last.
  assert (interm.torch_name("params", "scale0", "conv0", "conv", "kernel")
          == "scale2_layer0.0.weight")
  assert flat.torch_name("params", "scale0", "conv0", "conv", "kernel") == "layer2.0.weight"
  assert flat.torch_name("params", "scale2", "logits", "conv", "bias") == "layer0.11.bias"
  jax.tree_util.tree_map(np.testing.assert_array_equal, flat.variables, interm.variables)


def test_batch_norm_multiscale_discriminator_is_refused() -> None:
  sd = _weights("pix2pixhd_multiscale_d")
  for i in range(3):
    for j in (1, 2, 3):
      width = sd[f"scale{i}_layer{j}.0.weight"].shape[0]
      for leaf in ("weight", "bias", "running_mean", "running_var"):
        sd[f"scale{i}_layer{j}.1.{leaf}"] = np.ones(width, np.float32)
  assert "BatchNorm" in _refusal("pix2pixhd_multiscale_discriminator", sd)


def test_tracked_instance_norm_buffers_are_dropped() -> None:
  """Checkpoints of junyanz's older get_norm_layer (InstanceNorm2d tracking
  running statistics) import with today's semantics."""
  sd = _weights("unet_128")
  plain = convert("unet_128", sd)
  buffers = {"model.model.1.model.2.running_mean": np.zeros(16, np.float32),
             "model.model.1.model.2.running_var": np.ones(16, np.float32),
             "model.model.1.model.2.num_batches_tracked": np.zeros((), np.int64)}
  conversion = convert("unet_128", {**sd, **buffers})
  assert sorted(conversion.unused) == sorted(buffers)
  assert conversion.module.norm == "instance"
  assert conversion.sources == plain.sources


def test_import_network_from_checkpoint_file() -> None:
  """The torch.save file of the fixture's original, read without torch,
  gives a module applied as in this package's code."""
  data = load("patchgan_basic_batch")
  module, variables = import_network("patchgan", GOLDEN_DIR / "patchgan_basic_batch.pth")
  assert set(variables) == {"params", "batch_stats"}
  logits = module.apply(variables, jnp.asarray(data["input/pair"]), train=False)
  np.testing.assert_allclose(np.asarray(logits), data["eval/0"], rtol=0,
                             atol=1e-4 * np.abs(data["eval/0"]).max())


def test_import_network_generator_apply() -> None:
  module, variables = import_network("resnet_6blocks", _weights("resnet_6blocks"))
  out = module.apply(variables, jnp.zeros((1, 16, 16, 1)), train=False)
  assert out.shape == (1, 16, 16, 3) and out.dtype == jnp.float32


@pytest.mark.slow  # 256x256, as the unet_256 fixture above
def test_train_test_mode_of_an_imported_unet_256_is_junyanz_test_py() -> None:
  """junyanz's test.py without --eval: the U-Net in .train() on one image at
  a time (each normalised with its own BatchNorm statistics; dropout p set
  to 0 on both sides to compare) equals the imported U-Net in test mode
  "train" on the pair of images at once."""
  from tp2p_jax.methods.test_mode import apply_generator, image_seeds
  data = load("unet_256_test_mode")
  meta = data["meta"]
  conversion = convert(meta["kind"], synthetic_state_dict(data["layout"]), **meta["options"])
  module = conversion.module.clone(**meta["train_overrides"])
  x = jnp.asarray(data["input/real_a"])  # (2, 256, 256, 1), two different images

  @jax.jit
  def per_image_and_joint(variables, x):
    per_image = apply_generator(module, variables, x, None, "train", image_seeds(0, [0, 1]))
    joint, _ = module.apply(variables, x, train=True, mutable=["batch_stats"])
    return per_image, joint

  per_image, joint = per_image_and_joint(conversion.variables, x)
  expected = data["train/0"]
  error = assert_close(per_image, expected, "unet_256 test mode train")
  assert error < 1e-4
  # Statistics over the pair are another function: far outside the tolerance.
  scale = np.max(np.abs(expected))
  assert np.max(np.abs(np.asarray(joint) - expected)) > 100 * RTOL * scale
