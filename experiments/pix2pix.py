r"""pix2pix (Isola et al. 2017) on the TransPix2Pix trainer: U-Net generator
`unet_256`, conditional 70x70 PatchGAN, cGAN + 100 * L1, Adam 2e-4
(0.5, 0.999), random jitter (resize 286, crop 256, mirror), BatchNorm,
dropout 0.5 in three decoder blocks. No style encoder and no style input:
one training stage.

Run (procedural toy cats, sketch -> photo, as experiments/toycats.py):
  python run_train.py --config=experiments/pix2pix.py --workdir=runs/pix2pix
On a dataset prepared by `python -m tp2p_jax.cli.prepare` (see README):
  python run_train.py --config=experiments/pix2pix.py --workdir=runs/pix2pix \
      --config.data.source=prepared --config.data.data_dir=DATASET_DIR
Inspect (resolved config; last line JSON with generator 54,413,955 and
discriminator 2,768,705 parameters, the release's counts):
  python run_train.py --config=experiments/pix2pix.py --workdir=/tmp/p2p --dry_run

Variants (`--config=experiments/pix2pix.py:VARIANT`):
  cpu: 64x64 toy cats, U-Net with 6 downsamplings and ngf 32, batch 4,
    2,500 steps: the toy-cats TransPix2Pix job's budget.
  tiny: seconds-scale model for tests.

The run directory and checkpoints are the TransPix2Pix ones (TrainState with
`style_variables = {}`); generate with the EMA generator as
`tp2p_jax.methods.paired_gan.build(config).generate(state, real_a)`.
"""
from __future__ import annotations

import ml_collections

from tp2p_jax.experiments.base import paired_gan_config


def base_config() -> ml_collections.ConfigDict:
  """The pix2pix reference configuration, unlocked for variants to edit.
  Fields not set here are documented in experiments/base.py."""
  c = paired_gan_config()
  c.batch_size = 1  # pix2pix trains with 1 (BatchNorm then acts per image).
  c.data.source = "toycats"  # Procedural, no download; "prepared" for real data.
  c.data.augment = "jitter"  # Resize to 286/256 of the size, random crop back, mirror.

  # --- generator (netG) -----------------------------------------------------
  c.generator = "unet_256"  # "unet_256" | "unet_128" | "unet" (+ generator_kwargs.num_downs).
  c.generator_kwargs.ngf = 64  # Channels of the outermost conv (8 * ngf at most).
  c.generator_kwargs.norm = "batch"  # "batch" | "instance" (no affine, convs with bias).
  c.generator_kwargs.use_dropout = True  # Dropout 0.5 in the decoder blocks after the innermost.
  c.generator_kwargs.norm_scale_mean = 1.0  # BatchNorm scale init N(this, 0.02), as pix2pix.
  # junyanz's test.py calls eval() only with --eval: by default each test image is
  # normalised with its own BatchNorm statistics and dropout stays on (pix2pix sec. 3.3).
  c.test_mode = "train"

  # --- discriminator (netD): pix2pix's `basic` D, the 70x70 PatchGAN ---------
  c.discriminator_kwargs.padding_mode = "zeros"  # pix2pix pads with zeros.
  c.discriminator_kwargs.norm_scale_mean = 1.0  # BatchNorm scale init N(this, 0.02).

  # --- objective and optimisation: pix2pix's ----------------------------------
  c.lambda_perceptual = 0.0  # pix2pix has no VGG16 feature loss.
  c.lr_milestones = ()  # Constant lr.
  c.weight_decay = 0.0  # No L2.
  c.g_clip_norm = 0.0  # No gradient clipping.
  c.ema_decay = 0.0  # pix2pix keeps no average: 0 makes the "EMA" the trained nets.
  c.total_steps = 200_000  # pix2pix: 200 epochs; facades = 80k at batch 1.
  c.eval_every = 5000  # Held-out scores at every checkpoint (experiments/base.py).
  c.keep_best = "eval/lpips"  # best/: the step whose outputs look closest to the targets.
  return c


def cpu(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """64x64 toy cats at the toy TransPix2Pix job's batch and budget."""
  c.image_size = 64
  c.batch_size = 4
  c.data.background = "studio"  # The toy TransPix2Pix job's data.
  c.generator = "unet"
  c.generator_kwargs.num_downs = 6
  c.generator_kwargs.ngf = 32
  c.discriminator_kwargs.base_features = 32
  c.total_steps = 2500
  c.log_every = 50
  c.checkpoint_every = 500
  c.sample_every = 500
  c.num_samples = 9
  c.eval_every = 500  # At every checkpoint.
  return c


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a pix2pix config to a seconds-scale test model."""
  c.image_size = 32
  c.batch_size = 4
  c.data.num_train = 16
  c.data.num_eval = 4
  c.generator = "unet"
  c.generator_kwargs.num_downs = 5
  c.generator_kwargs.ngf = 8
  c.discriminator_kwargs.base_features = 8
  c.discriminator_kwargs.n_layers = 2
  c.lr = 1e-3
  c.total_steps = 4
  c.log_every = 2
  c.checkpoint_every = 2
  c.keep_checkpoints = 3
  c.sample_every = 2
  c.num_samples = 4
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
