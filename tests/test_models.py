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

from tests.host_variables import host_drawn_variables
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


def generator_32(**overrides) -> TransPix2PixGenerator:
  """The behaviour tests' generator: 32x32, three levels holding each block
  kind (compile time follows the depth; test_generator_shapes_and_range
  covers full depth)."""
  kwargs = dict(features=(8, 16, 16), transformer_blocks=(2, 3), attention_stages=(1,),
                dropout_stages=(0,), conv_bottlenecks=((2, 1.6),))
  return tiny_generator(32, **{**kwargs, **overrides})


def init_vars(model: nn.Module, *inputs, seed: int = 0):
  return model.init({"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)},
                    *inputs, train=False)


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
  v = host_drawn_variables(lambda: init_vars(d, jnp.zeros((1, 256, 256, 6))))
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
  v = host_drawn_variables(lambda: init_vars(d, x))
  feats = d.apply(v, x, train=False, return_features=True)
  assert len(feats) == 5
  np.testing.assert_allclose(feats[-1], d.apply(v, x, train=False))


def test_same_pads_match_reference_layout():
  assert same_pads(4) == ((2, 1), (1, 2))  # top 2, bottom 1, left 1, right 2
  assert same_pads(3) == ((1, 1), (1, 1))


# --- generator behaviour at several sizes --------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("size,batch", [(64, 3), (128, 2), (256, 1)])
def test_generator_shapes_and_range(size, batch):
  depth = int(math.log2(size))
  g = tiny_generator(size, features=(4,) + (8,) * (depth - 1))
  x = jax.random.uniform(jax.random.key(size), (batch, size, size, 3), minval=-1, maxval=1)
  s = jax.random.normal(jax.random.key(1), (batch, 8))
  # Shapes and ranges do not depend on the initialiser: host-drawn values.
  v = host_drawn_variables(lambda: init_vars(g, x, s), seed=size)
  assert v["params"][f"T{depth - 2}"]["pos_embedding"].shape == (16, 8)
  # Train mode (batch statistics): an untrained net in eval mode outputs ~0.
  y, _ = jax.jit(lambda v, x, s: g.apply(v, x, s, train=True, rngs={"dropout": jax.random.key(0)},
                                         mutable=["batch_stats"]))(v, x, s)
  assert y.shape == (batch, size, size, 3)
  assert bool(jnp.all(jnp.abs(y) <= 1.0)) and bool(jnp.all(jnp.isfinite(y)))
  assert float(jnp.std(y)) > 0


class G32:
  """A 32x32 generator with its compiled functions, shared by the tests below
  so each program is compiled once."""

  def __init__(self):
    self.g = g = generator_32()
    self.x = jax.random.uniform(jax.random.key(11), (4, 32, 32, 3), minval=-1, maxval=1)
    self.s = jax.random.normal(jax.random.key(12), (4, 8))
    self.init = jax.jit(lambda key: g.init({"params": key, "dropout": key}, self.x, self.s,
                                           train=False))
    self.eval = jax.jit(lambda v, x, s: g.apply(v, x, s, train=False))
    self.train = jax.jit(lambda v, x, s, key: g.apply(
        v, x, s, train=True, rngs={"dropout": key}, mutable=["batch_stats"]))
    raw = self.init(jax.random.key(0))
    _, upd = self.train(raw, self.x, self.s, jax.random.key(0))
    # Running stats = this batch's stats (flax: new = 0.9 old + 0.1 batch), as
    # after training; fresh running stats (0, 1) with the N(0, 0.02)
    # BatchNorm scales make an untrained net output ~0 in eval mode.
    stats = jax.tree.map(lambda old, new: (new - 0.9 * old) / 0.1, raw["batch_stats"],
                         upd["batch_stats"])
    self.v = {**raw, "batch_stats": stats}


@pytest.fixture(scope="module")
def g32() -> G32:
  return G32()


@pytest.mark.slow
@given(st.integers(0, 2**31 - 1), st.floats(0.1, 50.0))
def test_property_output_in_range(g32, seed, scale):
  k1, k2 = jax.random.split(jax.random.key(seed))
  x = jnp.clip(scale * jax.random.normal(k1, (4, 32, 32, 3)), -1, 1)
  s = scale * jax.random.normal(k2, (4, 8))
  for y in (g32.eval(g32.v, x, s), g32.train(g32.v, x, s, k1)[0]):
    assert y.shape == (4, 32, 32, 3)
    assert bool(jnp.all(jnp.abs(y) <= 1.0)) and bool(jnp.all(jnp.isfinite(y)))
    assert float(jnp.std(y)) > 0


@given(st.integers(0, 2**31 - 1), st.integers(1, 8))
def test_property_translating_input_changes_output(g32, seed, shift):
  x = jax.random.uniform(jax.random.key(seed), (4, 32, 32, 3), minval=-1, maxval=1)
  s = jax.random.normal(jax.random.key(seed + 1), (4, 8))
  y, y_shift = g32.eval(g32.v, x, s), g32.eval(g32.v, jnp.roll(x, shift, axis=2), s)
  # Relative to the output's spread (see test_property_style_changes_output).
  assert float(jnp.max(jnp.abs(y - y_shift))) > 1e-2 * float(jnp.std(y))


@given(st.integers(0, 2**31 - 1))
def test_property_style_changes_output(g32, seed):
  x = jax.random.uniform(jax.random.key(seed), (4, 32, 32, 3), minval=-1, maxval=1)
  s = jax.random.normal(jax.random.key(seed + 1), (4, 8))
  y = g32.eval(g32.v, x, s)
  # Relative to the output's spread: an untrained net (BatchNorm scales near
  # 0, as in the release) outputs values of order 1e-6.
  assert float(jnp.max(jnp.abs(y - g32.eval(g32.v, x, -s)))) > 1e-2 * float(jnp.std(y))


@given(st.integers(0, 2**31 - 1))
def test_property_dropout_only_in_training(g32, seed):
  x = jax.random.uniform(jax.random.key(seed), (4, 32, 32, 3), minval=-1, maxval=1)
  s = jax.random.normal(jax.random.key(seed + 1), (4, 8))
  np.testing.assert_array_equal(g32.eval(g32.v, x, s), g32.eval(g32.v, x, s))
  a = g32.train(g32.v, x, s, jax.random.key(seed))[0]
  b = g32.train(g32.v, x, s, jax.random.key(seed + 7))[0]
  np.testing.assert_array_equal(a, g32.train(g32.v, x, s, jax.random.key(seed))[0])
  assert float(jnp.max(jnp.abs(a - b))) > 1e-6


def test_training_needs_a_dropout_key(g32):
  with pytest.raises(Exception, match="dropout"):
    g32.g.apply(g32.v, g32.x, g32.s, train=True, mutable=["batch_stats"])


@given(st.integers(0, 2**31 - 1))
def test_property_batchnorm_stats_update_only_in_training(g32, seed):
  x = jax.random.uniform(jax.random.key(seed), (4, 32, 32, 3), minval=-1, maxval=1)
  _, upd = g32.train(g32.v, x, g32.s, jax.random.key(0))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), g32.v["batch_stats"],
                         upd["batch_stats"])
  assert all(jax.tree.leaves(changed))
  # Eval mode never asks for a mutable collection: running stats are read only.
  with pytest.raises(Exception):
    g32.g.apply({"params": g32.v["params"]}, x, g32.s, train=False)


