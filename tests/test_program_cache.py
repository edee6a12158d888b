"""`core.program_cache`: compiled programs found by the run's config, the
package source and their arguments, loaded without tracing."""
from __future__ import annotations

import logging
import os
import pathlib
import stat
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tp2p_jax.core import mesh as mesh_lib
from tp2p_jax.core import program_cache
from tp2p_jax.core.program_cache import ProgramCache
from tests.subprocess_runs import REPO, cli_env

CONFIG = {"method": "toy", "lr": 0.5}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> pathlib.Path:
  """JAX's persistent cache pointed at a fresh folder for this test."""
  previous = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", str(tmp_path / "xla"))
  yield tmp_path / "xla" / program_cache.FOLDER
  jax.config.update("jax_compilation_cache_dir", previous)


class _Traced:
  """A step whose Python body counts how often it is traced."""

  def __init__(self, lr: float):
    self.lr, self.traces = lr, 0

  def __call__(self, state: dict, batch: jax.Array) -> tuple[dict, jax.Array]:
    self.traces += 1
    loss = jnp.mean((state["w"] * batch - 1.0) ** 2)
    return {"w": state["w"] - self.lr * batch.mean(0)}, loss


def _args(n: int = 4) -> tuple[dict, jax.Array]:
  return {"w": jnp.arange(n, dtype=jnp.float32)}, jnp.ones((2, n), jnp.float32)


def _programs(folder: pathlib.Path) -> list[str]:
  return sorted(p.name.split("-")[0] for p in folder.glob("*-module-*"))


def test_second_cache_of_the_same_config_loads_without_tracing(cache_dir):
  first = _Traced(CONFIG["lr"])
  loaded = ProgramCache.for_config(CONFIG).compile("step", first, _args())
  assert not loaded.from_cache and first.traces == 1
  assert _programs(cache_dir) == ["step"] and len(list(cache_dir.iterdir())) == 2  # + index
  assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
  assert {stat.S_IMODE(p.stat().st_mode) for p in cache_dir.iterdir()} == {0o600}

  second = _Traced(CONFIG["lr"])
  again = ProgramCache.for_config(dict(CONFIG)).compile("step", second, _args())
  assert again.from_cache and second.traces == 0
  jax.tree.map(np.testing.assert_array_equal, again.compiled(*_args()), first(*_args()))


def test_a_config_change_the_program_does_not_see_shares_its_executable(cache_dir):
  ProgramCache.for_config(CONFIG).compile("step", _Traced(0.5), _args())
  step = _Traced(0.5)
  loaded = ProgramCache.for_config({**CONFIG, "log_every": 7}).compile("step", step, _args())
  assert loaded.from_cache and step.traces == 1  # traced to find it, not compiled
  assert _programs(cache_dir) == ["step"] and len(list(cache_dir.iterdir())) == 3
  again = _Traced(0.5)
  assert ProgramCache.for_config({**CONFIG, "log_every": 7}).compile(
      "step", again, _args()).from_cache and again.traces == 0


@pytest.mark.parametrize("change", ["config", "shape", "dtype", "name", "donation"])
def test_anything_that_changes_the_program_misses(cache_dir, change):
  ProgramCache.for_config(CONFIG).compile("step", _Traced(0.5), _args())
  config = {**CONFIG, "lr": 0.25} if change == "config" else CONFIG
  args = _args(5) if change == "shape" else _args()
  if change == "dtype":
    args = ({"w": args[0]["w"].astype(jnp.bfloat16)}, args[1])
  options = {"donate_argnums": 0} if change == "donation" else {}
  step = _Traced(config["lr"])
  loaded = ProgramCache.for_config(config).compile("other" if change == "name" else "step",
                                                   step, args, **options)
  assert not loaded.from_cache and step.traces == 1
  assert len(_programs(cache_dir)) == 2


def test_a_source_edit_is_a_new_context(tmp_path):
  package = tmp_path / "pkg"
  (package / "sub").mkdir(parents=True)
  (package / "sub" / "a.py").write_text("x = 1\n")
  before = program_cache.source_digest(package)
  program_cache.source_digest.cache_clear()
  (package / "sub" / "a.py").write_text("x = 2\n")
  assert program_cache.source_digest(package) != before
  program_cache.source_digest.cache_clear()


