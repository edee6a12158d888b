"""Networks: parameter counts against the reference, shapes and ranges at
several sizes, gradient coverage, train/eval behaviour, jit vs eager."""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from tp2p_jax.models import PatchGANDiscriminator, StyleEncoder, TransPix2PixGenerator
from tp2p_jax.models.layers import same_pads

REFERENCE_STAGE_PARAMS = dict(
    E1=69185, E2=396161, E3=1582849, E4=6327809, T4=12748800, E5=8424961, T5=12650496,
    E6=8424961, T6=12625920, E7=8424961, E8=4492801, D0=4754945, D1=12881409, SA1=1024,
    D2=12881409, SA2=1024, D3=12881409, SA3=1024, D4=5876609, D5=1551873, D6=361409,
    D7=98657, style_prenet=1575168, final=96)


def n_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def tiny_generator(size: int, **overrides) -> TransPix2PixGenerator:
  """A slim generator of full depth log2(size), with every block kind present."""
  depth = int(math.log2(size))
  kwargs = dict(
      image_size=size, features=(8,) + (16,) * (depth - 1),
      transformer_blocks=(depth - 2, depth - 1), attention_stages=(1, 2),
      dropout_stages=(0, 1), conv_bottlenecks=((depth - 3, 1.6),), style_dim=8,
      style_part_channels=4, style_hidden=16, transformer_layers=1, transformer_heads=2)
  kwargs.update(overrides)
  return TransPix2PixGenerator(**kwargs)


def init_vars(model: nn.Module, *inputs, seed: int = 0):
  return model.init({"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)},
                    *inputs, train=False)


def calibrated(model: nn.Module, variables, *inputs):
  """Variables whose BatchNorm running statistics equal the statistics of a
  train-mode batch, as after training. (At initialisation the running stats
  are mean 0 / var 1 while the N(0, 0.02) BatchNorm scales shrink every
  layer's output about 50x, so an untrained net in eval mode outputs ~0.)"""
  _, upd = model.apply(variables, *inputs, train=True, rngs={"dropout": jax.random.key(0)},
                       mutable=["batch_stats"])
  # Flax BatchNorm: new = 0.9 * old + 0.1 * batch; solve for the batch stats.
  stats = jax.tree.map(lambda old, new: (new - 0.9 * old) / 0.1, variables["batch_stats"],
                       upd["batch_stats"])
  return {**variables, "batch_stats": stats}


# --- parameter counts ---------------------------------------------------------

def test_reference_generator_parameter_count_per_stage():
  g = TransPix2PixGenerator()
  shapes = jax.eval_shape(lambda: init_vars(g, jnp.zeros((1, 256, 256, 3)), jnp.zeros((1, 256))))
  params = shapes["params"]
  assert n_params(params) == 129_034_960
  assert {k: n_params(v) for k, v in params.items()} == REFERENCE_STAGE_PARAMS
  out = jax.eval_shape(lambda v: g.apply(v, jnp.zeros((2, 256, 256, 3)), jnp.zeros((2, 256)),
                                         train=False), shapes)
  assert out.shape == (2, 256, 256, 3) and out.dtype == jnp.float32


def test_generator_sizes_follow_image_size_not_256():
  g = TransPix2PixGenerator(image_size=512)
  params = jax.eval_shape(lambda: init_vars(g, jnp.zeros((1, 512, 512, 3)),
                                            jnp.zeros((1, 256))))["params"]
  # Only the positional tables grow (4x the positions at blocks 4, 5, 6).
  extra = 3 * (256 + 64 + 16) * 512
  assert n_params(params) == 129_034_960 + extra
  assert params["T4"]["pos_embedding"].shape == (32 * 32, 512)
  assert params["T6"]["pos_embedding"].shape == (8 * 8, 512)


def test_generator_rejects_inconsistent_sizes():
  with pytest.raises(ValueError, match="divisible"):
    init_vars(TransPix2PixGenerator(image_size=64), jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 256)))
  g = tiny_generator(32)
  with pytest.raises(ValueError, match="image_size"):
    init_vars(g, jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 8)))
  with pytest.raises(ValueError, match="transformer_blocks"):
    init_vars(tiny_generator(32, transformer_blocks=(9,)), jnp.zeros((1, 32, 32, 3)),
              jnp.zeros((1, 8)))


