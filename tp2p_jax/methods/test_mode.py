"""How netG runs at test time: in eval mode, or in the originals' train mode.

junyanz's pytorch-CycleGAN-and-pix2pix `test.py` calls `model.eval()` only
with `--eval`, so by default its pix2pix U-Net normalises with the test
batch's BatchNorm statistics and keeps dropout on, as the pix2pix paper
(sec. 3.3) prescribes; test.py forces batch size 1, so each image is
normalised with its own statistics. NVIDIA's pix2pixHD `test.py` never
calls `eval()` either. The TransPix2Pix release evaluates in eval mode.

`test_mode="eval"` runs netG with `train=False` (running statistics, no
dropout). `test_mode="train"` reproduces the originals' default whatever the
batching: netG runs with `train=True`, but every image is a batch of its
own: BatchNorm normalises it with its own statistics (nothing is updated),
and dropout draws its masks from the image's own int32 seed. Predict gives
the image at position k of its sorted inputs the seed `image_seeds(seed,
k)`, so batch size, padding rows and device count change no output.

The masks come from an integer hash (lowbias32, as `tp2p_jax.core.init_rng`)
of (image seed, the dropout layer's path, element index), not from
`jax.random`: integer multiplies, xors and shifts only, which ONNX runtimes
compute exactly as XLA does (jax2onnx turns `jax.random` bits into ONNX's
unseeded RandomUniform), so a train-mode ONNX export reproduces predict.
Training keeps flax's own dropout; only these test-time calls use the hash.
"""
from __future__ import annotations

import zlib
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tp2p_jax.core.init_rng import GOLDEN, lowbias32
from tp2p_jax.models.layers import BatchNorm, at_least_float32, batch_moments, normalize

TEST_MODES = ("eval", "train")

# Keep-tests compare the hash's top 24 bits as a float in [0, 1): exact in
# float32 on every runtime.
_UNIT = np.float32(2.0 ** -24)


def check_test_mode(mode: str) -> None:
  """ValueError unless `mode` is one of `TEST_MODES`."""
  if mode not in TEST_MODES:
    raise ValueError(f"unknown test mode {mode!r}; choose from {', '.join(TEST_MODES)}")


def image_seeds(seed: int, positions: Sequence[int] | np.ndarray) -> np.ndarray:
  """The dropout seeds (N,) int32 of the images at `positions` (0-based,
  in input order) under a run's `seed`: seed + position, wrapped to int32.
  For one image, every `seed` gives an independent mask stream."""
  total = (np.int64(seed) + np.asarray(positions, np.int64)) % (1 << 32)
  return total.astype(np.uint32).view(np.int32)


def keep_mask(seeds: jax.Array, site: int, shape: Sequence[int], keep_prob: float
              ) -> jax.Array:
  """Bernoulli(keep_prob) booleans (B, *shape) from each image's int32 seed
  (`seeds` (B,)) and a layer's `site` number: element i of image b is kept
  where the top 24 bits of lowbias32(lowbias32(seeds[b] ^ site) + i *
  GOLDEN), over 2^24, are below keep_prob."""
  base = lowbias32(lax.convert_element_type(seeds, jnp.uint32) ^ np.uint32(site))
  index = lax.iota(jnp.uint32, int(np.prod(shape))).reshape(tuple(shape))
  # The golden ratio spreads consecutive element indices before mixing.
  bits = lowbias32(index[None] * GOLDEN + base.reshape((-1,) + (1,) * len(shape)))
  return (bits >> 8).astype(jnp.float32) * _UNIT < np.float32(keep_prob)


