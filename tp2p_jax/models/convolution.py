"""Convolutions written the way XLA runs them fastest, with the parameters
and results of `flax.linen.Conv` / `ConvTranspose`.

Every form below computes exactly the same function as the plain
`lax.conv_general_dilated` call it replaces (up to float summation order);
the choice only changes which kernels XLA emits, above all for the backward
pass. Timings quoted are forward + backward on 2 AMD EPYC cores, batch 4,
with the CPU flags of `tp2p_jax.core.xla_flags` (see benchmarks/PERFORMANCE.md).

`conv2d` (VALID, stride 1 or 2):
  * small outputs (at most 64 positions per image, the generator's inner
    blocks): patches @ kernel as one matrix product. XLA's convolution
    gradients at 2x2..8x8 spatial size are ~30x slower than the same FLOPs
    as a matmul (0.091 s against 0.002 s for 4x4, 512 -> 512 on 5x5).
  * stride 2 with an even kernel: space-to-depth, then a stride-1 conv with
    a (K/2, K/2, 4 C_in, C_out) kernel. The input gradient of a strided
    conv is a dilated convolution, slow on CPU; this form has none (0.085 s
    -> 0.048 s for (4, 131, 131, 64) -> 128 channels).
  * otherwise the plain convolution.

`conv_transpose_x2` (stride-2 transposed conv, sub-pixel form):
  XLA computes `lax.conv_transpose` as a convolution of the stride-dilated
input, three quarters of whose entries are zeros. On CPU the kernel gradient
of that dilated convolution runs at ~8 GFLOP/s (3.5 s for one (4, 32, 32,
544) -> (4, 64, 64, 128) 4x4 layer on 2 cores), and every generator decoder
has one per stage. `conv_transpose_x2` computes the same function without
the zeros: output phase (r, c) in {0, 1}^2 (the pixels 2m + r, 2n + c) is a
small stride-1 correlation of the (zero padded) input with the kernel taps
W[k_r::2, k_c::2], and the four phases are interleaved. Forward and backward
are then ordinary stride-1 convolutions: 0.10 s for that layer's forward and
backward (measured on the same machine), and a quarter of the dilated form's
FLOPs.

Kernel layout and padding follow `flax.linen.ConvTranspose` (no kernel flip,
padding applied to the dilated input), so parameters are interchangeable
with it: PyTorch's ConvTranspose2d(k=4, s=2, p=1) is kernel 4 and padding
(2, 2); ConvTranspose2d(k=3, s=2, p=1, output_padding=1) is kernel 3 and
padding (1, 2).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Initializer = Callable[..., jax.Array]
Padding = tuple[int, int]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def _patches(x: jax.Array, kernel_size: int, stride: int, out_h: int, out_w: int
             ) -> jax.Array:
  """(B, out_h, out_w, K * K * C) patches, taps in (column, row) order:
  channel (j K + i) C + c holds x[.., s m + i, s n + j, c].

  Rows first, then columns of those: 2K strided slices rather than one per
  tap (K^2). Each slice is a kernel of its own in XLA's program, forward
  and backward, so this halves what the small convolutions add to compile
  time."""
  span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
  rows = jnp.concatenate([x[:, i:i + span_h:stride] for i in range(kernel_size)], axis=-1)
  return jnp.concatenate([rows[:, :, j:j + span_w:stride] for j in range(kernel_size)],
                         axis=-1)


def _space_to_depth(x: jax.Array) -> jax.Array:
  """(B, 2H, 2W, C) -> (B, H, W, 4C), channel index (2 dy + dx) C + c."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


# Outputs up to this many positions per image are computed as one matmul.
_MATMUL_MAX_POSITIONS = 64


