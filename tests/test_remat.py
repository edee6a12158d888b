"""Rematerialisation (`remat`): the same parameters, losses and gradients as
without it, less memory for the backward pass."""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.benchmark import memory_analysis, synthetic_batch
from tp2p_jax.experiments import toycats
from tp2p_jax import losses
from tp2p_jax.methods import paired_gan
from tp2p_jax.models import vgg
from tp2p_jax.models.pix2pixhd import Pix2PixHDGenerator
from tp2p_jax.models.remat import check_remat
from tp2p_jax.models.resnet_generator import ResnetGenerator
from tp2p_jax.models.unet import UnetGenerator

# Recomputing a block runs the same operations on the same inputs; XLA may
# fuse (and so round) the recomputation differently, so float32 results
# agree to rounding, not bit for bit.
_RTOL = 1e-4


def _tiny_config(remat: str) -> Any:
  config = toycats.get_config("tiny")
  config.remat = remat
  return config


def _assert_trees_close(a: Any, b: Any, rtol: float = _RTOL) -> None:
  """Leaf by leaf within `rtol`, with an absolute floor of `rtol` times the
  tree's largest entry: some gradients are 0 but for rounding (a conv bias
  in front of BatchNorm, whose shift cancels it), and rounding noise agrees
  only in size."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  scale = max(float(np.max(np.abs(x), initial=0.0)) for x in jax.tree.leaves(a))
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    assert x.shape == y.shape, path
    np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * scale,
                               err_msg=jax.tree_util.keystr(path))


def _same_tree(a: Any, b: Any) -> None:
  """Same structure, names, shapes, dtypes and values."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    assert x.shape == y.shape and x.dtype == y.dtype, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def train_steps() -> dict[str, Any]:
  """For remat "none" and "blocks": the tiny TransPix2Pix train step
  compiled (no donation, so both run on one state), its memory analysis,
  and its output from the same initial state and batch."""
  config = _tiny_config("none")
  batch = synthetic_batch(config.batch_size, config.image_size, len(config.data.style_names))
  style_vars = paired_gan.fresh_style_variables(config, jax.random.PRNGKey(1))
  out = {}
  state = None
  for remat in ("none", "blocks"):
    gan = paired_gan.build(_tiny_config(remat))
    initial = jax.jit(gan.init)(jax.random.PRNGKey(0), style_vars)
    state = initial if state is None else state
    step = jax.jit(gan.train_step).lower(state, batch, gan.frozen).compile()
    new_state, metrics = step(state, batch, gan.frozen)
    out[remat] = {"gan": gan, "memory": memory_analysis(step), "initial": initial,
                  "metrics": jax.device_get(metrics), "state": jax.device_get(new_state)}
  out["state"] = state
  return out


@pytest.mark.slow
def test_remat_keeps_the_parameter_tree(train_steps):
  # Checkpoints must be interchangeable between the two settings: the whole
  # train state, initialised from one key, is the same tree with the same
  # values.
  _same_tree(train_steps["none"]["initial"], train_steps["blocks"]["initial"])
  assert paired_gan.build(_tiny_config("blocks")).generator.remat == "blocks"
  assert paired_gan.build(_tiny_config("none")).generator.remat == "none"


@pytest.mark.slow
def test_train_step_same_losses_gradients_and_statistics(train_steps):
  none, blocks = train_steps["none"], train_steps["blocks"]
  assert set(none["metrics"]) == set(blocks["metrics"])
  # Losses and both gradient norms (the metrics), and the state after one
  # update: BatchNorm statistics and EMAs, and parameters. Adam's first
  # update is lr * sign(g), so a gradient entry within rounding of 0 could
  # move its parameter by +-lr either way: parameters are compared with that
  # slack, everything else to rounding.
  for name in none["metrics"]:
    np.testing.assert_allclose(blocks["metrics"][name], none["metrics"][name], rtol=_RTOL,
                               atol=1e-6, err_msg=name)
  for field in ("g_batch_stats", "d_batch_stats", "d_params", "d_opt_state"):
    _assert_trees_close(getattr(none["state"], field), getattr(blocks["state"], field))
  lr = float(none["metrics"]["lr"])
  g_moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))),
                         none["state"].g_params, blocks["state"].g_params)
  assert max(jax.tree.leaves(g_moved)) <= 2 * lr + 1e-6
  # G's Adam moments hold its gradient itself: 1 - b1 times it after step 1.
  _assert_trees_close(none["state"].g_opt_state, blocks["state"].g_opt_state, rtol=1e-3)


