"""Inference on a trained run: predict, evaluate and export, end to end on
the shared tiny toy-cats run, plus the pieces they are built from."""
from __future__ import annotations

import json
import pathlib
import shutil
from hypothesis import given, strategies as st
import numpy as np
from PIL import Image
import pytest

from tests.subprocess_runs import run_module
from tp2p_jax.data.sketch import content_box
from tp2p_jax.data.toycats import STYLE_NAMES, render_example
from tp2p_jax.inference import run_loading, sketch_io, styles

SIZES = [(200, 300), (64, 64), (333, 257)]  # (height, width) of the user sketches


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory) -> pathlib.Path:
  """A private copy of the tiny run (these tests write eval/ and styles into it)."""
  copy = tmp_path_factory.mktemp("inference") / "run"
  shutil.copytree(tiny_run, copy)
  return copy


@pytest.fixture(scope="module")
def sketches(tmp_path_factory) -> pathlib.Path:
  """Toy-cat sketches at three odd sizes, a corrupt PNG and a non-image file."""
  folder = tmp_path_factory.mktemp("sketches")
  for i, (h, w) in enumerate(SIZES):
    sketch = render_example(i, 128)["sketch"]
    Image.fromarray(sketch).resize((w, h), Image.Resampling.BILINEAR).save(folder / f"cat{i}.png")
  (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
  (folder / "notes.txt").write_text("not an input: no image suffix")
  return folder


@pytest.fixture(scope="module")
def loaded(run_dir) -> run_loading.TrainedRun:
  return run_loading.load_trained_run(str(run_dir))


def test_predict_writes_each_input_at_its_own_size(run_dir, sketches, tmp_path):
  out_dir = tmp_path / "out"
  out = run_module("tp2p_jax.predict", [f"--workdir={run_dir}", f"--input={sketches}",
                                        f"--output={out_dir}", "--style=ginger",
                                        "--batch_size=2"])
  assert out.returncode == 1, out.stderr[-3000:]  # one corrupt input
  assert "broken.png" in out.stderr and "Traceback" not in out.stderr
  assert "notes.txt" not in out.stderr
  assert sorted(p.name for p in out_dir.iterdir()) == ["cat0.png", "cat1.png", "cat2.png"]
  for i, (h, w) in enumerate(SIZES):
    image = Image.open(out_dir / f"cat{i}.png")
    assert image.size == (w, h) and image.mode == "RGB"
  # The class averages were computed once and stored in the run.
  assert (run_dir / styles.CLASS_EMBEDDINGS_FILE).is_file()


def test_predict_style_image_mix_and_grid(run_dir, sketches, tmp_path):
  single = sketches / "cat1.png"
  photo = tmp_path / "photo.png"
  Image.fromarray(render_example(5, 40, style=5)["photo"]).save(photo)
  for name, extra in [("image", [f"--style_image={photo}"]),
                      ("mix", ["--style_mix=black:white:0.3"]),
                      ("grid", ["--grid"])]:
    out = run_module("tp2p_jax.predict", [f"--workdir={run_dir}", f"--input={single}",
                                          f"--output={tmp_path / name}", *extra])
    assert out.returncode == 0, (name, out.stderr[-3000:])
  assert Image.open(tmp_path / "image" / "cat1.png").size == (64, 64)
  assert Image.open(tmp_path / "mix" / "cat1.png").size == (64, 64)
  grid = Image.open(tmp_path / "grid" / "cat1_styles.png")
  size, pad = 32, 2  # the tiny run's image size; image_grid's padding
  assert grid.size[0] == (len(STYLE_NAMES) + 1) * (size + pad) + pad
  assert grid.size[1] > size + 2 * pad  # captions above the row


@pytest.mark.parametrize("args, message", [
    (["--style=tabby"], "unknown style class 'tabby'"),
    ([], "give exactly one of"),
    (["--style=black", "--style_mix=black:white:0.5"], "give exactly one of"),
    (["--style_mix=black:white:2"], "must be in [0, 1]"),
])
def test_predict_usage_errors_are_one_line(run_dir, sketches, tmp_path, args, message):
  out = run_module("tp2p_jax.predict", [f"--workdir={run_dir}",
                                        f"--input={sketches / 'cat0.png'}",
                                        f"--output={tmp_path}", *args])
  assert out.returncode == 2
  assert message in out.stderr and "Traceback" not in out.stderr


def test_predict_names_a_missing_run(tmp_path, sketches):
  out = run_module("tp2p_jax.predict", [f"--workdir={tmp_path / 'nope'}",
                                        f"--input={sketches}", f"--output={tmp_path}",
                                        "--style=black"])
  assert out.returncode == 2 and "config.json: not found" in out.stderr


def _inception_npz(path: pathlib.Path) -> pathlib.Path:
  from tp2p_jax.metrics import init_inception_variables, to_torch_state_dict
  np.savez(path, **to_torch_state_dict(init_inception_variables(0)))
  return path


def test_evaluate_reports_every_metric(run_dir, tmp_path):
  weights = _inception_npz(tmp_path / "inception.npz")
  out = run_module("tp2p_jax.evaluate", [f"--workdir={run_dir}", "--batch_size=4",
                                         f"--inception_weights={weights}",
                                         "--inception_size=75"])
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["step"] == 40 and result["split"] == "validation"
  assert result["num_examples"] == 8
  for key in ("l1", "l1_untrained", "psnr", "ssim", "lpips", "style_accuracy",
              "encoder_eer", "encoder_accuracy", "encoder_centroid_accuracy", "fid", "kid",
              "kid_std"):
    assert np.isfinite(result[key]), key
  assert 0.0 <= result["l1"] <= 2.0 and 0.0 < result["l1_untrained"] <= 2.0
  assert 0.0 <= result["style_accuracy"] <= 1.0 and 0.0 <= result["encoder_eer"] <= 1.0
  assert set(result["style_accuracy_per_class"]) <= set(STYLE_NAMES)
  assert result["ssim"] <= 1.0 and result["lpips"] >= 0.0 and result["fid"] >= 0.0
  assert json.loads((run_dir / "eval" / "40.json").read_text()) == result
  assert pathlib.Path(result["projection"]).is_file()
  assert pathlib.Path(result["inception_real_cache"]).is_file()


def test_untrained_floor_is_the_runs_own_initial_generator(loaded):
  """l1_untrained uses the weights the trainer started from (same seed and
  init path), not some other random draw."""
  import jax
  from tp2p_jax.train import builders
  gan = builders.build_gan(loaded.config)
  start = jax.jit(gan.init)(jax.random.PRNGKey(loaded.config.seed), loaded.style_variables)
  untrained = run_loading.untrained_generator_variables(loaded)
  for a, b in zip(jax.tree.leaves(untrained), jax.tree.leaves(start.ema["g"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(untrained),
                                                      jax.tree.leaves(loaded.generator_variables))]
  assert any(moved)  # 40 steps moved the EMA generator away from its start


def test_export_round_trip_with_symbolic_batch(loaded, tmp_path):
  from tp2p_jax.inference import exporting
  summary = exporting.write_export(loaded, str(tmp_path / "g.jaxexport"))
  assert summary["step"] == 40 and summary["styles"] == list(STYLE_NAMES)
  program = exporting.load_exported(str(tmp_path / "g.jaxexport"))
  rng = np.random.default_rng(0)
  for batch in (1, 3):
    x = rng.uniform(-1, 1, (batch, 32, 32, 3)).astype(np.float32)
    s = rng.normal(size=(batch, loaded.style_dim)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(program.call(x, s)),
                               np.asarray(loaded.generate(x, s)), rtol=1e-5, atol=1e-5)
  with np.load(tmp_path / "g.jaxexport.styles.npz") as f:
    assert f["means"].shape == (len(STYLE_NAMES), loaded.style_dim)


def test_class_embeddings_are_class_means(loaded):
  bank = styles.compute_class_embeddings(loaded, max_examples=24, batch_size=8)
  assert bank.counts.sum() == 24
  # Recompute one class directly.
  from tp2p_jax.data import pipeline
  from tp2p_jax.data.sources import sources_from_config
  c = loaded.config
  train, _ = sources_from_config(c.data, image_size=c.image_size, seed=c.seed)
  (batch,) = list(pipeline.make_eval_batches(train, batch_size=24, image_size=c.image_size,
                                             num_examples=24))
  k = int(batch["label"][0])
  expected = np.asarray(loaded.embed(batch["real_b"]))[batch["label"] == k].mean(0)
  np.testing.assert_allclose(bank.means[k], expected, rtol=1e-4, atol=1e-5)


def test_style_mix_endpoints_and_parsing():
  bank = styles.ClassEmbeddings(("a", "b", "c:d"), np.eye(3, dtype=np.float32),
                                np.array([2, 3, 0]))
  np.testing.assert_allclose(styles.mix(bank, "a", "b", 0.0), [1, 0, 0])
  np.testing.assert_allclose(styles.mix(bank, "a", "b", 0.25), [0.75, 0.25, 0])
  assert styles.parse_style_mix("c:d:a:0.5") == ("c:d", "a", 0.5)
  with pytest.raises(ValueError, match="no training photos"):
    bank.of("c:d")
  with pytest.raises(ValueError, match="CLASS_A:CLASS_B:T"):
    styles.parse_style_mix("a:b")


@given(st.integers(1, 11), st.integers(1, 5))
def test_in_fixed_batches_compiles_one_shape(n: int, batch_size: int):
  seen: list[tuple[int, ...]] = []

  def fn(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    seen.append(x.shape)
    return x * 2 + y

  x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
  y = np.ones((n, 2), np.float32)
  np.testing.assert_array_equal(run_loading.in_fixed_batches(fn, [x, y], batch_size), x * 2 + y)
  assert set(seen) == {(batch_size, 2)}


@given(st.integers(8, 400), st.integers(8, 400), st.sampled_from(["pad", "hand_drawn"]))
def test_prepare_and_restore_keep_the_input_size(h: int, w: int, mode: str):
  image = np.full((h, w, 3), 255, np.uint8)
  image[h // 4: 3 * h // 4, w // 2] = 0  # one dark stroke
  prepared = sketch_io.prepare_sketch(image, 32, mode)
  assert prepared.image.shape == (32, 32, 3)
  assert prepared.image.min() >= -1.0 and prepared.image.max() <= 1.0
  top, left, bh, bw = prepared.box
  assert 0 <= top and 0 <= left and top + bh <= 32 and left + bw <= 32
  assert max(bh, bw) == 32
  restored = sketch_io.restore_size(np.zeros((32, 32, 3), np.float32), prepared)
  assert restored.shape == (h, w, 3) and restored.dtype == np.uint8


def test_content_box_centres_the_longer_side():
  assert content_box(200, 300, 64) == (10, 0, 43, 64)
  assert content_box(64, 64, 64) == (0, 0, 64, 64)


@pytest.fixture(scope="module")
def pix2pix_run(tmp_path_factory) -> pathlib.Path:
  """A 4-step tiny pix2pix run: a generator without a style input."""
  from experiments import pix2pix
  from tp2p_jax.train import trainer
  workdir = tmp_path_factory.mktemp("pix2pix_run")
  config = pix2pix.get_config("tiny")
  with config.unlocked():
    config.batch_size = 8  # one example per simulated device
  assert trainer.train_and_evaluate(config, str(workdir)) == 0
  return workdir


def test_style_free_runs_predict_evaluate_and_export(pix2pix_run, sketches, tmp_path):
  from tp2p_jax.inference import evaluation, exporting
  args = [f"--workdir={pix2pix_run}", f"--input={sketches / 'cat0.png'}",
          f"--output={tmp_path / 'out'}"]
  out = run_module("tp2p_jax.predict", [*args, "--style=black"])
  assert out.returncode == 2 and "(unet) takes no style input" in out.stderr
  out = run_module("tp2p_jax.predict", args)
  assert out.returncode == 0, out.stderr[-3000:]
  assert Image.open(tmp_path / "out" / "cat0.png").size == (SIZES[0][1], SIZES[0][0])

  result = evaluation.evaluate(str(pix2pix_run), batch_size=4)
  assert result["model"] == "unet" and result["step"] == 4
  assert np.isfinite(result["l1"]) and np.isfinite(result["l1_untrained"])
  assert "style_accuracy" not in result and "encoder_eer" not in result

  run = run_loading.load_trained_run(str(pix2pix_run))
  summary = exporting.write_export(run, str(tmp_path / "p2p.jaxexport"))
  assert "styles" not in summary
  program = exporting.load_exported(str(tmp_path / "p2p.jaxexport"))
  x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(program.call(x)), np.asarray(run.generate(x)),
                             rtol=1e-5, atol=1e-5)


def test_cyclegan_runs_predict_both_ways(sketches, tmp_path):
  import jax
  from experiments import cyclegan as cyclegan_config
  from tp2p_jax.train.cyclegan_trainer import train_cyclegan
  config = cyclegan_config.get_config("tiny")
  config.batch_size = len(jax.devices())
  config.total_steps = 2
  workdir = tmp_path / "cyclegan"
  assert train_cyclegan(config, str(workdir)).step == 2
  for direction in ("AtoB", "BtoA"):
    out_dir = tmp_path / direction
    out = run_module("tp2p_jax.predict", [f"--workdir={workdir}", f"--input={sketches}",
                                          f"--output={out_dir}", f"--direction={direction}"])
    assert out.returncode == 1 and "broken.png" in out.stderr, out.stderr[-3000:]
    for i, (h, w) in enumerate(SIZES):
      assert Image.open(out_dir / f"cat{i}.png").size == (w, h)
  out = run_module("tp2p_jax.predict", [f"--workdir={workdir}", f"--input={sketches}",
                                        f"--output={tmp_path}", "--style=black"])
  assert out.returncode == 2 and "CycleGAN takes no style input" in out.stderr
  with pytest.raises(run_loading.RunError, match="is a CycleGAN run"):
    run_loading.load_trained_run(str(workdir))


def test_paired_runs_refuse_the_reverse_direction(run_dir, sketches, tmp_path):
  out = run_module("tp2p_jax.predict", [f"--workdir={run_dir}", f"--input={sketches}",
                                        f"--output={tmp_path}", "--style=black",
                                        "--direction=BtoA"])
  assert out.returncode == 2 and "translates one way" in out.stderr
