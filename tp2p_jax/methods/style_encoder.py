"""The `style_encoder` method: the CosFace style encoder trained on the
photos' style labels (TransPix2Pix's stage 1, also a method of its own).

Its stage trains `StyleEncoder` with the CosFace loss, then recomputes the
BatchNorm statistics without dropout ("precise BN", see
`precise_batch_stats`), writes the held-out accuracy to `eval.json` and hands
the frozen variables {"params", "batch_stats"} to the next stage.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from tp2p_jax import losses
from tp2p_jax.core import optim
from tp2p_jax.core.atomic_files import write_json_atomically
from tp2p_jax.core.init_rng import param_key
from tp2p_jax.data import pipeline
from tp2p_jax.data.sources import sources_from_config
from tp2p_jax.methods import registry
from tp2p_jax.core.stage import Batch, Jit, Metrics, Stage, plain_jit
from tp2p_jax.methods.base import Method
from tp2p_jax.methods.networks import count_params, style_encoder_from_config

log = logging.getLogger("tp2p_jax.train")

STAGE_DIRECTORY = "style_encoder"


@struct.dataclass
class StyleTrainState:
  """The style-encoder train state.

  Attributes:
    step: int32 scalar, completed updates.
    rng: raw uint32 PRNG key; per-step keys are `fold_in(rng, step)`.
    params, batch_stats, opt_state: the encoder and its optimiser.
  """
  step: jax.Array
  rng: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def create_style_state(rng: jax.Array, style_encoder: Any, tx: Any) -> StyleTrainState:
  """Initialises the style encoder (He-normal) and its optimiser state."""
  rng, init_rng = jax.random.split(rng)
  size = style_encoder.image_size
  variables = style_encoder.init({"params": param_key(init_rng)},
                                 jnp.zeros((1, size, size, 3), jnp.float32), train=False)
  return StyleTrainState(step=jnp.zeros((), jnp.int32), rng=rng,
                         params=variables["params"],
                         batch_stats=variables.get("batch_stats", {}),
                         opt_state=tx.init(variables["params"]))


def resize_to_encoder(style_encoder: nn.Module, photos: jax.Array) -> jax.Array:
  """Photos (B, H, W, 3) resized (linear, antialiased) to the encoder's input."""
  size = style_encoder.image_size
  if photos.shape[1:3] != (size, size):
    photos = jax.image.resize(photos, (photos.shape[0], size, size, photos.shape[3]),
                              "linear", antialias=True)
  return photos


def make_style_train_step(style_encoder: nn.Module, tx: optax.GradientTransformation,
                          margin: float, lr_schedule: optax.Schedule | None = None
                          ) -> Callable[[StyleTrainState, Batch, Any],
                                        tuple[StyleTrainState, Metrics]]:
  """The pure step `(state, batch, frozen) -> (state, metrics)`: CosFace loss
  of the style encoder on (photo, label). `frozen` is unused (None).

  Batch: `real_b` photos (B, H, W, 3) in [-1, 1] (resized to the encoder's
  input size here) and int32 `label` (B,).
  """
  def train_step(state: StyleTrainState, batch: Batch, frozen: Any = None
                 ) -> tuple[StyleTrainState, Metrics]:
    del frozen
    rng = jax.random.fold_in(state.rng, state.step)
    photos = resize_to_encoder(style_encoder, batch["real_b"])

    def loss_fn(params):
      out, updates = style_encoder.apply(
          {"params": params, "batch_stats": state.batch_stats}, photos, train=True,
          rngs={"dropout": rng}, mutable=["batch_stats"])
      loss = losses.cosface_loss(out["cosine"], batch["label"], style_encoder.scale, margin)
      accuracy = jnp.mean(jnp.argmax(out["cosine"], -1) == batch["label"])
      return loss, (updates["batch_stats"], accuracy)

    (loss, (batch_stats, accuracy)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"style_loss": loss, "style_accuracy": accuracy,
               "style_grad_norm": optax.global_norm(grads)}
    if lr_schedule is not None:
      metrics["lr"] = jnp.asarray(lr_schedule(state.step), jnp.float32)
    return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                         opt_state=opt_state), metrics

  return train_step


def precise_batch_stats(style_encoder: nn.Module, variables: Any,
                        photo_batches: list[jax.Array], jit: Jit = plain_jit) -> Any:
  """Recomputes the encoder's BatchNorm running statistics with dropout off.

  The reference encoder puts dropout (0.2-0.5) in front of BatchNorm layers,
  so running statistics gathered in training describe dropped-out
  activations and no longer match eval mode (held-out accuracy falls from
  ~0.95 with batch statistics to ~0.5). Averaging the exact batch statistics
  of a few batches through the dropout-free network fixes that ("precise
  BN"); the weights are untouched.

  Args:
    style_encoder: the trained StyleEncoder.
    variables: {"params", "batch_stats"}.
    photo_batches: photo batches (B, S, S, 3) in [-1, 1] at the encoder size.
    jit: compiles the statistics program (see `tp2p_jax.core.stage.Jit`).
  """
  no_dropout = style_encoder.clone(spatial_dropout=0.0, block_dropout=0.0,
                                   last_block_dropout=0.0, head_dropout=0.0)
  momentum = 0.9  # StyleEncoder's BatchNorm momentum

  def batch_stats_of(variables, photos):
    _, updates = no_dropout.apply(variables, photos, train=True, mutable=["batch_stats"])
    # running_new = m * running + (1 - m) * batch  =>  solve for batch.
    return jax.tree.map(lambda new, old: (new - momentum * old) / (1.0 - momentum),
                        updates["batch_stats"], variables["batch_stats"])

  program = jit("precise_batch_stats", batch_stats_of)
  stats = [program(variables, p) for p in photo_batches]
  mean = jax.tree.map(lambda *xs: sum(xs) / len(xs), *stats)
  return {"params": variables["params"], "batch_stats": mean}


