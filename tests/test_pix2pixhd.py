"""pix2pixHD: coarse-to-fine generator, multi-scale discriminator, feature
matching, staged training (G1 frozen), and the switch for TransPix2Pix."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tp2p_jax.experiments import pix2pixhd, toycats
from tests.host_variables import host_drawn_variables
from tp2p_jax import losses
from tp2p_jax.models.layers import avg_pool_downsample
from tp2p_jax.models.multiscale import MultiScaleDiscriminator
from tp2p_jax.models.patchgan import PatchGANDiscriminator
from tp2p_jax.models.pix2pixhd import Pix2PixHDGenerator
from tp2p_jax import training
from tp2p_jax.core import mesh as parallel
from tp2p_jax.methods import paired_gan
from tp2p_jax.core.checkpoints import Checkpointer, abstract_with_shardings


@settings(max_examples=4)
@given(n_local=st.integers(0, 2), multiple=st.integers(1, 2), batch=st.integers(1, 2))
def test_generator_output_shape_and_range(n_local, multiple, batch):
  size = 2 ** (2 + n_local) * multiple * 2
  g = Pix2PixHDGenerator(ngf_global=8, n_downsample_global=2, n_blocks_global=1,
                         n_local_enhancers=n_local, n_blocks_local=1)
  x = jax.random.uniform(jax.random.key(1), (batch, size, size, 3), minval=-1, maxval=1)
  variables = host_drawn_variables(lambda: g.init(jax.random.key(0), x, train=False))
  out = g.apply(variables, x, train=True)
  assert out.shape == (batch, size, size, 3)
  assert bool(jnp.all(jnp.abs(out) <= 1.0))
  assert set(variables["params"]) == {"global"} | {f"local{k}" for k in range(1, n_local + 1)}
  # G1 inside enhancers ends at its features: no output conv of its own.
  assert ("head" in variables["params"]["global"]) == (n_local == 0)


def test_reference_generator_sizes():
  g = Pix2PixHDGenerator()  # ngf_global 64, 4 downsamplings, 9 blocks, one enhancer
  x = jnp.zeros((1, 64, 64, 3))
  shapes = jax.eval_shape(lambda: g.init(jax.random.key(0), x, train=False))["params"]
  # G1's bottom is 64 * 2**4 = 1024 channels; the enhancer's ngf is 32.
  assert shapes["global"]["block0"]["conv1"]["conv"]["kernel"].shape == (3, 3, 1024, 1024)
  assert shapes["local1"]["front_stem"]["conv"]["kernel"].shape == (7, 7, 3, 32)
  assert shapes["local1"]["head"]["conv"]["kernel"].shape == (7, 7, 32, 3)


def test_multiscale_discriminator_scales_and_features():
  d = MultiScaleDiscriminator(num_d=3, base_features=4, n_layers=3, norm="instance",
                              padding_mode="zeros", pad=2)
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 6))
  variables = host_drawn_variables(lambda: d.init(jax.random.key(1), x, train=False))
  logits = d.apply(variables, x, train=False)
  feats = d.apply(variables, x, train=False, return_features=True)

  def patch_size(h: int) -> int:  # 4x4 convs, pad 2: stride 2 three times, then stride 1 twice
    for _ in range(3):
      h = h // 2 + 1
    return h + 2

  assert [l.shape for l in logits] == [(2, patch_size(s), patch_size(s), 1) for s in (64, 32, 16)]
  assert len(feats) == 3 and all(len(f) == 5 for f in feats)  # n_layers + 1 features, logits
  # Scale 1 is the PatchGAN of the 3x3-average-pooled input.
  single = PatchGANDiscriminator(base_features=4, n_layers=3, norm="instance",
                                 padding_mode="zeros", pad=2)
  ref = single.apply({"params": variables["params"]["scale1"]}, avg_pool_downsample(x),
                     train=False)
  np.testing.assert_allclose(logits[1], ref, rtol=1e-5, atol=1e-6)


def test_avg_pool_leaves_padding_out_of_the_average():
  x = jnp.ones((1, 5, 5, 1))
  np.testing.assert_array_equal(avg_pool_downsample(x), jnp.ones((1, 3, 3, 1)))


def test_feature_matching_loss():
  key = jax.random.key(0)
  shapes = [[(2, 8, 8, 4), (2, 4, 4, 8), (2, 3, 3, 1)], [(2, 4, 4, 4), (2, 2, 2, 8), (2, 1, 1, 1)]]
  real = [[jax.random.normal(jax.random.fold_in(key, 10 * i + j), s) for j, s in enumerate(sc)]
          for i, sc in enumerate(shapes)]
  assert float(losses.feature_matching_loss(real, real)) == 0.0
  noisy = jax.tree.map(lambda r: r + 0.1, real)
  assert float(losses.feature_matching_loss(real, noisy)) > 0.0
  # Per-layer means: a constant offset c gives 4c whatever the layer sizes
  # (1/num_d over scales, 4/(n_layers + 1) over layers); the logits are left out.
  offset = [[r + 0.5 for r in sc[:-1]] + [sc[-1] + 100.0] for sc in real]
  np.testing.assert_allclose(float(losses.feature_matching_loss(real, offset)), 2.0, rtol=1e-5)
  with pytest.raises(ValueError):
    losses.feature_matching_loss(real, real[:1])


def _flat(tree) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}


@pytest.mark.slow
def test_staged_run_freezes_g1_then_trains_jointly(tmp_path):
  """The tiny pix2pixHD run through the trainer: G1 frozen for 2 steps, then
  joint. Checkpoint 2 keeps G1 bit-identical to its initial value while the
  local enhancer has moved; by checkpoint 4 G1 has moved too."""
  config = pix2pixhd.get_config("tiny")
  with config.unlocked():
    config.batch_size = 8  # one example per simulated device
  assert config.fix_global_steps == 2
  assert training.train_and_evaluate(config, str(tmp_path)) == 0
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert all(np.isfinite(v) for r in rows for v in r.values())
  assert all(r["g_feat"] > 0 for r in rows)

  gan = paired_gan.build(config)
  mesh = parallel.make_mesh(jax.devices()[:1])
  abstract = jax.eval_shape(gan.init, jax.random.PRNGKey(config.seed), {})
  sharding = parallel.replicated_like(mesh, abstract)
  initial = jax.jit(gan.init, out_shardings=sharding)(jax.random.PRNGKey(config.seed), {})
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), 3)
  at = {s: ckpt.restore(s, abstract_with_shardings(abstract, sharding))[0] for s in (2, 4)}
  ckpt.close()
  g0 = {k: _flat(v) for k, v in initial.g_params.items()}
  g2 = {k: _flat(v) for k, v in at[2].g_params.items()}
  g4 = {k: _flat(v) for k, v in at[4].g_params.items()}
  for name, value in g0["global"].items():
    np.testing.assert_array_equal(g2["global"][name], value, err_msg=name)
  assert any(np.any(g2["local1"][n] != v) for n, v in g0["local1"].items())
  assert any(np.any(g4["global"][n] != v) for n, v in g0["global"].items())


@pytest.mark.slow
def test_transpix2pix_takes_the_multiscale_discriminator_and_feature_matching():
  config = toycats.get_config("tiny")
  with config.unlocked():
    config.discriminator = "multiscale_patchgan"
    config.num_d = 2
    config.lambda_feat = 10.0
    config.lambda_perceptual = 0.0
  gan = paired_gan.build(config)
  s, e = config.image_size, config.style.image_size
  style_vars = jax.eval_shape(lambda: gan.style_encoder.init(
      jax.random.key(0), jnp.zeros((1, e, e, 3)), train=False))
  state = jax.eval_shape(gan.init, jax.random.PRNGKey(0), style_vars)
  assert set(state.d_params) == {"scale0", "scale1"}
  batch = {"real_a": jax.ShapeDtypeStruct((2, s, s, 3), jnp.float32),
           "real_b": jax.ShapeDtypeStruct((2, s, s, 3), jnp.float32),
           "label": jax.ShapeDtypeStruct((2,), jnp.int32)}
  new_state, metrics = jax.eval_shape(gan.train_step, state, batch, gan.frozen)
  assert "g_feat" in metrics
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  counts = training.param_counts(config)
  assert set(counts) == {"generator", "discriminator", "style_encoder"}
