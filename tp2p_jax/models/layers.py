"""Building blocks shared by the generators and discriminators.

All modules are Flax linen, NHWC, with float32 parameters and a configurable
compute `dtype` (e.g. bfloat16 on accelerators).

bfloat16 by name (`compute_dtype`, the config's `dtype`): "bfloat16" is
mixed precision where the backend runs it faster. On GPU and TPU the
networks and the VGG16 loss compute in bfloat16 (parameters, optimiser
state, BatchNorm statistics and loss reductions stay float32). On a CPU
backend they compute in float32: jaxlib 0.10's XLA CPU backend has no
bfloat16 convolution (it converts both operands to float32, convolves in
float32 and rounds the result back, on its Eigen and YNNPACK paths alike,
even on a CPU with AVX512_BF16), so bfloat16 there only adds conversions
and rounding; the reference step took about twice as long as in float32
(benchmarks/PERFORMANCE.md, "bfloat16 on a CPU with AVX512_BF16"). A CPU
run with "bfloat16" is therefore the float32 run, bit for bit.
"bfloat16_everywhere" keeps bfloat16 compute on every backend, CPU
included (to test bfloat16 numerics on a CPU). A dtype object (not a
name), e.g. `jnp.bfloat16` given to a module, is always used as given.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tp2p_jax.models.convolution import Conv2D

Dtype = Any
Initializer = Callable[..., jax.Array]
NormKind = Literal["batch", "instance", "none"]
PaddingMode = Literal["reflect", "zeros"]

# The reference initialises every conv/dense kernel and every BatchNorm scale
# from N(0, 0.02) (pix2pix convention); biases start at zero.
GAN_INIT: Initializer = nn.initializers.normal(stddev=0.02)


def at_least_float32(dtype: Any) -> Any:
  """float32 for half-precision dtypes, the dtype itself for float32/float64:
  the precision of statistics, softmaxes and outputs (a float64 network, as
  the golden tests run, stays float64 throughout)."""
  return jnp.promote_types(dtype, jnp.float32)


# Config names of compute dtypes; "bfloat16" is platform-dependent (module
# docstring).
COMPUTE_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "bfloat16_everywhere", "float16")


def compute_dtype(name: str | Any, platform: str | None = None) -> Any:
  """The compute dtype a config's `dtype` name stands for on `platform`.

  Args:
    name: "float32", "float16", "bfloat16" (bfloat16 on GPU/TPU, float32
      on a CPU backend, where XLA has no bfloat16 convolutions: see the
      module docstring), "bfloat16_everywhere" (bfloat16 on every backend);
      or a dtype (jnp.bfloat16, np.dtype(...)), returned as that dtype.
    platform: "cpu", "gpu", "tpu", ...; default: JAX's default backend,
      where jit places computations.

  Raises:
    ValueError: an unknown name.
  """
  if not isinstance(name, str):
    return jnp.dtype(name)
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(COMPUTE_DTYPES)}")
  if name == "bfloat16":
    platform = platform or jax.default_backend()
    return jnp.dtype(jnp.float32 if platform == "cpu" else jnp.bfloat16)
  return jnp.dtype({"bfloat16_everywhere": "bfloat16"}.get(name, name))


def gan_normal(mean: float = 0.0, stddev: float = 0.02) -> Initializer:
  """N(mean, stddev) initialiser."""
  if mean == 0.0:
    return nn.initializers.normal(stddev=stddev)

  def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    return mean + stddev * jax.random.normal(key, shape, dtype)
  return init


def pad2d(x: jax.Array, pads: tuple[tuple[int, int], tuple[int, int]],
          mode: PaddingMode) -> jax.Array:
  """Pads the spatial axes of an NHWC tensor.

  Args:
    x: (B, H, W, C).
    pads: ((top, bottom), (left, right)).
    mode: "reflect" mirrors without repeating the edge (PyTorch's
      ReflectionPad2d; pads wider than the axis reflect repeatedly);
      "zeros" pads with zeros.
  """
  if not any(p for pair in pads for p in pair):
    return x
  widths = ((0, 0), pads[0], pads[1], (0, 0))
  return jnp.pad(x, widths, mode="reflect" if mode == "reflect" else "constant")


class PaddedConv(nn.Module):
  """Conv with explicit (possibly asymmetric) reflect or zero padding.

  Attributes:
    features: output channels.
    kernel: square kernel size.
    stride: spatial stride.
    pads: ((top, bottom), (left, right)) padding applied before a VALID conv.
    padding_mode: "reflect" or "zeros".
    use_bias: whether the conv has a bias.
  """
  features: int
  kernel: int
  stride: int = 1
  pads: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
  padding_mode: PaddingMode = "reflect"
  use_bias: bool = False
  kernel_init: Initializer = GAN_INIT
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = pad2d(x, self.pads, self.padding_mode)
    return Conv2D(self.features, self.kernel, self.stride, use_bias=self.use_bias,
                  kernel_init=self.kernel_init, dtype=self.dtype,
                  param_dtype=self.param_dtype, name="conv")(x)


def same_pads(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """Padding that keeps the spatial size of a stride-1 conv.

  For even kernels the reference pads (left 1, right 2, top 2, bottom 1) for
  k=4; we generalise to (top k//2, bottom k//2-1, left k//2-1, right k//2),
  which is that exact layout at k=4 and symmetric for odd k.
  """
  if kernel % 2:
    p = kernel // 2
    return ((p, p), (p, p))
  return ((kernel // 2, kernel // 2 - 1), (kernel // 2 - 1, kernel // 2))


def batch_moments(x: jax.Array, axes: tuple[int, ...], keepdims: bool = False
                  ) -> tuple[jax.Array, jax.Array]:
  """Mean and biased variance of `x` over `axes`, in two passes (mean, then
  mean squared deviation; see `BatchNorm`)."""
  mean = jnp.mean(x, axis=axes, keepdims=keepdims)
  var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=keepdims)
  return mean, var


def normalize(x: jax.Array, mean: jax.Array, var: jax.Array, scale: jax.Array,
              bias: jax.Array, epsilon: float, dtype: Dtype) -> jax.Array:
  """(x - mean) / sqrt(var + epsilon) * scale + bias in `x`'s dtype, cast to
  `dtype`: `BatchNorm`'s normalisation, whichever statistics it is given."""
  inv = jax.lax.rsqrt(var + epsilon) * scale.astype(x.dtype)
  return ((x - mean) * inv + bias.astype(x.dtype)).astype(dtype)


class BatchNorm(nn.Module):
  """BatchNorm over every axis but the last, with PyTorch's statistics.

  Training normalises with the batch's biased variance, computed in two
  passes (mean, then mean squared deviation: the one-pass E[x^2] - E[x]^2
  loses precision when a channel holds few, large values), and updates the
  running variance with the *unbiased* batch variance (n / (n - 1)), as
  torch.nn.BatchNorm2d does; flax.linen.BatchNorm uses the biased one, which
  at the 1x1 and 2x2 maps of a U-Net with small batches is 13% off after one
  step. A channel with a single value (n = 1, which torch refuses in
  training) updates the running variance with 0 instead of dividing by 0.
  Under `jax.jit` with a data-sharded batch the statistics are global (the
  mean is over the whole batch), i.e. synchronised across devices.

  Parameters `scale`, `bias` and statistics `mean`, `var` carry flax's names,
  so checkpoints of flax.linen.BatchNorm load unchanged. Statistics and the
  normalisation are float32 whatever the compute dtype.

  Attributes:
    momentum: PyTorch's convention, the weight of the new batch (0.1).
    epsilon: added to the variance (1e-5).
    scale_init: initialiser of the scale (PyTorch's default is ones).
  """
  momentum: float = 0.1
  epsilon: float = 1e-5
  scale_init: Initializer = nn.initializers.ones
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    features = x.shape[-1]
    scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
    stat_dtype = at_least_float32(self.param_dtype)
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), stat_dtype)
    running_var = self.variable("batch_stats", "var", jnp.ones, (features,), stat_dtype)
    xf = x.astype(at_least_float32(x.dtype))
    if train:
      mean, var = batch_moments(xf, tuple(range(x.ndim - 1)))
      if not self.is_initializing():
        n = math.prod(x.shape[:-1])
        unbiased = var * (n / (n - 1)) if n > 1 else jnp.zeros_like(var)
        running_mean.value = ((1 - self.momentum) * running_mean.value
                              + self.momentum * mean).astype(stat_dtype)
        running_var.value = ((1 - self.momentum) * running_var.value
                             + self.momentum * unbiased).astype(stat_dtype)
    else:
      mean, var = running_mean.value, running_var.value
    return normalize(xf, mean, var, scale, bias, self.epsilon, self.dtype)


