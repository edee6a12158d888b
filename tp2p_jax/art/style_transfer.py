"""Neural style transfer (Gatys et al. 2016) against the ported ImageNet VGG16.

The pixels of an output image are optimised so that its VGG16 activations at
one layer match the content image's and the Gram matrices of several layers
match the style image's, with a total-variation smoothness term:

  J(x) = content_weight * content(x) + style_weight * sum_l w_l style_l(x)
         + tv_weight * tv(x).

Images are NHWC float32 in [0, 1] (the VGG input before ImageNet
normalisation, which `vgg.features` applies), batch 1, any size at least 8x8
(relu4_x sees 1/8 of it). `python -m tp2p_jax.cli.stylize` is the command
line.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Literal, Mapping

import jax
import jax.numpy as jnp
import optax

from tp2p_jax.models import vgg

Params = Any
OptimizerName = Literal["adam", "lbfgs"]
DEFAULT_STYLE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
# Shallower layers weigh more: their Gram matrices hold the fine texture.
DEFAULT_STYLE_LAYER_WEIGHTS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)


def gram_matrix(features: jax.Array) -> jax.Array:
  """Channel x channel correlations, normalised by size.

  Args:
    features: (B, H, W, C) activations.

  Returns:
    (B, C, C) float32, G[b, c, d] = sum_{h,w} F[b,h,w,c] F[b,h,w,d] / (H W C):
    independent of the image size, comparable across layers.
  """
  b, h, w, c = features.shape
  f = features.astype(jnp.float32).reshape(b, h * w, c)
  return jnp.einsum("bnc,bnd->bcd", f, f) / (h * w * c)


def total_variation(images: jax.Array) -> jax.Array:
  """Mean squared difference of vertically and horizontally adjacent
  pixels of (B, H, W, C) images (0 for a constant image)."""
  x = images.astype(jnp.float32)
  return (jnp.mean(jnp.square(x[:, 1:] - x[:, :-1]))
          + jnp.mean(jnp.square(x[:, :, 1:] - x[:, :, :-1])))


@dataclasses.dataclass(frozen=True)
class StyleTransferWeights:
  """Attributes:
    content_layer: VGG16 activation compared with the content image.
    style_layers: activations whose Gram matrices are matched.
    style_layer_weights: one weight per style layer.
    content_weight, style_weight, tv_weight: alpha, beta, gamma of J.
  """
  content_layer: str = "relu3_3"
  style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
  style_layer_weights: tuple[float, ...] = DEFAULT_STYLE_LAYER_WEIGHTS
  content_weight: float = 1.0
  style_weight: float = 1e3
  tv_weight: float = 10.0

  def __post_init__(self):
    if len(self.style_layers) != len(self.style_layer_weights):
      raise ValueError(f"{len(self.style_layers)} style layers but "
                       f"{len(self.style_layer_weights)} style layer weights")
    unknown = [n for n in (self.content_layer, *self.style_layers)
               if n not in vgg.VGG16_LAYERS]
    if unknown:
      raise ValueError(f"unknown VGG16 layer(s) {unknown}; choose from {vgg.VGG16_LAYERS}")
    named = {"content_weight": self.content_weight, "style_weight": self.style_weight,
             "tv_weight": self.tv_weight,
             **{f"style_layer_weights[{i}]": w for i, w in enumerate(self.style_layer_weights)}}
    for name, weight in named.items():
      if not weight >= 0:  # NaN too
        raise ValueError(f"{name} must be >= 0 (a negative weight would raise its loss "
                         f"term), got {weight}")

  @property
  def layers(self) -> tuple[str, ...]:
    """The content and style layers, each once."""
    return tuple(dict.fromkeys((self.content_layer, *self.style_layers)))

  @property
  def deepest_layer(self) -> str:
    """The last of `layers` in VGG16's order: where its forward pass can stop."""
    return max(self.layers, key=vgg.VGG16_LAYERS.index)


def style_targets(content: jax.Array, style: jax.Array, vgg_variables: Params,
                  weights: StyleTransferWeights) -> dict[str, Any]:
  """The fixed targets: content activations and style Gram matrices.

  Args:
    content: (1, H, W, 3) in [0, 1].
    style: (1, H', W', 3) in [0, 1] (any size).
  """
  content_feats = vgg.features(content, vgg_variables, (weights.content_layer,), "0..1")
  style_feats = vgg.features(style, vgg_variables, weights.style_layers, "0..1")
  return {"content": content_feats[weights.content_layer],
          "grams": {n: gram_matrix(style_feats[n]) for n in weights.style_layers}}