@pytest.mark.slow
def test_gradients_reach_every_parameter(g32):
  g = g32.g
  w = jax.random.normal(jax.random.key(5), (4, 32, 32, 3))

  @jax.jit
  def grads_of(v):
    def loss(params):
      y, _ = g.apply({"params": params, "batch_stats": v["batch_stats"]}, g32.x, g32.s,
                     train=True, rngs={"dropout": jax.random.key(6)}, mutable=["batch_stats"])
      return jnp.sum(y * w)
    return jax.grad(loss)(v["params"])

  # A cSE hidden ReLU unit can be dead for a whole batch at a given init (the
  # reference has the same property); a wiring bug kills a parameter for every
  # init. So: every parameter must get gradient under at least one of 3 inits.
  reached = None
  for seed in range(3):
    grads = grads_of(g32.init(jax.random.key(seed)))
    ok = jax.tree.map(lambda a: bool(jnp.any(a != 0)) and bool(jnp.all(jnp.isfinite(a))), grads)
    reached = ok if reached is None else jax.tree.map(lambda a, b: a or b, reached, ok)
  dead = [jax.tree_util.keystr(p) for p, ok in jax.tree_util.tree_leaves_with_path(reached)
          if not ok]
  assert not dead, f"generator parameters without gradient: {dead}"

  d = PatchGANDiscriminator(base_features=8)
  xy = jnp.concatenate([g32.x, w], -1)
  dv = init_vars(d, xy)

  def d_loss(params):
    out, _ = d.apply({"params": params, "batch_stats": dv["batch_stats"]}, xy, train=True,
                     mutable=["batch_stats"])
    return jnp.sum(out * jax.random.normal(jax.random.key(7), out.shape))

  grads = jax.jit(jax.grad(d_loss))(dv["params"])
  dead = [jax.tree_util.keystr(p) for p, leaf in jax.tree_util.tree_leaves_with_path(grads)
          if not bool(jnp.any(leaf != 0))]
  assert not dead, f"discriminator parameters without gradient: {dead}"