class Norm(nn.Module):
  """Normalisation by name: BatchNorm, InstanceNorm or identity.

  BatchNorm is `BatchNorm` above (PyTorch's statistics, momentum 0.1,
  epsilon 1e-5, float32 statistics whatever the compute dtype).
  """
  kind: NormKind = "batch"
  # BatchNorm scale ~ N(scale_mean, 0.02): the TransPix2Pix release uses 0
  # (its DCGAN-style init touches BatchNorm weights too), pix2pix uses 1.
  scale_mean: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.kind == "batch":
      return BatchNorm(scale_init=gan_normal(self.scale_mean), dtype=self.dtype,
                       param_dtype=self.param_dtype, name="bn")(x, train)
    if self.kind == "instance":
      # PyTorch's InstanceNorm2d default (affine=False) has no parameters.
      # Two-pass variance, as PyTorch: E[x^2] - E[x]^2 loses precision on
      # channels whose mean is large against their spread.
      return nn.InstanceNorm(
          epsilon=1e-5, use_scale=False, use_bias=False, use_fast_variance=False,
          dtype=self.dtype,
          param_dtype=self.param_dtype, name="in")(x)
    if self.kind == "none":
      return x
    raise ValueError(f"unknown norm {self.kind!r}; expected batch, instance or none")


