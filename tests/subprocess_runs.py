"""Running the project's command-line tools in subprocesses, as users do:
one CPU device, and the same per-run compilation cache as the test process
(tests/conftest.py), so identical programs compile once between them."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]

# The tiny toy-cats run several test modules share (see conftest.tiny_run),
# validated on 4 held-out pairs at steps 20 and 40 with its best step kept.
TINY = ["--config=experiments/toycats.py:tiny", "--config.total_steps=40",
        "--config.checkpoint_every=10", "--config.eval_every=20", "--config.eval_examples=4",
        "--config.keep_best=eval/lpips"]


def cli_env(num_cpu_devices: int = 1) -> dict[str, str]:
  """The inherited environment on `num_cpu_devices` CPU devices (1: like a
  plain run), most XLA optimisations off (tiny programs: compile time
  dominates), sharing the test session's persistent compilation cache."""
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  if num_cpu_devices > 1:
    flags.append(f"--xla_force_host_platform_device_count={num_cpu_devices}")
  env["XLA_FLAGS"] = " ".join(flags)
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


def run_script(script: str, args: list[str], num_cpu_devices: int = 1, timeout: float = 600
               ) -> subprocess.CompletedProcess:
  """`python SCRIPT ARGS` (a path relative to the repository root) on
  `num_cpu_devices` simulated CPU devices."""
  return subprocess.run([sys.executable, script, *args], cwd=REPO,
                        env=cli_env(num_cpu_devices), capture_output=True, text=True,
                        timeout=timeout)


def private_copy(run: pathlib.Path, tmp_path_factory: Any, name: str) -> pathlib.Path:
  """A copy of the run directory `run` (e.g. the session's tiny run) under a
  fresh `name` folder, for module fixtures whose tests write into a run
  (class averages, eval/)."""
  copy = tmp_path_factory.mktemp(name) / "run"
  shutil.copytree(run, copy)
  return copy
