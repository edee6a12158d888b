"""The TransPix2Pix generator: a U-Net with squeeze-and-excitation conv blocks,
transformer encoders in the encoder, self-attention in the decoder, and a
style embedding injected at every decoder stage through the Style-Pre-Net.

Layer by layer this follows the reference release (see the project spec), with
its defects fixed: every sequence length and positional table is derived from
the configured image size and depth, and the release's unused parameters
(spare transformer-layer templates, the decoder attention's positional tables)
are not created. At 256x256 with the reference channel list the generator has
129,034,960 parameters.

Layout NHWC; sketches and outputs in [-1, 1].
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tp2p_jax.models.convolution import ConvTransposeX2
from tp2p_jax.models.layers import (GAN_INIT, ChannelSE, Norm, PaddedConv, SpatialSE,
                                    at_least_float32, leaky_relu, same_pads, tile_to)
from tp2p_jax.models.remat import RematMode, check_remat, remat_block

Dtype = Any

REFERENCE_FEATURES: tuple[int, ...] = (64, 128, 256, 512, 512, 512, 512, 512)


def _stride1_conv(features: int, pointwise: bool, name: str, kw: dict) -> PaddedConv:
  """The blocks' stride-1 conv: 4x4 keeping the spatial size, or 1x1 in a
  bottleneck block (1x1 spatial)."""
  if pointwise:
    return PaddedConv(features, 1, name=name, **kw)
  return PaddedConv(features, 4, 1, same_pads(4), name=name, **kw)


def _se_residual_tail(x: jax.Array, id1: jax.Array, *, features: int, pointwise: bool,
                      norm: str, activation, scale_mean: float, train: bool,
                      kw: dict, conv: PaddedConv | None = None) -> jax.Array:
  """conv2 -> norm2 -> act -> cSE -> + id1 -> sSE -> norm3 -> act: the part
  DownConvBlock and UpConvBlock share. Called inside their compact methods,
  so the submodules are theirs (named conv2, norm2, cse, sse, norm3).
  `conv` replaces the default stride-1 conv2. The residual add broadcasts,
  which the release relies on when conv2 shrinks a 2x2 map to 1x1."""
  x = (conv or _stride1_conv(features, pointwise, "conv2", kw))(x)
  x = activation(Norm(norm, name="norm2", scale_mean=scale_mean, **kw)(x, train))
  x = ChannelSE(name="cse", **kw)(x)
  x = x + id1
  x = SpatialSE(name="sse", **kw)(x)
  return activation(Norm(norm, name="norm3", scale_mean=scale_mean, **kw)(x, train))


class DownConvBlock(nn.Module):
  """Encoder block: halves H and W.

  conv4x4/s2 -> [BN] -> LReLU (= id1) -> conv (4x4 same, or 1x1 for the
  bottleneck) -> [BN] -> LReLU -> cSE -> + id1 -> sSE -> [BN] -> LReLU.

  At 2x2 (E7 of the reference generator) the release pads 1 on every side
  and runs the 4x4 conv unpadded: the conv path is 1x1 and is broadcast over
  id1's 2x2 in the residual add. That is the release's function and is kept
  (same parameters either way).

  Input (B, H, W, C_in); output (B, H/2, W/2, features).
  """
  features: int
  norm: bool = True
  bottleneck: bool = False
  norm_scale_mean: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = "batch" if self.norm else "none"
    x = PaddedConv(self.features, 4, 2, ((1, 1), (1, 1)), name="conv1", **kw)(x)
    x = leaky_relu(Norm(norm, name="norm1", scale_mean=self.norm_scale_mean, **kw)(x, train))
    conv2 = None
    if not self.bottleneck and x.shape[1:3] == (2, 2):
      conv2 = PaddedConv(self.features, 4, 1, ((1, 1), (1, 1)), name="conv2", **kw)
    return _se_residual_tail(x, x, features=self.features, pointwise=self.bottleneck, norm=norm,
                             activation=leaky_relu, scale_mean=self.norm_scale_mean,
                             train=train, kw=kw, conv=conv2)


class ConvBottleneck(nn.Module):
  """The "UpConvBlock*" bottleneck: 1x1 C -> int(C/k) -> 4x4 (or 1x1) -> 1x1
  back to C, each conv bias-free and followed by BN and ReLU.

  Input and output (B, H, W, C).
  """
  reduction: float
  bottleneck: bool = False
  norm_scale_mean: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    channels = x.shape[-1]
    mid = max(1, int(channels / self.reduction))
    x = nn.relu(Norm("batch", name="norm1", scale_mean=self.norm_scale_mean, **kw)(
        PaddedConv(mid, 1, name="conv1", **kw)(x), train))
    x = _stride1_conv(mid, self.bottleneck, "conv2", kw)(x)
    x = nn.relu(Norm("batch", name="norm2", scale_mean=self.norm_scale_mean, **kw)(x, train))
    x = PaddedConv(channels, 1, name="conv3", **kw)(x)
    return nn.relu(Norm("batch", name="norm3", scale_mean=self.norm_scale_mean, **kw)(x, train))


class UpConvBlock(nn.Module):
  """Decoder block: doubles H and W.

  convT4x4/s2 -> BN -> ReLU (= u) -> [ConvBottleneck(u)] (= id1) -> conv
  (4x4 same, or 1x1 for the bottleneck stage) -> BN -> ReLU -> cSE -> + id1
  -> sSE -> BN -> ReLU -> [dropout 0.3].

  Input (B, H, W, C_in); output (B, 2H, 2W, features).
  """
  features: int
  dropout: bool = False
  bottleneck: bool = False
  conv_bottleneck_reduction: float | None = None
  dropout_rate: float = 0.3
  norm_scale_mean: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    # PyTorch ConvTranspose2d(k=4, s=2, p=1) == lax transpose conv whose
    # dilated input is padded by k - 1 - p = 2 on each side.
    x = ConvTransposeX2(self.features, 4, ((2, 2), (2, 2)), use_bias=False,
                        kernel_init=GAN_INIT, name="convt", **kw)(x)
    x = nn.relu(Norm("batch", name="norm1", scale_mean=self.norm_scale_mean, **kw)(x, train))
    if self.conv_bottleneck_reduction is not None:
      x = ConvBottleneck(self.conv_bottleneck_reduction, self.bottleneck,
                         norm_scale_mean=self.norm_scale_mean, name="conv_bottleneck",
                         **kw)(x, train)
    x = _se_residual_tail(x, x, features=self.features, pointwise=self.bottleneck, norm="batch",
                          activation=nn.relu, scale_mean=self.norm_scale_mean, train=train,
                          kw=kw)
    if self.dropout:
      x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    return x


def _attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float | None = None
               ) -> jax.Array:
  """softmax(scale * q k^T) v over (B, T, heads, head_dim) arrays.

  `jax.nn.dot_product_attention` (fused kernels on accelerators) computes
  its softmax in float32; a float64 network (the golden tests' gradient
  check) takes the explicit form so that it stays float64 throughout.
  """
  if q.dtype != jnp.float64:
    return jax.nn.dot_product_attention(q, k, v, scale=scale)
  scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
  weights = jax.nn.softmax(jnp.einsum("btnh,bsnh->bnts", q, k) * scale, axis=-1)
  return jnp.einsum("bnts,bsnh->btnh", weights, v)


class MultiHeadSelfAttention(nn.Module):
  """PyTorch-style multi-head self-attention (biased q/k/v/out projections).

  Uses `jax.nn.dot_product_attention`, which dispatches to fused kernels on
  accelerators, whenever no attention-probability dropout is needed (eval, or
  `attention_dropout=0`); training with attention dropout (the reference's
  0.1) takes the explicit softmax path, since fused kernels cannot drop
  attention weights.

  Input and output (B, T, D).
  """
  num_heads: int
  attention_dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    d_model = x.shape[-1]
    if d_model % self.num_heads:
      raise ValueError(f"d_model {d_model} is not divisible by {self.num_heads} heads")
    head_dim = d_model // self.num_heads
    dense = lambda name: nn.DenseGeneral(  # noqa: E731
        (self.num_heads, head_dim), kernel_init=GAN_INIT, dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)
    q, k, v = dense("query")(x), dense("key")(x), dense("value")(x)
    if train and self.attention_dropout > 0:
      logits = jnp.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(head_dim)
      weights = jax.nn.softmax(logits.astype(at_least_float32(logits.dtype)), axis=-1)
      weights = weights.astype(self.dtype)
      weights = nn.Dropout(self.attention_dropout)(weights, deterministic=False)
      out = jnp.einsum("bnts,bsnh->btnh", weights, v)
    else:
      out = _attention(q, k, v)
    return nn.DenseGeneral(d_model, axis=(-2, -1), kernel_init=GAN_INIT,
                           dtype=self.dtype, param_dtype=self.param_dtype,
                           name="out")(out)


class TransformerEncoderLayer(nn.Module):
  """Post-norm encoder layer (PyTorch nn.TransformerEncoderLayer defaults):
  x = LN(x + drop(MHA(x))); x = LN(x + drop(W2 drop(relu(W1 x)))).

  Input and output (B, T, D); feed-forward width `ff_multiplier * D`.
  """
  num_heads: int = 8
  ff_multiplier: int = 2
  dropout_rate: float = 0.1
  attention_dropout: float = 0.1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    d_model = x.shape[-1]
    drop = lambda y: nn.Dropout(self.dropout_rate)(y, deterministic=not train)  # noqa: E731
    y = MultiHeadSelfAttention(self.num_heads, self.attention_dropout,
                               name="attention", **kw)(x, train)
    x = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name="norm1", **kw)(x + drop(y))
    y = nn.Dense(self.ff_multiplier * d_model, kernel_init=GAN_INIT, name="ff1", **kw)(x)
    y = nn.Dense(d_model, kernel_init=GAN_INIT, name="ff2", **kw)(drop(nn.relu(y)))
    return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name="norm2", **kw)(x + drop(y))


class TransformerBlock(nn.Module):
  """Transformer over the H*W positions of a feature map.

  z = x * sqrt(D) + learned positional embedding (T = H*W derived from the
  input), dropout, `num_layers` post-norm encoder layers, reshape back, BN.

  Input and output (B, H, W, D).
  """
  num_layers: int = 6
  num_heads: int = 8
  ff_multiplier: int = 2
  dropout_rate: float = 0.1
  attention_dropout: float = 0.1
  norm_scale_mean: float = 0.0
  remat: bool = False  # recompute each encoder layer in the backward pass
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, h, w, d = x.shape
    pos = self.param("pos_embedding", GAN_INIT, (h * w, d), self.param_dtype)
    z = x.reshape(b, h * w, d) * math.sqrt(d) + pos.astype(self.dtype)
    z = nn.Dropout(self.dropout_rate)(z, deterministic=not train)
    layer = remat_block(TransformerEncoderLayer, self.remat)
    for i in range(self.num_layers):
      z = layer(
          self.num_heads, self.ff_multiplier, self.dropout_rate,
          self.attention_dropout, name=f"layer{i}", **kw)(z, train)
    z = z.reshape(b, h, w, d)
    return Norm("batch", name="norm", scale_mean=self.norm_scale_mean, **kw)(z, train)


AttentionLayout = Literal["release", "spatial"]


class SelfAttentionBlock(nn.Module):
  """The decoder's parameter-free attention: softmax(X X^T) X over the H*W
  positions (one head, no projections, no 1/sqrt(d) scaling, as the
  reference), then BN.

  `layout` says how the attended (B, H*W, C) sequence becomes a map again:
    "release": as the release's `view(B, C, H, W)` of that buffer, a
      reinterpretation of memory that mixes channels and positions (the
      release's function, the default);
    "spatial": position t back to (t // W, t % W) with its C channels, the
      evident intent (a corrected form; trains from scratch only).

  Input and output (B, H, W, C).
  """
  layout: AttentionLayout = "release"
  norm_scale_mean: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    b, h, w, c = x.shape
    seq = x.reshape(b, h * w, 1, c)
    out = _attention(seq, seq, seq, scale=1.0)
    if self.layout == "release":
      out = out.reshape(b, c, h, w).transpose(0, 2, 3, 1)
    elif self.layout == "spatial":
      out = out.reshape(b, h, w, c)
    else:
      raise ValueError(f"unknown attention layout {self.layout!r}; expected 'release' or "
                       "'spatial'")
    return Norm("batch", name="norm", scale_mean=self.norm_scale_mean, dtype=self.dtype,
                param_dtype=self.param_dtype)(out, train)


class StylePreNet(nn.Module):
  """Style embedding (B, E) -> dense hidden -> ReLU -> drop -> dense hidden ->
  ReLU -> drop -> dense `num_parts * part_channels`, split into `num_parts`
  vectors of (B, part_channels), one per decoder stage.
  """
  num_parts: int
  part_channels: int = 32
  hidden: int = 1024
  dropout_rate: float = 0.4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, embedding: jax.Array, train: bool) -> list[jax.Array]:
    kw = dict(kernel_init=GAN_INIT, dtype=self.dtype, param_dtype=self.param_dtype)
    x = embedding.astype(self.dtype)
    for i in range(2):
      x = nn.relu(nn.Dense(self.hidden, name=f"dense{i}", **kw)(x))
      x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    x = nn.Dense(self.num_parts * self.part_channels, name="out", **kw)(x)
    return jnp.split(x, self.num_parts, axis=-1)


class TransPix2PixGenerator(nn.Module):
  """The TransPix2Pix generator.

  Attributes:
    image_size: input height and width (square); must be divisible by
      2**len(features) so the bottleneck is at least 1x1.
    features: encoder output channels, one per DownConvBlock. Decoder stage k
      outputs features[-2-k], the last stage `last_stage_features`.
    transformer_blocks: 1-based encoder blocks followed by a TransformerBlock.
    attention_stages: decoder stages followed by a SelfAttentionBlock.
    dropout_stages: decoder stages with dropout 0.3.
    conv_bottlenecks: decoder stage -> ConvBottleneck reduction k.
    style_dim: size of the style embedding.
    style_part_channels: channels of each stage's slice of the Style-Pre-Net
      output (the Pre-Net emits depth * style_part_channels values).
    style_hidden: Style-Pre-Net hidden width.
    encoder_dropout: dropout on each encoder output and on its skip copy.
    transformer_*: TransformerBlock settings (d_model = that block's channels).
    norm_scale_mean: BatchNorm scales start at N(norm_scale_mean, 0.02); the
      release uses 0, which makes an untrained net's outputs tiny and its
      first thousand steps slow; 1 (pix2pix) trains faster on short runs.
    last_stage_features: channels of the last decoder stage (the release
      has 32 whatever features[0]); None: features[0] // 2, which is 32 at
      the reference channel list.
    attention_layout: how the decoder self-attention's sequence becomes a
      map again: "release" (default, the release's memory reinterpretation)
      or "spatial" (the corrected form); see SelfAttentionBlock.
    out_channels: output image channels.
    remat: "none" (default) or "blocks": recompute the encoder and decoder
      blocks and the transformer layers in the backward pass instead of
      keeping their activations (`remat_block`); same parameters, same
      function, less memory for about one more forward pass of them.
    dtype: compute dtype; parameters are always float32.

  Call: (sketch (B, S, S, C_in) in [-1, 1], style (B, style_dim), train)
    -> image (B, S, S, out_channels) in [-1, 1].
  """
  # Called as G(real_a, style, train) with (B, E) style embeddings; the
  # trainer then also trains and feeds a style encoder.
  takes_style: ClassVar[bool] = True
  image_size: int = 256
  features: Sequence[int] = REFERENCE_FEATURES
  transformer_blocks: Sequence[int] = (4, 5, 6)
  attention_stages: Sequence[int] = (1, 2, 3)
  dropout_stages: Sequence[int] = (0, 1, 2)
  conv_bottlenecks: Mapping[int, float] | Sequence[tuple[int, float]] = ((4, 1.6), (5, 1.33))
  style_dim: int = 256
  style_part_channels: int = 32
  style_hidden: int = 1024
  style_dropout: float = 0.4
  encoder_dropout: float = 0.3
  decoder_dropout: float = 0.3
  transformer_layers: int = 6
  transformer_heads: int = 8
  transformer_ff_multiplier: int = 2
  transformer_dropout: float = 0.1
  attention_dropout: float = 0.1
  norm_scale_mean: float = 0.0
  attention_layout: AttentionLayout = "release"
  last_stage_features: int | None = None
  out_channels: int = 3
  remat: RematMode = "none"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _validate(self) -> None:
    check_remat(self.remat)
    depth = len(self.features)
    if depth < 2:
      raise ValueError("TransPix2PixGenerator needs at least two encoder blocks")
    if self.image_size % (2 ** depth):
      raise ValueError(
          f"image_size {self.image_size} must be divisible by 2**{depth} "
          f"(one halving per entry of features={tuple(self.features)})")
    for i in self.transformer_blocks:
      if not 1 <= i <= depth:
        raise ValueError(f"transformer_blocks entry {i} outside encoder blocks 1..{depth}")
    for name, stages in (("attention_stages", self.attention_stages),
                         ("dropout_stages", self.dropout_stages),
                         ("conv_bottlenecks", dict(self.conv_bottlenecks))):
      for s in stages:
        if not 0 <= s < depth:
          raise ValueError(f"{name} entry {s} outside decoder stages 0..{depth - 1}")

  @nn.compact
  def __call__(self, sketch: jax.Array, style: jax.Array, train: bool) -> jax.Array:
    self._validate()
    if sketch.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"sketch spatial size {sketch.shape[1:3]} != configured "
                       f"image_size {self.image_size}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    nkw = dict(kw, norm_scale_mean=self.norm_scale_mean)
    depth = len(self.features)
    x = sketch.astype(self.dtype)
    blocks = self.remat == "blocks"
    down_block = remat_block(DownConvBlock, blocks)
    up_block = remat_block(UpConvBlock, blocks)

    def drop(y: jax.Array, rate: float) -> jax.Array:
      return nn.Dropout(rate)(y, deterministic=not train)

    skips = []
    for i, ch in enumerate(self.features, start=1):
      x = down_block(ch, norm=i > 1, bottleneck=i == depth, name=f"E{i}", **nkw)(x, train)
      if i < depth:
        skips.append(drop(x, self.encoder_dropout))
      x = drop(x, self.encoder_dropout)
      if i in self.transformer_blocks:
        x = TransformerBlock(
            self.transformer_layers, self.transformer_heads,
            self.transformer_ff_multiplier, self.transformer_dropout,
            self.attention_dropout, remat=blocks, name=f"T{i}", **nkw)(x, train)

    style_parts = StylePreNet(
        depth, self.style_part_channels, self.style_hidden, self.style_dropout,
        name="style_prenet", **kw)(style, train)
    conv_bottlenecks = dict(self.conv_bottlenecks)
    decoder_out = [self.features[depth - 2 - k] for k in range(depth - 1)]
    decoder_out.append(self.last_stage_features or self.features[0] // 2)
    for k in range(depth):
      # The release's channel order: (style, bottleneck) into stage 0,
      # (previous stage, style, skip) into the others.
      style_map = tile_to(style_parts[k], x.shape[1:3]).astype(self.dtype)
      inputs = [style_map, x] if k == 0 else [x, style_map, skips[depth - 1 - k]]
      x = up_block(
          decoder_out[k], dropout=k in self.dropout_stages, bottleneck=k == 0,
          conv_bottleneck_reduction=conv_bottlenecks.get(k),
          dropout_rate=self.decoder_dropout, name=f"D{k}", **nkw)(
              jnp.concatenate(inputs, axis=-1), train)
      if k in self.attention_stages:
        x = SelfAttentionBlock(self.attention_layout, name=f"SA{k}", **nkw)(x, train)

    x = PaddedConv(self.out_channels, 1, name="final", **kw)(x)
    return jnp.tanh(x.astype(at_least_float32(x.dtype)))
