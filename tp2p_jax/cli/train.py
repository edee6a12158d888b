r"""Trains a method of the tp2p_jax family (`config.method` names it).

  python run_train.py                      # the toy-cats main job (experiments/toycats.py)
  tp2p train --config=toycats:tiny --config.total_steps=40 --workdir=/tmp/w
  tp2p train --config=transpix2pix --workdir=/tmp/w --dry_run
  tp2p train --config=experiments/pix2pix.py:cpu   # a config file by path
  python run_train.py --coordinator_address=host0:12345 --num_processes=2 --process_id=I ...

(`tp2p train ...` and `python -m tp2p_jax.cli.train ...` are the same command.)
Restarting the same command with the same workdir resumes from the latest
checkpoint; SIGTERM saves a checkpoint and exits 0. A non-finite loss stops
the run (exit 1) at the last good checkpoint; a usage error (a config
field that does not exist or is out of range, a workdir that is a file or
not writable, one that another training process holds, or one whose run
has another config) is one line on stderr and exit 2, before anything is
written. A damaged latest checkpoint is moved to `checkpoints.damaged/` and
the run resumes from the newest one that restores; a save that fails (a
full disk) removes its partial files and exits 1, earlier checkpoints
intact.

Several processes (hosts) train one run: start the same command on each,
with --coordinator_address=HOST:PORT (process 0's host and a free port),
--num_processes=N and --process_id=I (or the environment variables
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), or with
--jax_distributed where JAX detects the job (TPU pods, SLURM, Kubernetes).
A process that cannot reach the coordinator within --initialization_timeout
seconds exits 2 with one line. A SIGTERM to any process stops them all at
the same checkpoint (exit 0), and a restart resumes every host's input.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags

from tp2p_jax.cli import command
from tp2p_jax.core import config_files

DEFAULT_CONFIG = "toycats"


def _define_flags(argv: Sequence[str]) -> flags.FlagValues:
  """Flags in a registry of their own, so `main` can run repeatedly in one
  process (tests) beside other tools' flags."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(
      "config", config_files.resolve(DEFAULT_CONFIG),
      "Experiment config: a name (NAME[:VARIANT], e.g. toycats:tiny; the files of "
      "experiments/) or a file (PATH[:VARIANT]); fields can be overridden with "
      "--config.FIELD=VALUE.", flag_values=fv, lock_config=True, sys_argv=list(argv))
  flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, samples). "
                      "Default: runs/<config name>.", flag_values=fv)
  flags.DEFINE_bool("dry_run", False, "Print the resolved config and parameter counts (last "
                    "line, JSON) and exit.", flag_values=fv)
  command.define_job_flags(fv, "one run")
  return fv


def default_workdir(config_argument: str) -> str:
  """runs/<config file stem>[-<variant>], e.g. runs/toycats, runs/transpix2pix-cpu."""
  path, _, variant = config_argument.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("runs", f"{name}-{variant}" if variant else name)


def _train(fv: flags.FlagValues) -> int:
  from tp2p_jax import methods, training
  config = command.loaded_config(fv)
  workdir = fv.workdir or default_workdir(fv["config"].serialize().split("=", 1)[-1])
  try:
    methods.get(config.method)
    training.check_config(config)
  except ValueError as e:  # RunError is one
    raise command.UsageError(f"--config: {e}" if "--config" not in str(e) else str(e)) from None
  if fv.dry_run:
    print(config)
    print(json.dumps({"workdir": workdir, "method": config.method,
                      "params": training.param_counts(config)}))
    return 0
  command.join_job(fv)
  return train(config, workdir)


def train(config: ml_collections.ConfigDict, workdir: str) -> int:
  """`training.train_and_evaluate` with the command line's error handling:
  returns the exit status, having printed one line for each kind of
  failure (2: the command or its workdir; 1: the run's own state)."""
  from tp2p_jax import training
  from tp2p_jax.core import loop, mesh
  from tp2p_jax.core.checkpoints import CheckpointError
  from tp2p_jax.core.run_dir import RunError
  from tp2p_jax.core.workdir_lock import WorkdirBusyError
  try:
    return training.train_and_evaluate(config, workdir)
  except (RunError, WorkdirBusyError, mesh.BatchSizeError) as e:
    return command.fail(str(e), 2)
  except (loop.NonFiniteLossError, CheckpointError) as e:
    return command.fail(str(e), 1)
  except OSError as e:  # e.g. a full disk while writing metrics or samples
    return command.fail_file_error(e, workdir)


def main(argv: Sequence[str]) -> int:
  """Runs the command on argv (argv[0] is the program name); returns the exit
  status."""
  return command.run(argv, __doc__, _define_flags, _train)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