@pytest.mark.slow
def test_generator_gradients_agree_leaf_by_leaf(train_steps):
  # The train step's metrics hold G's gradient norm only; compare every
  # leaf of G's gradient through the perceptual loss and dropout.
  state = train_steps["state"]
  batch = synthetic_batch(4, 32, 4, seed=3)
  style = jax.random.normal(jax.random.PRNGKey(2), (4, 16))
  frozen = train_steps["none"]["gan"].frozen

  def grads(remat: str) -> Any:
    gan = train_steps[remat]["gan"]

    def loss(params):
      fake, _ = gan.generator.apply(
          {"params": params, "batch_stats": state.g_batch_stats}, batch["real_a"], style,
          train=True, rngs={"dropout": jax.random.PRNGKey(5)}, mutable=["batch_stats"])
      return (losses.l1_loss(fake, batch["real_b"])
              + losses.perceptual_loss(fake, batch["real_b"], frozen["vgg"],
                                       remat=remat == "blocks"))

    return jax.jit(jax.value_and_grad(loss))(state.g_params)

  (loss_none, g_none), (loss_blocks, g_blocks) = grads("none"), grads("blocks")
  np.testing.assert_allclose(loss_blocks, loss_none, rtol=1e-6)
  _assert_trees_close(g_none, g_blocks)


@pytest.mark.slow
def test_remat_lowers_the_train_steps_temporary_memory(train_steps):
  none, blocks = train_steps["none"]["memory"], train_steps["blocks"]["memory"]
  # Activations kept for the backward pass are XLA temporaries: remat keeps
  # the block inputs only (about 18 and 15 MB here). Arguments (the state
  # and batch) are the same.
  assert blocks["temp_bytes"] < none["temp_bytes"], (blocks, none)
  assert blocks["argument_bytes"] == none["argument_bytes"]


def test_perceptual_loss_remat_same_value_and_gradient():
  variables = vgg.variables_up_to(vgg.load_pretrained_vgg16(), "relu3_1")
  fake, real = jax.random.uniform(jax.random.PRNGKey(0), (2, 2, 16, 16, 3), minval=-1, maxval=1)

  def loss(x, remat):
    return losses.perceptual_loss(x, real, variables, "relu3_1", remat=remat)

  value, grad = jax.value_and_grad(loss)(fake, False)
  value_r, grad_r = jax.value_and_grad(loss)(fake, True)
  np.testing.assert_allclose(value_r, value, rtol=1e-6)
  _assert_trees_close(grad, grad_r)
  # Same parameter tree: the convs keep their names (the pretrained layout).
  x = jnp.zeros((1, 16, 16, 3))
  _same_tree(vgg.VGG16(layers=("relu3_1",)).init(jax.random.PRNGKey(0), x),
             vgg.VGG16(layers=("relu3_1",), remat=True).init(jax.random.PRNGKey(0), x))


@pytest.mark.parametrize("make", [
    lambda r: ResnetGenerator(base_features=4, n_blocks=2, remat=r),
    lambda r: Pix2PixHDGenerator(ngf_global=8, n_downsample_global=1, n_blocks_global=2,
                                 n_local_enhancers=1, n_blocks_local=1, norm="batch",
                                 remat=r),
], ids=["resnet", "pix2pixhd"])
@pytest.mark.slow
def test_residual_generators_remat(make):
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3), minval=-1, maxval=1)
  keys = {"params": jax.random.PRNGKey(1), "dropout": jax.random.PRNGKey(2)}
  variables = make("none").init(keys, x, train=False)
  _same_tree(variables, make("blocks").init(keys, x, train=False))

  def loss(params, remat):
    out, _ = make(remat).apply({**variables, "params": params}, x, train=True,
                               mutable=["batch_stats"])
    return jnp.sum(jnp.square(out))

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  g_none, g_blocks = grad(variables["params"], "none"), grad(variables["params"], "blocks")
  _assert_trees_close(g_none, g_blocks)


def test_unsupported_or_unknown_remat_fails_clearly():
  unet = UnetGenerator(num_downs=5, ngf=4)
  assert paired_gan.with_remat(unet, "none") is unet
  with pytest.raises(ValueError, match="remat='blocks' is not available for the "
                                       "UnetGenerator generator"):
    paired_gan.with_remat(unet, "blocks")
  with pytest.raises(ValueError, match="unknown remat 'all'"):
    check_remat("all")
  with pytest.raises(ValueError, match="unknown remat 'all'"):
    paired_gan.build(_tiny_config("all"))
  assert {f.name for f in dataclasses.fields(ResnetGenerator)} >= {"remat"}
  assert isinstance(paired_gan.with_remat(ResnetGenerator(), "blocks"), nn.Module)
