"""Where the project keeps what it computes once per machine: converted
weights (`cache_dir()`) and XLA's compiled programs
(`enable_compilation_cache()`).

Both live under `$TP2P_JAX_CACHE` if set, else `$XDG_CACHE_HOME/tp2p_jax`,
else `~/.cache/tp2p_jax`. Compiled programs go to its `xla/` folder, so a
resumed run, a second `predict` on the same run and a rerun of the tests
load their programs instead of compiling them again (minutes on a CPU for
the reference model). `TP2P_JAX_COMPILATION_CACHE=DIR` moves that folder,
`TP2P_JAX_COMPILATION_CACHE=off` turns the cache off, and a
`JAX_COMPILATION_CACHE_DIR` the user set is JAX's own setting and wins
(so does `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` over the 1 s below
which a program is not stored).
"""
from __future__ import annotations

import logging
import os
import pathlib

log = logging.getLogger("tp2p_jax")

# Programs compiled faster than this are not worth a disk round trip.
MIN_COMPILE_SECONDS = 1.0
# Least recently used programs are evicted beyond this many bytes.
MAX_BYTES = 4 * 2**30
_OFF = frozenset({"0", "off", "false", "no", "none"})


def cache_dir() -> pathlib.Path:
  """The project's cache folder (see the module docstring)."""
  explicit = os.environ.get("TP2P_JAX_CACHE")
  if explicit:
    return pathlib.Path(explicit).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base).expanduser() / "tp2p_jax"


def compilation_cache_dir() -> pathlib.Path | None:
  """Where compiled programs are kept, or None when the cache is off."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return pathlib.Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
  setting = os.environ.get("TP2P_JAX_COMPILATION_CACHE", "").strip()
  if setting.lower() in _OFF:
    return None
  return pathlib.Path(setting).expanduser() if setting else cache_dir() / "xla"


def enable_compilation_cache() -> pathlib.Path | None:
  """Turns on JAX's persistent compilation cache at
  `compilation_cache_dir()` (call before the first compilation). Returns
  the folder, or None if it is off or cannot be created (then every run
  compiles afresh, as without it)."""
  path = compilation_cache_dir()
  if path is None:
    return None
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    log.warning("compilation cache off: cannot create %s (%s)", path, e.strerror or e)
    return None
  import jax
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", str(path))
    if not os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
      # JAX's own setting, when the user gives one, wins here too.
      jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  return path
