"""The test modes (`tp2p_jax.methods.test_mode`; `--test_mode`, `--seed` of
predict, evaluate, serve and export): defaults per family, train mode's
per-image statistics and seeded dropout whatever the batching, and the
same function in predict, the server and both export formats.

The run is an untrained pix2pix U-Net (BatchNorm, dropout in its sixth
level) at 64x64, written as a checkpoint without training: every check
compares two ways of computing the same thing, so the weights need no
training.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import ml_collections
import numpy as np
from PIL import Image
import pytest

from tp2p_jax import methods
from tp2p_jax.cli import evaluate as evaluate_cli, export as export_cli
from tp2p_jax.cli import predict as predict_cli, serve as serve_cli
from tp2p_jax.core.checkpoints import Checkpointer
from tp2p_jax.core.run_dir import config_to_dict, save_run_config
from tp2p_jax.data.toycats import render_example
from tp2p_jax.experiments import cyclegan, pix2pix, pix2pixhd, toycats, transpix2pix
from tp2p_jax.inference import exporting, run_loading
from tp2p_jax.interop.run_import import IMPORTED_DATA_STATE
from tp2p_jax.methods import paired_gan
from tp2p_jax.methods.networks import generator_from_config
from tp2p_jax.methods.test_mode import apply_generator, draws_dropout, image_seeds
from tp2p_jax.serving.model import ServedModel

SIZE = 64


def _pix2pix_config():
  """pix2pix's tiny config with one more U-Net level (the first that has
  dropout) at 64x64, narrower."""
  c = pix2pix.tiny(pix2pix.base_config())
  c.image_size = SIZE
  c.generator_kwargs.num_downs = 6
  c.generator_kwargs.ngf = 4
  c.discriminator_kwargs.base_features = 4
  return c


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> pathlib.Path:
  """The untrained run as a run directory (checkpoint 0 and config.json):
  an initialised EMA generator, every other leaf zero (inference reads the
  EMA generator only)."""
  config = _pix2pix_config()
  workdir = tmp_path_factory.mktemp("test_mode") / "run"
  shapes = paired_gan.state_shapes(config)
  state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  generator = generator_from_config(config)
  g = jax.jit(lambda key: generator.init(key, np.zeros((1, SIZE, SIZE, 3), np.float32),
                                         train=False))(jax.random.key(0))
  state = dataclasses.replace(state, ema={**state.ema, "g": g})
  ckpt = Checkpointer(str(workdir / "checkpoints"), keep=1, writer=True)
  try:
    ckpt.save(0, state, IMPORTED_DATA_STATE, config_to_dict(config))
  finally:
    ckpt.close()
  save_run_config(str(workdir), config)
  return workdir


@pytest.fixture(scope="module")
def run(run_dir) -> run_loading.TrainedRun:
  return run_loading.load_trained_run(str(run_dir))


def _sketches(n: int) -> np.ndarray:
  """(n, 64, 64, 3) different toy-cat sketches in [-1, 1]."""
  return np.stack([render_example(i, SIZE)["sketch"] for i in range(n)]
                  ).astype(np.float32) / 127.5 - 1


def test_defaults_per_family_legacy_runs_and_the_flag():
  assert pix2pix.get_config().test_mode == "train"  # junyanz's test.py without --eval
  assert pix2pixhd.get_config().test_mode == "train"  # NVIDIA's test.py never calls eval()
  for experiment in (transpix2pix, toycats, cyclegan):
    assert experiment.get_config().test_mode == "eval"
  legacy = [({"method": "paired_gan", "generator": "unet_256"}, "train"),
            ({"generator": "pix2pixhd"}, "train"),
            ({"generator": "transpix2pix"}, "eval"),
            ({"model": "cyclegan", "generator": "unet_256"}, "eval")]
  for fields, mode in legacy:
    config = methods.with_test_mode_field(methods.with_method_field(
        ml_collections.ConfigDict(fields)))
    assert config.test_mode == mode, fields
  kept = methods.with_test_mode_field(cyclegan.get_config())
  assert kept.test_mode == "eval"
  # The four commands take it; export's program takes the seeds as input.
  for module in (predict_cli, evaluate_cli, serve_cli, export_cli):
    fv = module._define_flags()  # pylint: disable=protected-access
    fv(["x", "--test_mode=train", *(["--seed=5"] if module is not export_cli else [])])
    assert fv.test_mode == "train" and ("seed" in fv) == (module is not export_cli)


def test_an_unknown_test_mode_is_one_line(tmp_path, capsys):
  status = predict_cli.main(["predict", f"--workdir={tmp_path}", f"--input={tmp_path}",
                             f"--output={tmp_path / 'out'}", "--test_mode=test"])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 2 and len(err) == 1 and "--test_mode" in err[0], err


def test_train_mode_is_per_image_seeded_and_unlike_eval(run):
  predictor = run_loading.with_test_mode(run, seed=3).predictor
  assert predictor.test_mode == "train" and predictor.seed == 3  # the run's default
  x = _sketches(3)
  seeds = image_seeds(3, np.arange(3))
  together = np.asarray(predictor.generate(x, seeds=seeds))
  # Each image is normalised with its own statistics and masked by its own
  # seed: batches of 2, the last padded by repeating its row, give the
  # batch of 3's outputs to float rounding.
  padded = run_loading.in_fixed_batches(lambda x, s: predictor.generate(x, seeds=s),
                                        [x, seeds], batch_size=2)
  np.testing.assert_allclose(padded, together, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(predictor.generate(x, seeds=seeds)), together)
  other = np.asarray(predictor.generate(x, seeds=image_seeds(4, np.arange(3))))
  eval_mode = run_loading.with_test_mode(run, "eval").predictor
  assert eval_mode.seed == 0
  evaluated = np.asarray(eval_mode.generate(x))
  # O(0.1) apart, where the agreements above are within 1e-5.
  assert np.max(np.abs(other - together)) > 0.02
  assert np.max(np.abs(evaluated - together)) > 0.02
  # Statistics over the whole batch would be another function.
  no_dropout = predictor.generator.clone(dropout_rate=0.0)

  @jax.jit
  def joint_and_per_image(variables, x, seeds):
    joint, _ = no_dropout.apply(variables, x, train=True, mutable=["batch_stats"])
    return joint, apply_generator(no_dropout, variables, x, None, "train", seeds)

  joint, per_image = joint_and_per_image(predictor.variables["AtoB"], x, seeds)
  assert np.max(np.abs(np.asarray(joint) - np.asarray(per_image))) > 0.02
  with pytest.raises(ValueError, match="unknown test mode 'test'"):
    run_loading.with_test_mode(run, "test")


def test_instance_norm_without_dropout_is_the_same_either_way():
  """CycleGAN's resnet generator (instance norm, no dropout) has nothing
  that a test mode changes."""
  generator = generator_from_config(cyclegan.get_config("tiny"))
  x = _sketches(2)[:, :32, :32]
  variables = jax.jit(lambda key: generator.init(key, x[:1], train=False))(jax.random.key(0))
  assert not draws_dropout(generator, variables, 32, None)
  both = jax.jit(lambda v, x, s: [apply_generator(generator, v, x, None, mode, s)
                                  for mode in ("eval", "train")])
  eval_out, train_out = both(variables, x, image_seeds(0, [0, 1]))
  np.testing.assert_allclose(np.asarray(train_out), np.asarray(eval_out), atol=1e-6)


def _predict(capsys, *args: str) -> dict:
  status = predict_cli.main(["predict", *args])
  out = capsys.readouterr()
  assert status == 0, out.err
  return json.loads(out.out.strip().splitlines()[-1])


def _pixels(folder: pathlib.Path) -> dict[str, np.ndarray]:
  return {p.stem: np.asarray(Image.open(p), np.int16) for p in sorted(folder.iterdir())}


def test_predict_flags_devices_batching_and_seed(run, run_dir, tmp_path, capsys):
  inputs = tmp_path / "in"
  inputs.mkdir()
  for i, sketch in enumerate(_sketches(3)):
    Image.fromarray(((sketch + 1) * 127.5).round().astype(np.uint8)).save(inputs / f"s{i}.png")
  # The command line: all 8 test devices, one batch of 8 (5 padding rows).
  common = [f"--workdir={run_dir}", f"--input={inputs}", "--prepare=pad"]
  assert _predict(capsys, *common, f"--output={tmp_path / 'all'}")["test_mode"] == "train"
  assert _predict(capsys, *common, f"--output={tmp_path / 'eval'}",
                  "--test_mode=eval")["test_mode"] == "eval"
  # One device, batches of 1.
  files = sorted(inputs.iterdir())
  one = [jax.devices()[0]]
  predict_cli.predict_files(run, files, tmp_path / "one", batch_size=1, prepare="pad",
                            devices=one)
  predict_cli.predict_files(run_loading.with_test_mode(run, seed=1), files, tmp_path / "seed1",
                            batch_size=1, prepare="pad", devices=one)
  outputs = {name: _pixels(tmp_path / name) for name in ("all", "eval", "one", "seed1")}
  for stem, image in outputs["all"].items():
    # The same outputs to float rounding, whatever the devices and batches.
    assert np.max(np.abs(outputs["one"][stem] - image)) <= 1, stem
    assert np.max(np.abs(outputs["seed1"][stem] - image)) > 8, stem
    assert np.max(np.abs(outputs["eval"][stem] - image)) > 8, stem


def test_serve_and_both_export_formats_reproduce_predict(run, tmp_path):
  predictor = run_loading.with_test_mode(run, seed=7).predictor
  x = _sketches(2)
  # The server: every request is the first image of its own input (seed 7).
  model = ServedModel(run_loading.with_test_mode(run, seed=7), batch_size=2, prepare="pad")
  model.warm_up()
  jobs = [model.make_job(((s + 1) * 127.5).round().astype(np.uint8)) for s in x]
  served = np.stack(model.run_batch(jobs))
  expected = np.asarray(predictor.generate(x, seeds=image_seeds(7, [0, 0])))
  np.testing.assert_allclose(served, expected, atol=1e-5)

  # jax.export: the seeds are an input; the summary says what they are.
  seeds = image_seeds(7, [0, 1])
  expected = np.asarray(predictor.generate(x, seeds=seeds))
  summary = exporting.write_export(run, str(tmp_path / "g.jaxexport"))
  assert summary["test_mode"] == "train" and "S + k" in summary["seed"]
  assert summary["inputs"][-1] == "int32[b]"
  exported = exporting.load_exported(str(tmp_path / "g.jaxexport"))
  np.testing.assert_allclose(np.asarray(exported.call(x, seeds)), expected, atol=1e-5)

  # ONNX: onnxruntime draws the same masks from the same seeds.
  pytest.importorskip("jax2onnx")
  ort = pytest.importorskip("onnxruntime")
  from tp2p_jax.inference import onnx_export
  summary = onnx_export.write_onnx_export(run, str(tmp_path / "g.onnx"))
  assert [i["name"] for i in summary["inputs"]] == ["images", "seed"]
  session = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
  assert session.get_modelmeta().custom_metadata_map["tp2p.test_mode"] == "train"
  (got,) = session.run(["output"], {"images": x, "seed": seeds})
  scale = np.max(np.abs(expected))
  assert np.max(np.abs(got - expected)) <= 1e-4 * scale
