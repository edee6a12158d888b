"""A complete method in one file, to copy when adding your own: `l1_painter`,
two convolutions trained by L1 on tiny toy-cats pairs, with everything the
shared trainer, run loader and predictor ask of a method (see
`tp2p_jax.methods.base`): stages with a jit-able init and a pure train
step, parameter counts, and a predictor. It trains in seconds.

It is not registered by default (its name would otherwise appear among the
built-in methods); register it for a block, or for good in your own code:

  from tp2p_jax import training
  from tp2p_jax.methods import template
  with template.registered():
    training.train_and_evaluate(template.config(total_steps=4), "/tmp/painter")
"""
from __future__ import annotations

import contextlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from tp2p_jax import methods
from tp2p_jax.core import run_log
from tp2p_jax.core.stage import Stage
from tp2p_jax.data import pipeline
from tp2p_jax.data.sources import sources_from_config
from tp2p_jax.methods import validation
from tp2p_jax.methods.base import Method, Predictor
from tp2p_jax.methods.networks import count_params

NAME = "l1_painter"


class _Painter(nn.Module):
  """sketch (B, S, S, 3) -> photo (B, S, S, 3) in [-1, 1]: two convolutions."""
  features: int = 8

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    x = nn.relu(nn.Conv(self.features, (3, 3))(x))
    return jnp.tanh(nn.Conv(3, (3, 3))(x))


@struct.dataclass
class _State:
  step: jax.Array
  params: Any
  opt_state: Any
  ema: Any


def config(total_steps: int = 4) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "l1_painter"  # the method below
  c.seed = 0
  c.image_size = 16
  c.batch_size = 8  # one example per simulated device
  c.features = 8
  c.lr = 1e-2
  c.total_steps = total_steps
  c.checkpoint_every = 2
  c.sample_every = 2
  c.eval_every = 0  # held-out scores every N steps (tp2p_jax.methods.validation); 0: off
  c.eval_examples = 4  # how many held-out pairs they score
  c.keep_best = ""  # an eval/ metric whose best step is kept in best/ ("": none)
  # Any registered data source (tp2p_jax.data.sources.SOURCES) with pairs.
  c.data = ml_collections.ConfigDict({"source": "toycats", "num_train": 16, "num_eval": 4})
  return c


def _build(config: ml_collections.ConfigDict):
  module, tx = _Painter(config.features), optax.adam(config.lr)
  s = config.image_size

  def init(key: jax.Array, handoff: Any) -> _State:
    params = module.init(key, jnp.zeros((1, s, s, 3)))["params"]
    return _State(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                  ema=params)

  def train_step(state: _State, batch: Any, frozen: Any) -> tuple[_State, dict]:
    def loss_fn(params):
      fake = module.apply({"params": params}, batch["real_a"])
      return jnp.mean(jnp.abs(fake - batch["real_b"])) * frozen["weight"]

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * p, state.ema, params)
    return _State(step=state.step + 1, params=params, opt_state=opt_state, ema=ema), {
        "l1": loss, "grad_norm": optax.global_norm(grads)}

  return module, init, train_step


def _stages(config: ml_collections.ConfigDict) -> list[Stage]:
  module, init, train_step = _build(config)
  train, held_out = sources_from_config(config.data, image_size=config.image_size,
                                        seed=config.seed)
  batch = next(pipeline.make_eval_batches(held_out, batch_size=4,
                                          image_size=config.image_size))
  return [Stage(
      name="l1_painter", directory="", init=init, train_step=train_step,
      make_iterator=lambda: pipeline.make_dataset_iterator(
          train, global_batch_size=config.batch_size, image_size=config.image_size,
          seed=config.seed, augment=False),
      batch_size=config.batch_size, seed=config.seed, total_steps=config.total_steps,
      log_every=1, checkpoint_every=config.checkpoint_every, keep_checkpoints=5,
      frozen={"weight": np.float32(1.0)},
      samples=lambda state, jit: run_log.image_grid([batch["real_a"], np.asarray(
          module.apply({"params": state.ema}, batch["real_a"])), batch["real_b"]]),
      sample_every=config.sample_every,
      # Held-out scores of the averaged weights while training (optional).
      validate=validation.held_out_validation(
          held_out, num_examples=config.eval_examples, image_size=config.image_size,
          batch_size=config.batch_size,
          generate=lambda state, real_a, real_b, seeds: module.apply({"params": state.ema},
                                                                     real_a),
          keep_best=config.get("keep_best", ""),
      ) if config.get("eval_every", 0) > 0 else None,
      eval_every=config.get("eval_every", 0), keep_best=config.get("keep_best", ""))]


def param_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
  _, init, _ = _build(config)
  return {"generator": count_params(jax.eval_shape(init, jax.random.PRNGKey(0), {}).params)}


def _predictor(config: ml_collections.ConfigDict, restore, dtype: str | None) -> Predictor:
  module, init, _ = _build(config)
  state = restore(jax.eval_shape(init, jax.random.PRNGKey(0), {}))
  return Predictor(
      model_name="l1_painter", image_size=config.image_size, generator=module,
      variables={"AtoB": {"params": state.ema}},
      initial_variables=lambda: {"AtoB": {"params": init(jax.random.PRNGKey(0), {}).ema}},
      prepare="pad")


METHOD = Method(name=NAME, description="a two-conv L1 regression: the template method",
                stages=_stages, param_counts=param_counts, predictor=_predictor)


def registered() -> contextlib.AbstractContextManager[Method]:
  """The method registered for a `with` block (`methods.registered`)."""
  return methods.registered(METHOD)