def style_optimizer(config: ml_collections.ConfigDict
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam with coupled L2 on kernels and a staircase exponential lr decay."""
  s = config.style
  schedule = optax.exponential_decay(s.lr, transition_steps=s.lr_decay_every,
                                     decay_rate=s.lr_decay, staircase=True)
  return optim.adam_with_l2(schedule, 0.9, 0.999, s.weight_decay, optim.decay_mask), schedule


def _encoder_photos(source: Any, style_encoder: nn.Module, image_size: int,
                    num_batches: int = 16, batch_size: int = 64) -> list[np.ndarray]:
  """The first training photos in source order (deterministic), resized to the
  encoder's input, for recomputing its BatchNorm statistics."""
  batches = []
  for batch in pipeline.make_eval_batches(source, batch_size=batch_size,
                                          image_size=image_size,
                                          num_examples=num_batches * batch_size):
    photos = batch["real_b"]
    if photos.shape[1] != style_encoder.image_size:
      photos = np.asarray(resize_to_encoder(style_encoder, photos))
    batches.append(photos)
  return batches


def heldout_accuracy(style_encoder: nn.Module, variables: Any, eval_source: Any,
                     image_size: int, jit: Jit = plain_jit) -> dict[str, float]:
  """{"heldout_accuracy", "heldout_examples"} of the CosFace head on the
  held-out photos (`jit` compiles its program, see `tp2p_jax.core.stage.Jit`)."""
  apply = jit("heldout_cosines", lambda v, x: style_encoder.apply(v, x, train=False)["cosine"])
  size = style_encoder.image_size
  correct = total = 0
  for batch in pipeline.make_eval_batches(eval_source, batch_size=64, image_size=image_size):
    photos = jax.image.resize(batch["real_b"], (len(batch["label"]), size, size, 3),
                              "linear", antialias=True)
    pred = np.argmax(np.asarray(apply(variables, photos)), -1)
    correct += int(np.sum(pred == batch["label"]))
    total += len(batch["label"])
  return {"heldout_accuracy": correct / max(total, 1), "heldout_examples": total}


def style_encoder_stage(config: ml_collections.ConfigDict, train_source: Any,
                        eval_source: Any, directory: str = STAGE_DIRECTORY) -> Stage:
  """The stage training `config.style`'s encoder on `train_source`'s labelled
  photos; it hands on the frozen {"params", "batch_stats"}."""
  encoder = style_encoder_from_config(config)
  tx, schedule = style_optimizer(config)

  def finish(state: StyleTrainState, stage_dir: str, jit: Jit) -> Any:
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    if int(state.step) == 0:  # not trained (total_steps 0): as initialised
      return variables
    variables = precise_batch_stats(encoder, jax.device_get(variables),
                                    _encoder_photos(train_source, encoder, config.image_size),
                                    jit)
    if jax.process_index() == 0:
      summary = heldout_accuracy(encoder, variables, eval_source, config.image_size, jit)
      write_json_atomically(os.path.join(stage_dir, "eval.json"), summary)
      log.info("style encoder: held-out accuracy %.3f on %d photos",
               summary["heldout_accuracy"], summary["heldout_examples"])
    return variables

  return Stage(
      name="style_encoder", directory=directory,
      init=lambda key, handoff: create_style_state(key, encoder, tx),
      train_step=make_style_train_step(encoder, tx, config.style.margin, schedule),
      make_iterator=lambda: pipeline.make_dataset_iterator(
          train_source, global_batch_size=config.style.batch_size,
          image_size=config.image_size, seed=config.seed + 1, augment=config.data.augment,
          worker_count=config.data.worker_count),
      batch_size=config.style.batch_size, seed=config.seed,
      total_steps=config.style.total_steps, log_every=config.log_every,
      checkpoint_every=config.style.checkpoint_every,
      keep_checkpoints=config.keep_checkpoints, finish=finish)


def with_dataset_classes(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with `data.style_names` from the dataset (a prepared dataset
  brings its own classes; the encoder's head and the saved config follow)."""
  from tp2p_jax.data.sources import class_names
  names = class_names(config.data)
  if tuple(config.data.style_names) == names:
    return config
  config = config.copy_and_resolve_references()
  config.data.style_names = names
  log.info("style classes from the dataset: %s", ", ".join(names))
  return config


def style_encoder_param_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
  encoder = style_encoder_from_config(config)
  e = config.style.image_size
  shapes = jax.eval_shape(lambda: encoder.init({"params": jax.random.key(0)},
                                               jnp.zeros((1, e, e, 3)), train=False))
  return {"style_encoder": count_params(shapes["params"])}


def _stages(config: ml_collections.ConfigDict) -> list[Stage]:
  train_source, eval_source = sources_from_config(config.data, image_size=config.image_size,
                                                  seed=config.seed)
  return [style_encoder_stage(config, train_source, eval_source, directory="")]


METHOD = registry.register(Method(
    name="style_encoder",
    description="the CosFace style encoder alone, on labelled photos",
    stages=_stages, param_counts=style_encoder_param_counts, predictor=None,
    prepare_config=with_dataset_classes))
