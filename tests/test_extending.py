"""The README's "Adding a model", "Adding a dataset" and "Adding a method"
code, run as written: a script of the sections' code in a process of its
own (one CPU device, as a user's), in a temporary folder where its
`runs/...` land, so the guide cannot drift from the registries it shows."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests.subprocess_runs import REPO, cli_env

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


_SECTIONS = {"Adding a model": "runs/two_conv/checkpoints/2",
             "Adding a dataset": "runs/stripes/checkpoints/2",
             "Adding a method": "runs/painter/checkpoints/4"}


def test_the_readmes_extension_code_runs(tmp_path):
  """The three sections' code, in order, in one process (one start-up)."""
  script = tmp_path / "sections.py"
  script.write_text("\n".join(f"# --- README.md, {title}\n{section_code(title)}"
                              for title in _SECTIONS))
  env = cli_env()
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  for made in _SECTIONS.values():
    assert (tmp_path / made).is_dir(), made
  assert out.stdout.strip().splitlines()[-1] == "('AtoB',)"
