"""Golden cases of the pix2pix family: junyanz's pytorch-CycleGAN-and-pix2pix
(U-Net, ResNet generator, NLayerDiscriminator) and NVIDIA's pix2pixHD
(global generator, local enhancer, multi-scale discriminator).

Each original's models/networks.py is loaded from its work tree under a
private module name (both files are called models/networks.py).
pix2pixHD's imports torchvision at module level for its VGG loss only; a stub
stands in for it, so torchvision need not be installed.

junyanz's networks get today's upstream norm layers explicitly
(InstanceNorm2d without affine parameters or running statistics; BatchNorm2d
with both), whatever the checked-out file's get_norm_layer says.

Sizes are the smallest each architecture accepts, with narrow widths, so
that fixtures stay small and the tests fast:
  * unet_256 needs 256x256 (8 stride-2 levels down to 1x1); batch 1 and one
    channel in and out keep its fixture near 1 MB (its smallest normalised
    map is 2x2, so BatchNorm still sees several values per channel). Its
    test-mode case runs two images one at a time and stores no gradients.
  * unet_128 needs 128x128.
  * the ResNet and pix2pixHD generators run at 32 and 64 px.
"""
from __future__ import annotations

import functools
import importlib.util
import pathlib
import sys
import types
from typing import Any

import torch
from torch import nn

from tools.golden.driver import Case, uniform_inputs

UNET_NO_DROPOUT = {"dropout_rate": 0.0}
RESNET_NO_DROPOUT = {"dropout": 0.0}


def _load_networks(path: pathlib.Path, module_name: str) -> types.ModuleType:
  """Imports `path` (a models/networks.py) as `module_name`."""
  if module_name in sys.modules:
    return sys.modules[module_name]
  spec = importlib.util.spec_from_file_location(module_name, path)
  if spec is None or spec.loader is None:
    raise ImportError(f"cannot import {path}")
  module = importlib.util.module_from_spec(spec)
  sys.modules[module_name] = module
  spec.loader.exec_module(module)
  return module


def _stub_torchvision() -> None:
  """pix2pixHD's networks.py runs `from torchvision import models` for its
  VGG19 loss, which the golden cases never build."""
  if "torchvision" in sys.modules:
    return
  tv = types.ModuleType("torchvision")
  tv.models = types.ModuleType("torchvision.models")  # type: ignore[attr-defined]
  sys.modules["torchvision"] = tv
  sys.modules["torchvision.models"] = tv.models  # type: ignore[attr-defined]


# Today's upstream norm layers (models/networks.py get_norm_layer).
BATCH = functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
INSTANCE = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)


def _single(net: nn.Module, x: dict[str, torch.Tensor]) -> Any:
  (value,) = x.values()
  return net(value)


def _one_at_a_time(net: nn.Module, x: dict[str, torch.Tensor]) -> Any:
  """The images of the batch one by one, as junyanz's test.py (batch size 1)."""
  (value,) = x.values()
  return torch.cat([net(value[i:i + 1]) for i in range(value.shape[0])])