class _PerImage:
  """A `flax.linen.intercept_methods` interceptor for netG's train-mode
  call that makes every image a batch of its own:

  * `tp2p_jax.models.layers.BatchNorm` normalises each image with its own
    statistics (mean and biased variance over every axis but the batch and
    the channels: what that layer computes on a batch of 1) and updates
    nothing;
  * `nn.Dropout` draws its mask with `keep_mask` from each image's seed; the
    site number is a hash of the layer's path and how often it has been
    called (flax's own dropout also draws anew per call).

  `drew` records whether any dropout call dropped anything.
  """

  def __init__(self, seeds: jax.Array):
    self.seeds = seeds
    self.calls: dict[str, int] = {}
    self.drew = False

  def __call__(self, next_fun: Callable[..., Any], args: tuple, kwargs: dict,
               context: Any) -> Any:
    module = context.module
    if context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    if isinstance(module, BatchNorm):
      train = kwargs.get("train", args[1] if len(args) > 1 else None)
      return self._batch_norm(module, args[0]) if train else next_fun(*args, **kwargs)
    if isinstance(module, nn.BatchNorm):
      raise ValueError("test_mode='train' normalises per image with "
                       "tp2p_jax.models.layers.BatchNorm only, not flax.linen.BatchNorm")
    if isinstance(module, nn.Dropout):
      return self._dropout(module, args, kwargs)
    return next_fun(*args, **kwargs)

  @staticmethod
  def _batch_norm(module: BatchNorm, x: jax.Array) -> jax.Array:
    scale = module.get_variable("params", "scale")
    bias = module.get_variable("params", "bias")
    xf = x.astype(at_least_float32(x.dtype))
    mean, var = batch_moments(xf, tuple(range(1, x.ndim - 1)), keepdims=True)
    return normalize(xf, mean, var, scale, bias, module.epsilon, module.dtype)

  def _dropout(self, module: nn.Dropout, args: tuple, kwargs: dict) -> jax.Array:
    inputs = args[0]
    given = kwargs.get("deterministic", args[1] if len(args) > 1 else None)
    if module.rate == 0.0 or nn.merge_param("deterministic", module.deterministic, given):
      return inputs
    self.drew = True
    if module.rate == 1.0:
      return jnp.zeros_like(inputs)
    path = "/".join(module.scope.path)
    count = self.calls.get(path, 0)
    self.calls[path] = count + 1
    site = zlib.crc32(f"{path}#{count}".encode("utf-8"))
    shape = [1 if d in module.broadcast_dims else n for d, n in enumerate(inputs.shape)][1:]
    keep_prob = 1.0 - module.rate
    mask = jnp.broadcast_to(keep_mask(self.seeds, site, shape, keep_prob), inputs.shape)
    return lax.select(mask, inputs / jnp.asarray(keep_prob, inputs.dtype),
                      jnp.zeros_like(inputs))


def _train_mode(generator: nn.Module, variables: Mapping[str, Any], images: jax.Array,
                extra: tuple, interceptor: _PerImage) -> jax.Array:
  with nn.intercept_methods(interceptor):
    # Nothing is updated; `mutable` only lets a layer that would write its
    # statistics run.
    out, _ = generator.apply(variables, images, *extra, train=True, mutable=["batch_stats"])
  return out


def apply_generator(generator: nn.Module, variables: Mapping[str, Any], images: jax.Array,
                    style: jax.Array | None, test_mode: str,
                    seeds: jax.Array | None = None) -> jax.Array:
  """netG at test time (traceable: jit, export and ONNX conversion alike).

  Args:
    generator: netG.
    variables: its {"params", "batch_stats", ...}.
    images: (B, S, S, 3) in [-1, 1].
    style: (B, E) style embeddings of a style-conditioned generator, or None.
    test_mode: "eval" (running statistics, no dropout) or "train" (each
      image normalised with its own statistics, dropout on).
    seeds: (B,) int32 dropout seed per image (`image_seeds`); train mode
      only (ignored in eval mode).

  Returns:
    (B, S, S, 3) float32 in [-1, 1].
  """
  check_test_mode(test_mode)
  extra = () if style is None else (style,)
  if test_mode == "eval":
    return generator.apply(variables, images, *extra, train=False).astype(jnp.float32)
  if seeds is None:
    raise ValueError("test_mode='train' needs a (B,) int32 dropout seed per image")
  return _train_mode(generator, variables, images, extra, _PerImage(seeds)).astype(jnp.float32)


def draws_dropout(generator: nn.Module, variables: Mapping[str, Any], image_size: int,
                  style_dim: int | None) -> bool:
  """Whether netG in train mode drops anything (a dropout layer with a rate
  above 0 on its path): only then does a train-mode output depend on the
  seed. Traced on shapes only; nothing is computed."""
  interceptor = _PerImage(jnp.zeros((1,), jnp.int32))
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  extra = () if style_dim is None else (jnp.zeros((1, style_dim), jnp.float32),)
  jax.eval_shape(lambda v: _train_mode(generator, v, images, extra, interceptor), variables)
  return interceptor.drew
