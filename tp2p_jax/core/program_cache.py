"""Compiled programs kept on disk under a key that needs no tracing.

JAX's persistent compilation cache (turned on by `tp2p_jax.core.caches`)
finds a program by its lowered module, so a warm start still traces the
Python code, lowers it and hashes the result before it can load anything
(a third of the tiny smoke run's warm start on a 2-core CPU). A
`ProgramCache` keys a program by what determines it before tracing:

  - the run's config: a run's `config.json` rebuilds its programs exactly
    (resuming relies on this), so the config and the code fix every
    closure a method's functions hold;
  - the source of the `tp2p_jax` package (any edit is a new key);
  - the versions of Python, jax, jaxlib, flax and optax, the backend and
    its devices, `XLA_FLAGS` and every JAX setting;
  - the program's name, its jit options (shardings, donation, XLA compile
    options such as `compile_effort`'s) and its arguments' tree structure,
    shapes, dtypes and shardings.

A hit loads the executable and skips tracing, lowering and compiling.
Loading is seconds for small programs; the reference train step's 33 MB
executable takes about a minute on a 2-core CPU, XLA's own loader being
the cost (benchmarks/PERFORMANCE.md, "Warm starts"). On a miss the program
is traced and lowered, and its executable is looked up by a digest of the
lowered module and the arguments' signature, so runs whose configs differ
only where the program does not look (a longer schedule, another log
period) share it; only then is it compiled, and stored under both keys.
(The module alone is not enough: jit leaves arguments the program never
reads out of it, so states that differ only there, e.g. a frozen part's
optimizer state, lower to the same module but call with another tree.)

Only freshly compiled executables are stored: on jaxlib 0.10's CPU backend
an executable that JAX loaded from its own persistent cache serialises
without its kernels (the copy fails when run). A program this cache stores
is therefore compiled with `FRESH_COMPILE`, an option that is part of
JAX's cache key but changes nothing in the program, so the first run that
stores it compiles it even when JAX's cache holds it (once per program).

Entries live in `<JAX's compilation cache folder>/tp2p_programs/`, so they
are on exactly when JAX's persistent cache is (`caches.py` says how to move
or disable it); least recently used entries beyond `MAX_BYTES` are removed.
An entry that fails to load (truncated, written by another build) is
removed and the program compiled again.

Loading an entry unpickles it, as JAX's own executable serialisation does:
the folder is created private (0700) and must stay writable only by its
owner.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import pathlib
import pickle
import sys
import threading
from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.experimental import serialize_executable

from tp2p_jax.core import atomic_files

log = logging.getLogger("tp2p_jax")

FOLDER = "tp2p_programs"
SUFFIX = ".program"
# Entries beyond this many bytes go, least recently used first.
MAX_BYTES = 2 * 2**30
# Bumped when the entry layout changes, so old entries are never read.
FORMAT = 2

# A compile option that changes nothing in the program but is part of JAX's
# cache key, so that a program this cache stores is compiled afresh rather
# than taken from JAX's caches (see the module docstring).
FRESH_COMPILE = {"xla_detailed_logging": False}

_PACKAGE = pathlib.Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def source_digest(package: pathlib.Path = _PACKAGE) -> str:
  """SHA-256 of every `.py` file under `package` (paths and contents)."""
  h = hashlib.sha256()
  for path in sorted(package.rglob("*.py")):
    h.update(path.relative_to(package).as_posix().encode() + b"\0")
    h.update(path.read_bytes() + b"\0")
  return h.hexdigest()


def _versions() -> dict[str, str]:
  import flax
  import jaxlib
  import optax
  return {"python": sys.version, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
          "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__}


def environment() -> dict[str, Any]:
  """What besides the code and the config decides a compiled program."""
  client = jax.devices()[0].client
  return {
      "format": FORMAT,
      "versions": _versions(),
      "backend": [client.platform, client.platform_version],
      "devices": [[d.id, d.device_kind, d.process_index] for d in jax.devices()],
      "process": [jax.process_index(), jax.process_count()],
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "jax_config": {k: repr(v) for k, v in sorted(jax.config.values.items())},
  }


_counts = threading.local()
_listening = threading.Lock()
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # fresh, or from JAX's cache
_XLA_CACHE_HIT = "/jax/compilation_cache/cache_hits"


def _count(event: str, *_: Any, **__: Any) -> None:
  if event in (_BACKEND_COMPILE, _XLA_CACHE_HIT):
    setattr(_counts, event, getattr(_counts, event, 0) + 1)


def _compile_events() -> tuple[int, int]:
  """(programs compiled or loaded from JAX's persistent cache, programs
  loaded from it) by this thread, counted from the first call on."""
  with _listening:
    if not getattr(_count, "registered", False):
      jax.monitoring.register_event_listener(_count)
      jax.monitoring.register_event_duration_secs_listener(_count)
      _count.registered = True  # type: ignore[attr-defined]
  return getattr(_counts, _BACKEND_COMPILE, 0), getattr(_counts, _XLA_CACHE_HIT, 0)


def directory() -> pathlib.Path | None:
  """`<JAX's compilation cache folder>/tp2p_programs`, or None when JAX's
  persistent compilation cache is off."""
  base = jax.config.jax_compilation_cache_dir
  if not base or not jax.config.jax_enable_compilation_cache:
    return None
  return pathlib.Path(base) / FOLDER


def _sharding_signature(sharding: Any) -> Any:
  if sharding is None:
    return None
  if isinstance(sharding, jax.sharding.NamedSharding):
    return ["named", [d.id for d in sharding.mesh.devices.flat],
            list(sharding.mesh.axis_names), list(sharding.mesh.devices.shape),
            repr(sharding.spec), sharding.memory_kind]
  return [type(sharding).__name__, sorted(d.id for d in sharding.device_set), repr(sharding)]


def _leaf_signature(leaf: Any) -> Any:
  if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
    return [list(leaf.shape), str(leaf.dtype), bool(getattr(leaf, "weak_type", False)),
            _sharding_signature(leaf.sharding)]
  if isinstance(leaf, (np.ndarray, np.generic)):
    return [list(leaf.shape), str(leaf.dtype), "host"]
  return [type(leaf).__name__]  # Python scalars are traced by type, not value


def signature(args: tuple[Any, ...], jit_options: Mapping[str, Any]) -> dict[str, Any]:
  """The arguments' tree structure, shapes, dtypes and shardings, and the jit
  options (shardings mapped to their devices and specs)."""
  leaves, treedef = jax.tree.flatten(args)
  options = {}
  for name, value in sorted(jit_options.items()):
    option_leaves, option_tree = jax.tree.flatten(
        value, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    options[name] = [str(option_tree), [_sharding_signature(x)
                                        if isinstance(x, jax.sharding.Sharding) else repr(x)
                                        for x in option_leaves]]
  return {"tree": str(treedef), "leaves": [_leaf_signature(x) for x in leaves],
          "jit": options}


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A program from the cache or freshly compiled.

  Attributes:
    compiled: the executable, called with the arguments it was keyed by.
    meta: what `compile` was asked to keep beside it (None if nothing).
    from_cache: True when it was loaded, not compiled (perhaps traced to
      find it by its lowered module).
  """
  compiled: jax.stages.Compiled
  meta: Any
  from_cache: bool


