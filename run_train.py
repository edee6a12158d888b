r"""Trains a model of the tp2p_jax family.

  python run_train.py                      # the toy-cats main job (experiments/toycats.py)
  python run_train.py --config=experiments/transpix2pix.py --workdir=runs/tp2p
  python run_train.py --config=experiments/toycats.py:tiny --config.total_steps=40 --workdir=/tmp/w
  python run_train.py --config=experiments/transpix2pix.py --workdir=/tmp/w --dry_run

Restarting the same command with the same workdir resumes from the latest
checkpoint; SIGTERM saves a checkpoint and exits.
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from tp2p_jax.console import quiet_libraries
from tp2p_jax.xla_flags import set_default_xla_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "experiments", "toycats.py"),
    "Experiment config file (optionally FILE:VARIANT); fields can be overridden "
    "with --config.FIELD=VALUE.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (checkpoints, metrics, samples). Default: runs/<config name>.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Print the resolved config and parameter counts (last line, JSON) and exit.")
_DISTRIBUTED = flags.DEFINE_bool(
    "jax_distributed", False, "Call jax.distributed.initialize() (multi-host runs).")


def _default_workdir() -> str:
  """runs/<config file stem>[-<variant>], e.g. runs/toycats, runs/transpix2pix-cpu."""
  path = config_flags.get_config_filename(flags.FLAGS["config"])
  name = os.path.splitext(os.path.basename(path))[0]
  argument = flags.FLAGS["config"].serialize().split("=", 1)[-1]
  variant = argument.split(":", 1)[1] if ":" in argument else ""
  return os.path.join("runs", f"{name}-{variant}" if variant else name)


def main(argv: list[str]) -> None:
  set_default_xla_flags()  # before JAX starts its backends
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  quiet_libraries()
  config = _CONFIG.value
  workdir = _WORKDIR.value or _default_workdir()
  if _DRY_RUN.value:
    from tp2p_jax.train.builders import param_counts
    print(config)
    print(json.dumps({"workdir": workdir, "params": param_counts(config)}))
    return
  from tp2p_jax.train import parallel, trainer
  parallel.maybe_initialize_distributed(_DISTRIBUTED.value)
  try:
    status = trainer.train_and_evaluate(config, workdir)
  except trainer.NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    status = 1
  sys.exit(status)


if __name__ == "__main__":
  app.run(main)
