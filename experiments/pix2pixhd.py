r"""pix2pixHD (Wang et al. 2018) on the TransPix2Pix trainer: the
coarse-to-fine generator (global generator G1 inside one local enhancer
G2), three PatchGANs at full, 1/2 and 1/4 scale, LSGAN + 10 * discriminator
feature matching (+ the VGG16 feature loss), instance norm. No style input.

Staged training, as the release:
  1. G1 alone at half resolution (variant `global`):
       python run_train.py --config=experiments/pix2pixhd.py:global --workdir=runs/hd-global
  2. G1 + G2 at full resolution with G1 frozen for `fix_global_steps`
     steps (pix2pixHD's niter_fix_global; -1: for the whole run), 3. then
     everything jointly (the same run, after those steps):
       python run_train.py --config=experiments/pix2pixhd.py --workdir=runs/hd \
           --config.init_from=runs/hd-global --config.fix_global_steps=10000
     `init_from` (the release's --load_pretrain) starts this run's G1 from
     the stage-1 run's latest checkpoint: its trained G1 into the trained
     copy, its EMA G1 into the EMA copy (the same weights with pix2pixHD's
     ema_decay = 0); G1's output conv, unused inside the enhancer, is
     dropped. Only a run starting from scratch loads it; a resumed run
     continues from its own checkpoint. G1's parameters are frozen by an
     optax mask (their updates are exactly zero), so they stay
     bit-identical to stage 1's while G2 learns.
Data: procedural toy cats by default; `--config.data.source=prepared
--config.data.data_dir=DATASET_DIR` for a prepared dataset.
Inspect: python run_train.py --config=experiments/pix2pixhd.py --workdir=/tmp/hd --dry_run

Variants (`--config=experiments/pix2pixhd.py:VARIANT`):
  global: stage 1, G1 alone at 256x256.
  tiny: seconds-scale model with one enhancer for tests (G1 frozen for 2 steps).

Every field not set here is documented in experiments/pix2pix.py.
"""
from __future__ import annotations

import ml_collections

from tp2p_jax.experiments import pix2pix


def base_config() -> ml_collections.ConfigDict:
  """pix2pixHD's local-enhancer stage, unlocked for variants to edit."""
  c = pix2pix.base_config()
  c.image_size = 512  # G2's resolution; G1 works at 256.
  c.batch_size = 1  # pix2pixHD trains with batch 1.
  c.data.augment = "flip"  # pix2pixHD mirrors at random and does not crop.

  c.generator = "pix2pixhd"  # G1 + local enhancers (tp2p_jax/models/pix2pixhd.py).
  c.generator_kwargs = ml_collections.ConfigDict()
  c.generator_kwargs.ngf_global = 64  # G1's first-layer channels; enhancer n: 64 / 2**n.
  c.generator_kwargs.n_downsample_global = 4  # G1's stride-2 convs.
  c.generator_kwargs.n_blocks_global = 9  # G1's residual blocks.
  c.generator_kwargs.n_local_enhancers = 1  # G2s, each doubling the resolution (0: G1 alone).
  c.generator_kwargs.n_blocks_local = 3  # Residual blocks per G2.
  c.generator_kwargs.norm = "instance"  # Instance norm without affine parameters.
  # NVIDIA's test.py never calls eval() (and its generator has no dropout): with
  # instance norm the same as "eval"; with --norm batch, per-image statistics.
  c.test_mode = "train"

  c.discriminator = "multiscale_patchgan"  # num_d PatchGANs on 1, 1/2, 1/4 ... scale.
  c.num_d = 3  # Scales.
  c.discriminator_kwargs = ml_collections.ConfigDict()
  c.discriminator_kwargs.base_features = 64  # ndf of each PatchGAN.
  c.discriminator_kwargs.n_layers = 3  # Stride-2 convs of each PatchGAN.
  c.discriminator_kwargs.norm = "instance"  # Instance norm (convs keep their biases).
  c.discriminator_kwargs.padding_mode = "zeros"  # Zero padding ...
  c.discriminator_kwargs.pad = 2  # ... of 2 pixels, as the release.

  c.gan_mode = "lsgan"  # Least-squares GAN, summed over the scales.
  c.lambda_l1 = 0.0  # pix2pixHD has no pixel L1 term.
  c.lambda_feat = 10.0  # D feature matching (per-layer L1, 4 / (n_layers + 1) / num_d).
  c.lambda_perceptual = 1.0  # VGG16 relu2_2 MSE (the release: VGG19 L1 on 5 layers; 0: off).
  c.fix_global_steps = 0  # G1 frozen for this many steps (-1: always; 0: trained throughout).
  c.init_from = ""  # Stage-1 (:global) run dir whose latest G1 starts a fresh run ("": off).
  c.total_steps = 200_000  # Training steps.
  return c


def global_stage(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Stage 1: G1 alone at half resolution."""
  c.image_size //= 2
  c.generator_kwargs.n_local_enhancers = 0
  return c


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a pix2pixHD config to a seconds-scale test model."""
  c.image_size = 32
  c.batch_size = 4
  c.data.num_train = 16
  c.data.num_eval = 4
  c.generator_kwargs.ngf_global = 8
  c.generator_kwargs.n_downsample_global = 2
  c.generator_kwargs.n_blocks_global = 1
  c.generator_kwargs.n_blocks_local = 1
  c.num_d = 2
  c.discriminator_kwargs.base_features = 8
  c.discriminator_kwargs.n_layers = 2
  c.lambda_perceptual = 0.0
  c.fix_global_steps = 2
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
  if variant == "global":
    c = global_stage(c)
  elif variant == "tiny":
    c = tiny(c)
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; expected 'global' or 'tiny'")
  c.lock()
  return c
