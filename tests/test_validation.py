"""Validation while training (`eval_every`, `keep_best`): the held-out scores
on one device and on eight, which examples each process feeds, and the
config fields' one-line errors. The loop's side (eval/ rows, best/ across
resumes) is in tests/test_train.py; a real run's in tests/test_run_train.py."""
from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tp2p_jax import metrics, training
from tp2p_jax.core import loop, mesh as mesh_lib
from tp2p_jax.core.best_checkpoint import METRIC_DIRECTIONS
from tp2p_jax.core.run_dir import RunError
from tp2p_jax.data import pipeline
from tp2p_jax.data.toycats import ToyCatsSource
from tp2p_jax.experiments import toycats
from tp2p_jax.methods import read_run_config, test_mode
from tp2p_jax.methods.validation import held_out_validation, process_rows


def _generate(state, real_a, real_b, seeds):
  # The seeds shift each output, so a row given another example's seed
  # (padding, another device's rows) changes the scores.
  shift = 0.02 * (seeds % 5).astype(jnp.float32)[:, None, None, None]
  return jnp.clip(state["w"] * real_a + (1 - state["w"]) * real_b + shift, -1.0, 1.0)


def _classify(state, images):
  del state
  return jnp.mean(images, axis=(1, 2))  # (B, 3): the brightest channel is the "class"


def test_held_out_scores_are_evaluates_on_one_device_and_on_eight():
  """Five examples in padded batches, over one device and over eight: the
  metrics evaluate's summaries give for the same outputs."""
  source = ToyCatsSource(7, 16, seed=3, body_probability=0.5)  # resized to 12
  state = {"w": jnp.float32(0.75)}
  rows = next(pipeline.make_eval_batches(source, batch_size=5, image_size=12, num_examples=5))
  # Pair k gets evaluate --seed=0's dropout seed, 0 + k.
  fake = _generate(state, rows["real_a"], rows["real_b"], test_mode.image_seeds(0, range(5)))
  expected = metrics.summarize_reconstruction({
      name: np.asarray(metrics.reconstruction_metric(name, fake, rows["real_b"]))
      for name in ("l1", "psnr", "ssim")})
  expected["style_accuracy"] = float(np.mean(np.argmax(np.asarray(_classify(state, fake)), -1)
                                             == rows["label"]))
  assert 0 < expected["style_accuracy"] < 1  # the labels decide something
  for devices, batch_size in ((1, 2), (8, 8)):
    mesh = mesh_lib.make_mesh(jax.devices()[:devices])
    validate = held_out_validation(source, num_examples=5, image_size=12,
                                   batch_size=batch_size, generate=_generate,
                                   classify=_classify)
    scores = validate(jax.device_put(state, mesh_lib.replicated(mesh)), mesh,
                      loop.stage_jit())
    assert scores.keys() == expected.keys()
    for name, value in expected.items():
      assert scores[name] == pytest.approx(value, rel=1e-5, abs=1e-6), (devices, name)


@pytest.mark.parametrize("processes, devices_each", [(1, 8), (2, 4), (4, 1)])
def test_every_held_out_example_is_fed_once_over_the_processes(processes, devices_each):
  fed = np.concatenate([
      np.concatenate(process_rows(11, 8, processes * devices_each,
                                  list(range(p * devices_each, (p + 1) * devices_each))))
      for p in range(processes)])
  assert sorted(fed[fed < 11]) == list(range(11))


def _config(**fields):
  config = toycats.get_config("tiny")
  with config.unlocked():
    config.update(fields)
  return config


@pytest.mark.parametrize("fields, message", [
    ({"eval_every": 5, "keep_best": "eval/nope"},
     "--config.keep_best='eval/nope': not a validation metric; one of "
     + ", ".join(METRIC_DIRECTIONS)),
    ({"keep_best": "eval/lpips"}, "--config.keep_best='eval/lpips' needs validation: set "
     "--config.eval_every"),
    ({"eval_every": -1}, "--config.eval_every=-1: must be an integer >= 0"),
    ({"eval_every": 5, "eval_examples": 0}, "--config.eval_examples=0: must be an integer >= 1"),
    ({"eval_every": 5, "eval_inception_weights": "/no/such/inception.pth"},
     "--config.eval_inception_weights=/no/such/inception.pth: no such file"),
])
def test_validation_fields_that_cannot_work_are_one_line(fields, message):
  with pytest.raises(RunError) as e:
    training.check_config(_config(**fields))
  assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_a_config_from_before_validation_passes_and_validates_nothing():
  legacy = pathlib.Path(__file__).parent / "golden" / "legacy_runs" / "pix2pixhd"
  config = read_run_config(str(legacy))
  assert "eval_every" not in config and "keep_best" not in config
  training.check_config(config)


def test_train_refuses_an_unknown_keep_best_metric_in_one_line(tmp_path, capsys):
  from tp2p_jax.cli import train as train_cli
  status = train_cli.main(["train", "--config=toycats:tiny", f"--workdir={tmp_path / 'run'}",
                           "--config.eval_every=10", "--config.keep_best=lpips"])
  err = capsys.readouterr().err
  assert status == 2 and err.splitlines() == [
      "error: --config.keep_best='lpips': not a validation metric; one of "
      + ", ".join(METRIC_DIRECTIONS) + " (or '' for none)"]
  assert not (tmp_path / "run").exists()


def test_train_refuses_an_unknown_test_mode_in_one_line(tmp_path, capsys):
  from tp2p_jax.cli import train as train_cli
  status = train_cli.main(["train", "--config=pix2pix:tiny", f"--workdir={tmp_path / 'run'}",
                           "--config.test_mode=test"])
  err = capsys.readouterr().err
  assert status == 2 and err.splitlines() == [
      "error: --config.test_mode='test': choose from eval, train"]
  assert not (tmp_path / "run").exists()


def test_cyclegan_validation_needs_held_out_pairs(tmp_path, capsys):
  from PIL import Image

  from tp2p_jax.cli import train as train_cli
  for domain in ("trainA", "trainB"):
    (tmp_path / "data" / domain).mkdir(parents=True)
    for i in range(2):
      Image.fromarray(np.full((32, 32, 3), 100 * i, np.uint8)).save(
          tmp_path / "data" / domain / f"{i}.png")
  status = train_cli.main(["train", "--config=cyclegan:tiny", f"--workdir={tmp_path / 'run'}",
                           "--config.data.source=folders",
                           f"--config.data.data_dir={tmp_path / 'data'}",
                           "--config.eval_every=2"])
  err = capsys.readouterr().err
  assert status == 2 and err.splitlines() == [
      "error: --config.eval_every=2: validation scores A->B against held-out pairs, and data "
      "source 'folders' has no sketch/photo pairs (it gives two unpaired domains, for method "
      "'cyclegan'); set --config.eval_every=0"]
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("keep_best, given", [
    ("eval/lpips", "eval/l1, eval/psnr, eval/ssim"),  # 12x12: too small for LPIPS
    ("eval/fid", "eval/l1, eval/psnr, eval/ssim (eval/fid and eval/kid need "
                 "--config.eval_inception_weights)")])
def test_keep_best_must_be_a_metric_the_run_validates(keep_best, given):
  with pytest.raises(RunError) as e:
    held_out_validation(ToyCatsSource(2, 16), num_examples=2, image_size=12, batch_size=2,
                        generate=_generate, keep_best=keep_best)
  assert str(e.value) == f"--config.keep_best={keep_best!r}: this run's validation gives {given}"