def test_jit_equals_eager():
  # Depth 3 at 8x8 still holds every block kind (transformer, attention,
  # bottleneck, dropout stage) while keeping op-by-op execution short.
  g = TransPix2PixGenerator(
      image_size=8, features=(4, 8, 8), transformer_blocks=(2,), attention_stages=(1,),
      dropout_stages=(0,), conv_bottlenecks=((1, 1.6),), style_dim=4, style_part_channels=2,
      style_hidden=8, transformer_layers=1, transformer_heads=2)
  x = jax.random.uniform(jax.random.key(8), (2, 8, 8, 3), minval=-1, maxval=1)
  s = jax.random.normal(jax.random.key(9), (2, 4))
  # The comparison holds for any weights: host-drawn ones skip compiling the
  # init program (a third of this test's CPU time).
  v = host_drawn_variables(lambda: init_vars(g, x, s), seed=8)
  fn = lambda v, x, s: g.apply(v, x, s, train=True, rngs={"dropout": jax.random.key(1)},  # noqa: E731
                               mutable=["batch_stats"])
  with jax.disable_jit():
    eager = fn(v, x, s)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4),
               eager, jax.jit(fn)(v, x, s))


def test_init_is_gan_normal(g32):
  params = g32.v["params"]
  leaves = jax.tree_util.tree_leaves_with_path(params)
  kernels = np.concatenate([np.ravel(x) for p, x in leaves if jax.tree_util.keystr(p).endswith(
      "['kernel']")])
  assert abs(kernels.mean()) < 1e-3 and abs(kernels.std() - 0.02) < 1e-3
  scales = np.concatenate([np.ravel(x) for p, x in leaves
                           if "['bn']['scale']" in jax.tree_util.keystr(p)])
  assert abs(scales.mean()) < 5e-3 and abs(scales.std() - 0.02) < 3e-3  # BatchNorm too
  biases = [x for p, x in leaves if jax.tree_util.keystr(p).endswith("['bias']")]
  assert biases and all(not np.any(np.asarray(b)) for b in biases)


def test_bfloat16_compute_keeps_float32_params(g32):
  g = generator_32(dtype=jnp.bfloat16)
  shapes = jax.eval_shape(lambda: init_vars(g, g32.x, g32.s))
  assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
  y = jax.jit(lambda v: g.apply(v, g32.x, g32.s, train=False))(g32.v)
  assert y.dtype == jnp.float32 and y.shape == (4, 32, 32, 3)
  np.testing.assert_allclose(y, g32.eval(g32.v, g32.x, g32.s), atol=0.05)
  assert bool(jnp.all(jnp.abs(y) <= 1.0))


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