def junyanz_cases(root: pathlib.Path) -> list[Case]:
  nets = _load_networks(root / "models" / "networks.py", "_golden_junyanz_networks")
  return [
      Case("unet_256", "unet_256",
           lambda: nets.UnetGenerator(1, 1, 8, 8, norm_layer=BATCH, use_dropout=True),
           uniform_inputs(11, real_a=(1, 256, 256, 1)), _single,
           options={"use_dropout": True}, train_overrides=UNET_NO_DROPOUT),
      # junyanz's test.py without --eval: .train() on one image at a time, so
      # each of the two is normalised with its own BatchNorm statistics
      # (dropout p set to 0 to compare; outputs only).
      Case("unet_256_test_mode", "unet_256",
           lambda: nets.UnetGenerator(1, 1, 8, 8, norm_layer=BATCH, use_dropout=True),
           uniform_inputs(18, real_a=(2, 256, 256, 1)), _one_at_a_time,
           options={"use_dropout": True}, train_overrides=UNET_NO_DROPOUT, gradients=False),
      Case("unet_128", "unet_128",
           lambda: nets.UnetGenerator(1, 3, 7, 8, norm_layer=INSTANCE, use_dropout=False),
           uniform_inputs(12, real_a=(2, 128, 128, 1)), _single,
           options={"use_dropout": False}),
      # Also saved with torch.save: the test imports the .pth file itself.
      Case("patchgan_basic_batch", "patchgan",
           lambda: nets.NLayerDiscriminator(6, 8, n_layers=3, norm_layer=BATCH),
           uniform_inputs(13, pair=(2, 64, 64, 6)), _single, checkpoint=True),
      Case("patchgan_basic_instance", "patchgan",
           lambda: nets.NLayerDiscriminator(4, 8, n_layers=3, norm_layer=INSTANCE),
           uniform_inputs(14, pair=(2, 32, 32, 4)), _single),
      # Widths 8, 16, 32, 64, 64, 64: the 8 x ndf cap applies at layers 4, 5.
      Case("patchgan_n_layers_5", "patchgan",
           lambda: nets.NLayerDiscriminator(2, 8, n_layers=5, norm_layer=BATCH),
           uniform_inputs(15, pair=(2, 128, 128, 2)), _single),
      Case("resnet_9blocks", "resnet_9blocks",
           lambda: nets.ResnetGenerator(3, 3, 8, norm_layer=INSTANCE, use_dropout=False,
                                        n_blocks=9),
           uniform_inputs(16, real_a=(2, 32, 32, 3)), _single),
      Case("resnet_6blocks", "resnet_6blocks",
           lambda: nets.ResnetGenerator(1, 3, 8, norm_layer=BATCH, use_dropout=True,
                                        n_blocks=6),
           uniform_inputs(17, real_a=(2, 32, 32, 1)), _single,
           train_overrides=RESNET_NO_DROPOUT),
  ]


def pix2pixhd_cases(root: pathlib.Path) -> list[Case]:
  _stub_torchvision()
  nets = _load_networks(root / "models" / "networks.py", "_golden_pix2pixhd_networks")
  instance = nets.get_norm_layer("instance")
  batch = nets.get_norm_layer("batch")
  return [
      Case("pix2pixhd_global", "pix2pixhd_global",
           lambda: nets.GlobalGenerator(3, 3, ngf=8, n_downsampling=3, n_blocks=1,
                                        norm_layer=instance),
           uniform_inputs(21, real_a=(2, 64, 64, 3)), _single),
      Case("pix2pixhd_global_batch", "pix2pixhd_global",
           lambda: nets.GlobalGenerator(1, 3, ngf=8, n_downsampling=2, n_blocks=1,
                                        norm_layer=batch),
           uniform_inputs(22, real_a=(2, 32, 32, 1)), _single),
      # --netG local --ngf 8: G1 has 16 channels at full width.
      Case("pix2pixhd_local", "pix2pixhd_local",
           lambda: nets.LocalEnhancer(3, 3, ngf=8, n_downsample_global=2, n_blocks_global=1,
                                      n_local_enhancers=1, n_blocks_local=2,
                                      norm_layer=instance),
           uniform_inputs(23, real_a=(2, 64, 64, 3)), _single),
      # Scales at 64, 32 and 16 px; getIntermFeat exposes every layer's output.
      Case("pix2pixhd_multiscale_d", "pix2pixhd_multiscale_discriminator",
           lambda: nets.MultiscaleDiscriminator(6, ndf=8, n_layers=3, norm_layer=instance,
                                                use_sigmoid=False, num_D=3,
                                                getIntermFeat=True),
           uniform_inputs(24, pair=(2, 64, 64, 6)), _single,
           apply_kwargs={"return_features": True}),
  ]


def cases(junyanz_dir: pathlib.Path | None, pix2pixhd_dir: pathlib.Path | None) -> list[Case]:
  """The cases of whichever originals are given (work-tree roots)."""
  out: list[Case] = []
  if junyanz_dir is not None:
    out += junyanz_cases(pathlib.Path(junyanz_dir))
  if pix2pixhd_dir is not None:
    out += pix2pixhd_cases(pathlib.Path(pix2pixhd_dir))
  return out


__all__ = ["cases", "junyanz_cases", "pix2pixhd_cases"]
