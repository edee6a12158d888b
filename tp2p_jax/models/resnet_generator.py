"""CycleGAN's ResNet generator (Johnson et al.'s architecture as released
with CycleGAN): c7s1-64, d128, d256, n x R256, u128, u64, c7s1-3, tanh.

c7s1-k: reflection pad 3, 7x7 conv stride 1, norm, ReLU. dk: 3x3 conv
stride 2 (zero pad 1), norm, ReLU. Rk: residual block of two reflection-
padded 3x3 convs (norm, ReLU between, norm after). uk: 3x3 transposed conv
stride 2 that exactly doubles the size (PyTorch padding=1,
output_padding=1), norm, ReLU. Instance norm has no affine parameters, so
every conv carries a bias, as in the release (11,378,179 parameters for
`resnet_9blocks` with ngf=64).

Layout NHWC; images in [-1, 1]; H and W must be multiples of 4.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from tp2p_jax.models.convolution import ConvTransposeX2
from tp2p_jax.models.layers import GAN_INIT, Norm, NormKind, PaddedConv, at_least_float32
from tp2p_jax.models.remat import RematMode, check_remat, remat_block

Dtype = Any


class ResnetBlock(nn.Module):
  """x + norm(conv3x3(relu(norm(conv3x3(x))))) with reflection padding.

  Input and output (B, H, W, C) with C == features.
  """
  features: int
  norm: NormKind = "instance"
  dropout: float = 0.0
  # None: no conv bias in front of BatchNorm (CycleGAN's release); pix2pixHD
  # keeps the biases whatever the norm.
  conv_bias: bool | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    use_bias = self.norm != "batch" if self.conv_bias is None else self.conv_bias
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, padding_mode="reflect",
              use_bias=use_bias)
    pad1 = ((1, 1), (1, 1))
    y = PaddedConv(self.features, 3, 1, pad1, name="conv1", **kw)(x)
    y = Norm(self.norm, scale_mean=1.0, dtype=self.dtype, param_dtype=self.param_dtype,
             name="norm1")(y, train)
    y = nn.relu(y)
    if self.dropout > 0:
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    y = PaddedConv(self.features, 3, 1, pad1, name="conv2", **kw)(y)
    y = Norm(self.norm, scale_mean=1.0, dtype=self.dtype, param_dtype=self.param_dtype,
             name="norm2")(y, train)
    return x + y


class ResnetGenerator(nn.Module):
  """CycleGAN generator (netG `resnet_9blocks` / `resnet_6blocks`).

  Attributes:
    base_features: channels of the first conv (ngf); 64 in the release.
    n_blocks: residual blocks at 1/4 resolution (9 for 256x256, 6 for 128x128).
    n_downsampling: stride-2 convs (and transposed convs); 2 in the release.
    out_channels: output image channels.
    norm: "instance" (CycleGAN), "batch" or "none". With "batch" the convs
      before a norm have no bias and the variables hold `batch_stats`.
    dropout: dropout rate inside residual blocks (release default 0, off).
    remat: "none" (default) or "blocks": recompute the residual blocks in
      the backward pass instead of keeping their activations
      (`tp2p_jax.models.remat`); same parameters and function.

  Call: (x (B, H, W, C_in) in [-1, 1], train) -> (B, H, W, out_channels) in
  [-1, 1] (tanh), H and W multiples of 2**n_downsampling.
  """
  takes_style: ClassVar[bool] = False  # called as G(real_a, train)
  base_features: int = 64
  n_blocks: int = 9
  n_downsampling: int = 2
  out_channels: int = 3
  norm: NormKind = "instance"
  dropout: float = 0.0
  remat: RematMode = "none"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    check_remat(self.remat)
    factor = 2 ** self.n_downsampling
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f"ResnetGenerator needs H and W divisible by {factor}, got "
                       f"{x.shape[1:3]}")
    bias = self.norm != "batch"
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def norm(y: jax.Array, name: str) -> jax.Array:
      return Norm(self.norm, scale_mean=1.0, name=name, **dt)(y, train)

    ngf = self.base_features
    x = PaddedConv(ngf, 7, 1, ((3, 3), (3, 3)), padding_mode="reflect", use_bias=bias,
                   name="stem", **dt)(x.astype(self.dtype))
    x = nn.relu(norm(x, "stem_norm"))
    for i in range(self.n_downsampling):
      ch = ngf * 2 ** (i + 1)
      x = PaddedConv(ch, 3, 2, ((1, 1), (1, 1)), padding_mode="zeros", use_bias=bias,
                     name=f"down{i}", **dt)(x)
      x = nn.relu(norm(x, f"down{i}_norm"))
    ch = ngf * factor
    block = remat_block(ResnetBlock, self.remat == "blocks")
    for i in range(self.n_blocks):
      x = block(ch, self.norm, self.dropout, name=f"block{i}", **dt)(x, train)
    for i in range(self.n_downsampling):
      ch = ngf * 2 ** (self.n_downsampling - i - 1)
      # Padding (1, 2) on the stride-dilated input is PyTorch's
      # ConvTranspose2d(k=3, s=2, padding=1, output_padding=1): output 2H.
      x = ConvTransposeX2(ch, 3, ((1, 2), (1, 2)), use_bias=bias, kernel_init=GAN_INIT,
                          name=f"up{i}", **dt)(x)
      x = nn.relu(norm(x, f"up{i}_norm"))
    x = PaddedConv(self.out_channels, 7, 1, ((3, 3), (3, 3)), padding_mode="reflect",
                   use_bias=True, name="head", **dt)(x)
    return jnp.tanh(x.astype(at_least_float32(x.dtype)))


ResnetGenerator9Blocks = functools.partial(ResnetGenerator, n_blocks=9)
ResnetGenerator6Blocks = functools.partial(ResnetGenerator, n_blocks=6)