def test_reference_discriminator_count_and_shape():
  d = PatchGANDiscriminator()
  v = init_vars(d, jnp.zeros((1, 256, 256, 6)))
  assert n_params(v["params"]) == 2_768_705
  out = d.apply(v, jnp.zeros((2, 256, 256, 6)), train=False)
  assert out.shape == (2, 30, 30, 1)


def test_cyclegan_discriminator_count():
  # Instance norm (no affine) keeps conv biases: pix2pix/CycleGAN's 2,764,737.
  d = PatchGANDiscriminator(norm="instance", padding_mode="zeros")
  shapes = jax.eval_shape(lambda: init_vars(d, jnp.zeros((1, 256, 256, 3))))
  assert n_params(shapes["params"]) == 2_764_737


@pytest.mark.parametrize("n_layers,size", [(1, 32), (2, 64), (3, 64), (4, 128)])
def test_patchgan_generic_depth(n_layers, size):
  d = PatchGANDiscriminator(base_features=4, n_layers=n_layers)
  out = jax.eval_shape(lambda: d.init_with_output(
      {"params": jax.random.key(0)}, jnp.zeros((3, size, size, 6)), train=False)[0])
  assert out.shape == (3, size // 2 ** n_layers - 2, size // 2 ** n_layers - 2, 1)


def test_patchgan_returns_features_for_feature_matching():
  d = PatchGANDiscriminator(base_features=4)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 6))
  v = init_vars(d, x)
  feats = d.apply(v, x, train=False, return_features=True)
  assert len(feats) == 5
  np.testing.assert_allclose(feats[-1], d.apply(v, x, train=False))


def test_same_pads_match_reference_layout():
  assert same_pads(4) == ((2, 1), (1, 2))  # top 2, bottom 1, left 1, right 2
  assert same_pads(3) == ((1, 1), (1, 1))


# --- generator behaviour at several sizes --------------------------------------

@pytest.mark.parametrize("size,batch", [(32, 1), (64, 3), (128, 2), (256, 1)])
def test_generator_shapes_and_range(size, batch):
  g = tiny_generator(size)
  x = jax.random.uniform(jax.random.key(size), (batch, size, size, 3), minval=-1, maxval=1)
  s = jax.random.normal(jax.random.key(1), (batch, 8))
  v = init_vars(g, x, s)
  y = jax.jit(lambda v, x, s: g.apply(v, x, s, train=False))(v, x, s)
  assert y.shape == (batch, size, size, 3)
  assert bool(jnp.all(jnp.abs(y) <= 1.0)) and bool(jnp.all(jnp.isfinite(y)))
  y, _ = jax.jit(lambda v, x, s: g.apply(v, x, s, train=True, rngs={"dropout": jax.random.key(0)},
                                         mutable=["batch_stats"]))(v, x, s)
  assert bool(jnp.all(jnp.abs(y) <= 1.0)) and bool(jnp.all(jnp.isfinite(y)))
  assert float(jnp.std(y)) > 0


@pytest.fixture(scope="module")
def g32():
  g = tiny_generator(32)
  x = jax.random.uniform(jax.random.key(11), (4, 32, 32, 3), minval=-1, maxval=1)
  s = jax.random.normal(jax.random.key(12), (4, 8))
  return g, calibrated(g, init_vars(g, x, s), x, s)


def _apply_eval(g, v):
  return jax.jit(lambda x, s: g.apply(v, x, s, train=False))