class ChannelSE(nn.Module):
  """Channel squeeze-and-excitation (cSE): x * sigmoid(MLP(mean_hw(x))).

  Two bias-free dense layers C -> C/r -> C with ReLU between, as the
  reference. Input and output (B, H, W, C).
  """
  reduction: int = 16
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    hidden = max(1, channels // self.reduction)
    s = jnp.mean(x, axis=(1, 2), dtype=at_least_float32(x.dtype)).astype(self.dtype)
    s = nn.Dense(hidden, use_bias=False, kernel_init=GAN_INIT, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="squeeze")(s)
    s = nn.relu(s)
    s = nn.Dense(channels, use_bias=False, kernel_init=GAN_INIT, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="excite")(s)
    return x * nn.sigmoid(s)[:, None, None, :]


class SpatialSE(nn.Module):
  """Spatial squeeze-and-excitation (sSE): x * sigmoid(conv1x1_{C->1}(x)).

  The 1x1 conv has a bias, as the reference. Input and output (B, H, W, C).
  """
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    gate = nn.Conv(1, (1, 1), use_bias=True, kernel_init=GAN_INIT,
                   dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x)
    return x * nn.sigmoid(gate)


def leaky_relu(x: jax.Array) -> jax.Array:
  """LeakyReLU with the GAN-standard slope 0.2."""
  return nn.leaky_relu(x, negative_slope=0.2)


def tile_to(vector: jax.Array, spatial: Sequence[int]) -> jax.Array:
  """Tiles (B, C) to (B, H, W, C) for concatenation with feature maps."""
  b, c = vector.shape
  return jnp.broadcast_to(vector[:, None, None, :], (b, *spatial, c))


def avg_pool_downsample(x: jax.Array) -> jax.Array:
  """Halves H and W (rounding up) by 3x3 stride-2 average pooling with one
  pixel of padding that is left out of each average (PyTorch's
  AvgPool2d(3, 2, 1, count_include_pad=False), pix2pixHD's downsampler).

  Input (B, H, W, C); output (B, ceil(H / 2), ceil(W / 2), C).
  """
  return nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                     count_include_pad=False)
