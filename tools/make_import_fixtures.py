"""Writes the torch.save fixture of tests/test_import_torch.py.

Needs torch (CPU) and numpy; the project itself never imports torch, and the
test reads the file without it:

  python tools/make_import_fixtures.py [--out tests/golden/import]

Files written:
  resnet_6blocks_ngf2.pth  a junyanz ResnetGenerator state_dict (netG
                           resnet_6blocks, ngf 2, instance norm: every conv
                           has a bias, the norms have no tensors; 3 -> 3
                           channels), weights from the shared synthetic
                           recipe, as latest_net_G.pth files hold it.
"""
from __future__ import annotations

import argparse
import collections
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tp2p_jax.interop.synthetic import synthetic_state_dict  # noqa: E402


def resnet_layout(ngf: int, n_blocks: int, in_channels: int = 3, out_channels: int = 3
                  ) -> dict[str, list[int]]:
  """Tensor names and shapes of junyanz's ResnetGenerator with instance norm
  (Sequential: pad, conv, norm, ReLU, 2 x (conv, norm, ReLU), blocks,
  2 x (conv transpose, norm, ReLU), pad, conv, Tanh)."""
  layout: dict[str, list[int]] = {}

  def conv(index: int, shape: list[int]) -> None:
    layout[f"model.{index}.weight"] = shape
    layout[f"model.{index}.bias"] = [shape[1] if index in transposed else shape[0]]

  transposed: set[int] = set()
  conv(1, [ngf, in_channels, 7, 7])
  index, channels = 4, ngf
  for _ in range(2):
    conv(index, [channels * 2, channels, 3, 3])
    index, channels = index + 3, channels * 2
  for _ in range(n_blocks):
    for j in (1, 5):
      layout[f"model.{index}.conv_block.{j}.weight"] = [channels, channels, 3, 3]
      layout[f"model.{index}.conv_block.{j}.bias"] = [channels]
    index += 1
  for _ in range(2):
    transposed.add(index)
    conv(index, [channels, channels // 2, 3, 3])  # ConvTranspose2d: (in, out, kh, kw)
    index, channels = index + 3, channels // 2
  conv(index + 1, [out_channels, channels, 7, 7])
  return layout


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", default="tests/golden/import")
  out = pathlib.Path(parser.parse_args().out)
  out.mkdir(parents=True, exist_ok=True)
  state_dict = collections.OrderedDict(
      (k, torch.from_numpy(v)) for k, v in synthetic_state_dict(resnet_layout(2, 6)).items())
  torch.save(state_dict, out / "resnet_6blocks_ngf2.pth")
  print(f"wrote {out / 'resnet_6blocks_ngf2.pth'} ({len(state_dict)} tensors)")


if __name__ == "__main__":
  main()