def test_off_when_jax_has_no_compilation_cache(monkeypatch):
  previous = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", None)
  try:
    assert program_cache.directory() is None
    assert ProgramCache.for_config(CONFIG) is None
  finally:
    jax.config.update("jax_compilation_cache_dir", previous)


def test_a_damaged_entry_is_recompiled_and_replaced(cache_dir, caplog):
  ProgramCache.for_config(CONFIG).compile("step", _Traced(0.5), _args())
  (program,) = cache_dir.glob("*-module-*")
  program.write_bytes(program.read_bytes()[:1000])  # truncated
  step = _Traced(0.5)
  with caplog.at_level(logging.WARNING, "tp2p_jax"):
    loaded = ProgramCache.for_config(CONFIG).compile("step", step, _args())
  assert not loaded.from_cache and step.traces == 1
  assert program.name in caplog.text and "compiling instead" in caplog.text
  assert ProgramCache.for_config(CONFIG).compile("step", _Traced(0.5), _args()).from_cache
  jax.tree.map(np.testing.assert_array_equal, loaded.compiled(*_args()), step(*_args()))


def test_least_recently_used_entries_go_beyond_the_size_cap(cache_dir, monkeypatch):
  cache = ProgramCache.for_config(CONFIG)
  for n in (3, 4):
    cache.compile("step", _Traced(0.5), _args(n))
  for i, p in enumerate(sorted(cache_dir.iterdir(), key=lambda p: "-module-" in p.name)):
    os.utime(p, (i, i))  # indexes oldest, then the programs
  assert cache.compile("step", _Traced(0.5), _args(3)).from_cache  # now the newest
  largest = max(p.stat().st_size for p in cache_dir.iterdir())
  monkeypatch.setattr(program_cache, "MAX_BYTES", int(2.5 * largest))
  cache.compile("step", _Traced(0.5), _args(5))
  # Two programs fit: 5's and 3's (just used); 4's went, and the old indexes.
  assert len(_programs(cache_dir)) == 2
  assert cache.compile("step", _Traced(0.5), _args(3)).from_cache
  step = _Traced(0.5)
  assert not cache.compile("step", step, _args(4)).from_cache and step.traces == 1


def _init(key: jax.Array, offset: jax.Array) -> dict:
  params = {"w": jax.random.normal(key, (3, 5)) + offset, "b": jnp.zeros((5,))}
  return {"params": params, "ema": params, "step": jnp.zeros((), jnp.int32)}


def test_init_and_step_programs_load_with_their_layout_shardings_and_donation(cache_dir):
  mesh = mesh_lib.make_mesh(jax.devices()[:2])
  args = (jax.random.PRNGKey(3), np.float32(1.0))
  assert mesh_lib.cached_abstract_state(mesh, *args, cache=ProgramCache.for_config(CONFIG),
                                        name="toy.init") is None
  fresh = mesh_lib.compile_init(_init, mesh, *args, cache=ProgramCache.for_config(CONFIG),
                                name="toy.init")
  cache = ProgramCache.for_config(CONFIG)
  abstract = mesh_lib.cached_abstract_state(mesh, *args, cache=cache, name="toy.init")
  expected = jax.eval_shape(_init, *args)
  assert jax.tree.structure(abstract) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(abstract), jax.tree.leaves(expected)):
    assert (a.shape, a.dtype) == (e.shape, e.dtype)
    assert a.sharding == mesh_lib.replicated(mesh)

  loaded = mesh_lib.compile_init(_init, mesh, *args, cache=cache, name="toy.init")
  assert loaded.from_cache and not fresh.from_cache
  state = loaded(*args)
  jax.tree.map(np.testing.assert_array_equal, state, jax.jit(_init)(*args))
  pointers = [s.data.unsafe_buffer_pointer() for leaf in jax.tree.leaves(state)
              for s in leaf.addressable_shards]
  assert len(set(pointers)) == len(pointers)  # params and ema: separate buffers

  def step(state, batch, frozen):
    params = jax.tree.map(lambda p: p - 0.1 * batch.mean() * frozen, state["params"])
    return {**state, "params": params, "step": state["step"] + 1}, {"mean": batch.mean()}

  shardings = mesh_lib.replicated_like(mesh, state)
  batch = mesh_lib.to_global_batch({"x": np.ones((4, 5), np.float32)}, mesh)["x"]
  frozen = jax.device_put(jnp.float32(2.0), mesh_lib.replicated(mesh))
  expected_state, _ = jax.jit(step)(state, batch, frozen)
  for want_cached in (False, True):
    run = mesh_lib.jit_train_step(step, mesh, shardings, frozen, cache=cache, name="toy.step")
    fresh_state = loaded(*args)
    new_state, metrics = run(fresh_state, batch, frozen)
    assert run.from_cache is want_cached
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(fresh_state))  # donated
    jax.tree.map(np.testing.assert_array_equal, new_state, expected_state)
    assert float(metrics["mean"]) == 1.0
  assert _programs(cache_dir) == ["toy.init", "toy.step"]