@given(st.integers(0, 2**31 - 1), st.floats(0.1, 50.0))
def test_property_output_in_range(g32, seed, scale):
  g, v = g32
  k1, k2 = jax.random.split(jax.random.key(seed))
  x = jnp.clip(scale * jax.random.normal(k1, (4, 32, 32, 3)), -1, 1)
  s = scale * jax.random.normal(k2, (4, 8))
  y = _apply_eval(g, v)(x, s)
  assert bool(jnp.all(jnp.abs(y) <= 1.0)) and bool(jnp.all(jnp.isfinite(y)))


@given(st.integers(0, 2**31 - 1), st.integers(1, 8))
def test_property_translating_input_changes_output(g32, seed, shift):
  g, v = g32
  x = jax.random.uniform(jax.random.key(seed), (4, 32, 32, 3), minval=-1, maxval=1)
  s = jax.random.normal(jax.random.key(seed + 1), (4, 8))
  f = _apply_eval(g, v)
  y, y_shift = f(x, s), f(jnp.roll(x, shift, axis=2), s)
  assert float(jnp.max(jnp.abs(y - y_shift))) > 1e-6


@given(st.integers(0, 2**31 - 1))
def test_property_style_changes_output(g32, seed):
  g, v = g32
  x = jax.random.uniform(jax.random.key(seed), (4, 32, 32, 3), minval=-1, maxval=1)
  s = jax.random.normal(jax.random.key(seed + 1), (4, 8))
  f = _apply_eval(g, v)
  assert float(jnp.max(jnp.abs(f(x, s) - f(x, -s)))) > 1e-6


@given(st.integers(0, 2**31 - 1))
def test_property_dropout_only_in_training(g32, seed):
  g, v = g32
  x = jax.random.uniform(jax.random.key(seed), (4, 32, 32, 3), minval=-1, maxval=1)
  s = jax.random.normal(jax.random.key(seed + 1), (4, 8))

  @jax.jit
  def train_out(key):
    y, _ = g.apply(v, x, s, train=True, rngs={"dropout": key}, mutable=["batch_stats"])
    return y

  f = _apply_eval(g, v)
  np.testing.assert_array_equal(f(x, s), f(x, s))
  a, b = train_out(jax.random.key(seed)), train_out(jax.random.key(seed + 7))
  np.testing.assert_array_equal(a, train_out(jax.random.key(seed)))  # same key, same mask
  assert float(jnp.max(jnp.abs(a - b))) > 1e-6
  with pytest.raises(Exception, match="dropout"):
    g.apply(v, x, s, train=True, mutable=["batch_stats"])  # training needs a dropout key


