"""Golden cases of the TransPix2Pix release (generator, PatchGAN, style encoder).

The release's generator runs only at 256x256 with eight encoder blocks and
transformers after blocks 4-6 (its TransformerBlock, SelfAttentionBlock and
its forward pass hard-wire those), so the generator case runs at 256 with a
narrow channel list: cheap, and every code path of the reference one (the
2x2 E7 whose 4x4 conv shrinks to 1x1, the 1x1 bottleneck, transformers on
16x16, 8x8, 4x4 maps, decoder self-attention, ConvBottlenecks, the
32-channel last stage). Its TransformerBlocks are built with the release's
own `num_layers` argument set to 2 instead of the default 6: the layers are
identical repeats, and the check's compile time scales with their number.
"""
from __future__ import annotations

import functools
import pathlib
import sys

import torch

from tools.golden.driver import Case, uniform_inputs

# Every dropout rate of our modules, zeroed for the train-mode checks.
GENERATOR_NO_DROPOUT = dict(encoder_dropout=0.0, style_dropout=0.0, decoder_dropout=0.0,
                            transformer_dropout=0.0, attention_dropout=0.0)
STYLE_ENCODER_NO_DROPOUT = dict(spatial_dropout=0.0, block_dropout=0.0, last_block_dropout=0.0,
                                head_dropout=0.0)
NARROW_FEATURES = [16, 32, 32, 64, 32, 32, 48, 16]


def cases(release_dir: pathlib.Path) -> list[Case]:
  sys.path.insert(0, str(release_dir))
  sys.path.insert(0, str(release_dir / "StyleEncoder"))
  from model_discriminator import Discriminator  # noqa: PLC0415
  import model_generator  # noqa: PLC0415
  from model_generator import Generator  # noqa: PLC0415
  from transformer_block import TransformerBlock  # noqa: PLC0415
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

  def narrow_generator():
    model_generator.TransformerBlock = functools.partial(TransformerBlock, num_layers=2)
    try:
      return Generator(in_channels=3, features=list(NARROW_FEATURES))
    finally:
      model_generator.TransformerBlock = TransformerBlock

  return [
      Case("transpix2pix_generator", "transpix2pix_generator", narrow_generator,
           uniform_inputs(1, sketch=(2, 256, 256, 3), style=(2, 256)), generator_call,
           train_overrides=GENERATOR_NO_DROPOUT),
      Case("transpix2pix_discriminator", "transpix2pix_discriminator",
           lambda: Discriminator(in_channels=3),
           uniform_inputs(3, pair=(2, 64, 64, 6)), discriminator_call),
      # Half the reference widths (the release's own constructor arguments):
      # the same function, a quarter of the check's run time.
      Case("transpix2pix_style_encoder", "transpix2pix_style_encoder",
           lambda: StyleEncoder(init_channels=16, num_features=128),
           uniform_inputs(4, photo=(3, 64, 64, 3)), style_encoder_call,
           train_overrides=STYLE_ENCODER_NO_DROPOUT),
      # A narrow encoder saved as the release saves its checkpoints
      # ({"state_dict", "optimizer"}): the import reads the .pth file itself.
      Case("transpix2pix_style_encoder_checkpoint", "transpix2pix_style_encoder",
           lambda: StyleEncoder(init_channels=2, num_features=8),
           uniform_inputs(5, photo=(3, 64, 64, 3)), style_encoder_call,
           train_overrides=STYLE_ENCODER_NO_DROPOUT, checkpoint=True),
  ]