def test_a_program_jax_already_compiled_is_compiled_afresh_and_stored(cache_dir):
  """JAX's in-memory cache holds the program: it is compiled again (with
  FRESH_COMPILE), stored, and what is stored runs."""
  def odd(x):  # a program no other test compiles
    return jnp.sin(x) * 3.25 + jnp.cumsum(x[::-1])
  args = (jnp.linspace(0.0, 1.0, 37),)
  jax.jit(odd).lower(*args).compile()
  assert not ProgramCache.for_config(CONFIG).compile("odd", odd, args).from_cache
  assert _programs(cache_dir) == ["odd"]
  loaded = ProgramCache.for_config(CONFIG).compile("odd", odd, args)
  assert loaded.from_cache
  np.testing.assert_allclose(loaded.compiled(*args), odd(*args), rtol=1e-6)


_STORE_OR_LOAD = """
import sys, jax, jax.numpy as jnp
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
from tp2p_jax.core.program_cache import ProgramCache
def odd(x):
  return jnp.sin(x) * 3.25 + jnp.cumsum(x[::-1])
args = (jnp.linspace(0.0, 1.0, 37),)
if sys.argv[2] == "jax":
  jax.jit(odd).lower(*args).compile()
else:
  loaded = ProgramCache.for_config({"c": 1}).compile("odd", odd, args)
  assert loaded.from_cache == (sys.argv[2] == "load"), loaded.from_cache
  assert abs(float(loaded.compiled(*args).sum()) - float(odd(*args).sum())) < 1e-4
"""


def test_a_program_in_jax_s_disk_cache_is_stored_in_a_form_that_runs(tmp_path):
  """Fresh processes: JAX stores the program; a program cache then compiles
  it afresh (an executable from JAX's disk cache re-serialises without its
  kernels) and stores it; a third process loads it and gets the same values."""
  for mode in ("jax", "store", "load"):
    out = subprocess.run([sys.executable, "-c", _STORE_OR_LOAD, str(tmp_path / "xla"), mode],
                         cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (mode, out.stderr[-2000:])
  assert _programs(tmp_path / "xla" / program_cache.FOLDER) == ["odd"]


def test_arguments_the_program_never_reads_still_select_the_executable(cache_dir):
  # jit drops unused arguments from the module, so both lower to the same
  # module text; each must still get an executable that takes its own tree.
  def generate(state, x):
    return state["w"] * x

  w, x = jnp.arange(4.0), jnp.ones(4)
  for unused in ({"a": jnp.zeros(3)}, {"b": jnp.zeros(3)}, ()):
    state = {"w": w, "unused": unused}
    loaded = ProgramCache.for_config(CONFIG).compile("generate", generate, (state, x))
    np.testing.assert_array_equal(loaded.compiled(state, x), w * x)
  assert _programs(cache_dir) == ["generate"] * 3


def test_a_program_prepared_from_shapes_serves_the_first_call(cache_dir, caplog):
  fn = _Traced(CONFIG["lr"])
  cache = ProgramCache.for_config(CONFIG)
  step = program_cache.CachedJit(cache, "step", fn, {})
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          _args())
  step.prepare(*abstract)
  assert fn.traces == 1
  jax.tree.map(np.testing.assert_array_equal, step(*_args()), _Traced(CONFIG["lr"])(*_args()))
  assert fn.traces == 1 and step.from_cache is False  # the prepared program, not another
  assert _programs(cache_dir) == ["step"]

  # Prepared for other shapes: the first call compiles for its own, and says so.
  other = program_cache.CachedJit(cache, "step", fn, {})
  other.prepare(*_args(6))
  with caplog.at_level(logging.WARNING, logger="tp2p_jax"):
    jax.tree.map(np.testing.assert_array_equal, other(*_args(5)),
                 _Traced(CONFIG["lr"])(*_args(5)))
  assert "prepared for other arguments" in caplog.text
  assert sorted(_programs(cache_dir)) == ["step"] * 3


