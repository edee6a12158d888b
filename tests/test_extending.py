"""The README's "Adding a model", "Adding a dataset" and "Adding a method"
code, run as written (in a temporary folder, so its `runs/...` land there),
so the guide cannot drift from the registries it shows."""
from __future__ import annotations

import pathlib
import re

import pytest

from tp2p_jax import methods, models
from tp2p_jax.data import sources

pytestmark = pytest.mark.slow

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def section_code(title: str, readme: pathlib.Path = README) -> str:
  """The ```python blocks of the README section `## TITLE`, joined."""
  text = readme.read_text()
  match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
  assert match, f"README.md has no section {title!r}"
  blocks = re.findall(r"^```python\n(.*?)^```", match.group(1), re.M | re.S)
  assert blocks, f"README.md's {title!r} has no python code"
  return "\n".join(blocks)


@pytest.mark.parametrize("title, made, registry, name", [
    ("Adding a model", "runs/two_conv/checkpoints/2", models.GENERATORS, "two_conv"),
    ("Adding a dataset", "runs/stripes/checkpoints/2", sources.SOURCES, "stripes"),
    ("Adding a method", "runs/painter/checkpoints/4", methods.METHODS, "l1_painter"),
])
def test_the_readmes_extension_code_runs(title, made, registry, name, tmp_path, monkeypatch,
                                         capsys):
  monkeypatch.chdir(tmp_path)
  try:
    exec(compile(section_code(title), f"README.md ({title})", "exec"), {})
  finally:
    registry.unregister(name)
  assert (tmp_path / made).is_dir()
  if title == "Adding a method":
    assert "('AtoB',)" in capsys.readouterr().out
  assert name not in registry