@given(st.integers(0, 2**31 - 1))
def test_property_batchnorm_stats_update_only_in_training(g32, seed):
  g, v = g32
  x = jax.random.uniform(jax.random.key(seed), (4, 32, 32, 3), minval=-1, maxval=1)
  s = jax.random.normal(jax.random.key(seed + 1), (4, 8))
  _, upd = g.apply(v, x, s, train=True, rngs={"dropout": jax.random.key(0)},
                   mutable=["batch_stats"])
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), v["batch_stats"],
                         upd["batch_stats"])
  assert all(jax.tree.leaves(changed))
  _, upd_eval = g.apply(v, x, s, train=False, mutable=["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, v["batch_stats"], upd_eval["batch_stats"])


def test_gradients_reach_every_parameter(g32):
  g, v = g32
  x = jax.random.uniform(jax.random.key(3), (4, 32, 32, 3), minval=-1, maxval=1)
  s = jax.random.normal(jax.random.key(4), (4, 8))
  w = jax.random.normal(jax.random.key(5), (4, 32, 32, 3))

  def g_loss(params):
    y, _ = g.apply({"params": params, "batch_stats": v["batch_stats"]}, x, s, train=True,
                   rngs={"dropout": jax.random.key(6)}, mutable=["batch_stats"])
    return jnp.sum(y * w)

  grads = jax.jit(jax.grad(g_loss))(v["params"])
  dead = [jax.tree_util.keystr(p) for p, leaf in jax.tree_util.tree_leaves_with_path(grads)
          if not bool(jnp.any(leaf != 0)) or not bool(jnp.all(jnp.isfinite(leaf)))]
  assert not dead, f"generator parameters without gradient: {dead}"

  d = PatchGANDiscriminator(base_features=8)
  xy = jnp.concatenate([x, w], -1)
  dv = init_vars(d, xy)

  def d_loss(params):
    out, _ = d.apply({"params": params, "batch_stats": dv["batch_stats"]}, xy, train=True,
                     mutable=["batch_stats"])
    return jnp.sum(out * jax.random.normal(jax.random.key(7), out.shape))

  grads = jax.grad(d_loss)(dv["params"])
  dead = [jax.tree_util.keystr(p) for p, leaf in jax.tree_util.tree_leaves_with_path(grads)
          if not bool(jnp.any(leaf != 0))]
  assert not dead, f"discriminator parameters without gradient: {dead}"


def test_jit_equals_eager(g32):
  g, v = g32
  x = jax.random.uniform(jax.random.key(8), (4, 32, 32, 3), minval=-1, maxval=1)
  s = jax.random.normal(jax.random.key(9), (4, 8))
  with jax.disable_jit():
    eager = g.apply(v, x, s, train=False)
  np.testing.assert_allclose(eager, _apply_eval(g, v)(x, s), atol=1e-5, rtol=1e-5)
  d = PatchGANDiscriminator(base_features=8)
  dv = init_vars(d, jnp.concatenate([x, x], -1))
  with jax.disable_jit():
    eager = d.apply(dv, jnp.concatenate([x, x], -1), train=False)
  jitted = jax.jit(lambda a: d.apply(dv, a, train=False))(jnp.concatenate([x, x], -1))
  np.testing.assert_allclose(eager, jitted, atol=1e-5, rtol=1e-5)


def test_init_is_gan_normal():
  g = TransPix2PixGenerator()
  params = jax.jit(lambda: init_vars(g, jnp.zeros((1, 256, 256, 3)), jnp.zeros((1, 256)))
                   )()["params"]
  k = np.asarray(params["D1"]["convt"]["kernel"])
  assert abs(k.mean()) < 1e-3 and abs(k.std() - 0.02) < 1e-3
  scale = np.asarray(params["E4"]["norm1"]["bn"]["scale"])
  assert abs(scale.std() - 0.02) < 5e-3  # BatchNorm scale too, as the reference


def test_bfloat16_compute_keeps_float32_params():
  g = tiny_generator(32, dtype=jnp.bfloat16)
  x = jnp.zeros((2, 32, 32, 3))
  v = init_vars(g, x, jnp.zeros((2, 8)))
  assert {leaf.dtype for leaf in jax.tree.leaves(v)} == {jnp.dtype(jnp.float32)}
  y = g.apply(v, x, jnp.zeros((2, 8)), train=False)
  assert y.dtype == jnp.float32 and y.shape == (2, 32, 32, 3)


# --- style encoder --------------------------------------------------------------

def test_style_encoder_reference_shapes():
  enc = StyleEncoder()
  x = jax.random.uniform(jax.random.key(0), (3, 64, 64, 3), minval=-1, maxval=1)
  v = init_vars(enc, x)
  out = enc.apply(v, x, train=False)
  assert out["embedding"].shape == (3, 256)
  assert out["cosine"].shape == (3, 9)
  assert bool(jnp.all(jnp.abs(out["cosine"]) <= 1.0 + 1e-6))
  np.testing.assert_allclose(out["logits"], 5.0 * out["cosine"], rtol=1e-6)
  assert v["params"]["fc1"]["kernel"].shape == (8 * 8 * 256, 1024)
  assert v["params"]["class_vectors"].shape == (9, 256)
  with pytest.raises(ValueError, match="64x64"):
    enc.apply(v, jnp.zeros((1, 32, 32, 3)), train=False)
