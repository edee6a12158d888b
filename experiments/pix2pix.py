r"""pix2pix (Isola et al. 2017) on the TransPix2Pix trainer: U-Net generator
`unet_256`, conditional 70x70 PatchGAN, cGAN + 100 * L1, Adam 2e-4
(0.5, 0.999), random jitter (resize 286, crop 256, mirror), BatchNorm,
dropout 0.5 in three decoder blocks. No style encoder and no style input:
one training stage.

Run (procedural toy cats, sketch -> photo, as experiments/toycats.py):
  python run_train.py --config=experiments/pix2pix.py --workdir=runs/pix2pix
On a dataset prepared by `python -m tp2p_jax.data.prepare` (see README):
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
`builders.build_gan(config).generate(state, real_a)`.
"""
from __future__ import annotations

import ml_collections

from experiments.transpix2pix import STYLE_NAMES


def base_config() -> ml_collections.ConfigDict:
  """The pix2pix reference configuration, unlocked for variants to edit."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds parameters, dropout and the data order.
  c.image_size = 256  # Height and width of real_a (sketch) and real_b (photo).
  c.batch_size = 1  # Global batch; pix2pix trains with 1 (BatchNorm then acts per image).
  c.dtype = "float32"  # Compute dtype ("bfloat16" on GPU/TPU); params stay float32.

  # --- data -----------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  c.data.source = "toycats"  # "toycats" (procedural, no download) | "prepared".
  c.data.data_dir = ""  # prepared: the --data_dir given to tp2p_jax.data.prepare.
  c.data.num_train = 20000  # toycats: number of distinct training examples.
  c.data.num_eval = 200  # toycats: held-out examples (a disjoint seed range).
  c.data.body_probability = 0.5  # toycats: chance a cat is drawn with its body.
  c.data.background = "varied"  # toycats: "varied" (patterned, coloured) | "studio" (pale).
  c.data.augment = "jitter"  # Resize to 286/256 of the size, random crop back, mirror.
  c.data.worker_count = 0  # grain worker processes (0: load in the main process).
  c.data.style_names = STYLE_NAMES  # Label names (for evaluation; pix2pix trains without).

  # --- generator (netG) -----------------------------------------------------
  c.generator = "unet_256"  # "unet_256" | "unet_128" | "unet" (+ generator_kwargs.num_downs).
  c.generator_kwargs = ml_collections.ConfigDict()
  c.generator_kwargs.ngf = 64  # Channels of the outermost conv (8 * ngf at most).
  c.generator_kwargs.norm = "batch"  # "batch" | "instance" (no affine, convs with bias).
  c.generator_kwargs.use_dropout = True  # Dropout 0.5 in the decoder blocks after the innermost.
  c.generator_kwargs.norm_scale_mean = 1.0  # BatchNorm scale init N(this, 0.02), as pix2pix.

  # --- discriminator (netD) -------------------------------------------------
  c.discriminator = "patchgan"  # pix2pix's `basic` D: the conditional 70x70 PatchGAN.
  c.num_d = 3  # Scales when discriminator = "multiscale_patchgan".
  c.discriminator_kwargs = ml_collections.ConfigDict()
  c.discriminator_kwargs.base_features = 64  # ndf.
  c.discriminator_kwargs.n_layers = 3  # 3: the 70x70 PatchGAN (pix2pix `n_layers_D`).
  c.discriminator_kwargs.norm = "batch"  # "batch" | "instance" | "none".
  c.discriminator_kwargs.padding_mode = "zeros"  # pix2pix pads with zeros.
  c.discriminator_kwargs.norm_scale_mean = 1.0  # BatchNorm scale init N(this, 0.02).

  # --- objective ------------------------------------------------------------
  c.gan_mode = "vanilla"  # "vanilla" (BCE, pix2pix) | "lsgan" | "hinge".
  c.lambda_l1 = 100.0  # Weight of L1(fake_b, real_b).
  c.lambda_perceptual = 0.0  # Weight of a VGG16 feature MSE (pix2pix has none).
  c.perceptual_layer = "relu2_2"  # VGG16 activation compared when the weight is > 0.
  c.lambda_feat = 0.0  # Weight of D feature matching (pix2pixHD's term; off in pix2pix).

  # --- optimisation ---------------------------------------------------------
  c.lr = 2e-4  # Adam learning rate for netG and netD.
  c.b1 = 0.5  # Adam beta1.
  c.b2 = 0.999  # Adam beta2.
  c.lr_milestones = ()  # Steps where lr is multiplied by lr_decay_factor (none: constant).
  c.lr_decay_factor = 0.5  # Factor applied at each milestone.
  c.weight_decay = 0.0  # L2 on conv kernels (pix2pix: none).
  c.g_clip_norm = 0.0  # netG gradient global-norm clip (pix2pix: none; 0 is off).
  c.ema_decay = 0.0  # pix2pix keeps no average: 0 makes the "EMA" the trained nets.
  c.total_steps = 200_000  # Training steps (pix2pix: 200 epochs; facades = 80k at batch 1).

  # --- bookkeeping ----------------------------------------------------------
  c.log_every = 100  # Steps between metrics.jsonl / TensorBoard rows (and NaN checks).
  c.checkpoint_every = 5000  # Steps between checkpoints (and always at the end).
  c.keep_checkpoints = 3  # Checkpoints kept.
  c.sample_every = 5000  # Steps between sample grids (and at the end).
  c.num_samples = 8  # Held-out examples in each sample grid.
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
