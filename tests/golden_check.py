"""Compares a network imported here with its PyTorch original's stored outputs.

Fixtures (tests/golden/*.npz, written by tools/make_golden_fixtures.py from
the original code) hold the original's state_dict layout, inputs, eval- and
train-mode outputs, input gradients and BatchNorm running statistics after
one train-mode pass. The weights are rebuilt from the shared recipe, so
torch is not needed here.
"""
from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tp2p_jax.interop.synthetic import output_weights, synthetic_state_dict
from tp2p_jax.interop.torch_weights import convert

GOLDEN_DIR = pathlib.Path(__file__).parent / "golden"
# Relative to the largest magnitude of the reference array: float32 networks
# agree to ~1e-6 here; 1e-4 leaves room for any CPU's summation order.
RTOL = 1e-4


@functools.lru_cache(maxsize=None)
def load(name: str) -> dict[str, Any]:
  with np.load(GOLDEN_DIR / f"{name}.npz") as f:
    data = {k: f[k] for k in f.files}
  data["meta"] = json.loads(str(data["meta"]))
  data["layout"] = json.loads(str(data["layout"]))
  return data


def assert_close(actual: Any, expected: np.ndarray, what: str) -> float:
  actual = np.asarray(actual, np.float64)
  expected = np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
  scale = float(np.max(np.abs(expected))) if expected.size else 0.0
  err = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
  assert err <= RTOL * max(scale, 1e-6), (
      f"{what}: max |diff| {err:.3g} > {RTOL} x max |reference| {scale:.3g}")
  return err / max(scale, 1e-12)


def _indexed(data: dict[str, Any], prefix: str) -> list[np.ndarray]:
  n = sum(1 for k in data if k.startswith(prefix + "/"))
  return [data[f"{prefix}/{i}"] for i in range(n)]


def _variables(data: dict[str, Any], name: str) -> Any:
  """The original's weights: from its .pth checkpoint when the fixture has
  one (the release's own file format, read without torch), else rebuilt
  from the recipe."""
  checkpoint = GOLDEN_DIR / f"{name}.pth"
  return checkpoint if checkpoint.exists() else synthetic_state_dict(data["layout"])


def check(name: str) -> dict[str, float]:
  """All four comparisons for one fixture; returns the relative errors."""
  data = load(name)
  meta = data["meta"]
  conversion = convert(meta["kind"], _variables(data, name), **meta["options"])
  inputs = [jnp.asarray(data[f"input/{k}"]) for k in meta["inputs"]]
  kwargs = meta["apply_kwargs"]
  errors: dict[str, float] = {}

  module = conversion.module
  out = jax.jit(lambda v, *xs: module.apply(v, *xs, train=False, **kwargs))(
      conversion.variables, *inputs)
  for i, (a, e) in enumerate(zip(jax.tree_util.tree_leaves(out), _indexed(data, "eval"),
                                 strict=True)):
    errors[f"eval/{i}"] = assert_close(a, e, f"{name} eval output {i}")

  has_stats = "batch_stats" in conversion.variables

  def train_pass(train_module, variables, *xs):
    result = train_module.apply(variables, *xs, train=True, rngs={"dropout": jax.random.key(0)},
                                mutable=["batch_stats"] if has_stats else False, **kwargs)
    out, updates = result if has_stats else (result, {})
    return jax.tree_util.tree_leaves(out), updates

  train_module = module.clone(**meta["train_overrides"])
  leaves, updates = jax.jit(functools.partial(train_pass, train_module))(
      conversion.variables, *inputs)
  for i, (a, e) in enumerate(zip(leaves, _indexed(data, "train"), strict=True)):
    errors[f"train/{i}"] = assert_close(a, e, f"{name} train output {i}")

  by_torch_name = {v: k for k, v in conversion.sources.items()}
  stats = {k[len("stats/"):]: v for k, v in data.items() if k.startswith("stats/")}
  assert bool(stats) == has_stats, f"{name}: BatchNorm statistics on one side only"
  for torch_name, expected in stats.items():
    path = by_torch_name[torch_name].split("/")
    assert path[0] == "batch_stats", path
    node: Any = updates["batch_stats"]
    for p in path[1:]:
      node = node[p]
    errors[f"stats/{torch_name}"] = assert_close(node, expected, f"{name} {torch_name}")

  for k, g in zip(meta["inputs"], _input_gradients_float64(train_module, conversion.variables,
                                                          inputs, train_pass)):
    errors[f"grad/{k}"] = assert_close(g, data[f"grad64/{k}"], f"{name} d/d{k} (float64)")
  return errors


def _input_gradients_float64(train_module, variables, inputs, train_pass) -> list[np.ndarray]:
  """d/d inputs of sum_i <train output i, output_weights(i)> with the whole
  network in float64, as the fixture's reference (see the driver: float32
  gradients through ReLUs are not reproducible even by the original)."""
  previous = jax.config.read("jax_enable_x64"), jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_enable_x64", True)
  # Unoptimised float64 convolutions at 256x256 run for half a minute; there
  # XLA's backend optimisation level 1 is quickest in all (the TransPix2Pix
  # generator on a 2-core CPU: compile + run 9 + 30 s at level 0, 16 + 4 s at
  # 1, 22 + 4 s at the default 2). Smaller inputs keep the suite's setting.
  compiler_options = None
  if max(x.shape[1] if x.ndim == 4 else 0 for x in inputs) >= 256:
    jax.config.update("jax_disable_most_optimizations", False)
    compiler_options = {"xla_backend_optimization_level": 1}
  try:
    module64 = train_module.clone(dtype=jnp.float64, param_dtype=jnp.float64)
    variables64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables)
    inputs64 = [jnp.asarray(x, jnp.float64) for x in inputs]

    def scalar(*xs):
      leaves, _ = train_pass(module64, variables64, *xs)
      return sum(jnp.sum(o * output_weights(i, o.shape).astype(np.float64))
                 for i, o in enumerate(leaves))

    grads = jax.jit(jax.grad(scalar, argnums=tuple(range(len(inputs)))),
                    compiler_options=compiler_options)(*inputs64)
    return [np.asarray(g) for g in grads]
  finally:
    jax.config.update("jax_enable_x64", previous[0])
    jax.config.update("jax_disable_most_optimizations", previous[1])
