"""predict and evaluate on the whole machine: each batch split over all
devices, and over processes, gives what one device gives (predict on eight
in-process devices and on two processes; evaluate on two processes of two
devices, which shares every batch's rows as eight devices would).

The test process has eight simulated CPU devices (tests/conftest.py), so
the eight-device runs are in-process; the one-device and two-process runs
are subprocesses (`cli_env`: one, or two, CPU devices each)."""
from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from tests.subprocess_runs import REPO, cli_env, private_copy, run_module
from tp2p_jax.cli import predict as predict_cli
from tp2p_jax.data.toycats import render_example
from tp2p_jax.inference import evaluation

IMAGE_SIZE = 32  # the tiny run's
# 11 inputs, batch 4: three batches on one device, the last padded; two on
# eight devices (batch rounded up to 8), the last padded.
ODD_SIZES = {"s08": (50, 41), "s09": (37, 70), "s10": (33, 32)}  # (height, width)
NUM_INPUTS = 11


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory) -> pathlib.Path:
  """A private copy of the tiny run (predict stores the class averages in
  it, evaluate its eval/ folder)."""
  return private_copy(tiny_run, tmp_path_factory, "predict_devices")


@pytest.fixture(scope="module")
def sketches(tmp_path_factory) -> pathlib.Path:
  """11 toy-cat sketches: 8 at the model's square size, 3 at other sizes."""
  folder = tmp_path_factory.mktemp("sketches11")
  for i in range(NUM_INPUTS):
    name = f"s{i:02d}"
    h, w = ODD_SIZES.get(name, (IMAGE_SIZE, IMAGE_SIZE))
    sketch = Image.fromarray(render_example(i, 64)["sketch"])
    sketch.resize((w, h), Image.Resampling.BILINEAR).save(folder / f"{name}.png")
  return folder


def _summary(stdout: str) -> dict:
  return json.loads(stdout.strip().splitlines()[-1])


def _pixels(folder: pathlib.Path) -> dict[str, np.ndarray]:
  return {p.stem: np.asarray(Image.open(p), np.int16) for p in sorted(folder.iterdir())}