@dataclasses.dataclass(frozen=True)
class ProgramCache:
  """Compiled programs of one run configuration (see the module docstring).

  Two kinds of files: a program's executable, named by a digest of its
  lowered module and the environment (so runs whose configs differ only in
  what the program does not see share it), and for each config and
  argument signature a small index entry naming that executable, read
  without tracing.

  Attributes:
    folder: where entries are kept.
    context: digest of the config, the package source and the environment.
    environment: digest of the environment alone.
  """
  folder: pathlib.Path
  context: str
  environment: str

  @classmethod
  def for_config(cls, config: Mapping[str, Any]) -> ProgramCache | None:
    """The cache for programs built from `config` (a JSON-able dict, as a
    run stores in config.json), or None when JAX's persistent compilation
    cache is off or the folder cannot be created."""
    folder = directory()
    if folder is None:
      return None
    try:
      folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
      log.warning("program cache off: cannot create %s (%s)", folder, e.strerror or e)
      return None
    env = _digest(environment())
    return cls(folder, _digest({"config": config, "source": source_digest(), "env": env}), env)

  def key(self, name: str, args: tuple[Any, ...], jit_options: Mapping[str, Any]) -> str:
    """The index entry's name for `name` called with `args`."""
    return f"{name}-{_digest([self.context, name, signature(args, jit_options)])[:40]}"

  def path(self, key: str) -> pathlib.Path:
    return self.folder / f"{key}{SUFFIX}"

  def lookup_meta(self, name: str, args: tuple[Any, ...],
                  jit_options: Mapping[str, Any]) -> Any | None:
    """The meta stored with a cached program (without loading the
    executable), or None if there is no usable entry."""
    index = self._read(self.path(self.key(name, args, jit_options)))
    if index is None or not self.path(index["program"]).is_file():
      return None
    return index["meta"]

  def compile(self, name: str, fn: Callable[..., Any], args: tuple[Any, ...],
              meta: Callable[[], Any] | None = None, **jit_options: Any) -> Loaded:
    """`jax.jit(fn, **jit_options)` compiled for `args`: loaded from the
    cache if present, else lowered, then loaded by its module's digest or
    compiled, and stored. `meta()` is called after lowering (it may read
    what tracing recorded) and its picklable result is stored with the
    program and returned on later hits."""
    index_path = self.path(self.key(name, args, jit_options))
    index = self._read(index_path)
    if index is not None:
      compiled = self._load(self.path(index["program"]))
      if compiled is not None:
        _touch(index_path)
        return Loaded(compiled, index["meta"], True)
    lowered = jax.jit(fn, **jit_options).lower(*args)
    kept = meta() if meta is not None else None
    program = f"{name}-module-" + _digest(
        [self.environment, signature(args, jit_options), lowered.as_text()])[:40]
    compiled = self._load(self.path(program))
    from_cache = compiled is not None
    if compiled is None:
      before = _compile_events()
      try:
        compiled = lowered.compile(compiler_options=FRESH_COMPILE)
      except Exception as e:  # noqa: BLE001 - a backend without that option
        log.warning("program cache: %s not stored (compiling with %s failed: %s)", program,
                    FRESH_COMPILE, str(e).splitlines()[0] if str(e) else type(e).__name__)
        return Loaded(lowered.compile(), kept, False)
      compiles, hits = (after - b for after, b in zip(_compile_events(), before))
      if not compiles or hits:  # JAX's caches had it: not serialisable (module docstring)
        log.debug("program cache: %s reused from JAX's caches, not stored", program)
        return Loaded(compiled, kept, False)
      if not self._write(self.path(program), _serialized(compiled, program)):
        return Loaded(compiled, kept, False)
    self._write(index_path, {"format": FORMAT, "program": program, "meta": kept})
    self._evict()
    return Loaded(compiled, kept, from_cache)

  def _load(self, path: pathlib.Path) -> jax.stages.Compiled | None:
    entry = self._read(path)
    if entry is None:
      return None
    try:
      devices = {d.id: d for d in jax.devices()}
      compiled = serialize_executable.deserialize_and_load(
          entry["executable"], entry["in_tree"], entry["out_tree"],
          execution_devices=[devices[i] for i in entry["devices"]])
    except Exception as e:  # noqa: BLE001 - any unusable entry is recompiled
      self._discard(path, e)
      return None
    _touch(path)
    return compiled

  def _read(self, path: pathlib.Path) -> dict[str, Any] | None:
    try:
      with open(path, "rb") as f:
        entry = pickle.load(f)
      if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        raise ValueError("not an entry of this format")
      return entry
    except FileNotFoundError:
      return None
    except Exception as e:  # noqa: BLE001 - a damaged entry is recompiled
      self._discard(path, e)
      return None

  def _discard(self, path: pathlib.Path, error: BaseException) -> None:
    log.warning("program cache: %s is unusable (%s: %s); compiling instead", path,
                type(error).__name__, str(error).splitlines()[0] if str(error) else "")
    with contextlib.suppress(OSError):
      path.unlink()

  def _write(self, path: pathlib.Path, entry: dict[str, Any] | None) -> bool:
    if entry is None:
      return False
    try:
      data = pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)
      with atomic_files.replacing(path, "wb") as f:
        f.write(data)
      os.chmod(path, 0o600)
      return True
    except OSError as e:  # a full disk costs the cache entry, never the run
      log.warning("program cache: %s not stored (%s)", path, e.strerror or e)
      return False

  def _evict(self) -> None:
    entries = []
    for p in self.folder.glob(f"*{SUFFIX}"):
      with contextlib.suppress(OSError):
        st = p.stat()
        entries.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in entries)
    for _, size, p in sorted(entries):
      if total <= MAX_BYTES:
        break
      with contextlib.suppress(OSError):
        p.unlink()
        total -= size


