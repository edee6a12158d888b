r"""The default main job: TransPix2Pix on procedural toy cats, sized for CPUs.

Stage 1 trains the CosFace style encoder on the photos' coat labels; stage 2
trains TransPix2Pix (64x64, slimmer channels) conditioned on the frozen
encoder's embedding of each target photo. Both stages checkpoint under the
workdir; a finished stage is skipped on restart, an interrupted one resumes.

Run (no flags needed; about 25 minutes on 2 CPU cores):
  python run_train.py
which is
  python run_train.py --config=experiments/toycats.py --workdir=runs/toycats

Variants (`--config=experiments/toycats.py:VARIANT`):
  tiny: seconds-scale, for tests and smoke runs.
"""
from __future__ import annotations

import ml_collections

from experiments import transpix2pix


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = transpix2pix.base_config()
  c.image_size = 64
  c.batch_size = 4  # The reference batch.
  c.data.num_train = 20000
  c.data.num_eval = 64
  # 64 -> 1 in six halvings; transformers at 8x8 and 4x4, as the reference's
  # last two; self-attention after the first two upsampling stages.
  c.generator_kwargs.features = (32, 64, 128, 128, 128, 128)
  c.generator_kwargs.transformer_blocks = (3, 4)
  c.generator_kwargs.attention_stages = (1, 2)
  c.generator_kwargs.dropout_stages = (0, 1)
  c.generator_kwargs.conv_bottlenecks = ((3, 1.6),)
  c.generator_kwargs.style_part_channels = 16
  c.generator_kwargs.style_hidden = 256
  c.generator_kwargs.transformer_layers = 2
  c.generator_kwargs.transformer_heads = 4
  c.discriminator_kwargs.base_features = 32
  # The release starts BatchNorm scales near 0, which stalls the first ~1k
  # steps; a 2.5k-step CPU run starts them near 1, as pix2pix does.
  c.generator_kwargs.norm_scale_mean = 1.0
  c.discriminator_kwargs.norm_scale_mean = 1.0
  c.style.image_size = 64
  c.style.block_features = (16, 32, 64, 128)
  c.style.hidden = 256
  c.style.embedding_dim = 64
  c.style.batch_size = 32
  c.style.total_steps = 600
  c.style.lr_decay_every = 200
  c.style.checkpoint_every = 200
  c.lr = 2e-4
  c.lr_milestones = (2000,)
  c.total_steps = 2500
  c.log_every = 50
  c.checkpoint_every = 500
  c.sample_every = 500
  c.num_samples = 9
  if variant == "tiny":
    c = transpix2pix.tiny(c)
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; expected 'tiny'")
  c.lock()
  return c
