r"""Turns PyTorch checkpoints of the original releases into a run directory
that `predict`, `evaluate` and `export` use like a trained one.

  # TransPix2Pix (the release's EMA generator, discriminator and CosFace encoder)
  python -m tp2p_jax.cli.import_torch --family=transpix2pix --generator=EMA_gen_iter_400000.pth \
      --discriminator=EMA_disc_iter_400000.pth --style_encoder=STYLE.pth --workdir=runs/release
  python -m tp2p_jax.cli.predict --workdir=runs/release --input=sketch.png --output=out/ \
      --style_image=photo.jpg

  # pix2pix (junyanz; unet_256, unet_128, resnet_9blocks or resnet_6blocks, read off the file)
  python -m tp2p_jax.cli.import_torch --family=pix2pix --generator=latest_net_G.pth \
      --discriminator=latest_net_D.pth --workdir=runs/facades
  # pix2pixHD (NVIDIA; global generator or local enhancer, multi-scale discriminator)
  python -m tp2p_jax.cli.import_torch --family=pix2pixhd --generator=latest_net_G.pth \
      --discriminator=latest_net_D.pth --workdir=runs/hd --config.image_size=1024
  # CycleGAN (junyanz; netG_A: A -> B, netG_B: B -> A, netD_A judges B, netD_B judges A)
  python -m tp2p_jax.cli.import_torch --family=cyclegan --generator=latest_net_G_A.pth \
      --generator_b=latest_net_G_B.pth --discriminator=latest_net_D_A.pth \
      --discriminator_b=latest_net_D_B.pth --workdir=runs/horse2zebra

The weights are converted by `tp2p_jax.interop.torch_weights.convert` (no
torch needed; the file's pickle is read through a restricted unpickler).
The run's config starts from the family's experiment config (`--config`,
default the config named after the family; `--config.FIELD=VALUE` overrides any
field) with its generator, discriminator and style-encoder fields replaced
by those of the imported networks. One checkpoint is written in the
trainer's format: the imported generator as both the trained and the EMA
weights (the release's EMA_gen file is the EMA; junyanz's and NVIDIA's
trainers keep none), its BatchNorm statistics, the discriminator(s),
fresh optimiser states, at step 0 or the N of an `iter_N` file name
(`--step` overrides). A network not given is initialised from the config,
as a fresh run would, and the report says so.

TransPix2Pix: the release ships no class-average style embeddings, so the
imported run styles by a reference photo (`predict --style_image`, through
the imported encoder). `--style`, `--style_mix`, `--grid` and `evaluate`
need training data: import with `--config.data.data_dir=DATASET` (a dataset
from `python -m tp2p_jax.cli.prepare` with the encoder's classes). Without
`--style_encoder` the generator takes style embeddings only (`export`, or
`TrainedRun.predictor.generate(sketches, embeddings)`).

Options the tensors do not record: `--transformer_heads` and
`--attention_layout` (TransPix2Pix generator), `--no_dropout` (U-Net
generators trained without dropout), `--netG` (the generator kind, when
reading it off the file is not wanted).

Refused with one line (exit status 2): a missing or unreadable file (a FIFO
or device included, never opened), a file that is not the named network,
networks that do not fit together, an existing non-empty `--workdir`
(unless `--overwrite`, which replaces a previous run directory only), and
with `--overwrite` an input file inside that directory.
"""
from __future__ import annotations

import sys
from typing import Sequence

from absl import flags
from ml_collections import config_flags

from tp2p_jax.cli import command
from tp2p_jax.interop.mapping import WeightImportError
from tp2p_jax.interop.pth_reader import CheckpointFormatError
from tp2p_jax.interop.run_import import (FAMILIES, ImportRunError, default_config_path,
                                         import_run, report)