def _digest(value: Any) -> str:
  return hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()


def _touch(path: pathlib.Path) -> None:
  with contextlib.suppress(OSError):
    os.utime(path)  # recently used


def _serialized(compiled: jax.stages.Compiled, name: str) -> dict[str, Any] | None:
  try:
    executable, in_tree, out_tree = serialize_executable.serialize(compiled)
  except Exception as e:  # noqa: BLE001 - e.g. a backend that cannot serialise
    log.warning("program cache: %s not stored (%s: %s)", name, type(e).__name__, e)
    return None
  # The program's own devices, in order (deserialising assumes all of them).
  devices = [d.id for d in compiled._executable._unloaded_executable.device_list]
  return {"format": FORMAT, "executable": executable, "in_tree": in_tree,
          "out_tree": out_tree, "devices": devices}


class CachedJit:
  """`jax.jit(fn, **jit_options)` whose first call loads the compiled
  program from `cache` (or compiles and stores it under `name`); later calls
  run that program, so they must pass arguments of the same structure,
  shapes, dtypes and shardings.

  Attributes:
    from_cache: None before the first call, then whether the program was
      loaded rather than compiled.
  """

  def __init__(self, cache: ProgramCache, name: str, fn: Callable[..., Any],
               jit_options: Mapping[str, Any]):
    self._cache, self._name, self._fn, self._options = cache, name, fn, dict(jit_options)
    self._compiled: jax.stages.Compiled | None = None
    self._prepared: tuple[str, Loaded] | None = None
    self.from_cache: bool | None = None

  def prepare(self, *args: Any) -> None:
    """Loads or compiles the program for arguments like `args` (arrays, or
    `jax.ShapeDtypeStruct`s with their shardings) ahead of the first call,
    e.g. in another thread while the caller builds the real arguments. The
    first call uses it if its arguments have the same signature, else
    compiles as without `prepare`."""
    loaded = self._cache.compile(self._name, self._fn, args, **self._options)
    self._prepared = (_digest(signature(args, {})), loaded)

  def __call__(self, *args: Any) -> Any:
    if self._compiled is None:
      prepared, self._prepared = self._prepared, None
      if prepared is not None and prepared[0] == _digest(signature(args, {})):
        loaded = prepared[1]
      else:
        if prepared is not None:
          log.warning("program cache: %s was prepared for other arguments; compiling again",
                      self._name)
        loaded = self._cache.compile(self._name, self._fn, args, **self._options)
      self._compiled, self.from_cache = loaded.compiled, loaded.from_cache
    return self._compiled(*args)


class CachedFunction:
  """`jax.jit(fn, **jit_options)` over arguments of any signature: each new
  tree/shape/dtype/sharding combination gets its own `CachedJit` (program
  `name`, keyed by that signature in the cache)."""

  def __init__(self, cache: ProgramCache, name: str, fn: Callable[..., Any],
               jit_options: Mapping[str, Any] | None = None):
    self._cache, self._name, self._fn = cache, name, fn
    self._options = dict(jit_options or {})
    self._programs: dict[str, CachedJit] = {}

  def __call__(self, *args: Any) -> Any:
    key = _digest(signature(args, {}))
    program = self._programs.get(key)
    if program is None:
      program = self._programs[key] = CachedJit(self._cache, self._name, self._fn,
                                                self._options)
    return program(*args)