# jit: one compiled program per shape when called eagerly (op by op these
# forms are dozens of small dispatches); inside a traced function it is
# inlined like any other call.
@functools.partial(jax.jit, static_argnames=("stride",))
def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """VALID 2-D convolution (cross-correlation, like `nn.Conv`).

  Args:
    x: (B, H, W, C_in), NHWC, already padded.
    kernel: (K, K, C_in, C_out), HWIO.
    stride: 1 or 2 (any stride works; only these get the faster forms).

  Returns:
    (B, (H - K) // stride + 1, (W - K) // stride + 1, C_out).
  """
  b, h, w, c = x.shape
  k, c_out = kernel.shape[0], kernel.shape[-1]
  if kernel.shape[1] != k or kernel.shape[2] != c:
    raise ValueError(f"kernel {kernel.shape} does not match input channels {c} "
                     "(square HWIO kernels only)")
  out_h, out_w = (h - k) // stride + 1, (w - k) // stride + 1
  # An input smaller than the kernel takes the plain path and gives an empty
  # output, as nn.Conv does (a multi-scale discriminator's coarsest scale on
  # small images).
  empty = out_h < 1 or out_w < 1
  if not empty and out_h * out_w <= _MATMUL_MAX_POSITIONS:
    patches = _patches(x, k, stride, out_h, out_w)
    # Kernel taps in the patches' (column, row) order.
    out = jnp.dot(patches.reshape(-1, k * k * c),
                  kernel.transpose(1, 0, 2, 3).reshape(k * k * c, c_out))
    return out.reshape(b, out_h, out_w, c_out)
  if not empty and stride == 2 and k % 2 == 0:
    # Rows/columns past the last window are never read; crop them so the
    # space-to-depth blocks tile the input.
    x = _space_to_depth(x[:, :2 * (out_h - 1) + k, :2 * (out_w - 1) + k])
    kernel = kernel.reshape(k // 2, 2, k // 2, 2, c, c_out).transpose(0, 2, 1, 3, 4, 5)
    kernel = kernel.reshape(k // 2, k // 2, 4 * c, c_out)
    stride = 1
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "VALID",
                                      dimension_numbers=_DIMENSION_NUMBERS)


def _kernel_and_bias(module: nn.Module, in_channels: int
                     ) -> tuple[jax.Array, jax.Array | None]:
  """Creates `module`'s "kernel" (K, K, in_channels, features) and, with
  `use_bias`, "bias" (features,) as flax's Conv/ConvTranspose do (same
  names, shapes, initialisers, param_dtype); returns them in the module's
  compute dtype (bias None without `use_bias`). Call from a compact method."""
  k = module.kernel_size
  kernel = module.param("kernel", module.kernel_init, (k, k, in_channels, module.features),
                        module.param_dtype)
  bias = None
  if module.use_bias:
    bias = module.param("bias", module.bias_init, (module.features,),
                        module.param_dtype).astype(module.dtype)
  return kernel.astype(module.dtype), bias


class Conv2D(nn.Module):
  """`nn.Conv(features, (K, K), strides=stride, padding="VALID")` computed by
  `conv2d`: the same parameters ("kernel" (K, K, C_in, C_out), optional
  "bias" (C_out,)), initialisers and outputs.

  Input (B, H, W, C_in) (already padded); output (B, (H - K) // stride + 1,
  (W - K) // stride + 1, features).
  """
  features: int
  kernel_size: int
  stride: int = 1
  use_bias: bool = True
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel, bias = _kernel_and_bias(self, x.shape[-1])
    y = conv2d(x.astype(self.dtype), kernel, self.stride)
    return y if bias is None else y + bias


def _output_size(n: int, kernel: int, padding: Padding) -> int:
  """Length of a stride-2 transposed conv output along one axis."""
  return 2 * n - 1 + padding[0] + padding[1] - kernel + 1


def _phase(r: int, n: int, kernel: int, padding: Padding) -> tuple[int, int, int, int]:
  """For output positions o = 2m + r: (first tap k0, tap count, input offset
  d, outputs). Output 2m + r sums x[m + d + t] * W[k0 + 2t] over taps t."""
  k0 = (padding[0] - r) % 2
  taps = max(0, (kernel - k0 + 1) // 2)
  offset = (r + k0 - padding[0]) // 2
  outputs = (_output_size(n, kernel, padding) - r + 1) // 2
  return k0, taps, offset, outputs


@functools.partial(jax.jit, static_argnames=("padding",))
def conv_transpose_x2(x: jax.Array, kernel: jax.Array, padding: tuple[Padding, Padding]
                      ) -> jax.Array:
  """Stride-2 transposed convolution (flax.linen.ConvTranspose semantics) as
  four interleaved stride-1 convolutions, one per output phase.

  Args:
    x: (B, H, W, C_in), NHWC.
    kernel: (K, K, C_in, C_out), HWIO.
    padding: ((top, bottom), (left, right)) applied to the 2x-dilated input;
      the output must have even height and width.

  Returns:
    (B, H_out, W_out, C_out) with H_out = 2H - K + top + bottom (same for W),
    in the promoted dtype of x and kernel.
  """
  b, h, w, _ = x.shape
  k, c_out = kernel.shape[0], kernel.shape[-1]
  h_out, w_out = _output_size(h, k, padding[0]), _output_size(w, k, padding[1])
  if h_out % 2 or w_out % 2:
    raise ValueError(f"conv_transpose_x2 needs an even output size, got {h_out}x{w_out}")
  rows = []
  for r in (0, 1):
    kr, tr, dr, mr = _phase(r, h, k, padding[0])
    cols = []
    for s in (0, 1):
      kc, tc, dc, mc = _phase(s, w, k, padding[1])
      # Zero padding so that every x[m + d + t] the phase reads exists.
      pad_h = (max(0, -dr), max(0, mr + dr + tr - 1 - h))
      pad_w = (max(0, -dc), max(0, mc + dc + tc - 1 - w))
      xp = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
      top, left = dr + pad_h[0], dc + pad_w[0]
      window = xp[:, top:top + mr + tr - 1, left:left + mc + tc - 1]
      cols.append(jax.lax.conv_general_dilated(
          window, kernel[kr::2, kc::2], (1, 1), "VALID",
          dimension_numbers=_DIMENSION_NUMBERS))
    rows.append(jnp.stack(cols, axis=3))  # (B, H_out/2, W_out/2, 2, C_out)
  # (B, H_out/2, 2, W_out/2, 2, C_out): row phase, then column phase.
  return jnp.stack(rows, axis=2).reshape(b, h_out, w_out, c_out)


class ConvTransposeX2(nn.Module):
  """Drop-in for `nn.ConvTranspose(features, (K, K), strides=(2, 2),
  padding=...)` with the same parameters ("kernel" (K, K, C_in, C_out),
  optional "bias" (C_out,)) and outputs, computed in sub-pixel form (see
  the module docstring).

  Input (B, H, W, C_in); output (B, H_out, W_out, features) with H_out =
  2H - K + top + bottom (2H for the generators' settings).
  """
  features: int
  kernel_size: int
  padding: tuple[Padding, Padding]
  use_bias: bool = True
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel, bias = _kernel_and_bias(self, x.shape[-1])
    y = conv_transpose_x2(x.astype(self.dtype), kernel, tuple(tuple(p) for p in self.padding))
    return y if bias is None else y + bias
