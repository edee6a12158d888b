"""Running the project's command-line tools in subprocesses, as users do:
one CPU device, and the same per-run compilation cache as the test process
(tests/conftest.py), so identical programs compile once between them."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

# The tiny toy-cats run several test modules share (see conftest.tiny_run).
TINY = ["--config=experiments/toycats.py:tiny", "--config.total_steps=40",
        "--config.checkpoint_every=10"]


def cli_env() -> dict[str, str]:
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # one CPU device, like a plain run
  env["JAX_PLATFORMS"] = "cpu"
  env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "true"
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
  return env


def run_train(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
  """`python run_train.py ARGS` in the repository root."""
  return subprocess.run([sys.executable, "run_train.py", *args], cwd=REPO, env=cli_env(),
                        capture_output=True, text=True, timeout=timeout)


def run_module(module: str, args: list[str], timeout: float = 600
               ) -> subprocess.CompletedProcess:
  """`python -m MODULE ARGS` in the repository root."""
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=cli_env(),
                        capture_output=True, text=True, timeout=timeout)