def test_a_stage_jit_keeps_one_program_per_argument_shape(cache_dir):
  from tp2p_jax.core.loop import stage_jit
  fn = _Traced(0.5)
  jit = stage_jit("painter", ProgramCache.for_config(CONFIG))
  assert jit("step", fn) is jit("step", _Traced(0.1))  # one name, one function
  for n in (4, 6, 4):
    jax.tree.map(np.testing.assert_array_equal, jit("step", fn)(*_args(n)), fn(*_args(n)))
  assert fn.traces == 2 + 3  # one trace per shape in the cache, one per eager call
  assert _programs(cache_dir) == ["painter.step", "painter.step"]
  again = _Traced(0.5)  # a restarted run: both shapes load without tracing
  rerun = stage_jit("painter", ProgramCache.for_config(CONFIG))
  for n in (4, 6):
    jax.tree.map(np.testing.assert_array_equal, rerun("step", again)(*_args(n)), fn(*_args(n)))
  assert again.traces == 0
  plain = stage_jit("painter", None)("step", again)  # no cache: jax.jit
  jax.tree.map(np.testing.assert_array_equal, plain(*_args()), fn(*_args()))
  assert again.traces == 1


def test_a_second_run_loads_its_programs_and_trains_identically(tmp_path):
  """Two identical runs of a built-in method in fresh processes with a new
  cache: the second loads its init, train step and the finishing programs
  (no tracing, no compiling; nothing new stored) and logs the same losses
  and held-out accuracy."""
  env = {**cli_env(), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla")}

  def train(workdir: str) -> str:
    out = subprocess.run([sys.executable, "run_train.py", "--config=experiments/toycats.py:tiny",
                          "--config.method=style_encoder", f"--workdir={tmp_path / workdir}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stderr

  first = train("first")
  assert "loaded from the cache" not in first
  folder = tmp_path / "xla" / program_cache.FOLDER
  stored = _programs(folder)
  # The finish step's programs (stage.Jit) are kept beside the training ones.
  assert stored == ["style_encoder.heldout_cosines", "style_encoder.init",
                    "style_encoder.precise_batch_stats", "style_encoder.train_step"]
  files = sorted(p.name for p in folder.iterdir())
  second = train("second")
  assert "state initialised in" in second and "(its program loaded from the cache)" in second
  assert "first step, its program loaded from the cache" in second
  assert sorted(p.name for p in folder.iterdir()) == files  # nothing compiled anew
  for name in ("metrics.jsonl", "eval.json"):
    first_run, second_run = ((tmp_path / run / name).read_text() for run in ("first", "second"))
    assert first_run == second_run and first_run.strip(), name


def test_a_backend_that_refuses_the_fresh_compile_option_still_compiles(cache_dir, monkeypatch,
                                                                         caplog):
  monkeypatch.setattr(program_cache, "FRESH_COMPILE", {"xla_no_such_option_anywhere": True})
  step = _Traced(0.5)
  with caplog.at_level(logging.WARNING, "tp2p_jax"):
    loaded = ProgramCache.for_config(CONFIG).compile("step", step, _args())
  assert not loaded.from_cache and "not stored" in caplog.text
  assert not _programs(cache_dir)
  jax.tree.map(np.testing.assert_array_equal, loaded.compiled(*_args()), step(*_args()))
