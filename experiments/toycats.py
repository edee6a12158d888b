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
  c = transpix2pix.slim_cpu(transpix2pix.base_config())
  c.data.source = "toycats"
  c.data.num_train = 20000
  c.data.num_eval = 64
  c.batch_size = 4  # The reference batch.
  if variant == "tiny":
    c = transpix2pix.tiny(c)
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; expected 'tiny'")
  c.lock()
  return c