def _peek(argv: Sequence[str], name: str) -> str | None:
  """The value of --name in argv (before parsing: it picks the default config)."""
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _define_flags(argv: Sequence[str]) -> flags.FlagValues:
  """Flags in a registry of their own, so that `main` can run repeatedly in
  one process (tests) beside other tools' flags."""
  fv = flags.FlagValues()
  flags.DEFINE_enum("family", None, sorted(FAMILIES), "Which release the files come from.",
                    flag_values=fv)
  flags.DEFINE_string("generator", None, "Generator .pth (TransPix2Pix: EMA_gen_iter_N.pth; "
                      "junyanz/NVIDIA: latest_net_G.pth; CycleGAN: latest_net_G_A.pth).",
                      flag_values=fv)
  flags.DEFINE_string("discriminator", None, "Discriminator .pth (EMA_disc_iter_N.pth, "
                      "latest_net_D.pth; CycleGAN: latest_net_D_A.pth). Default: initialised.",
                      flag_values=fv)
  flags.DEFINE_string("style_encoder", None, "TransPix2Pix: the CosFace style encoder's .pth.",
                      flag_values=fv)
  flags.DEFINE_string("generator_b", None, "CycleGAN: latest_net_G_B.pth (B -> A).",
                      flag_values=fv)
  flags.DEFINE_string("discriminator_b", None, "CycleGAN: latest_net_D_B.pth.", flag_values=fv)
  flags.DEFINE_string("workdir", None, "Run directory to write.", flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace a previous run in --workdir.", flag_values=fv)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: N of iter_N in the generator's "
                       "file name, else 0).", flag_values=fv)
  flags.DEFINE_string("netG", None, "Generator kind (default: read off the file): "
                      + "; ".join(f"{f}: {', '.join(v.generators)}" for f, v in FAMILIES.items()),
                      flag_values=fv)
  flags.DEFINE_integer("transformer_heads", 8, "TransPix2Pix: heads of the encoder "
                       "transformers (8 in the release; not in the tensors).", flag_values=fv)
  flags.DEFINE_enum("attention_layout", "release", ["release", "spatial"], "TransPix2Pix: "
                    "decoder self-attention layout (release: the release's function).",
                    flag_values=fv)
  flags.DEFINE_bool("no_dropout", False, "U-Net generators trained with junyanz's "
                    "--no_dropout.", flag_values=fv)
  family = _peek(argv, "family")
  default = default_config_path(family) if family in FAMILIES else None
  config_flags.DEFINE_config_file(
      "config", default, "Experiment config the run's config starts from (default: "
      "the config named after the family); fields can be overridden with --config.FIELD=VALUE.",
      flag_values=fv, lock_config=True, sys_argv=list(argv))
  return fv


_WEIGHT_FLAGS = ("generator", "discriminator", "style_encoder", "generator_b",
                 "discriminator_b")


def _check_inputs(fv: flags.FlagValues) -> None:
  """The weight files and --config against --workdir, before anything is
  converted: none may be a FIFO or device (its open would block), and
  none may lie inside the run directory that --overwrite replaces."""
  from tp2p_jax.cli import output_paths
  workdir = output_paths.identity(fv.workdir)
  given = [(name, fv[name].value) for name in _WEIGHT_FLAGS if fv[name].value]
  config_file = config_flags.get_config_filename(fv["config"])
  if config_file:
    given.append(("config", config_file.split(":", 1)[0]))
  for name, path in given:
    output_paths.regular_input(path, name)
    if fv.overwrite and output_paths.identity(path).startswith(workdir + "/"):
      raise command.UsageError(f"--{name}={path}: lies inside --workdir={fv.workdir}, which "
                               "--overwrite replaces; move it out of the run directory first")


def _import(fv: flags.FlagValues) -> int:
  _check_inputs(fv)
  result = import_run(
      fv.family, fv.workdir, fv.generator, discriminator=fv.discriminator,
      style_encoder=fv.style_encoder, generator_b=fv.generator_b,
      discriminator_b=fv.discriminator_b, config=fv["config"].value,
      generator_kind=fv.netG, step=fv.step, overwrite=fv.overwrite,
      transformer_heads=fv.transformer_heads, attention_layout=fv.attention_layout,
      use_dropout=not fv.no_dropout)
  print("\n".join(report(result)))
  return 0


def main(argv: Sequence[str]) -> int:
  """Runs the CLI on argv (argv[0] is the program name); returns the exit
  status: 0 written, 2 refused (one line on stderr)."""
  from tp2p_jax.core.run_dir import RunError
  return command.run(argv, __doc__, _define_flags, _import,
                     required=("family", "generator", "workdir"),
                     usage_errors=(ImportRunError, WeightImportError, CheckpointFormatError,
                                   RunError))


if __name__ == "__main__":
  sys.exit(main(sys.argv))
