"""How the trainer compiles a run's programs: `fast_compile` (most XLA
optimisations off) reaches every program, and a failure before the first
step is raised as it is.

XLA writes the debug options each program was compiled with beside its
dump (`xla_dump_to`), which is how these tests see what reached each
compile. The suite itself runs with `jax_disable_most_optimizations` on, so
the tests that read those options turn it off for their duration.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tp2p_jax import training
from tp2p_jax.core import compile_effort, loop
from tp2p_jax.core import mesh as mesh_lib
from tp2p_jax.core.run_dir import config_differences
from tp2p_jax.core.stage import Stage
from tests import painter_method


@pytest.fixture
def full_optimisation():
  """The process's default (optimising) compiles for the test's duration."""
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)


def _compiled_options(dump: pathlib.Path) -> list[tuple[str, dict[str, str]]]:
  """(program name, its debug options) for every compile XLA dumped."""
  return [(path.name.split(".", 1)[1].rsplit(".", 1)[0],
           dict(re.findall(r"^(\w+): (.*)$", path.read_text(), re.M)))
          for path in dump.glob("module_*.debug_options")]


def test_options_only_when_asked_and_cpu_options_only_on_cpu():
  assert compile_effort.compiler_options(False, "cpu") is None
  assert compile_effort.compiler_options(False, "tpu") is None
  cpu = compile_effort.compiler_options(True, "cpu")
  gpu = compile_effort.compiler_options(True, "gpu")
  assert cpu["xla_backend_optimization_level"] == 0 == gpu["xla_backend_optimization_level"]
  assert cpu["xla_cpu_use_fusion_emitters"] is False
  assert not any(k.startswith("xla_cpu_") for k in gpu)
  assert compile_effort.jit_options(None) == {}
  assert compile_effort.jit_options(cpu) == {"compiler_options": cpu}


def test_a_fast_program_computes_what_the_default_one_does(full_optimisation):
  def f(x, w):
    return jnp.tanh(jnp.einsum("bi,ij->bj", x, w)) + jax.nn.gelu(x).sum(-1, keepdims=True)

  x = np.linspace(-2, 2, 96, dtype=np.float32).reshape(8, 12)
  w = np.cos(np.arange(12 * 5, dtype=np.float32)).reshape(12, 5)
  fast = jax.jit(f, compiler_options=compile_effort.compiler_options(True, "cpu"))(x, w)
  # Same operations, other fusion and instruction choices: float32 rounding.
  np.testing.assert_allclose(fast, jax.jit(f)(x, w), rtol=1e-5, atol=1e-5)


class _Ones:
  """Batches of ones, with the position a checkpoint stores."""

  def __init__(self):
    self.position = 0

  def __next__(self) -> dict[str, np.ndarray]:
    self.position += 1
    return {"x": np.ones((1, 2), np.float32)}

  def get_state(self) -> bytes:
    return json.dumps({"position": self.position}).encode()

  def set_state(self, state: bytes) -> None:
    self.position = json.loads(state)["position"]


def _stage(total_steps: int) -> Stage:
  def init(key, handoff):
    del handoff
    return {"w": jax.random.normal(key, (3,)), "step": jnp.zeros((), jnp.int32)}

  def train_step(state, batch, frozen):
    w = state["w"] - 0.1 * jnp.mean(batch["x"]) * frozen["scale"]
    return {"w": w, "step": state["step"] + 1}, {"loss": jnp.sum(w ** 2)}

  def grid(w):
    return jnp.broadcast_to(jnp.tanh(w), (4, 4, 3))

  def sample(state, jit):
    return np.asarray((jit("grid", grid)(state["w"]) + 1) * 127.5, np.uint8)

  def handoff(w):
    return {"norm": jnp.linalg.norm(w)}

  def finish(state, stage_dir, jit):
    del stage_dir
    return jit("handoff", handoff)(state["w"])

  return Stage(name="toy", directory="", init=init, train_step=train_step,
               make_iterator=_Ones, batch_size=1, seed=0, total_steps=total_steps,
               log_every=1, checkpoint_every=2, keep_checkpoints=2,
               frozen={"scale": np.float32(1.0)}, samples=sample, sample_every=2,
               finish=finish)


def test_every_program_of_a_run_is_compiled_with_its_options(tmp_path, full_optimisation):
  dump = tmp_path / "dump"
  options = {**compile_effort.compiler_options(True, "cpu"), "xla_dump_to": str(dump)}
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  loop.run_stages([_stage(total_steps=2)], str(tmp_path / "run"), mesh, {"test": True},
                  compiler_options=options)
  compiled = _compiled_options(dump)
  for program in ("init", "train_step", "grid", "handoff"):
    found = [options for name, options in compiled if name.endswith(program)]
    assert len(found) == 1, (program, sorted(name for name, _ in compiled))
    assert found[0]["xla_backend_optimization_level"] == "0", program
    assert found[0]["xla_cpu_use_fusion_emitters"] == "false", program


def test_train_and_evaluate_passes_the_configs_choice(tmp_path, monkeypatch):
  seen = []
  run_stages = loop.run_stages

  def spy(*args, **kwargs):
    seen.append(kwargs["compiler_options"])
    return run_stages(*args, **kwargs)

  monkeypatch.setattr(loop, "run_stages", spy)
  with painter_method.registered():
    for fast in (True, False):
      config = painter_method.config(total_steps=1)
      config.fast_compile = fast
      assert training.train_and_evaluate(config, str(tmp_path / str(fast))) == 0
  assert seen == [compile_effort.compiler_options(True, jax.default_backend()), None]


@pytest.mark.parametrize("module, variants", [
    ("transpix2pix", [None, "cpu"]), ("toycats", [None]), ("pix2pix", [None, "cpu"]),
    ("cyclegan", [None, "cpu"]), ("pix2pixhd", [None, "global"])])
def test_tiny_configs_compile_fast_and_the_others_optimise(module, variants):
  get_config = importlib.import_module(f"tp2p_jax.experiments.{module}").get_config
  assert get_config("tiny").fast_compile is True
  for variant in variants:
    assert get_config(variant).fast_compile is False


def test_a_resume_may_change_fast_compile():
  blocking, allowed = config_differences({"fast_compile": True, "lr": 1.0},
                                         {"fast_compile": False, "lr": 1.0})
  assert not blocking and allowed == ["fast_compile true -> false"]


class _BadFirstBatch(_Ones):
  def __next__(self) -> dict[str, np.ndarray]:
    raise ValueError("photos/cat_3.png: not an image")


@pytest.mark.parametrize("failing", ["first batch", "init"])
def test_an_error_before_the_first_step_is_raised_as_it_is(failing, tmp_path):
  stage = _stage(total_steps=2)
  if failing == "first batch":
    stage = dataclasses.replace(stage, make_iterator=_BadFirstBatch)
    expected = "photos/cat_3.png: not an image"
  else:
    def init(key, handoff):
      raise RuntimeError("init failed")
    stage = dataclasses.replace(stage, init=init)
    expected = "init failed"
  with pytest.raises((ValueError, RuntimeError), match=expected):
    loop.run_stages([stage], str(tmp_path / "run"), mesh_lib.make_mesh(jax.devices()[:1]),
                    {"test": True})
