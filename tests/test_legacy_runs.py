"""Runs written before methods were named (no `method` in config.json) still
load, predict and resume exactly.

`tests/golden/legacy_runs/` holds two tiny runs made by the earlier trainer
(commit 419cef4: CycleGAN, and pix2pixHD with its VGG16 loss), each trained
6 steps on the tests' 8 simulated devices with checkpoints at 2, 4, 6; the
fixtures keep checkpoint 4 and every step's metrics. Resuming them here must
give the steps 5 and 6 the earlier trainer logged.
"""
from __future__ import annotations

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from tp2p_jax.experiments import cyclegan, pix2pixhd
from tp2p_jax import training
from tp2p_jax.methods import read_run_config
from tp2p_jax.inference.run_loading import load_trained_run

LEGACY = pathlib.Path(__file__).parent / "golden" / "legacy_runs"


def _copy(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
  workdir = tmp_path / name
  shutil.copytree(LEGACY / name, workdir)
  return workdir


def _rows(path: pathlib.Path) -> dict[int, dict]:
  return {r["step"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.parametrize("name, method, directions", [
    ("cyclegan", "cyclegan", ("AtoB", "BtoA")), ("pix2pixhd", "paired_gan", ("AtoB",))])
def test_legacy_run_loads_and_predicts(name, method, directions, tmp_path):
  workdir = _copy(name, tmp_path)
  assert "method" not in json.loads((workdir / "config.json").read_text())
  assert read_run_config(str(workdir)).method == method
  run = load_trained_run(str(workdir))
  assert run.step == 4 and run.predictor.directions == directions
  x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  for direction in directions:
    out = np.asarray(run.predictor.generate(x, direction=direction))
    assert out.shape == x.shape and np.all(np.isfinite(out)) and np.all(np.abs(out) <= 1)


@pytest.mark.slow
@pytest.mark.parametrize("name, experiment", [("cyclegan", cyclegan), ("pix2pixhd", pix2pixhd)])
def test_legacy_run_resumes_to_the_earlier_trainers_losses(name, experiment, tmp_path):
  workdir = _copy(name, tmp_path)
  logged = _rows(LEGACY / name / "metrics.jsonl")
  config = experiment.get_config("tiny")
  with config.unlocked():
    config.batch_size = 8
    config.total_steps = 6
    config.checkpoint_every = 2
    config.log_every = 1
  assert jax.device_count() == 8
  assert training.train_and_evaluate(config, str(workdir)) == 0
  resumed = _rows(workdir / "metrics.jsonl")
  for step in (5, 6):
    for key in ("g_loss", "d_loss"):
      assert resumed[step][key] == pytest.approx(logged[step][key], rel=1e-5), (step, key)
