"""pix2pix: the U-Net generator, its release parameter count, pix2pix's
random jitter, the dry run and a few-step run through the trainer."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tp2p_jax.experiments import pix2pix
from tests.host_variables import host_drawn_variables
from tp2p_jax import models
from tp2p_jax.data import pipeline
from tp2p_jax.models.unet import UnetGenerator
from tp2p_jax import training
from tp2p_jax.methods import paired_gan
from tp2p_jax.core.checkpoints import Checkpointer



def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def test_unet_256_batchnorm_has_the_release_parameter_count():
  g = models.build_generator("unet_256", norm="batch")
  shapes = jax.eval_shape(lambda: g.init(jax.random.key(0), jnp.zeros((1, 256, 256, 3)),
                                         train=False))
  assert _count(shapes["params"]) == 54_413_955
  assert "batch_stats" in shapes


def test_unet_128_and_instance_norm_shapes():
  g = models.build_generator("unet_128", norm="instance")
  x = jnp.zeros((2, 128, 128, 3))
  variables = jax.eval_shape(lambda: g.init(jax.random.key(0), x, train=False))
  out = jax.eval_shape(lambda v: g.apply(v, x, train=False), variables)
  assert out.shape == (2, 128, 128, 3)
  assert "batch_stats" not in variables  # instance norm has no statistics
  with pytest.raises(ValueError, match="divisible by 128"):
    g.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)


@settings(max_examples=3)
@given(num_downs=st.integers(5, 6), multiple=st.integers(1, 2), batch=st.integers(1, 2),
       norm=st.sampled_from(["batch", "instance"]), train=st.booleans())
def test_unet_output_shape_and_range(num_downs, multiple, batch, norm, train):
  size = 2 ** num_downs * multiple
  g = UnetGenerator(num_downs=num_downs, ngf=2, norm=norm)
  x = jax.random.uniform(jax.random.key(1), (batch, size, size, 3), minval=-1, maxval=1)
  variables = host_drawn_variables(lambda: g.init({"params": jax.random.key(0)}, x, train=False))
  out = g.apply(variables, x, train=train, rngs={"dropout": jax.random.key(2)},
                mutable=["batch_stats"] if train else False)
  out = out[0] if train else out
  assert out.shape == (batch, size, size, 3)
  assert bool(jnp.all(jnp.abs(out) <= 1.0))


def test_dropout_is_in_the_decoder_blocks_after_the_innermost():
  """With train=True only dropout makes two calls differ; unet with
  num_downs 5 has none (num_downs - 5 = 0 dropout blocks), 6 has one."""
  x = jnp.ones((1, 64, 64, 3))
  for num_downs, expect_noise in ((5, False), (6, True)):
    g = UnetGenerator(num_downs=num_downs, ngf=2, norm="instance")
    v = g.init(jax.random.key(0), x, train=False)
    a = g.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
    b = g.apply(v, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert bool(jnp.any(a != b)) == expect_noise


def test_random_jitter_crops_and_mirrors_the_pair_alike():
  assert pipeline.jitter_load_size(256) == 286 and pipeline.jitter_load_size(64) == 72
  rng = np.random.default_rng(0)
  photo = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  jitter = pipeline.RandomJitter(64)
  outs = [jitter.random_map({"sketch": photo, "photo": photo.copy(), "label": 1},
                            np.random.default_rng(seed)) for seed in range(6)]
  for out in outs:
    assert out["sketch"].shape == out["photo"].shape == (64, 64, 3)
    np.testing.assert_array_equal(out["sketch"], out["photo"])
  assert len({o["photo"].tobytes() for o in outs}) > 1  # the crop position varies


@pytest.mark.slow
def test_tiny_run_through_the_trainer(tmp_path):
  config = pix2pix.get_config("tiny")
  with config.unlocked():
    config.batch_size = 8  # one example per simulated device
    config.data.num_train = 16
  assert training.train_and_evaluate(config, str(tmp_path)) == 0
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [2, 4]
  assert all(np.isfinite(v) for r in rows for v in r.values())
  assert rows[-1]["g_perceptual"] == 0.0 and rows[-1]["g_feat"] == 0.0
  assert not (tmp_path / "style_encoder").exists()  # no style stage
  assert Checkpointer(str(tmp_path / "checkpoints"), 3).all_steps() == [2, 4]
  assert (tmp_path / "samples" / "step_0000004.png").exists()
  # The EMA generator generates from real_a alone.
  gan = paired_gan.build(config)
  assert gan.style_encoder is None
  state = jax.jit(gan.init)(jax.random.PRNGKey(0), {})
  assert state.style_variables == {}
  fake = gan.generate(state, jnp.zeros((2, 32, 32, 3)))
  assert fake.shape == (2, 32, 32, 3)
