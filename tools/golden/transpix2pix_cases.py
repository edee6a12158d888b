"""Golden cases of the TransPix2Pix release (generator, PatchGAN, style encoder).

The release hard-wires its transformers' sequence lengths to 256x256 input,
so generator cases run at 256; the narrower channel list keeps the fixture
cheap while exercising every code path of the reference one (2x2 E7, the
bottleneck, transformers, decoder attention, ConvBottlenecks).
"""
from __future__ import annotations

import pathlib
import sys

import torch

from tools.golden.driver import Case, uniform_inputs

# Every dropout rate of our modules, zeroed for the train-mode checks.
GENERATOR_NO_DROPOUT = dict(encoder_dropout=0.0, style_dropout=0.0, decoder_dropout=0.0,
                            transformer_dropout=0.0, attention_dropout=0.0)
STYLE_ENCODER_NO_DROPOUT = dict(spatial_dropout=0.0, block_dropout=0.0, last_block_dropout=0.0,
                                head_dropout=0.0)
NARROW_FEATURES = [64, 48, 64, 96, 64, 64, 64, 48]


def cases(release_dir: pathlib.Path) -> list[Case]:
  sys.path.insert(0, str(release_dir))
  sys.path.insert(0, str(release_dir / "StyleEncoder"))
  from model_discriminator import Discriminator  # noqa: PLC0415
  from model_generator import Generator  # noqa: PLC0415
  from model import StyleEncoder  # noqa: PLC0415

  def generator_call(net, x):
    return net(x["sketch"], x["style"])

  def discriminator_call(net, x):
    return net(x["pair"][:, :3], x["pair"][:, 3:])

  labels = torch.tensor([0, 4, 8])

  def style_encoder_call(net, x):
    logits, embedding = net(x["photo"], labels)
    # Our module returns (cosine, embedding, logits = s * cosine) without the
    # margin, which the loss applies; undo the release's margin here.
    onehot = torch.nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype)
    cosine = logits / net.s + net.m * onehot
    return [cosine, embedding, net.s * cosine]

  return [
      Case("transpix2pix_generator", "transpix2pix_generator",
           lambda: Generator(in_channels=3, features=list(NARROW_FEATURES)),
           uniform_inputs(1, sketch=(2, 256, 256, 3), style=(2, 256)), generator_call,
           train_overrides=GENERATOR_NO_DROPOUT),
      Case("transpix2pix_discriminator", "transpix2pix_discriminator",
           lambda: Discriminator(in_channels=3),
           uniform_inputs(3, pair=(2, 64, 64, 6)), discriminator_call),
      Case("transpix2pix_style_encoder", "transpix2pix_style_encoder",
           lambda: StyleEncoder(),
           uniform_inputs(4, photo=(3, 64, 64, 3)), style_encoder_call,
           train_overrides=STYLE_ENCODER_NO_DROPOUT),
      # A narrow encoder saved as the release saves its checkpoints
      # ({"state_dict", "optimizer"}): the import reads the .pth file itself.
      Case("transpix2pix_style_encoder_checkpoint", "transpix2pix_style_encoder",
           lambda: StyleEncoder(init_channels=2, num_features=8),
           uniform_inputs(5, photo=(3, 64, 64, 3)), style_encoder_call,
           train_overrides=STYLE_ENCODER_NO_DROPOUT, checkpoint=True),
  ]