def style_transfer_loss(image: jax.Array, targets: Mapping[str, Any], vgg_variables: Params,
                        weights: StyleTransferWeights) -> tuple[jax.Array, dict[str, jax.Array]]:
  """J(image) and its parts {"content", "style", "tv"} (unweighted).

  Args:
    image: (1, H, W, 3) in [0, 1], the content image's size.
    targets: from `style_targets`.
  """
  feats = vgg.features(image, vgg_variables, weights.layers, "0..1")
  content = jnp.mean(jnp.square(feats[weights.content_layer].astype(jnp.float32)
                                - targets["content"]))
  style = sum(w * jnp.mean(jnp.square(gram_matrix(feats[n]) - targets["grams"][n]))
              for n, w in zip(weights.style_layers, weights.style_layer_weights))
  tv = total_variation(image)
  total = (weights.content_weight * content + weights.style_weight * style
           + weights.tv_weight * tv)
  return total, {"content": content, "style": style, "tv": tv}


def make_optimizer(name: OptimizerName, learning_rate: float = 0.02
                   ) -> optax.GradientTransformationExtraArgs:
  """optax Adam (projected back to [0, 1] after each step) or L-BFGS (with
  its zoom line search, so every step lowers J; clipped only at the end)."""
  if name == "adam":
    if not learning_rate > 0:  # NaN too
      raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    return optax.adam(learning_rate)
  if name == "lbfgs":
    return optax.lbfgs()
  raise ValueError(f"unknown optimizer {name!r}; expected 'adam' or 'lbfgs'")


def make_step(weights: StyleTransferWeights, optimizer: optax.GradientTransformationExtraArgs,
              optimizer_name: OptimizerName) -> Callable:
  """Jitted `step(image, opt_state, targets, vgg_variables) -> (image,
  opt_state, total, parts)`; `total`/`parts` are J at the input image."""
  def objective(image, targets, vgg_variables):
    return style_transfer_loss(image, targets, vgg_variables, weights)

  @jax.jit
  def step(image, opt_state, targets, vgg_variables):
    (total, parts), grad = jax.value_and_grad(objective, has_aux=True)(
        image, targets, vgg_variables)
    if optimizer_name == "lbfgs":
      value_fn = lambda x: objective(x, targets, vgg_variables)[0]  # noqa: E731
      updates, opt_state = optimizer.update(grad, opt_state, image, value=total, grad=grad,
                                            value_fn=value_fn)
      image = optax.apply_updates(image, updates)
    else:
      updates, opt_state = optimizer.update(grad, opt_state, image)
      image = jnp.clip(optax.apply_updates(image, updates), 0.0, 1.0)
    return image, opt_state, total, parts

  return step


def stylize_steps(content: jax.Array, style: jax.Array, vgg_variables: Params, *,
                  steps: int, weights: StyleTransferWeights = StyleTransferWeights(),
                  optimizer: OptimizerName = "lbfgs", learning_rate: float = 0.02,
                  init: Literal["content", "noise"] = "content", seed: int = 0
                  ) -> Iterator[tuple[jax.Array, dict[str, float]]]:
  """Runs the optimisation, yielding after each step.

  Args:
    content: (1, H, W, 3) in [0, 1]; the output has its size.
    style: (1, H', W', 3) in [0, 1].
    vgg_variables: VGG16 variables (e.g. `vgg.load_pretrained_vgg16()`).
    steps: optimisation steps.
    weights: layers and weights of J.
    optimizer: "lbfgs" or "adam".
    learning_rate: Adam's step size (pixels in [0, 1]).
    init: start from the content image or from uniform noise.
    seed: seeds the noise.

  Yields:
    (current image (1, H, W, 3) clipped to [0, 1], {"total", "content",
    "style", "tv"} of J at the image the step started from).
  """
  for name, image in (("content", content), ("style", style)):
    if min(image.shape[1:3]) < 8:
      raise ValueError(f"the {name} image is {image.shape[2]}x{image.shape[1]}; "
                       "style transfer needs at least 8x8")
  # On the device once, and only the convolutions J runs.
  vgg_variables = jax.device_put(vgg.variables_up_to(vgg_variables, weights.deepest_layer))
  content = jnp.asarray(content, jnp.float32)
  targets = jax.jit(style_targets, static_argnums=3)(content, jnp.asarray(style, jnp.float32),
                                                     vgg_variables, weights)
  if init == "noise":
    image = jax.random.uniform(jax.random.key(seed), content.shape, jnp.float32)
  elif init == "content":
    image = content
  else:
    raise ValueError(f"unknown init {init!r}; expected 'content' or 'noise'")
  tx = make_optimizer(optimizer, learning_rate)
  opt_state = tx.init(image)
  step = make_step(weights, tx, optimizer)
  for _ in range(steps):
    image, opt_state, total, parts = step(image, opt_state, targets, vgg_variables)
    yield jnp.clip(image, 0.0, 1.0), {"total": float(total),
                                       **{k: float(v) for k, v in parts.items()}}


def stylize(content: jax.Array, style: jax.Array, vgg_variables: Params, *, steps: int,
            **kwargs: Any) -> tuple[jax.Array, list[dict[str, float]]]:
  """`stylize_steps` run to the end: (final (1, H, W, 3) image in [0, 1],
  per-step losses)."""
  image, history = content, []
  for image, losses in stylize_steps(content, style, vgg_variables, steps=steps, **kwargs):
    history.append(losses)
  return image, history
