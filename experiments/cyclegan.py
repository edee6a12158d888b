r"""CycleGAN (Zhu et al. 2017): unpaired translation A <-> B.

Reference configuration: resnet_9blocks generators (11,378,179 parameters
each), 70x70 instance-norm PatchGAN discriminators (2,764,737 each), LSGAN,
cycle lambda 10, identity 0.5 * lambda, pools of 50 images, Adam 2e-4
(0.5, 0.999), batch 1, 256x256, lr constant for 100k steps then linearly to
zero over 100k (the release's 100 + 100 epochs of a ~1,000-image dataset).
The offline default data are the toy cats, sketches (A) <-> photos (B),
unpaired by shuffling.

Run:
  python run_train.py --config=experiments/cyclegan.py --workdir=runs/cyclegan
On your own unpaired data (folders trainA/ trainB/ [testA/ testB/]):
  python run_train.py --config=experiments/cyclegan.py --workdir=runs/horse2zebra \
      --config.data.source=folders --config.data.data_dir=datasets/horse2zebra
Inspect (resolved config and parameter counts, trains nothing):
  python run_train.py --config=experiments/cyclegan.py --dry_run

Variants (`--config=experiments/cyclegan.py:VARIANT`):
  cpu: 64x64, resnet_6blocks with ngf 32, shorter schedule, for CPUs.
  tiny: seconds-scale model for tests.
"""
from __future__ import annotations

import ml_collections

from tp2p_jax.experiments.base import base_config as shared_base_config


def base_config() -> ml_collections.ConfigDict:
  """The reference CycleGAN configuration, unlocked for variants to edit.
  Fields not set here are documented in experiments/base.py."""
  c = shared_base_config("cyclegan")
  c.batch_size = 1  # Release: 1.

  # --- data: toy cats, sketches (A) <-> photos (B), unpaired by shuffling -----
  c.data.source = "toycats"  # "toycats" | "folders": data_dir/trainA, trainB (testA, testB).
  c.data.num_train = 1000  # toycats: distinct training examples per domain.
  c.data.num_eval = 16  # toycats: held-out examples (a disjoint seed range).
  c.data.augment = "jitter"  # The release: resize to 286/256 of the size, random crop, mirror.

  # --- generators (netG: G_AB and G_BA) -------------------------------------
  c.generator = "resnet_9blocks"  # "resnet_9blocks" (256x256) | "resnet_6blocks" (128x128).
  c.generator_kwargs.base_features = 64  # ngf.
  c.generator_kwargs.norm = "instance"  # "instance" | "none".
  c.generator_kwargs.dropout = 0.0  # Dropout in residual blocks (release default: off).

  # --- discriminators (netD: D_A and D_B) -----------------------------------
  c.discriminator_kwargs.norm = "instance"  # "instance" | "none".
  c.discriminator_kwargs.padding_mode = "zeros"  # CycleGAN pads D with zeros.

  # --- objective ------------------------------------------------------------
  c.gan_mode = "lsgan"  # The release's.
  c.lambda_cycle = 10.0  # Weight of each cycle-consistency L1 (A->B->A and B->A->B).
  c.lambda_identity = 0.5  # Identity L1 weight as a fraction of lambda_cycle (0: off).
  c.pool_size = 50  # Generated images remembered per discriminator (0: no history).

  # --- optimisation ---------------------------------------------------------
  c.lr_constant_steps = 100_000  # Steps at the full learning rate ...
  c.lr_decay_steps = 100_000  # ... then linearly to zero over this many steps.
  c.total_steps = 200_000  # Steps to train (normally constant + decay).
  c.ema_decay = 0.999  # Per-step EMA of both generators (used for samples and predict).
  # Held-out scores of G_AB at every checkpoint (experiments/base.py); they need a
  # data source with A/B pairs (toycats): 0 for "folders".
  c.eval_every = 5000
  c.keep_best = "eval/lpips"  # best/: the step whose A->B outputs look closest to B.
  return c


def cpu(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """64x64, resnet_6blocks with ngf/ndf 32, batch 1, 5k steps: a CPU run."""
  c.image_size = 64
  c.generator = "resnet_6blocks"
  c.generator_kwargs.base_features = 32
  c.discriminator_kwargs.base_features = 32
  c.lr_constant_steps = 2500
  c.lr_decay_steps = 2500
  c.total_steps = 5000
  c.ema_decay = 0.98
  c.log_every = 50
  c.checkpoint_every = 500
  c.sample_every = 500
  c.eval_every = 500  # At every checkpoint.
  return c


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Seconds-scale model for tests: 32x32, ngf/ndf 4, one residual block,
  two-layer PatchGAN."""
  c.image_size = 32
  c.batch_size = 2
  c.data.num_train = 16
  c.data.num_eval = 4
  c.generator = "resnet_6blocks"
  c.generator_kwargs.base_features = 4
  c.generator_kwargs.n_blocks = 1  # Overrides resnet_6blocks' six residual blocks.
  c.discriminator_kwargs.base_features = 4
  c.discriminator_kwargs.n_layers = 2
  c.pool_size = 3
  c.lr = 1e-3
  c.lr_constant_steps = 2
  c.lr_decay_steps = 2
  c.total_steps = 4
  c.ema_decay = 0.9
  c.log_every = 2
  c.checkpoint_every = 2
  c.keep_checkpoints = 5
  c.sample_every = 2
  c.num_samples = 2
  c.eval_every = 0  # No validation (a test turns it on).
  c.keep_best = ""
  c.fast_compile = True  # Seconds of work per run: compiling is most of it.
  return c


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = base_config()
  if variant == "cpu":
    c = cpu(c)
  elif variant == "tiny":
    c = tiny(c)
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; expected 'cpu' or 'tiny'")
  c.lock()
  return c
