"""Importers for the TransPix2Pix release's networks (generator, PatchGAN,
CosFace style encoder): PyTorch tensor names -> this package's modules.

Architecture sizes are read off the state_dict (channel lists, transformer
positions, image size from the positional tables), so a checkpoint of the
release at its reference size and one of a narrower variant both import.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax.numpy as jnp
import numpy as np

from tp2p_jax.interop.mapping import (Conversion, StateDictMapper, WeightImportError,
                                      expected_variables, strip_module_prefix)
from tp2p_jax.models.patchgan import PatchGANDiscriminator
from tp2p_jax.models.style_encoder import StyleEncoder
from tp2p_jax.models.transpix2pix import TransPix2PixGenerator

# Created by the release but never used in its forward pass.
GENERATOR_UNUSED = (
    "Encoder.*.encoder_layer.*",  # each TransformerBlock's spare layer template
    "Decoder.*.pos_embedding.weight",  # the decoder attention's positional tables
    "step",  # forward-pass counter
)
STYLE_ENCODER_UNUSED = ("step",)


def _count(state_dict: Mapping[str, np.ndarray], fmt: str, start: int = 0) -> int:
  """How many consecutive indices start, start+1, ... name a submodule."""
  n = 0
  while any(k.startswith(fmt.format(start + n) + ".") for k in state_dict):
    n += 1
  return n


def _q_k_v(part: int, d: int, heads: int) -> Callable[[np.ndarray], np.ndarray]:
  """in_proj_weight (3D, D) -> query/key/value kernel (D, heads, D/heads)."""
  return lambda w: w[part * d:(part + 1) * d].T.reshape(d, heads, d // heads)


def _q_k_v_bias(part: int, d: int, heads: int) -> Callable[[np.ndarray], np.ndarray]:
  return lambda b: b[part * d:(part + 1) * d].reshape(heads, d // heads)


def convert_generator(state_dict: Mapping[str, np.ndarray], *,
                      attention_layout: str = "release", transformer_heads: int = 8,
                      dtype: Any = jnp.float32) -> Conversion:
  """The release's `Generator` (model_generator.py; EMA_gen_iter_N.pth).

  Options:
    attention_layout: "release" (default: the release's function) or
      "spatial" (the corrected decoder attention layout; changes the outputs).
    transformer_heads: heads of the encoder transformers (8 in the release;
      not recoverable from the tensors).
    dtype: compute dtype of the returned module.

  Read off the tensors: encoder channels, transformer positions and depth,
  Style-Pre-Net sizes, output channels, and the image size (from the
  transformers' positional tables).
  """
  sd = strip_module_prefix(state_dict)
  n_modules = _count(sd, "Encoder.{}")
  transformer_idx = [i for i in range(n_modules) if f"Encoder.{i}.pos_embedding.weight" in sd]
  block_idx = [i for i in range(n_modules) if i not in transformer_idx]
  if not block_idx or "final.final_conv.weight" not in sd:
    raise WeightImportError("transpix2pix_generator: the state_dict has no Encoder.*.ConvBlock1 "
                            "/ final.final_conv tensors (not a TransPix2Pix generator)")
  features = [int(sd[f"Encoder.{i}.ConvBlock1.0.weight"].shape[0]) for i in block_idx]
  depth = len(features)
  # Transformer after encoder block b (1-based) sits right after it in Encoder.
  transformer_blocks = [block_idx.index(i - 1) + 1 for i in transformer_idx]
  if transformer_idx:
    t0, b0 = transformer_idx[0], transformer_blocks[0]
    side = math.isqrt(int(sd[f"Encoder.{t0}.pos_embedding.weight"].shape[0]))
    image_size = side * 2 ** b0
  else:
    image_size = 2 ** depth
  n_layers = _count(sd, f"Encoder.{transformer_idx[0]}.transformer_encoder.layers.{{}}"
                    ) if transformer_idx else 6
  ff = (int(sd[f"Encoder.{transformer_idx[0]}.transformer_encoder.layers.0.linear1.weight"]
            .shape[0]) // features[b0 - 1]) if transformer_idx else 2
  dec_modules = _count(sd, "Decoder.{}")
  attention_idx = [i for i in range(dec_modules) if f"Decoder.{i}.pos_embedding.weight" in sd
                   or (f"Decoder.{i}.BatchNorm.weight" in sd
                       and f"Decoder.{i}.ConvBlock1.0.weight" not in sd)]
  stage_idx = [i for i in range(dec_modules) if i not in attention_idx]
  attention_stages = [stage_idx.index(i - 1) for i in attention_idx]
  conv_bottlenecks = []
  for k, i in enumerate(stage_idx):
    if f"Decoder.{i}.ConvBottleneck1.0.weight" in sd:
      out = int(sd[f"Decoder.{i}.ConvBlock1.0.weight"].shape[1])
      mid = int(sd[f"Decoder.{i}.ConvBottleneck1.0.weight"].shape[0])
      # Any k with int(out / k) == mid rebuilds the same layer; the release's
      # 1.6 and 1.33 are recovered exactly at its sizes.
      reduction = next((r for r in (1.6, 1.33) if int(out / r) == mid), out / mid)
      conv_bottlenecks.append((k, reduction))
  dropout_stages = [k for k in range(min(3, depth))]
  style_dim = int(sd["StylePreNet.fcl1.weight"].shape[1])
  style_hidden = int(sd["StylePreNet.fcl1.weight"].shape[0])
  style_out = int(sd["StylePreNet.fcl3.weight"].shape[0])
  if style_out % depth:
    raise WeightImportError(f"transpix2pix_generator: tensor 'StylePreNet.fcl3.weight' has "
                            f"{style_out} outputs, not a multiple of the {depth} decoder stages")
  last_features = int(sd[f"Decoder.{stage_idx[-1]}.ConvBlock1.0.weight"].shape[1])
  module = TransPix2PixGenerator(
      image_size=image_size, features=tuple(features), transformer_blocks=tuple(transformer_blocks),
      attention_stages=tuple(attention_stages), dropout_stages=tuple(dropout_stages),
      conv_bottlenecks=tuple(conv_bottlenecks), style_dim=style_dim,
      style_part_channels=style_out // depth, style_hidden=style_hidden,
      transformer_layers=n_layers, transformer_heads=transformer_heads,
      transformer_ff_multiplier=ff, attention_layout=attention_layout,
      last_stage_features=last_features,
      out_channels=int(sd["final.final_conv.weight"].shape[0]), dtype=dtype)
  in_channels = int(sd[f"Encoder.{block_idx[0]}.ConvBlock1.0.weight"].shape[1])
  expected = expected_variables(module, jnp.zeros((1, image_size, image_size, in_channels)),
                                jnp.zeros((1, style_dim)), train=False)
  m = StateDictMapper("transpix2pix_generator", sd, expected, GENERATOR_UNUSED)

  for b, i in enumerate(block_idx, start=1):
    p, e = f"Encoder.{i}", f"E{b}"
    m.conv((e, "conv1", "conv"), f"{p}.ConvBlock1.0", bias=False)
    conv2 = "ConvBlock2_bottleneck" if b == depth else "ConvBlock2"
    m.conv((e, "conv2", "conv"), f"{p}.{conv2}.0", bias=False)
    if b > 1:
      m.batch_norm((e, "norm1", "bn"), f"{p}.ConvBlock1.1")
      m.batch_norm((e, "norm2", "bn"), f"{p}.{conv2}.1")
      m.batch_norm((e, "norm3", "bn"), f"{p}.normalize")
    _squeeze_excitation(m, e, p)
  for b, i in zip(transformer_blocks, transformer_idx):
    _transformer(m, f"T{b}", f"Encoder.{i}", features[b - 1], transformer_heads, n_layers)

  for k, i in enumerate(stage_idx):
    p, d = f"Decoder.{i}", f"D{k}"
    m.conv_transpose((d, "convt"), f"{p}.ConvBlock1.0", bias=False)
    m.batch_norm((d, "norm1", "bn"), f"{p}.ConvBlock1.1")
    if f"{p}.ConvBottleneck1.0.weight" in sd:
      for j in (1, 2, 3):
        m.conv((d, "conv_bottleneck", f"conv{j}", "conv"), f"{p}.ConvBottleneck{j}.0", bias=False)
        m.batch_norm((d, "conv_bottleneck", f"norm{j}", "bn"), f"{p}.ConvBottleneck{j}.1")
    m.conv((d, "conv2", "conv"), f"{p}.ConvBlock2.0", bias=False)
    m.batch_norm((d, "norm2", "bn"), f"{p}.ConvBlock2.1")
    m.batch_norm((d, "norm3", "bn"), f"{p}.normalize")
    _squeeze_excitation(m, d, p)
  for k, i in zip(attention_stages, attention_idx):
    m.batch_norm((f"SA{k}", "norm", "bn"), f"Decoder.{i}.BatchNorm")

  for j, name in enumerate(("fcl1", "fcl2", "fcl3")):
    m.linear(("style_prenet", f"dense{j}" if j < 2 else "out"), f"StylePreNet.{name}", bias=True)
  m.conv(("final", "conv"), "final.final_conv", bias=False)
  return m.result(module)


def _squeeze_excitation(m: StateDictMapper, path: str, prefix: str) -> None:
  m.linear((path, "cse", "squeeze"), f"{prefix}.cSE.excitation.0", bias=False)
  m.linear((path, "cse", "excite"), f"{prefix}.cSE.excitation.2", bias=False)
  m.conv((path, "sse", "conv"), f"{prefix}.sSE.conv", bias=True)


def _transformer(m: StateDictMapper, path: str, prefix: str, d: int, heads: int,
                 n_layers: int) -> None:
  m.put((path, "pos_embedding"), f"{prefix}.pos_embedding.weight")
  m.batch_norm((path, "norm", "bn"), f"{prefix}.BatchNorm")
  for layer in range(n_layers):
    src, dst = f"{prefix}.transformer_encoder.layers.{layer}", (path, f"layer{layer}")
    attn = (*dst, "attention")
    for part, name in enumerate(("query", "key", "value")):
      m.put((*attn, name, "kernel"), f"{src}.self_attn.in_proj_weight", _q_k_v(part, d, heads))
      m.put((*attn, name, "bias"), f"{src}.self_attn.in_proj_bias", _q_k_v_bias(part, d, heads))
    m.put((*attn, "out", "kernel"), f"{src}.self_attn.out_proj.weight",
          lambda w: w.T.reshape(heads, d // heads, d))
    m.put((*attn, "out", "bias"), f"{src}.self_attn.out_proj.bias")
    m.linear((*dst, "ff1"), f"{src}.linear1", bias=True)
    m.linear((*dst, "ff2"), f"{src}.linear2", bias=True)
    m.layer_norm((*dst, "norm1"), f"{src}.norm1")
    m.layer_norm((*dst, "norm2"), f"{src}.norm2")


def convert_discriminator(state_dict: Mapping[str, np.ndarray], *,
                          dtype: Any = jnp.float32) -> Conversion:
  """The release's `Discriminator` (model_discriminator.py;
  EMA_disc_iter_N.pth): a reflect-padded, BatchNorm PatchGAN. Our module
  takes the channel-concatenated (sketch, photo) pair."""
  sd = strip_module_prefix(state_dict)
  if "initial.0.weight" not in sd:
    raise WeightImportError("transpix2pix_discriminator: the state_dict has no tensor "
                            "'initial.0.weight' (not a TransPix2Pix discriminator)")
  n_blocks = _count(sd, "model.{}") - 1
  base = int(sd["initial.0.weight"].shape[0])
  in_channels = int(sd["initial.0.weight"].shape[1])
  module = PatchGANDiscriminator(base_features=base, n_layers=n_blocks, norm="batch",
                                 padding_mode="reflect", pad=1, dtype=dtype)
  size = 2 ** (n_blocks + 3)
  expected = expected_variables(module, jnp.zeros((1, size, size, in_channels)), train=False)
  m = StateDictMapper("transpix2pix_discriminator", sd, expected)
  m.conv(("conv0", "conv"), "initial.0", bias=True)
  for n in range(n_blocks):
    m.conv((f"conv{n + 1}", "conv"), f"model.{n}.conv.0", bias=False)
    m.batch_norm((f"norm{n + 1}", "bn"), f"model.{n}.conv.1")
  m.conv(("logits", "conv"), f"model.{n_blocks}", bias=True)
  return m.result(module)


def convert_style_encoder(state_dict: Mapping[str, np.ndarray], *, image_size: int = 64,
                          scale: float = 5.0, dtype: Any = jnp.float32) -> Conversion:
  """The release's CosFace `StyleEncoder` (StyleEncoder/model.py).

  Options:
    image_size: input photo size (64 in the release; fixed by fcl1's width,
      checked against it).
    scale: the CosFace s (5 in the release; not stored in the checkpoint).

  The release flattens (C, H, W); this module flattens NHWC, so fcl1's input
  rows are permuted on import (the function is unchanged).
  """
  sd = strip_module_prefix(state_dict)
  if "init_block.conv1.weight" not in sd:
    raise WeightImportError("transpix2pix_style_encoder: the state_dict has no tensor "
                            "'init_block.conv1.weight' (not a TransPix2Pix style encoder)")
  # init_block, then block1, block2, ... (numbered from 1).
  blocks = ["init_block"] + [f"block{i}" for i in range(1, _count(sd, "block{}", start=1) + 1)]
  widths = [int(sd[f"{b}.conv1.weight"].shape[0]) for b in blocks]
  hidden = int(sd["fcl1.weight"].shape[0])
  flat = int(sd["fcl1.weight"].shape[1])
  side = image_size // 2 ** (len(blocks) - 1)
  if flat != widths[-1] * side * side:
    raise WeightImportError(
        f"transpix2pix_style_encoder: tensor 'fcl1.weight' has {flat} inputs, which does not fit "
        f"{image_size}x{image_size} photos ({widths[-1]} x {side} x {side} = "
        f"{widths[-1] * side * side}); pass image_size=")
  module = StyleEncoder(image_size=image_size, block_features=tuple(widths), hidden=hidden,
                        embedding_dim=int(sd["fcl2.weight"].shape[0]),
                        num_classes=int(sd["weight"].shape[0]), scale=scale, dtype=dtype)
  in_channels = int(sd["init_block.conv1.weight"].shape[1])
  expected = expected_variables(module, jnp.zeros((1, image_size, image_size, in_channels)),
                                train=False)
  m = StateDictMapper("transpix2pix_style_encoder", sd, expected, STYLE_ENCODER_UNUSED)
  for b, prefix in enumerate(blocks):
    for j in range(2 if b == 0 else 3):
      m.conv((f"b{b}_conv{j}", "conv"), f"{prefix}.conv{j + 1}", bias=True)
      m.batch_norm((f"b{b}_conv{j}", "bn"), f"{prefix}.norm{j + 1}")
  m.batch_norm(("bn_features",), "norm1")
  c = widths[-1]
  # (out, C*H*W) in (C, H, W) order -> (H*W*C, out) in NHWC order.
  m.linear(("fc1",), "fcl1", bias=True, transform=lambda w: (
      w.reshape(-1, c, side, side).transpose(2, 3, 1, 0).reshape(side * side * c, -1)))
  m.linear(("fc2",), "fcl2", bias=True)
  m.batch_norm(("bn_embedding",), "norm2")
  m.put(("class_vectors",), "weight")
  return m.result(module)


CONVERTERS: dict[str, Callable[..., Conversion]] = {
    "transpix2pix_generator": convert_generator,
    "transpix2pix_discriminator": convert_discriminator,
    "transpix2pix_style_encoder": convert_style_encoder,
}
