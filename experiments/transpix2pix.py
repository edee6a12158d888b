r"""TransPix2Pix at the reference configuration (256x256, batch 4, 400k steps).

Run (on a dataset prepared by `python -m tp2p_jax.cli.prepare`, see README):
  python run_train.py --config=experiments/transpix2pix.py --workdir=runs/transpix2pix \
      --config.data.data_dir=data/cats
Inspect (prints the resolved config and the parameter counts, trains nothing):
  python run_train.py --config=experiments/transpix2pix.py --workdir=/tmp/tp2p --dry_run

Variants (`--config=experiments/transpix2pix.py:VARIANT`):
  cpu: 64x64 and the toy job's slim model, for a prepared dataset on CPUs.
  tiny: seconds-scale model for tests.

Fields shared with the other experiments are documented in experiments/base.py.
"""
from __future__ import annotations

import ml_collections

from tp2p_jax.experiments.base import paired_gan_config


def base_config() -> ml_collections.ConfigDict:
  """The reference TransPix2Pix configuration, unlocked for variants to edit."""
  c = paired_gan_config()
  c.data.augment = True  # p=0.5 flip or random sized crop (230..256 of 256), as the release.

  # --- generator (netG) -----------------------------------------------------
  c.generator = "transpix2pix"  # Registry name in tp2p_jax.models.GENERATORS.
  c.generator_kwargs.features = (64, 128, 256, 512, 512, 512, 512, 512)  # Encoder channels.
  c.generator_kwargs.transformer_blocks = (4, 5, 6)  # Encoder blocks followed by a transformer.
  c.generator_kwargs.attention_stages = (1, 2, 3)  # Decoder stages followed by self-attention.
  c.generator_kwargs.dropout_stages = (0, 1, 2)  # Decoder stages with dropout 0.3.
  c.generator_kwargs.conv_bottlenecks = ((4, 1.6), (5, 1.33))  # (stage, k) of UpConvBlock*.
  c.generator_kwargs.style_part_channels = 32  # Style-Pre-Net slice per decoder stage.
  c.generator_kwargs.style_hidden = 1024  # Style-Pre-Net hidden width.
  c.generator_kwargs.transformer_layers = 6  # Encoder layers per TransformerBlock.
  c.generator_kwargs.transformer_heads = 8  # Attention heads.
  c.generator_kwargs.attention_dropout = 0.1  # On attention weights (0: fused kernels in training too).
  c.generator_kwargs.norm_scale_mean = 0.0  # BatchNorm scale init N(this, 0.02); release: 0.
  # Decoder self-attention back to a map: "release" (its view(B, C, H, W) of
  # the (B, HW, C) result, mixing channels and positions) | "spatial" (fixed).
  c.generator_kwargs.attention_layout = "release"

  # --- style encoder (stage 1) ----------------------------------------------
  c.style = ml_collections.ConfigDict()
  c.style.image_size = 64  # Photos are resized to this for the encoder.
  c.style.block_features = (32, 64, 128, 256)  # Channels of its four conv blocks.
  c.style.hidden = 1024  # Dense layer before the embedding.
  c.style.embedding_dim = 256  # Style embedding size (the generator's input).
  c.style.scale = 5.0  # CosFace s.
  c.style.margin = 0.35  # CosFace m.
  c.style.batch_size = 64  # Stage-1 batch.
  c.style.total_steps = 20000  # Stage-1 steps (0 skips stage 1: random frozen encoder).
  c.style.lr = 1e-3  # Adam (0.9, 0.999) learning rate ...
  c.style.lr_decay = 0.9  # ... multiplied by this ...
  c.style.lr_decay_every = 1000  # ... every this many steps.
  c.style.weight_decay = 1e-4  # L2 on conv/dense kernels (not biases, norms).
  c.style.checkpoint_every = 2000  # Stage-1 checkpoint interval (steps).
  c.eval_every = 5000  # Held-out scores at every checkpoint (experiments/base.py).
  c.keep_best = "eval/lpips"  # best/: the step whose outputs look closest to the targets.
  return c


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks any TransPix2Pix config to a seconds-scale test model."""
  c.image_size = 32
  c.batch_size = 4
  c.data.num_train = 64
  c.data.num_eval = 8
  # Three U-Net levels, each kind of block once (a transformer at the
  # bottleneck, self-attention, dropout and a 1x1 conv bottleneck in the
  # decoder): XLA's compile time follows the layer count, not the channels.
  c.generator_kwargs.features = (8, 16, 32)
  c.generator_kwargs.transformer_blocks = (3,)
  c.generator_kwargs.attention_stages = (1,)
  c.generator_kwargs.dropout_stages = (0,)
  c.generator_kwargs.conv_bottlenecks = ((2, 1.6),)
  c.generator_kwargs.style_part_channels = 4
  c.generator_kwargs.style_hidden = 32
  c.generator_kwargs.transformer_layers = 1
  c.generator_kwargs.transformer_heads = 2
  c.discriminator_kwargs.base_features = 8
  c.style.image_size = 32
  c.style.block_features = (4, 8, 8, 16)
  c.style.hidden = 32
  c.style.embedding_dim = 16
  c.style.batch_size = 16
  c.style.total_steps = 10
  c.style.checkpoint_every = 5
  c.lr = 1e-3
  c.total_steps = 20
  c.log_every = 5
  c.checkpoint_every = 10
  c.keep_checkpoints = 5
  c.sample_every = 10
  c.num_samples = 4
  c.eval_every = 0  # No validation (a test turns it on).
  c.keep_best = ""
  c.fast_compile = True  # Seconds of work per run: compiling is most of it.
  return c


def slim_cpu(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """64x64 with slimmer channels and shorter schedules: a visible result on
  a 2-core CPU in about half an hour (the toy-cats main job's model)."""
  c.image_size = 64
  c.generator_kwargs.features = (32, 64, 128, 128, 128, 128)
  c.generator_kwargs.transformer_blocks = (3, 4)
  c.generator_kwargs.attention_stages = (1, 2)
  c.generator_kwargs.dropout_stages = (0, 1)
  c.generator_kwargs.conv_bottlenecks = ((3, 1.6),)
  c.generator_kwargs.style_part_channels = 16
  c.generator_kwargs.style_hidden = 256
  c.generator_kwargs.transformer_layers = 2
  c.generator_kwargs.transformer_heads = 4
  # The release starts BatchNorm scales near 0, which stalls the first ~1k
  # steps; short CPU runs start them near 1, as pix2pix does.
  c.generator_kwargs.norm_scale_mean = 1.0
  c.discriminator_kwargs.base_features = 32
  c.discriminator_kwargs.norm_scale_mean = 1.0
  c.style.image_size = 64
  c.style.block_features = (16, 32, 64, 128)
  c.style.hidden = 256
  c.style.embedding_dim = 64
  c.style.batch_size = 32
  c.style.total_steps = 600
  c.style.lr_decay_every = 200
  c.style.checkpoint_every = 200
  c.lr_milestones = (2000,)
  c.total_steps = 2500
  c.log_every = 50
  c.checkpoint_every = 500
  c.sample_every = 500
  c.num_samples = 9
  c.eval_every = 500  # At every checkpoint.
  return c


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = base_config()
  if variant == "cpu":
    c = slim_cpu(c)
  elif variant == "tiny":
    c = tiny(c)
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; expected 'cpu' or 'tiny'")
  c.lock()
  return c
