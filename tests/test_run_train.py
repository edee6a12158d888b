"""End to end through `run_train.py`: the dry run, a tiny toy-cats run with
its outputs, and the SIGKILL-and-restart check against an uninterrupted run."""
from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tests.subprocess_runs import REPO, TINY, cli_env as _env, run_train as _run

pytestmark = pytest.mark.slow  # each test runs the training command in a subprocess


def _rows(workdir: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tiny_run) -> pathlib.Path:
  return tiny_run


def test_tiny_run_writes_its_outputs(uninterrupted):
  w = uninterrupted
  assert sorted(int(p.name) for p in (w / "checkpoints").iterdir() if p.name.isdigit()) == [
      10, 20, 30, 40]
  assert (w / "style_encoder" / "checkpoints" / "10").is_dir()
  assert json.loads((w / "style_encoder" / "eval.json").read_text())["heldout_examples"] == 8
  config = json.loads((w / "config.json").read_text())
  assert config["total_steps"] == 40 and config["lambda_l1"] == 100.0
  rows = _rows(w)
  assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30, 35, 40]
  for key in ("d_loss", "g_loss", "g_gan", "g_l1", "g_perceptual", "d_real", "d_fake",
              "g_grad_norm", "d_grad_norm", "g_param_norm", "d_param_norm", "lr"):
    assert key in rows[-1], key
  assert rows[-1]["g_l1"] < rows[0]["g_l1"]
  scored = {r["step"]: r for r in rows if "eval/l1" in r}
  assert sorted(scored) == [20, 40]
  for r in scored.values():
    assert 0 < r["eval/l1"] <= 2 and 0 < r["eval/psnr"] < 100 and -1 <= r["eval/ssim"] <= 1
    assert 0 < r["eval/lpips"] and 0 <= r["eval/style_accuracy"] <= 1
  # The EMA generator hardly moves in 40 steps ("What the tiny run shows"):
  # step 40 does not beat step 20 by a margin that could replace it.
  assert sorted(p.name for p in (w / "best").iterdir() if p.name.isdigit()) == [
      "40" if scored[40]["eval/lpips"] < scored[20]["eval/lpips"] else "20"]
  assert sorted(p.name for p in (w / "samples").iterdir()) == [
      "step_0000010.png", "step_0000020.png", "step_0000030.png", "step_0000040.png"]
  assert list((w / "tensorboard" / "metrics").glob("events.out.tfevents.*"))


def test_sigkill_after_checkpoint_20_then_restart_matches(uninterrupted, tmp_path):
  workdir = tmp_path / "killed"
  cmd = [sys.executable, "run_train.py", *TINY, f"--workdir={workdir}"]
  proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  ckpt20 = workdir / "checkpoints" / "20"
  deadline = time.time() + 600
  while not ckpt20.is_dir() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  assert not (workdir / "checkpoints" / "40").exists()

  out = _run([*TINY, f"--workdir={workdir}"])
  assert out.returncode == 0, out.stderr[-3000:]
  resumed, reference = _rows(workdir), _rows(uninterrupted)
  assert [r["step"] for r in resumed] == [r["step"] for r in reference]
  for a, b in zip(resumed, reference):
    assert a.keys() == b.keys(), a["step"]  # eval/ scores at the same steps
    for key in a:
      assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)
  # The best step survives the kill and the resume, as in the run without them.
  assert sorted(p.name for p in (workdir / "best").iterdir()) == sorted(
      p.name for p in (uninterrupted / "best").iterdir())


def test_few_steps_on_a_prepared_folder(tmp_path):
  from PIL import Image

  from tp2p_jax.data import prepared
  from tp2p_jax.data.toycats import STYLE_NAMES, render_example

  photos = tmp_path / "photos"
  for i in range(12):
    example = render_example(i, 96, style=5 if i % 2 else 7)  # ginger / white
    folder = photos / ("ginger" if i % 2 else "white")
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(example["photo"]).save(folder / f"cat{i}.png")
  data_dir = tmp_path / "data"
  result = prepared.build("folder", str(photos), str(data_dir), image_size=48,
                          val_fraction=0.25)
  # Coat-named folders share the toy cats' nine labels, so the run below
  # compiles the same programs as the toy-cats runs above (cache hits).
  assert result.written == 12 and list(result.classes) == list(STYLE_NAMES)

  workdir = tmp_path / "run"
  out = _run(["--config=experiments/toycats.py:tiny", "--config.data.source=prepared",
              f"--workdir={workdir}",
              f"--config.data.data_dir={result.dataset_dir}", "--config.total_steps=4",
              "--config.style.total_steps=2", "--config.log_every=2",
              "--config.checkpoint_every=2"])
  assert out.returncode == 0, out.stderr[-3000:]
  config = json.loads((workdir / "config.json").read_text())
  assert config["data"]["source"] == "prepared"
  assert config["data"]["style_names"] == list(result.classes)
  rows = _rows(workdir)
  assert [r["step"] for r in rows] == [2, 4]
  assert (workdir / "checkpoints" / "4").is_dir()
  assert list((workdir / "samples").glob("*.png"))
