"""The package's structure: methods by name through one trainer, loader and
predictor; an import graph without cycles whose layers point one way; and a
new method, defined here, trained, checkpointed, resumed and served through
the same code as the built-in ones."""
from __future__ import annotations

import ast
import configparser
import os
import json
import pathlib

import ml_collections
import numpy as np
import pytest

from tests import painter_method
from tp2p_jax import methods, training
from tp2p_jax.inference.run_loading import load_trained_run
from tp2p_jax.methods.base import Method

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tp2p_jax"


# --- the import graph ------------------------------------------------------------------

def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
  """module -> the tp2p_jax modules it imports (at module level or inside
  functions: a deferred import is still a dependency)."""
  files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
  graph: dict[str, set[str]] = {}
  for name, path in files.items():
    edges = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                          + ([base] if base else []))
        # `from a.b import c`: c is a module when a file says so.
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                   for a in node.names]
      else:
        continue
      edges |= {t for t in targets if t in files and t != name}
    graph[name] = edges
  return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on_stack: set[str] = set()
  found: list[list[str]] = []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_import_graph_has_no_cycles():
  graph = _import_graph()
  assert len(graph) > 60
  assert _cycles(graph) == []


def test_a_cycle_would_be_found():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


_CORE_MODULES = sorted(p.stem for p in (pathlib.Path(__file__).resolve().parents[1]
                                         / "tp2p_jax" / "core").glob("*.py"))


@pytest.mark.parametrize("layer, forbidden", [
    ("tp2p_jax.core", ("tp2p_jax.methods", "tp2p_jax.inference", "tp2p_jax.cli",
                       "tp2p_jax.training", "tp2p_jax.art", "tp2p_jax.interop")),
    # Models may use core's leaf helpers (atomic file writes), nothing above.
    ("tp2p_jax.models", ("tp2p_jax.core.loop", "tp2p_jax.core.mesh", "tp2p_jax.core.run_dir",
                         "tp2p_jax.core.checkpoints", "tp2p_jax.methods", "tp2p_jax.inference",
                         "tp2p_jax.cli", "tp2p_jax.data", "tp2p_jax.training")),
    # Data may use core's file-location leaves (local or gs:// paths, atomic
    # writes), nothing else of core.
    ("tp2p_jax.data", tuple(f"tp2p_jax.core.{m}" for m in _CORE_MODULES
                            if m not in ("storage", "atomic_files"))
     + ("tp2p_jax.methods", "tp2p_jax.inference", "tp2p_jax.cli", "tp2p_jax.training")),
    ("tp2p_jax.methods", ("tp2p_jax.inference", "tp2p_jax.cli", "tp2p_jax.training")),
    ("tp2p_jax.inference", ("tp2p_jax.cli", "tp2p_jax.training")),
])
def test_layers_import_downwards_only(layer, forbidden):
  """core (loop, mesh, checkpoints, run files, logging, optimisers, EMA) knows
  models and data but no method; methods know no inference; no library
  imports a command-line entry point."""
  graph = _import_graph()
  bad = sorted((m, t) for m, targets in graph.items() if m.startswith(layer)
               for t in targets if t.startswith(forbidden))
  assert bad == []


_FAMILY_WORDS = {"cyclegan", "paired_gan", "style_encoder", "transpix2pix", "pix2pix",
                 "pix2pixhd", "unet", "unet_256", "resnet_9blocks", "resnet_6blocks"}


@pytest.mark.parametrize("path", ["cli/predict.py", "cli/evaluate.py", "cli/export.py",
                                  "inference/run_loading.py", "inference/evaluation.py",
                                  "inference/exporting.py", "inference/styles.py"])
def test_inference_never_branches_on_the_family(path):
  """What a run's predictor can do (its style input, its directions) decides;
  nothing compares a method, generator or family name, or a type."""
  tree = ast.parse((PACKAGE / path).read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.Compare):
      operands = [node.left, *node.comparators]
      words = {o.value for o in operands if isinstance(o, ast.Constant)
               and isinstance(o.value, str)}
      assert not words & _FAMILY_WORDS, (path, node.lineno)
      attributes = {o.attr for o in operands if isinstance(o, ast.Attribute)}
      assert not attributes & {"method", "generator", "model", "model_name"}, (path, node.lineno)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      assert node.func.id != "isinstance", (path, node.lineno)


# --- a method defined outside the package ------------------------------------------------

@pytest.fixture
def painter():
  with painter_method.registered() as method:
    yield method


def _rows(workdir: pathlib.Path) -> dict[int, dict]:
  return {r["step"]: r for r in map(json.loads,
                                    (workdir / "metrics.jsonl").read_text().splitlines())}


def test_a_new_method_trains_and_predicts_through_the_shared_code(painter, tmp_path):
  assert "l1_painter" in methods.names() and methods.get("l1_painter") is painter
  assert training.param_counts(painter_method.config()) == {"generator": 3 * 3 * 3 * 8 + 8 + 3 * 3 * 8 * 3 + 3}

  straight = tmp_path / "straight"
  assert training.train_and_evaluate(painter_method.config(), str(straight)) == 0
  rows = _rows(straight)
  assert sorted(rows) == [1, 2, 3, 4]
  assert rows[4]["l1"] < rows[1]["l1"]
  assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["2", "4"]
  assert (straight / "samples" / "step_0000004.png").is_file()
  assert json.loads((straight / "config.json").read_text())["method"] == "l1_painter"

  # The one run loader and predictor serve it like any built-in method.
  run = load_trained_run(str(straight))
  assert run.step == 4 and run.predictor.directions == ("AtoB",)
  x = np.zeros((2, 16, 16, 3), np.float32)
  out = np.asarray(run.predictor.generate(x))
  assert out.shape == (2, 16, 16, 3) and np.all(np.abs(out) <= 1.0)
  with pytest.raises(ValueError, match="takes no style"):
    run.predictor.generate(x, np.zeros((2, 4), np.float32))


def test_unknown_methods_are_named():
  with pytest.raises(ValueError, match="unknown method 'nope'.*cyclegan, paired_gan"):
    methods.get("nope")
  with pytest.raises(ValueError, match="already registered"):
    methods.register(Method(name="cyclegan", description="", stages=list,
                            param_counts=dict, predictor=None))


def test_runs_saved_before_methods_were_named_load_as_their_family():
  from tp2p_jax.methods import with_method_field
  old_cyclegan = ml_collections.ConfigDict({"model": "cyclegan", "seed": 0})
  old_paired = ml_collections.ConfigDict({"generator": "unet", "seed": 0})
  assert with_method_field(old_cyclegan).method == "cyclegan"
  assert with_method_field(old_paired).method == "paired_gan"
  new = ml_collections.ConfigDict({"method": "style_encoder"})
  assert with_method_field(new) is new


_REPO = pathlib.Path(__file__).resolve().parents[1]


def test_setup_cfg_lists_every_package():
  """setup.cfg lists its packages (it maps experiments/ into the package):
  a new subpackage left out of the list would be missing from the wheel."""
  setup = configparser.ConfigParser()
  setup.read(_REPO / "setup.cfg")
  listed = set(setup["options"]["packages"].split())
  found = {str(p.parent.relative_to(_REPO)).replace(os.sep, ".")
           for p in (_REPO / "tp2p_jax").rglob("__init__.py")}
  assert listed == found | {"tp2p_jax.experiments"}
  assert "tp2p_jax.experiments = experiments" in setup["options"]["package_dir"]