def _assert_same_outputs(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
  """The same files, sizes and pixels up to float rounding.

  The generator's float outputs differ by far less than one uint8 level
  between batch layouts, so each level, rounded from them, moves by at most
  1. An input at another size is then resized by PIL's Lanczos filter in
  two separable 8-bit passes; its weights' absolute sum is below 1.3, so a
  one-level difference becomes at most 2 after the first pass's rounding
  and at most 3 after the second's.
  """
  assert sorted(got) == sorted(want)
  for name, image in got.items():
    assert image.shape == want[name].shape, name
    bound = 3 if name in ODD_SIZES else 1
    assert np.abs(image - want[name]).max() <= bound, name
    assert np.abs(image - want[name]).mean() < 0.05, name


def _assert_rate(rate: float, count: int, seconds: float) -> None:
  """`rate` is count / the unrounded time, both reported to 3 decimals: the
  time was within 0.0005 s of `seconds`."""
  assert count / (seconds + 5e-4) - 1e-3 <= rate <= count / max(seconds - 5e-4, 1e-9) + 1e-3


def test_predict_on_eight_devices_equals_one_device(run_dir, sketches, tmp_path, capsys):
  args = [f"--workdir={run_dir}", f"--input={sketches}", "--style=ginger", "--batch_size=4"]
  one = run_module("tp2p_jax.cli.predict", [*args, f"--output={tmp_path / 'one'}"])
  assert one.returncode == 0, one.stderr[-3000:]
  status = predict_cli.main(["predict", *args, f"--output={tmp_path / 'eight'}"])
  out = capsys.readouterr()
  assert status == 0, out.err[-3000:]
  first, eight = _summary(one.stdout), _summary(out.out)
  assert (first["devices"], eight["devices"]) == (1, len(jax.devices())) == (1, 8)
  assert (first["batch_size"], eight["batch_size"]) == (4, 8)  # rounded up to the devices
  for summary in (first, eight):
    assert summary["written"] == NUM_INPUTS and summary["failed"] == 0
    assert summary["processes"] == 1 and summary["process_index"] == 0
    assert summary["images_per_s"] > 0 and summary["seconds"] > 0
    _assert_rate(summary["images_per_s"], NUM_INPUTS, summary["seconds"])
  _assert_same_outputs(_pixels(tmp_path / "eight"), _pixels(tmp_path / "one"))
  for name, (h, w) in ODD_SIZES.items():
    assert Image.open(tmp_path / "eight" / f"{name}.png").size == (w, h)


def test_predict_files_grid_over_devices(run_dir, sketches, tmp_path):
  """A grid makes one image per sketch and style class: 3 sketches x 9
  classes in calls of 8 split over 8 devices vs of 4 on one device."""
  from tp2p_jax.inference import run_loading
  run = run_loading.load_trained_run(str(run_dir))
  files = sorted(sketches.iterdir())[:3]
  one = predict_cli.predict_files(run, files, tmp_path / "one", grid=True, batch_size=4,
                                  devices=jax.devices()[:1])
  eight = predict_cli.predict_files(run, files, tmp_path / "eight", grid=True, batch_size=5)
  assert (one.devices, one.batch_size, eight.devices, eight.batch_size) == (1, 4, 8, 8)
  assert [p.name for p in eight.written] == [f"{f.stem}_styles.png" for f in files]
  _assert_same_outputs(_pixels(tmp_path / "eight"), _pixels(tmp_path / "one"))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _on_two_processes(module: str, args: list[str]) -> list[dict]:
  """`python -m MODULE ARGS` as processes 0 and 1 of one job, two CPU devices
  each; asserts both exit 0 and returns their JSON summaries."""
  command = [sys.executable, "-m", module, *args,
             f"--coordinator_address=127.0.0.1:{_free_port()}", "--num_processes=2"]
  procs = [subprocess.Popen([*command, f"--process_id={i}"], cwd=REPO, env=cli_env(2),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  results = []
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=600)
      results.append((p.returncode, stdout, stderr))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for status, _, stderr in results:
    assert status == 0, stderr[-3000:]
  return [_summary(stdout) for _, stdout, _ in results]


@pytest.mark.multiprocess
def test_predict_on_two_processes_writes_each_input_once(run_dir, sketches, tmp_path):
  """Two processes of two devices each: process i writes the inputs at
  positions i, i + 2, ...; together exactly the one-process outputs."""
  out_dir = tmp_path / "two"
  args = [f"--workdir={run_dir}", f"--input={sketches}", "--style=ginger", "--batch_size=4"]
  summaries = _on_two_processes("tp2p_jax.cli.predict", [*args, f"--output={out_dir}"])
  assert [s["process_index"] for s in summaries] == [0, 1]
  assert all(s["processes"] == 2 and s["devices"] == 2 for s in summaries)
  assert [s["written"] for s in summaries] == [6, 5]  # 11 inputs, interleaved
  names = sorted(p.stem for p in sketches.iterdir())
  assert sorted(p.stem for p in out_dir.iterdir()) == names
  one = tmp_path / "one"  # one process, its eight devices
  assert predict_cli.main(["predict", *args, f"--output={one}"]) == 0
  _assert_same_outputs(_pixels(out_dir), _pixels(one))


@pytest.mark.multiprocess
def test_evaluate_on_two_processes_equals_one_process(run_dir):
  """Two processes of two devices each share the rows of every network call
  (an all-gather brings them back) and report the one-process metrics."""
  two = _on_two_processes("tp2p_jax.cli.evaluate", [f"--workdir={run_dir}", "--batch_size=4"])
  assert all(s["processes"] == 2 and s["devices"] == 2 for s in two)
  one = evaluation.evaluate(str(run_dir), batch_size=4, devices=jax.devices()[:1])
  n = one["num_examples"]
  for key in ("l1", "l1_untrained", "psnr", "ssim", "lpips"):
    for summary in two:
      assert summary[key] == pytest.approx(one[key], rel=1e-4, abs=1e-5), key
  for key in ("style_accuracy", "encoder_accuracy", "encoder_centroid_accuracy"):
    for summary in two:
      assert abs(summary[key] - one[key]) <= 1 / n + 1e-9, key