"""README.md as a reader meets it: its length, its links, and its quick path
run as written.

The quick path is the fenced block after the `<!-- readme-test: quick-path -->`
comment under "Quick start": the tiny toy-cats run, a prediction on the
shipped example sketches and an evaluation. It runs here command by command
in a copy of the repository's top-level layout (run_train.py, experiments/,
examples/), with the package imported from this checkout, and must exit 0
and leave what the README promises: checkpoints and sample grids, one PNG
per example sketch, evaluate's JSON.
"""
from __future__ import annotations

import json
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.subprocess_runs import cli_env

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_LINES = 400
QUICK_PATH_TAG = "<!-- readme-test: quick-path -->"
# What the quick path's commands need from a clone, copied into its folder.
LAYOUT = ("run_train.py", "experiments", "examples")


def readme_text() -> str:
  return README.read_text(encoding="utf-8")


def fenced_block_after(text: str, marker: str) -> str:
  """The body of the first fenced code block after `marker`."""
  start = text.index(marker)
  match = re.compile(r"^```[a-z]*\n(.*?)^```", re.M | re.S).search(text, start)
  assert match, f"no fenced block after {marker!r}"
  return match.group(1)


def shell_commands(block: str) -> list[list[str]]:
  """A bash block's commands as argument lists: comments and blank lines
  dropped, backslash continuations joined, `pip install` lines skipped (the
  tests run in an installed environment)."""
  joined = block.replace("\\\n", " ")
  commands = []
  for line in joined.splitlines():
    args = shlex.split(line, comments=True)
    if args and args[:2] != ["pip", "install"]:
      commands.append(args)
  return commands


def flag(args: list[str], name: str) -> str | None:
  for arg in args:
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
  return None


def test_readme_is_a_guide_of_at_most_400_lines():
  lines = readme_text().splitlines()
  assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines, at most {MAX_LINES}"


def test_every_relative_link_in_the_readme_exists():
  text = readme_text()
  targets = re.findall(r"\]\(([^)\s]+)\)", text)
  assert targets
  missing = []
  for target in targets:
    if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
      continue  # URLs, mailto:, anchors within the README.
    path = target.split("#", 1)[0]
    if not (REPO / path).exists():
      missing.append(target)
  assert not missing, f"README.md links to missing files: {missing}"


def test_quick_start_is_install_and_the_main_job():
  quick_start = fenced_block_after(readme_text(), "## Quick start")
  assert quick_start.split("\n")[:2] == ["pip install -e .", "python run_train.py"]


def test_the_readme_gives_the_test_command_ci_runs():
  assert "\npython -m pytest -q\n" in readme_text()


def test_the_quick_path_uses_only_shipped_inputs():
  for args in shell_commands(fenced_block_after(readme_text(), QUICK_PATH_TAG)):
    for name in ("input", "content", "style_image"):
      value = flag(args, name)
      if value is not None:
        assert (REPO / value).exists(), f"{' '.join(args)}: {value} is not in the repository"


def run_commands(commands: list[list[str]], root: pathlib.Path) -> list[subprocess.CompletedProcess]:
  """Runs each command in `root` (a copy of the clone's layout) as a reader
  would from a shell there; `python` is this interpreter."""
  env = cli_env()
  env["PYTHONPATH"] = str(REPO)  # The package of this checkout, installed or not.
  results = []
  for args in commands:
    argv = [sys.executable, *args[1:]] if args[0] == "python" else args
    result = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"`{shlex.join(args)}` exited {result.returncode}:\n{result.stderr[-3000:]}")
    results.append(result)
  return results


def check_promises(commands: list[list[str]], results: list[subprocess.CompletedProcess],
                   root: pathlib.Path) -> None:
  """What the quick path's commands promise to leave behind."""
  kinds = set()
  for args, result in zip(commands, results):
    script = args[1] if args[1] != "-m" else args[2]
    workdir = root / flag(args, "workdir")
    if script == "run_train.py":
      kinds.add("train")
      checkpoints = [p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
      assert checkpoints, f"no checkpoint in {workdir}"
      assert list((workdir / "samples").glob("step_*.png")), f"no sample grid in {workdir}"
      assert (workdir / "metrics.jsonl").stat().st_size > 0
    elif script == "tp2p_jax.cli.predict":
      kinds.add("predict")
      inputs = root / flag(args, "input")
      sketches = sorted(inputs.iterdir()) if inputs.is_dir() else [inputs]
      output = root / flag(args, "output")
      for sketch in sketches:
        assert (output / f"{sketch.stem}.png").is_file(), f"predict wrote no {sketch.stem}.png"
      summary = json.loads(result.stdout.strip().splitlines()[-1])
      assert summary["written"] == len(sketches) and summary["failed"] == 0
    elif script == "tp2p_jax.cli.evaluate":
      kinds.add("evaluate")
      summary = json.loads(result.stdout.strip().splitlines()[-1])
      assert {"l1", "l1_untrained", "psnr", "style_accuracy"} <= set(summary)
      assert (workdir / "eval" / f"{summary['step']}.json").is_file()
  assert kinds == {"train", "predict", "evaluate"}, kinds


def run_quick_path(text: str, root: pathlib.Path) -> None:
  for name in LAYOUT:
    source = REPO / name
    if source.is_dir():
      shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
      shutil.copy2(source, root / name)
  commands = shell_commands(fenced_block_after(text, QUICK_PATH_TAG))
  assert commands, "the quick path has no commands"
  results = run_commands(commands, root)
  check_promises(commands, results, root)


@pytest.mark.slow
def test_the_quick_path_runs_as_written(tmp_path):
  run_quick_path(readme_text(), tmp_path)
