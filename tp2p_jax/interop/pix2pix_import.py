"""Importers for the pix2pix family's PyTorch checkpoints: junyanz's
pytorch-CycleGAN-and-pix2pix (U-Net and ResNet generators, NLayer PatchGAN)
and NVIDIA's pix2pixHD (global generator, local enhancer, multi-scale
discriminator), onto this package's modules.

What the tensors determine is read off them: widths (ngf / ndf from the
first conv), input and output channels, depths (U-Net levels, residual
blocks, PatchGAN layers, downsamplings, enhancers, scales, by counting), the
norm (BatchNorm has weight, bias and running statistics; instance norm
without affine parameters has none, its convs then carry biases) and, for
the ResNet generator, dropout (it shifts the residual block's layer
indices). Options give the rest; an option that contradicts the tensors is
refused.

Norm semantics are today's upstream ones: instance norm normalises with the
statistics of each image in eval mode too. Checkpoints written while
InstanceNorm2d tracked running statistics (junyanz's older get_norm_layer)
carry `running_mean` / `running_var` buffers for it; upstream's loader
deletes them, and so do these importers (reported as unused).

Key layouts (DataParallel's `module.` prefix is stripped first):
  unet_*        model.model.{0,3}  (outermost down conv, up conv), then each
                inner level nested one `.1.model` / `.3.model` deeper:
                .1 down conv, .2 down norm, .5 up conv, .6 up norm
                (innermost: .1 down conv, .3 up conv, .4 up norm).
  resnet_*      model.{i}: ReflectionPad, conv, norm, ReLU, 2 x (conv, norm,
                ReLU), blocks model.{i}.conv_block.{1,2,5,6} (6, 7 for the
                second conv and norm with dropout), 2 x (conv transpose,
                norm, ReLU), ReflectionPad, conv, Tanh.
  patchgan      model.{0, 2, 5, ..., 3n - 1, 3n + 2} convs, model.{3k} norms.
  pix2pixhd_global / _local: as resnet_* (every conv has a bias); the local
                enhancer's G1 is `model.*` without its output layers,
                enhancer n is model{n}_1.{1,2,4,5} and model{n}_2.* (blocks,
                conv transpose, norm[, pad, output conv]).
  pix2pixhd_multiscale_discriminator: scale{i}_layer{j}.{0,1} (getIntermFeat)
                or layer{i}.{k} (flat, as patchgan); the release's scale i
                sees the input downsampled num_D - 1 - i times, so it is our
                `scale{num_D - 1 - i}`.

Every importer builds its module with `norm_scale_mean=1.0` where it has one
(the pix2pix family's BatchNorm initialisation; it does not affect the
imported function).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from tp2p_jax.interop.mapping import (Conversion, StateDictMapper, WeightImportError,
                                      expected_variables, strip_module_prefix)
from tp2p_jax.models.multiscale import MultiScaleDiscriminator
from tp2p_jax.models.patchgan import PatchGANDiscriminator
from tp2p_jax.models.pix2pixhd import Pix2PixHDGenerator
from tp2p_jax.models.resnet_generator import ResnetGenerator
from tp2p_jax.models.unet import UnetGenerator

# InstanceNorm2d buffers of checkpoints written while it tracked running
# statistics; today's upstream deletes them on load (instance statistics are
# used in eval mode too).
_TRACKED_INSTANCE_NORM = ("*.running_mean", "*.running_var")
_NORMS = ("batch", "instance")


def _indices(sd: Mapping[str, np.ndarray], prefix: str) -> list[int]:
  """Sorted i for which some tensor is named `{prefix}{i}.*`."""
  pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
  return sorted({int(m.group(1)) for k in sd if (m := pattern.match(k))})


def _conv_indices(sd: Mapping[str, np.ndarray], prefix: str) -> list[int]:
  """Sorted i whose `{prefix}{i}.weight` is a 4-D (conv) tensor."""
  return [i for i in _indices(sd, prefix) if np.ndim(sd.get(f"{prefix}{i}.weight", 0)) == 4]


def _count(sd: Mapping[str, np.ndarray], fmt: str) -> int:
  """How many of fmt.format(0), fmt.format(1), ... name tensors, consecutively."""
  n = 0
  while fmt.format(n) in sd:
    n += 1
  return n


def _require(kind: str, sd: Mapping[str, np.ndarray], name: str, what: str) -> np.ndarray:
  if name not in sd or np.ndim(sd[name]) != 4:
    raise WeightImportError(f"{kind}: the state_dict has no 4-D tensor {name!r} (not {what})")
  return sd[name]


def _norm_of(kind: str, sd: Mapping[str, np.ndarray], norm_prefix: str, conv_prefix: str,
             option: str | None, conv_bias_means_instance: bool = True
             ) -> tuple[str, tuple[str, ...]]:
  """The norm of a layer pair (norm at `norm_prefix`, the conv before it at
  `conv_prefix`) and the tensors to drop, checked against `option`.

  BatchNorm2d(affine=True) has `weight`; a tracking InstanceNorm2d has only
  running statistics; an untracked one nothing, its conv then having a bias
  in junyanz's networks (`conv_bias_means_instance`; pix2pixHD's convs always
  have one).
  """
  unused: tuple[str, ...] = ()
  if f"{norm_prefix}.weight" in sd:
    found, evidence = "batch", f"tensor {norm_prefix + '.weight'!r}"
  elif f"{norm_prefix}.running_mean" in sd:
    found, evidence = "instance", f"{norm_prefix + '.running_mean'!r} without a weight"
    unused = _TRACKED_INSTANCE_NORM
  elif f"{conv_prefix}.bias" in sd or not conv_bias_means_instance:
    found, evidence = "instance", f"no tensors at {norm_prefix!r}"
  else:
    found, evidence = "none", (f"neither norm tensors at {norm_prefix!r} nor "
                               f"{conv_prefix + '.bias'!r}")
  if option is not None and option not in _NORMS:
    raise WeightImportError(f"{kind}: option norm={option!r}; expected one of {_NORMS}")
  if option is not None and option != found:
    raise WeightImportError(f"{kind}: option norm={option!r} contradicts the state_dict "
                            f"({evidence}: norm {found!r})")
  if found == "none":
    raise WeightImportError(f"{kind}: the state_dict has {evidence}: a network without norm "
                            "layers, which this importer does not support")
  return found, unused


def _check(kind: str, option: str, given: Any, found: Any, evidence: str) -> None:
  """Refuses an explicit option that the tensors contradict."""
  if given is not None and given != found:
    raise WeightImportError(f"{kind}: option {option}={given!r} contradicts the state_dict "
                            f"({evidence}: {found!r})")


def _norm(m: StateDictMapper, norm: str, path: tuple[str, ...], prefix: str) -> None:
  """Fills a `Norm` submodule at `path` (its BatchNorm is `path/bn`)."""
  if norm == "batch":
    m.batch_norm((*path, "bn"), prefix)


def _resnet_block(m: StateDictMapper, norm: str, path: tuple[str, ...], prefix: str,
                  dropout: bool) -> None:
  """ResnetBlock: conv_block = [pad, conv, norm, ReLU, (Dropout,) pad, conv, norm]."""
  second = 6 if dropout else 5
  m.conv((*path, "conv1", "conv"), f"{prefix}.conv_block.1")
  _norm(m, norm, (*path, "norm1"), f"{prefix}.conv_block.2")
  m.conv((*path, "conv2", "conv"), f"{prefix}.conv_block.{second}")
  _norm(m, norm, (*path, "norm2"), f"{prefix}.conv_block.{second + 1}")


def _has_dropout(sd: Mapping[str, np.ndarray], block_prefix: str) -> bool:
  """Dropout after the first ReLU moves the second conv from index 5 to 6."""
  return np.ndim(sd.get(f"{block_prefix}.conv_block.6.weight", 0)) == 4


# --- junyanz: U-Net ---------------------------------------------------------


def _unet_levels(sd: Mapping[str, np.ndarray]) -> list[str]:
  """Prefixes of the nested UnetSkipConnectionBlocks' Sequentials, outermost
  first (the outermost holds its child at index 1, the others at 3)."""
  levels = ["model.model"]
  child = "model.model.1.model"
  while any(k.startswith(child + ".") for k in sd):
    levels.append(child)
    child += ".3.model"
  return levels


def _convert_unet(kind: str, num_downs: int, state_dict: Mapping[str, np.ndarray], *,
                  norm: str | None = None, use_dropout: bool = True,
                  dtype: Any = jnp.float32) -> Conversion:
  sd = strip_module_prefix(state_dict)
  first = _require(kind, sd, "model.model.0.weight", "a junyanz UnetGenerator")
  levels = _unet_levels(sd)
  if len(levels) != num_downs:
    raise WeightImportError(
        f"{kind}: the state_dict's U-Net has {len(levels)} levels (num_downs {len(levels)}); "
        f"{kind} has {num_downs}")
  found_norm, unused = _norm_of(kind, sd, f"{levels[1]}.2", f"{levels[1]}.1", norm)
  ngf, in_channels = int(first.shape[0]), int(first.shape[1])
  out_channels = int(_require(kind, sd, "model.model.3.weight", "a junyanz UnetGenerator")
                     .shape[1])
  module = UnetGenerator(num_downs=num_downs, ngf=ngf, norm=found_norm, use_dropout=use_dropout,
                         norm_scale_mean=1.0, out_channels=out_channels, dtype=dtype)
  size = 2 ** num_downs
  expected = expected_variables(module, jnp.zeros((1, size, size, in_channels)), train=False)
  m = StateDictMapper(kind, sd, expected, unused)
  for i, p in enumerate(levels):
    if i == 0:
      m.conv((f"down{i}", "conv"), f"{p}.0")
      m.conv_transpose((f"up{i}",), f"{p}.3")
    elif i == num_downs - 1:
      m.conv((f"down{i}", "conv"), f"{p}.1")
      m.conv_transpose((f"up{i}",), f"{p}.3")
      _norm(m, found_norm, (f"up{i}_norm",), f"{p}.4")
    else:
      m.conv((f"down{i}", "conv"), f"{p}.1")
      _norm(m, found_norm, (f"down{i}_norm",), f"{p}.2")
      m.conv_transpose((f"up{i}",), f"{p}.5")
      _norm(m, found_norm, (f"up{i}_norm",), f"{p}.6")
  return m.result(module)


def convert_unet_256(state_dict: Mapping[str, np.ndarray], **options: Any) -> Conversion:
  """junyanz's `UnetGenerator` with num_downs 8 (netG unet_256; 256x256
  images, H and W multiples of 256).

  Options:
    norm: "batch" | "instance" (default: read off the tensors; checked).
    use_dropout: dropout 0.5 in the decoder levels next to the innermost, in
      train mode (default True, pix2pix's; `--no_dropout` checkpoints, e.g.
      CycleGAN's, were trained without). Not recorded in the tensors.
    dtype: compute dtype of the returned module.

  Read off the tensors: ngf, input and output channels, the depth (must be 8).
  """
  return _convert_unet("unet_256", 8, state_dict, **options)


def convert_unet_128(state_dict: Mapping[str, np.ndarray], **options: Any) -> Conversion:
  """junyanz's `UnetGenerator` with num_downs 7 (netG unet_128; H and W
  multiples of 128). Options as `convert_unet_256`; the depth must be 7."""
  return _convert_unet("unet_128", 7, state_dict, **options)


# --- junyanz: ResNet generator ------------------------------------------------


def _resnet_layout(kind: str, sd: Mapping[str, np.ndarray], prefix: str, has_head: bool
                   ) -> tuple[int, list[int], list[int], int | None, list[int]]:
  """(stem, downs, ups, head, blocks) Sequential indices of a Johnson-style
  generator `prefix{i}`: convs outside the residual blocks are the stem,
  n downsampling convs, n transposed convs and (with `has_head`) the output
  conv; residual blocks sit between the downs and the ups."""
  convs = _conv_indices(sd, prefix)
  blocks = [i for i in _indices(sd, prefix) if f"{prefix}{i}.conv_block.1.weight" in sd]
  outer = len(convs) - (1 if has_head else 0)
  if outer < 1 or (outer - 1) % 2:
    raise WeightImportError(
        f"{kind}: the state_dict has {len(convs)} convs outside residual blocks at "
        f"'{prefix}*', not a stem, n down, n up{' and an output' if has_head else ''} conv")
  n = (outer - 1) // 2
  stem, downs, ups = convs[0], convs[1:1 + n], convs[1 + n:1 + 2 * n]
  head = convs[-1] if has_head else None
  low = downs[-1] if downs else stem
  high = ups[0] if ups else (head if head is not None else max(blocks, default=low) + 1)
  between = [i for i in blocks if low < i < high]
  if between != blocks:
    raise WeightImportError(f"{kind}: residual blocks at '{prefix}*' {blocks} are not all "
                            "between the downsampling and the upsampling convs")
  return stem, downs, ups, head, blocks


def _convert_resnet(kind: str, n_blocks: int, state_dict: Mapping[str, np.ndarray], *,
                    norm: str | None = None, use_dropout: bool | None = None,
                    dtype: Any = jnp.float32) -> Conversion:
  sd = strip_module_prefix(state_dict)
  stem_w = _require(kind, sd, "model.1.weight", "a junyanz ResnetGenerator")
  stem, downs, ups, head, blocks = _resnet_layout(kind, sd, "model.", has_head=True)
  if len(blocks) != n_blocks:
    raise WeightImportError(f"{kind}: the state_dict has {len(blocks)} residual blocks "
                            f"(model.{{i}}.conv_block); {kind} has {n_blocks}")
  found_norm, unused = _norm_of(kind, sd, f"model.{stem + 1}", f"model.{stem}", norm)
  dropout = bool(blocks) and _has_dropout(sd, f"model.{blocks[0]}")
  _check(kind, "use_dropout", use_dropout, dropout,
         f"'model.{blocks[0]}.conv_block.6' is {'a conv' if dropout else 'not a conv'}"
         if blocks else "no residual blocks")
  out_channels = int(sd[f"model.{head}.weight"].shape[0])
  module = ResnetGenerator(base_features=int(stem_w.shape[0]), n_blocks=n_blocks,
                           n_downsampling=len(downs), out_channels=out_channels,
                           norm=found_norm, dropout=0.5 if dropout else 0.0, dtype=dtype)
  size = 4 * 2 ** len(downs)
  expected = expected_variables(module, jnp.zeros((1, size, size, int(stem_w.shape[1]))),
                                train=False)
  m = StateDictMapper(kind, sd, expected, unused)
  m.conv(("stem", "conv"), f"model.{stem}")
  _norm(m, found_norm, ("stem_norm",), f"model.{stem + 1}")
  for i, j in enumerate(downs):
    m.conv((f"down{i}", "conv"), f"model.{j}")
    _norm(m, found_norm, (f"down{i}_norm",), f"model.{j + 1}")
  for k, j in enumerate(blocks):
    _resnet_block(m, found_norm, (f"block{k}",), f"model.{j}", dropout)
  for i, j in enumerate(ups):
    m.conv_transpose((f"up{i}",), f"model.{j}")
    _norm(m, found_norm, (f"up{i}_norm",), f"model.{j + 1}")
  m.conv(("head", "conv"), f"model.{head}")
  return m.result(module)


def convert_resnet_9blocks(state_dict: Mapping[str, np.ndarray], **options: Any) -> Conversion:
  """junyanz's `ResnetGenerator` with 9 residual blocks (netG resnet_9blocks).

  Options (each read off the tensors when omitted, and checked when given):
    norm: "batch" | "instance".
    use_dropout: dropout 0.5 inside the residual blocks.
    dtype: compute dtype of the returned module.

  Read off the tensors: ngf, input and output channels, downsamplings (2 in
  the release), the block count (must be 9).
  """
  return _convert_resnet("resnet_9blocks", 9, state_dict, **options)


def convert_resnet_6blocks(state_dict: Mapping[str, np.ndarray], **options: Any) -> Conversion:
  """junyanz's `ResnetGenerator` with 6 residual blocks (netG resnet_6blocks).
  Options as `convert_resnet_9blocks`; the block count must be 6."""
  return _convert_resnet("resnet_6blocks", 6, state_dict, **options)


# --- junyanz: PatchGAN ----------------------------------------------------------


def _patchgan_convs(kind: str, sd: Mapping[str, np.ndarray], prefix: str) -> int:
  """n_layers of a flat NLayerDiscriminator Sequential at `prefix{i}`: convs
  at 0, 2, 5, ..., 3 n - 1 and the logits conv at 3 n + 2."""
  convs = _conv_indices(sd, prefix)
  n_layers = len(convs) - 2
  wanted = [0] + [3 * n - 1 for n in range(1, n_layers + 1)] + [3 * n_layers + 2]
  if n_layers < 1 or convs != wanted:
    raise WeightImportError(f"{kind}: convs at '{prefix}*' indices {convs} are not an "
                            "NLayerDiscriminator's (0, 2, 5, ..., 3n - 1, 3n + 2)")
  return n_layers


def _patchgan_mapper(kind: str, sd: Mapping[str, np.ndarray], module: nn.Module,
                     n_layers: int, in_channels: int, unused: Any) -> StateDictMapper:
  """The mapper onto a PatchGAN-shaped module's variables, traced at the
  smallest input its `n_layers` strided convs take."""
  size = 2 ** (n_layers + 3)
  expected = expected_variables(module, jnp.zeros((1, size, size, in_channels)), train=False)
  return StateDictMapper(kind, sd, expected, unused)


def convert_patchgan(state_dict: Mapping[str, np.ndarray], *, norm: str | None = None,
                     n_layers: int | None = None, pad: int = 1,
                     dtype: Any = jnp.float32) -> Conversion:
  """junyanz's `NLayerDiscriminator` (netD basic = n_layers 3, or
  n_layers); our module takes the channel-concatenated (real_a, real_b).

  Options:
    norm: "batch" | "instance" (default: read off the tensors; checked).
    n_layers: stride-2 convs (default: counted; checked).
    pad: zero padding of every 4x4 conv (1 in the release; not recorded).
    dtype: compute dtype of the returned module.

  A `use_sigmoid` original ends in a sigmoid, which is not imported: the
  module returns logits.
  """
  kind = "patchgan"
  sd = strip_module_prefix(state_dict)
  first = _require(kind, sd, "model.0.weight", "a junyanz NLayerDiscriminator")
  found_layers = _patchgan_convs(kind, sd, "model.")
  _check(kind, "n_layers", n_layers, found_layers, "convs counted at 'model.*'")
  found_norm, unused = _norm_of(kind, sd, "model.3", "model.2", norm)
  module = PatchGANDiscriminator(base_features=int(first.shape[0]), n_layers=found_layers,
                                 norm=found_norm, padding_mode="zeros", pad=pad,
                                 norm_scale_mean=1.0, dtype=dtype)
  m = _patchgan_mapper(kind, sd, module, found_layers, int(first.shape[1]), unused)
  m.conv(("conv0", "conv"), "model.0")
  for n in range(1, found_layers + 1):
    m.conv((f"conv{n}", "conv"), f"model.{3 * n - 1}")
    _norm(m, found_norm, (f"norm{n}",), f"model.{3 * n}")
  m.conv(("logits", "conv"), f"model.{3 * found_layers + 2}")
  return m.result(module)


# --- pix2pixHD: generators -------------------------------------------------------


def convert_pix2pixhd_global(state_dict: Mapping[str, np.ndarray], *, norm: str | None = None,
                             n_downsample_global: int | None = None,
                             n_blocks_global: int | None = None,
                             dtype: Any = jnp.float32) -> Conversion:
  """pix2pixHD's `GlobalGenerator` (netG global), as our
  `Pix2PixHDGenerator(n_local_enhancers=0)` (its parameters under `global`).

  Options (each read off the tensors when omitted, and checked when given):
    norm: "instance" (the release's default) | "batch".
    n_downsample_global: stride-2 convs.
    n_blocks_global: residual blocks.
    dtype: compute dtype of the returned module.

  Also read off the tensors: ngf, input and output channels.
  """
  kind = "pix2pixhd_global"
  sd = strip_module_prefix(state_dict)
  stem_w = _require(kind, sd, "model.1.weight", "a pix2pixHD GlobalGenerator")
  stem, downs, ups, head, blocks = _resnet_layout(kind, sd, "model.", has_head=True)
  _check(kind, "n_downsample_global", n_downsample_global, len(downs),
         "stride-2 convs counted at 'model.*'")
  _check(kind, "n_blocks_global", n_blocks_global, len(blocks),
         "residual blocks counted at 'model.*'")
  found_norm, unused = _norm_of(kind, sd, f"model.{stem + 1}", f"model.{stem}", norm,
                                conv_bias_means_instance=False)
  out_channels = int(sd[f"model.{head}.weight"].shape[0])
  module = Pix2PixHDGenerator(ngf_global=int(stem_w.shape[0]), n_downsample_global=len(downs),
                              n_blocks_global=len(blocks), n_local_enhancers=0,
                              norm=found_norm, out_channels=out_channels, dtype=dtype)
  size = 4 * 2 ** len(downs)
  expected = expected_variables(module, jnp.zeros((1, size, size, int(stem_w.shape[1]))),
                                train=False)
  m = StateDictMapper(kind, sd, expected, unused)
  _global_generator(m, found_norm, "model.", stem, downs, ups, blocks)
  m.conv(("global", "head", "conv"), f"model.{head}")
  return m.result(module)


def _global_generator(m: StateDictMapper, norm: str, prefix: str, stem: int, downs: list[int],
                      ups: list[int], blocks: list[int]) -> None:
  """G1 up to its last feature map (our `global` subtree without `head`)."""
  g = "global"
  m.conv((g, "stem", "conv"), f"{prefix}{stem}")
  _norm(m, norm, (g, "stem_norm"), f"{prefix}{stem + 1}")
  for i, j in enumerate(downs):
    m.conv((g, f"down{i}", "conv"), f"{prefix}{j}")
    _norm(m, norm, (g, f"down{i}_norm"), f"{prefix}{j + 1}")
  for k, j in enumerate(blocks):
    _resnet_block(m, norm, (g, f"block{k}"), f"{prefix}{j}", dropout=False)
  for i, j in enumerate(ups):
    m.conv_transpose((g, f"up{i}"), f"{prefix}{j}")
    _norm(m, norm, (g, f"up{i}_norm"), f"{prefix}{j + 1}")


def convert_pix2pixhd_local(state_dict: Mapping[str, np.ndarray], *, norm: str | None = None,
                            n_downsample_global: int | None = None,
                            n_blocks_global: int | None = None,
                            n_local_enhancers: int | None = None,
                            n_blocks_local: int | None = None,
                            dtype: Any = jnp.float32) -> Conversion:
  """pix2pixHD's `LocalEnhancer` (netG local): G1 plus local enhancers, as
  our `Pix2PixHDGenerator` (`global`, `local1`, ...).

  Options (each read off the tensors when omitted, and checked when given):
    norm: "instance" (the release's default) | "batch".
    n_downsample_global, n_blocks_global: G1's stride-2 convs and blocks.
    n_local_enhancers: enhancers (model1_1, model2_1, ...).
    n_blocks_local: residual blocks per enhancer.
    dtype: compute dtype of the returned module.

  Also read off the tensors: G1's width (the release's ngf * 2**n_local_enhancers,
  our `ngf_global`), input and output channels.
  """
  kind = "pix2pixhd_local"
  sd = strip_module_prefix(state_dict)
  stem_w = _require(kind, sd, "model.1.weight", "a pix2pixHD LocalEnhancer")
  n_local = 0
  while any(k.startswith(f"model{n_local + 1}_1.") for k in sd):
    n_local += 1
  if n_local == 0:
    raise WeightImportError(f"{kind}: the state_dict has no 'model1_1.*' tensors (no local "
                            "enhancer; a global generator imports as pix2pixhd_global)")
  stem, downs, ups, _, blocks = _resnet_layout(kind, sd, "model.", has_head=False)
  _check(kind, "n_downsample_global", n_downsample_global, len(downs),
         "stride-2 convs counted at 'model.*'")
  _check(kind, "n_blocks_global", n_blocks_global, len(blocks),
         "residual blocks counted at 'model.*'")
  _check(kind, "n_local_enhancers", n_local_enhancers, n_local, "'model{n}_1' counted")
  local_blocks = [[i for i in _indices(sd, f"model{n}_2.")
                   if f"model{n}_2.{i}.conv_block.1.weight" in sd]
                  for n in range(1, n_local + 1)]
  n_blocks = len(local_blocks[0])
  if any(b != list(range(n_blocks)) for b in local_blocks):
    raise WeightImportError(f"{kind}: the enhancers' residual blocks {local_blocks} are not "
                            "model{n}_2.0 ... model{n}_2.(k-1) with the same k for each n")
  _check(kind, "n_blocks_local", n_blocks_local, n_blocks,
         "residual blocks counted at 'model1_2.*'")
  found_norm, unused = _norm_of(kind, sd, f"model.{stem + 1}", f"model.{stem}", norm,
                                conv_bias_means_instance=False)
  last_head = f"model{n_local}_2.{n_blocks + 4}"
  out_channels = int(_require(kind, sd, f"{last_head}.weight", "a pix2pixHD LocalEnhancer")
                     .shape[0])
  module = Pix2PixHDGenerator(ngf_global=int(stem_w.shape[0]), n_downsample_global=len(downs),
                              n_blocks_global=len(blocks), n_local_enhancers=n_local,
                              n_blocks_local=n_blocks, norm=found_norm,
                              out_channels=out_channels, dtype=dtype)
  size = 4 * 2 ** (len(downs) + n_local)
  expected = expected_variables(module, jnp.zeros((1, size, size, int(stem_w.shape[1]))),
                                train=False)
  m = StateDictMapper(kind, sd, expected, unused)
  _global_generator(m, found_norm, "model.", stem, downs, ups, blocks)
  for n in range(1, n_local + 1):
    path, front, back = f"local{n}", f"model{n}_1", f"model{n}_2"
    m.conv((path, "front_stem", "conv"), f"{front}.1")
    _norm(m, found_norm, (path, "front_stem_norm"), f"{front}.2")
    m.conv((path, "front_down", "conv"), f"{front}.4")
    _norm(m, found_norm, (path, "front_down_norm"), f"{front}.5")
    for k in range(n_blocks):
      _resnet_block(m, found_norm, (path, f"block{k}"), f"{back}.{k}", dropout=False)
    m.conv_transpose((path, "up"), f"{back}.{n_blocks}")
    _norm(m, found_norm, (path, "up_norm"), f"{back}.{n_blocks + 1}")
    if n == n_local:
      m.conv((path, "head", "conv"), last_head)
  return m.result(module)


# --- pix2pixHD: multi-scale discriminator -----------------------------------------


def convert_pix2pixhd_multiscale_discriminator(
    state_dict: Mapping[str, np.ndarray], *, norm: str | None = None, num_d: int | None = None,
    n_layers: int | None = None, pad: int = 2, dtype: Any = jnp.float32) -> Conversion:
  """pix2pixHD's `MultiscaleDiscriminator`, saved with getIntermFeat
  (`scale{i}_layer{j}.*`) or without (`layer{i}.*`), as our
  `MultiScaleDiscriminator` (call it with `return_features=True` for the
  release's getIntermFeat outputs). Our module takes the
  channel-concatenated pair.

  Options:
    norm: "instance" (the release's default) | "batch" (default: read off
      the tensors; checked).
    num_d: scales (default: counted; checked).
    n_layers: stride-2 convs per scale (default: counted; checked).
    pad: zero padding of every 4x4 conv (2 in the release, its
      ceil((4 - 1) / 2); not recorded).
    dtype: compute dtype of the returned module.

  The release's scale i sees the input downsampled num_D - 1 - i times; it
  becomes our `scale{num_D - 1 - i}` (full resolution first). A
  `use_sigmoid` original (no_lsgan) ends in a sigmoid, which is not
  imported: the module returns logits.
  """
  kind = "pix2pixhd_multiscale_discriminator"
  sd = strip_module_prefix(state_dict)
  interm = "scale0_layer0.0.weight" in sd
  if interm:
    found_d = _count(sd, "scale{}_layer0.0.weight")
    found_layers = _count(sd, "scale0_layer{}.0.weight") - 2
    layer_prefix = "scale{i}_layer"
  elif "layer0.0.weight" in sd:
    found_d = len(_indices(sd, "layer"))
    found_layers = _patchgan_convs(kind, sd, "layer0.")
    layer_prefix = "layer{i}."
  else:
    raise WeightImportError(f"{kind}: the state_dict has neither 'scale0_layer0.0.weight' nor "
                            "'layer0.0.weight' (not a pix2pixHD MultiscaleDiscriminator)")
  if found_layers < 1:
    raise WeightImportError(f"{kind}: {found_layers + 2} layers per scale; a PatchGAN has "
                            "n_layers + 2 >= 3")
  _check(kind, "num_d", num_d, found_d, "scales counted")
  _check(kind, "n_layers", n_layers, found_layers, "layers counted")

  def conv(i: int, j: int) -> str:
    """The release's j-th conv (0 ... n_layers + 1) of scale i."""
    p = layer_prefix.format(i=i)
    return f"{p}{j}.0" if interm else f"{p}{0 if j == 0 else 3 * j - 1}"

  def norm_at(i: int, j: int) -> str:
    p = layer_prefix.format(i=i)
    return f"{p}{j}.1" if interm else f"{p}{3 * j}"

  found_norm, unused = _norm_of(kind, sd, norm_at(0, 1), conv(0, 1), norm,
                                conv_bias_means_instance=False)
  if found_norm == "batch":
    raise WeightImportError(
        f"{kind}: tensor {norm_at(0, 1) + '.weight'!r} is a BatchNorm; pix2pixHD's convs keep "
        "their biases in front of it, which our PatchGAN with norm 'batch' does not have")
  first = sd[f"{conv(0, 0)}.weight"]
  ndf = int(first.shape[0])
  widths = [int(sd[f"{conv(0, j)}.weight"].shape[0]) for j in range(found_layers + 1)]
  ours = [ndf * min(2 ** n, 8) for n in range(found_layers + 1)]
  if widths != ours:
    raise WeightImportError(
        f"{kind}: layer widths {widths} (the release's min(2 nf, 512)) differ from this "
        f"PatchGAN's ndf * min(2**n, 8) = {ours}")
  module = MultiScaleDiscriminator(num_d=found_d, base_features=ndf, n_layers=found_layers,
                                   norm=found_norm, padding_mode="zeros", pad=pad,
                                   norm_scale_mean=1.0, dtype=dtype)
  m = _patchgan_mapper(kind, sd, module, found_layers, int(first.shape[1]), unused)
  for ours_i in range(found_d):
    i = found_d - 1 - ours_i
    s = f"scale{ours_i}"
    m.conv((s, "conv0", "conv"), conv(i, 0))
    for n in range(1, found_layers + 1):
      m.conv((s, f"conv{n}", "conv"), conv(i, n))
      _norm(m, found_norm, (s, f"norm{n}"), norm_at(i, n))
    m.conv((s, "logits", "conv"), conv(i, found_layers + 1))
  return m.result(module)


CONVERTERS: dict[str, Callable[..., Conversion]] = {
    "unet_256": convert_unet_256,
    "unet_128": convert_unet_128,
    "resnet_9blocks": convert_resnet_9blocks,
    "resnet_6blocks": convert_resnet_6blocks,
    "patchgan": convert_patchgan,
    "pix2pixhd_global": convert_pix2pixhd_global,
    "pix2pixhd_local": convert_pix2pixhd_local,
    "pix2pixhd_multiscale_discriminator": convert_pix2pixhd_multiscale_discriminator,
}
