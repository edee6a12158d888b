"""XLA flags that the command-line entry points set before JAX starts.

XLA reads `XLA_FLAGS` once, when the first backend is created, so the entry
points (run_train.py, the CLIs, the benchmark) call `set_default_xla_flags()`
first thing in `main`. A flag the user already gave in `XLA_FLAGS` is left
exactly as given.

Why each flag:
  --xla_cpu_experimental_ynn_fusion_type=-individual_convolution
    jaxlib 0.10's CPU backend routes convolutions to YNNPACK by default,
    which runs our 4x4 convolutions and their kernel gradients at 6-100
    GFLOP/s; its Eigen convolutions run the same ones at 180-480 GFLOP/s
    (measured on 2 AMD EPYC cores; benchmarks/PERFORMANCE.md). The leading
    "-" removes convolutions from the default YNNPACK set and keeps the rest
    (matrix products, where YNNPACK is the faster, and reductions). The flag
    only concerns the CPU backend: GPU and TPU runs ignore it.
"""
from __future__ import annotations

import logging
import os
from typing import MutableMapping

DEFAULT_XLA_FLAGS: tuple[str, ...] = (
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
)

_log = logging.getLogger(__name__)


def _flag_name(flag: str) -> str:
  return flag.lstrip("-").split("=", 1)[0]


def merged_xla_flags(current: str, defaults: tuple[str, ...] = DEFAULT_XLA_FLAGS) -> str:
  """`current` (an XLA_FLAGS value) plus every default whose flag name it
  does not already set; the user's own settings always win."""
  given = {_flag_name(f) for f in current.split()}
  extra = [f for f in defaults if _flag_name(f) not in given]
  return " ".join([current.strip(), *extra]).strip()


def _backends_started() -> bool:
  try:
    from jax._src import xla_bridge  # private; absent in some versions
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return False


def set_default_xla_flags(environ: MutableMapping[str, str] | None = None) -> str:
  """Adds `DEFAULT_XLA_FLAGS` to `environ["XLA_FLAGS"]` (default: the
  process environment) and returns the new value. Call before the first JAX
  computation; afterwards it logs a warning, since XLA has already read the
  flags."""
  environ = os.environ if environ is None else environ
  value = merged_xla_flags(environ.get("XLA_FLAGS", ""))
  environ["XLA_FLAGS"] = value
  if environ is os.environ and _backends_started():
    _log.warning("set_default_xla_flags() called after JAX started its backends; "
                 "XLA_FLAGS=%r takes effect only in new processes", value)
  return value
