"""The fields every experiment config shares, documented once.

`base_config(method)` holds what every method's config has (seed, sizes,
data, networks, optimiser basics, bookkeeping; each experiment sets its own
`data.augment`, whose type differs: True or a named recipe); `paired_gan_config()` adds
the paired conditional GAN's objective and schedule at the TransPix2Pix
reference values. Each experiment file starts from one of them and
overrides what it changes, with a comment saying why.
"""
from __future__ import annotations

import ml_collections

from tp2p_jax.data.toycats import STYLE_NAMES


def base_config(method: str) -> ml_collections.ConfigDict:
  """Fields of every method's config, unlocked for experiments to edit."""
  c = ml_collections.ConfigDict()
  c.method = method  # Training method (tp2p_jax.methods): paired_gan | style_encoder | cyclegan.
  c.seed = 0  # Seeds parameters, dropout, pools and the data order.
  c.image_size = 256  # Height and width of the images of both domains.
  c.batch_size = 4  # Global batch (split over all devices and hosts).
  # Compute dtype; params stay float32. "bfloat16": bfloat16 on GPU/TPU, float32 on a
  # CPU backend (XLA's CPU backend has no bfloat16 convolutions; tp2p_jax/models/layers.py);
  # "bfloat16_everywhere": bfloat16 on every backend.
  c.dtype = "float32"
  # True: XLA compiles the run's programs with most optimisations off, so the
  # first step comes about twice as soon and each step runs slower (tiny
  # smoke and test configs; tp2p_jax.core.compile_effort). May change on resume.
  c.fast_compile = False
  # How predict, evaluate, serve and export run netG (tp2p_jax.methods.test_mode):
  # "eval" (running BatchNorm statistics, no dropout) or "train" (each image
  # normalised with its own statistics, seeded dropout on: the default of
  # pix2pix's and pix2pixHD's test.py). Their --test_mode flag overrides it.
  c.test_mode = "eval"

  # --- data -----------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  c.data.source = "prepared"  # "prepared" (tp2p_jax.cli.prepare) | "toycats" | "folders" (cyclegan).
  c.data.data_dir = ""  # prepared: the --data_dir given to prepare; folders: trainA/, trainB/.
  c.data.num_train = 20000  # toycats: number of distinct training examples.
  c.data.num_eval = 200  # toycats: held-out examples (a disjoint seed range).
  c.data.body_probability = 0.5  # toycats: chance a cat is drawn with its body.
  c.data.background = "varied"  # toycats: "varied" (patterned, coloured) | "studio" (pale).
  c.data.worker_count = 0  # grain worker processes (0: load in the main process).

  # --- networks -------------------------------------------------------------
  c.generator = "transpix2pix"  # Registry name in tp2p_jax.models.GENERATORS.
  c.generator_kwargs = ml_collections.ConfigDict()  # The generator's constructor arguments.
  c.discriminator = "patchgan"  # "patchgan" | "multiscale_patchgan" (pix2pixHD's, num_d scales).
  c.discriminator_kwargs = ml_collections.ConfigDict()
  c.discriminator_kwargs.base_features = 64  # ndf.
  c.discriminator_kwargs.n_layers = 3  # 3: the 70x70 PatchGAN.
  c.discriminator_kwargs.norm = "batch"  # "batch" | "instance" | "none".
  c.discriminator_kwargs.padding_mode = "reflect"  # The TransPix2Pix release pads by reflection.

  # --- objective and optimisation -------------------------------------------
  c.gan_mode = "vanilla"  # "vanilla" (BCE) | "lsgan" | "hinge".
  c.lr = 2e-4  # Adam learning rate for netG and netD.
  c.b1 = 0.5  # Adam beta1.
  c.b2 = 0.999  # Adam beta2.
  c.ema_decay = 0.98  # Per-step EMA of G (and D) (half-life ln 0.5 / ln 0.98 = 34.3 steps).
  c.total_steps = 400_000  # Training steps of the (last) stage.

  # --- bookkeeping ----------------------------------------------------------
  c.log_every = 100  # Steps between metrics.jsonl / TensorBoard rows (and NaN checks).
  c.checkpoint_every = 5000  # Steps between checkpoints (and always at the end).
  c.keep_checkpoints = 3  # Checkpoints kept per stage.
  c.sample_every = 5000  # Steps between sample grids (and at the end).
  c.num_samples = 8  # Held-out examples in each sample grid.

  # --- validation (docs/training.md, "Validation and the best checkpoint") -----
  # Steps between held-out scores of the EMA generator (eval/l1, eval/psnr, eval/ssim,
  # eval/lpips, ... in metrics.jsonl; also at the last step); 0: off. May change on resume.
  c.eval_every = 0
  c.eval_examples = 64  # The first N held-out pairs, the same at every validation.
  # A local Inception-v3 weights file (as evaluate's --inception_weights) adds eval/fid
  # and eval/kid; "": none. May change on resume.
  c.eval_inception_weights = ""
  # An eval/ metric whose best step is kept in best/ (e.g. "eval/lpips", lower is
  # better; tp2p_jax.core.best_checkpoint); needs eval_every. "": none. May change on resume.
  c.keep_best = ""
  return c


def paired_gan_config() -> ml_collections.ConfigDict:
  """`base_config("paired_gan")` with the paired GAN's objective and lr
  schedule, at the TransPix2Pix reference values."""
  c = base_config("paired_gan")
  c.data.style_names = STYLE_NAMES  # Style classes in label order (prepared: the dataset's).
  c.num_d = 3  # multiscale_patchgan: PatchGANs at 1, 1/2, 1/4 ... scale.
  c.discriminator_kwargs.norm_scale_mean = 0.0  # BatchNorm scale init N(this, 0.02); release: 0.
  c.lambda_l1 = 100.0  # Weight of L1(fake_b, real_b).
  c.lambda_perceptual = 1.0  # Weight of the VGG16 feature MSE (0: off).
  c.perceptual_layer = "relu2_2"  # VGG16 activation compared.
  c.lambda_feat = 0.0  # D feature matching (pix2pixHD: 10, with multiscale_patchgan; 0: off).
  c.lr_milestones = (100_000, 200_000, 300_000)  # Steps where lr is multiplied ...
  c.lr_decay_factor = 0.5  # ... by this.
  c.weight_decay = 1e-6  # L2 on conv/dense kernels (not biases, norms, SE, transformer).
  c.g_clip_norm = 1.0  # netG gradient clipped to this global norm (0: off).
  # Rematerialisation, memory for compute: "none" keeps every activation for
  # the backward pass; "blocks" recomputes G's encoder/decoder blocks and
  # transformer layers (pix2pixHD/ResNet: residual blocks; not the U-Net) and
  # VGG16's activations in it. Same parameters and function. May change on resume.
  c.remat = "none"
  return c
