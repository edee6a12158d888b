"""The paired conditional GAN's train state and pure, jit-able update step.

`make_gan_train_step` returns `train_step(state, batch, frozen) -> (state,
metrics)`
for the paired conditional GAN family: TransPix2Pix (G(real_a, style), the
style from a frozen encoder), pix2pix and pix2pixHD (G(real_a), no style
encoder). The discriminator is updated on `stop_gradient(G(x))`, then the
generator on cGAN + lambda_l1 * L1 + lambda_perceptual * VGG16 feature loss
+ lambda_feat * discriminator feature matching against the updated
discriminator, as the PyTorch reference orders it. The generator runs
forward once per step; its pullback is reused for the G update. A
multi-scale discriminator (a list of PatchGAN outputs) sums the GAN terms
over its scales.

Batches are dicts of NHWC float32 arrays in [-1, 1]: `real_a` (sketches),
`real_b` (photos), and int32 `label` (coat class). `frozen` holds the frozen
VGG16 variables of the perceptual loss ({"vgg": ...}, or None without that
loss): an argument of the compiled step, not constants baked into it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from tp2p_jax import losses
from tp2p_jax.core.ema import ema_update, tree_l2_norm
from tp2p_jax.core.init_rng import param_key
from tp2p_jax.methods import test_mode
from tp2p_jax.methods.style_encoder import resize_to_encoder
from tp2p_jax.models.layers import compute_dtype

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
Params = Any


@struct.dataclass
class TrainState:
  """The GAN train state (stage 2).

  Attributes:
    step: int32 scalar, number of completed updates.
    rng: raw uint32 PRNG key; per-step keys are `fold_in(rng, step)`.
    g_params, g_batch_stats, g_opt_state: generator (netG).
    d_params, d_batch_stats, d_opt_state: discriminator (netD).
    ema: {"g": {"params", "batch_stats"}, "d": {"params", "batch_stats"}},
      the exponential moving averages; EMA BatchNorm statistics are carried
      explicitly beside the EMA weights.
    style_variables: the frozen style encoder's variables (inputs, not
      trained here); `{}` for generators without a style input (pix2pix,
      pix2pixHD).
  """
  step: jax.Array
  rng: jax.Array
  g_params: Params
  g_batch_stats: Params
  g_opt_state: Any
  d_params: Params
  d_batch_stats: Params
  d_opt_state: Any
  ema: dict[str, dict[str, Params]]
  style_variables: Params


def create_train_state(rng: jax.Array, generator: Any, discriminator: Any,
                       g_tx: Any, d_tx: Any, image_size: int, style_dim: int | None,
                       style_variables: Params, in_channels: int = 3,
                       out_channels: int = 3) -> TrainState:
  """Initialises G and D (N(0, 0.02)), their optimiser states, and EMAs equal
  to the initial weights. `style_dim` None: G takes no style (G(real_a,
  train)). `rng` is a raw uint32 key; jit-able."""
  rng, g_rng, d_rng, drop_rng = jax.random.split(rng, 4)
  sketch = jnp.zeros((1, image_size, image_size, in_channels), jnp.float32)
  photo = jnp.zeros((1, image_size, image_size, out_channels), jnp.float32)
  g_inputs = (sketch,) if style_dim is None else (sketch, jnp.zeros((1, style_dim), jnp.float32))
  # Parameters from the cheap-to-compile init generator (tp2p_jax.core.init_rng).
  g_vars = generator.init({"params": param_key(g_rng), "dropout": drop_rng}, *g_inputs,
                          train=False)
  d_vars = discriminator.init({"params": param_key(d_rng)},
                              jnp.concatenate([sketch, photo], -1), train=False)
  g_params, g_bs = g_vars["params"], g_vars.get("batch_stats", {})
  d_params, d_bs = d_vars["params"], d_vars.get("batch_stats", {})
  return TrainState(
      step=jnp.zeros((), jnp.int32), rng=rng,
      g_params=g_params, g_batch_stats=g_bs, g_opt_state=g_tx.init(g_params),
      d_params=d_params, d_batch_stats=d_bs, d_opt_state=d_tx.init(d_params),
      ema={"g": {"params": g_params, "batch_stats": g_bs},
           "d": {"params": d_params, "batch_stats": d_bs}},
      style_variables=style_variables)


@dataclasses.dataclass(frozen=True)
class GanObjective:
  """Weights of the generator objective and the EMA decay.

  Attributes:
    gan_mode: "vanilla" | "lsgan" | "hinge".
    lambda_l1: weight of L1(G(x), y) (pix2pix: 100).
    lambda_perceptual: weight of the VGG16 feature MSE (0 disables it).
    perceptual_layer: VGG16 activation compared (reference: relu2_2).
    lambda_feat: weight of the discriminator feature-matching loss
      (pix2pixHD: 10; 0 disables it and D's extra real pass).
    ema_decay: per-step decay of the G and D EMAs (0: the EMA is the
      trained network itself).
    perceptual_dtype: compute dtype of the frozen VGG16, a config dtype
      name (`layers.compute_dtype`: "bfloat16" is float32 on a CPU
      backend); its features are compared in float32.
    perceptual_remat: recompute VGG16's activations in the backward pass
      instead of keeping them (`losses.perceptual_loss`'s `remat`).
  """
  gan_mode: str = "vanilla"
  lambda_l1: float = 100.0
  lambda_perceptual: float = 1.0
  perceptual_layer: str = "relu2_2"
  lambda_feat: float = 0.0
  ema_decay: float = 0.98
  perceptual_dtype: str = "float32"
  perceptual_remat: bool = False


def style_embedding(style_encoder: nn.Module, variables: Any, photos: jax.Array) -> jax.Array:
  """Frozen style-encoder embedding (B, E) of photos (B, H, W, 3) in [-1, 1]."""
  out = style_encoder.apply(variables, resize_to_encoder(style_encoder, photos), train=False)
  return jax.lax.stop_gradient(out["embedding"])


def apply_generator(generator: nn.Module, variables: Any, real_a: jax.Array,
                    style: jax.Array | None, **kwargs: Any) -> Any:
  """`generator.apply(variables, real_a[, style], **kwargs)`: the one place
  that knows style-conditioned generators take a second argument. `style`
  is (B, E) for those and None for the unconditioned ones (pix2pix,
  pix2pixHD)."""
  args = (real_a,) if style is None else (real_a, style)
  return generator.apply(variables, *args, **kwargs)


def _per_scale(outputs: Any) -> list[list[jax.Array]]:
  """A discriminator's `return_features=True` output as a list of scales,
  each a list of layer outputs with the logits last: a single PatchGAN's
  list of arrays becomes one scale."""
  if isinstance(outputs[0], (list, tuple)):
    return [list(scale) for scale in outputs]
  return [list(outputs)]


def _mean_logit(scales: list[list[jax.Array]]) -> jax.Array:
  return jnp.mean(jnp.stack([jnp.mean(s[-1].astype(jnp.float32)) for s in scales]))


def make_gan_train_step(generator: nn.Module, discriminator: nn.Module,
                        style_encoder: nn.Module | None, g_tx: optax.GradientTransformation,
                        d_tx: optax.GradientTransformation, objective: GanObjective,
                        lr_schedule: optax.Schedule | None = None
                        ) -> Callable[[TrainState, Batch, Any], tuple[TrainState, Metrics]]:
  """Builds the pure GAN train step `(state, batch, frozen) -> (state,
  metrics)` for the given networks and objective.

  `style_encoder` None means an unconditioned generator G(real_a, train)
  (the state's `style_variables` are then unused, e.g. `{}`). `frozen` must
  be {"vgg": VGG16 variables up to `objective.perceptual_layer`} when
  `objective.lambda_perceptual > 0`, and may be None otherwise.
  """

  def d_apply(params, batch_stats, x, y) -> tuple[list[list[jax.Array]], Any]:
    outputs, updates = discriminator.apply(
        {"params": params, "batch_stats": batch_stats},
        jnp.concatenate([x, y], axis=-1), train=True, return_features=True,
        mutable=["batch_stats"])
    return _per_scale(outputs), updates.get("batch_stats", {})

  def train_step(state: TrainState, batch: Batch, frozen: Any
                 ) -> tuple[TrainState, Metrics]:
    if objective.lambda_perceptual > 0 and not frozen:
      raise ValueError("lambda_perceptual > 0 needs frozen={'vgg': VGG16 variables}")
    rng = jax.random.fold_in(state.rng, state.step)
    real_a, real_b = batch["real_a"], batch["real_b"]
    style = None
    if style_encoder is not None:
      style = style_embedding(style_encoder, state.style_variables, real_b)

    def g_forward(g_params):
      fake, updates = apply_generator(
          generator, {"params": g_params, "batch_stats": state.g_batch_stats}, real_a, style,
          train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
      return fake, updates.get("batch_stats", {})

    fake, g_pullback, g_batch_stats = jax.vjp(g_forward, state.g_params, has_aux=True)

    # Discriminator: real and fake in separate passes, because BatchNorm
    # statistics of a joint batch would differ from the reference.
    def d_loss_fn(d_params):
      real_out, bs = d_apply(d_params, state.d_batch_stats, real_a, real_b)
      fake_out, bs = d_apply(d_params, bs, real_a, jax.lax.stop_gradient(fake))
      loss = losses.multiscale_discriminator_loss(
          [s[-1] for s in real_out], [s[-1] for s in fake_out], objective.gan_mode)
      return loss, (bs, _mean_logit(real_out), _mean_logit(fake_out))

    (d_loss, (d_batch_stats, d_real, d_fake)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True)(state.d_params)
    d_updates, d_opt_state = d_tx.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    # Generator: the loss as a function of the generated images, pulled back
    # through the single G forward pass above.
    def g_loss_fn(fake_images):
      fake_out, bs = d_apply(d_params, d_batch_stats, real_a, fake_images)
      g_gan = losses.multiscale_generator_gan_loss([s[-1] for s in fake_out],
                                                   objective.gan_mode)
      g_l1 = losses.l1_loss(fake_images, real_b)
      if objective.lambda_perceptual > 0:
        g_perc = losses.perceptual_loss(fake_images, real_b, frozen["vgg"],
                                        objective.perceptual_layer,
                                        dtype=compute_dtype(objective.perceptual_dtype),
                                        remat=objective.perceptual_remat)
      else:
        g_perc = jnp.float32(0.0)
      if objective.lambda_feat > 0:
        # Real features from the same (updated) D that judges the fakes.
        real_out, bs = d_apply(d_params, bs, real_a, real_b)
        g_feat = losses.feature_matching_loss(real_out, fake_out)
      else:
        g_feat = jnp.float32(0.0)
      total = (g_gan + objective.lambda_l1 * g_l1 + objective.lambda_perceptual * g_perc
               + objective.lambda_feat * g_feat)
      return total, (bs, g_gan, g_l1, g_perc, g_feat)

    (g_loss, (d_batch_stats, g_gan, g_l1, g_perc, g_feat)), fake_grad = jax.value_and_grad(
        g_loss_fn, has_aux=True)(fake)
    (g_grads,) = g_pullback(fake_grad)
    g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)

    decay = objective.ema_decay
    ema = {
        "g": {"params": ema_update(state.ema["g"]["params"], g_params, decay),
              "batch_stats": ema_update(state.ema["g"]["batch_stats"], g_batch_stats, decay)},
        "d": {"params": ema_update(state.ema["d"]["params"], d_params, decay),
              "batch_stats": ema_update(state.ema["d"]["batch_stats"], d_batch_stats, decay)},
    }
    new_state = state.replace(
        step=state.step + 1, g_params=g_params, g_batch_stats=g_batch_stats,
        g_opt_state=g_opt_state, d_params=d_params, d_batch_stats=d_batch_stats,
        d_opt_state=d_opt_state, ema=ema)
    metrics = {
        "d_loss": d_loss, "g_loss": g_loss, "g_gan": g_gan, "g_l1": g_l1,
        "g_perceptual": g_perc, "g_feat": g_feat, "d_real": d_real, "d_fake": d_fake,
        "g_grad_norm": optax.global_norm(g_grads), "d_grad_norm": optax.global_norm(d_grads),
        "g_param_norm": tree_l2_norm(g_params), "d_param_norm": tree_l2_norm(d_params),
    }
    if lr_schedule is not None:
      metrics["lr"] = jnp.asarray(lr_schedule(state.step), jnp.float32)
    return new_state, metrics

  return train_step


def make_generate(generator: nn.Module, style_encoder: nn.Module | None,
                  mode: str = "eval") -> Callable[..., jax.Array]:
  """`generate(state, sketches, photos=None, seeds=None)`: EMA generator in
  test mode `mode` (`tp2p_jax.methods.test_mode`; "train" needs `seeds`
  (B,) int32) on sketches (B, H, W, C) in [-1, 1]; returns (B, H, W, 3) in
  [-1, 1]. A style-conditioned generator is styled by the frozen encoder's
  embedding of `photos` (required then); an unconditioned one ignores them."""
  def generate(state: TrainState, sketches: jax.Array, photos: jax.Array | None = None,
               seeds: jax.Array | None = None) -> jax.Array:
    style = None
    if style_encoder is not None:
      if photos is None:
        raise ValueError("a style-conditioned generator needs the style photos")
      style = style_embedding(style_encoder, state.style_variables, photos)
    variables = {"params": state.ema["g"]["params"],
                 "batch_stats": state.ema["g"]["batch_stats"]}
    if mode == "eval":
      return apply_generator(generator, variables, sketches, style, train=False)
    return test_mode.apply_generator(generator, variables, sketches, style, mode, seeds)
  return generate
