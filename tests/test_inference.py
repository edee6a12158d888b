"""Inference on a trained run: predict, evaluate and export, end to end on
the shared tiny toy-cats run, plus the pieces they are built from.

The command lines run in-process (`main(argv)`, output through capsys); one
test per command runs it as users do, `python -m` in a subprocess."""
from __future__ import annotations

import json
import logging
import pathlib

from absl import logging as absl_logging
from hypothesis import given, strategies as st
import numpy as np
from PIL import Image
import pytest

from tests.subprocess_runs import private_copy, run_module
from tp2p_jax.cli import evaluate as evaluate_cli, export as export_cli, predict as predict_cli
from tp2p_jax.data.sketch import content_box
from tp2p_jax.data.toycats import STYLE_NAMES, render_example
from tp2p_jax.inference import run_loading, sketch_io, styles

SIZES = [(200, 300), (64, 64), (333, 257)]  # (height, width) of the user sketches


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory) -> pathlib.Path:
  """A private copy of the tiny run (these tests write eval/ and styles into it)."""
  return private_copy(tiny_run, tmp_path_factory, "inference")


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


def _best_step(run: pathlib.Path) -> int:
  (step,) = [int(p.name) for p in (run / "best").iterdir() if p.name.isdigit()]
  assert step in (20, 40)  # the tiny run validates at 20 and 40
  return step


def _cli(capsys, module, *args: str) -> tuple[int, str, str]:
  """`python -m MODULE ARGS` in-process: (status, stdout, stderr)."""
  status = module.main([module.__name__.rsplit(".", 1)[-1], *args])
  out = capsys.readouterr()
  return status, out.out, out.err


def test_predict_writes_each_input_at_its_own_size(run_dir, sketches, tmp_path):
  """The subprocess smoke test of predict: `python -m tp2p_jax.cli.predict`."""
  out_dir = tmp_path / "out"
  out = run_module("tp2p_jax.cli.predict", [f"--workdir={run_dir}", f"--input={sketches}",
                                            f"--output={out_dir}", "--style=ginger",
                                            "--batch_size=2"])
  assert out.returncode == 1, out.stderr[-3000:]  # one corrupt input
  assert "broken.png" in out.stderr and "Traceback" not in out.stderr
  assert "notes.txt" not in out.stderr
  lines = out.stdout.strip().splitlines()
  assert lines[-2] == f"wrote 3 image(s) to {out_dir} (run step 40); 1 input(s) failed"
  summary = json.loads(lines[-1])  # the last line is JSON
  assert (summary["written"], summary["failed"], summary["step"]) == (3, 1, 40)
  assert summary["devices"] == 1 and summary["images_per_s"] > 0
  assert sorted(p.name for p in out_dir.iterdir()) == ["cat0.png", "cat1.png", "cat2.png"]
  for i, (h, w) in enumerate(SIZES):
    image = Image.open(out_dir / f"cat{i}.png")
    assert image.size == (w, h) and image.mode == "RGB"
  # The class averages were computed once and stored in the run.
  assert (run_dir / styles.CLASS_EMBEDDINGS_FILE).is_file()


def test_predict_style_image_mix_and_grid(run_dir, sketches, tmp_path, capsys):
  """Each on another checkpoint: --checkpoint=best|STEP (or --step=STEP)."""
  single = sketches / "cat1.png"
  photo = tmp_path / "photo.png"
  Image.fromarray(render_example(5, 40, style=5)["photo"]).save(photo)
  for name, extra, step in [("image", [f"--style_image={photo}", "--checkpoint=best"],
                             _best_step(run_dir)),
                            ("mix", ["--style_mix=black:white:0.3", "--checkpoint=10"], 10),
                            ("grid", ["--grid", "--step=30"], 30)]:
    status, out, err = _cli(capsys, predict_cli, f"--workdir={run_dir}", f"--input={single}",
                            f"--output={tmp_path / name}", *extra)
    assert status == 0, (name, err)
    assert f"wrote 1 image(s) to {tmp_path / name} (run step {step})" in out
  assert Image.open(tmp_path / "image" / "cat1.png").size == (64, 64)
  assert Image.open(tmp_path / "mix" / "cat1.png").size == (64, 64)
  grid = Image.open(tmp_path / "grid" / "cat1_styles.png")
  size, pad = 32, 2  # the tiny run's image size; image_grid's padding
  # Tiles enlarged by a whole factor until the longest class name fits.
  tile = (grid.size[0] - pad) // (len(STYLE_NAMES) + 1) - pad
  assert grid.size[0] == (len(STYLE_NAMES) + 1) * (tile + pad) + pad
  assert tile % size == 0 and tile > size
  assert grid.size[1] > tile + 2 * pad  # captions above the row


@pytest.mark.parametrize("args, message", [
    (["--style=tabby"], "unknown style class 'tabby'"),
    ([], "give exactly one of"),
    (["--style=black", "--style_mix=black:white:0.5"], "give exactly one of"),
    (["--style_mix=black:white:2"], "must be in [0, 1]"),
])
def test_predict_usage_errors_are_one_line(run_dir, sketches, tmp_path, capsys, args,
                                           message):
  status, out, err = _cli(capsys, predict_cli, f"--workdir={run_dir}",
                          f"--input={sketches / 'cat0.png'}", f"--output={tmp_path}", *args)
  assert status == 2 and out == ""
  assert err.strip().splitlines()[-1].startswith("error: ") and message in err


def _logging_state() -> tuple:
  ours = logging.getLogger("tp2p_jax")
  return ours.level, list(ours.handlers), ours.propagate, absl_logging.get_verbosity()


def test_predict_names_a_missing_run(tmp_path, sketches, capsys):
  before = _logging_state()
  status, _, err = _cli(capsys, predict_cli, f"--workdir={tmp_path / 'nope'}",
                        f"--input={sketches}", f"--output={tmp_path}", "--style=black")
  assert status == 2 and "config.json: not found" in err
  assert _logging_state() == before  # main quiets the libraries only while it runs


def test_predict_files_reports_what_it_wrote(loaded, sketches, tmp_path):
  """The library function behind the command line."""
  files = [sketches / "cat1.png", sketches / "broken.png", tmp_path / "absent.png"]
  result = predict_cli.predict_files(loaded, files, tmp_path / "out", style="black",
                                     batch_size=2, prepare="pad")
  assert result.written == (tmp_path / "out" / "cat1.png",)
  assert [path.name for path, _ in result.failed] == ["broken.png", "absent.png"]
  assert "not an image" in result.failed[0][1]
  assert Image.open(result.written[0]).size == (SIZES[1][1], SIZES[1][0])
  # Options the run cannot honour are refused before any input is read.
  with pytest.raises(predict_cli.UsageError, match="give exactly one of"):
    predict_cli.predict_files(loaded, files, tmp_path / "refused")
  with pytest.raises(predict_cli.UsageError, match="translates AtoB only"):
    predict_cli.predict_files(loaded, files, tmp_path / "refused", style="black",
                              direction="BtoA")
  assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("module", [predict_cli, evaluate_cli, export_cli],
                         ids=["predict", "evaluate", "export"])
def test_cli_help_and_usage_errors(module, capsys, tmp_path):
  """Each command's flags live in a registry of its own: `main` runs again
  and again in one process, beside the other commands' flags of the same
  names."""
  name = module.__name__.rsplit(".", 1)[-1]
  for _ in range(2):
    status, out, err = _cli(capsys, module, "--help")
    assert status == 0 and err == ""
    assert f"python -m tp2p_jax.cli.{name}" in out and f"tp2p {name}" in out
    assert "--workdir: Run directory" in out
  for args, fragment in [(["--no_such_flag=1"], "no_such_flag"),
                         ([f"--workdir={tmp_path}", "extra"], "unexpected arguments"),
                         (["--batch_size=0"] if module is not export_cli else
                          ["--direction=sideways"], "--"),
                         ([], "required")]:
    status, out, err = _cli(capsys, module, *args)
    assert status == 2 and out == "", (args, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], (
        args, err)


def test_checkpoint_flags_that_cannot_work_are_one_line(run_dir, tmp_path, capsys):
  assert run_loading.load_trained_run(str(run_dir), "latest").step == 40
  for module, args in ((evaluate_cli, []), (export_cli, [f"--output={tmp_path / 'g'}"])):
    status, out, err = _cli(capsys, module, f"--workdir={run_dir}", *args, "--checkpoint=best",
                            "--step=10")
    assert status == 2 and err.splitlines() == [
        "error: --checkpoint=best and --step=10: --step is the older spelling of "
        "--checkpoint=STEP; give one of them"]
    status, out, err = _cli(capsys, module, f"--workdir={run_dir}", *args, "--checkpoint=top")
    assert status == 2 and err.splitlines() == [
        "error: --checkpoint=top: expected best, latest or a step number"]


def test_a_run_without_best_says_how_to_get_one(tmp_path, capsys):
  from tests import painter_method
  from tp2p_jax import training
  with painter_method.registered():
    training.train_and_evaluate(painter_method.config(2), str(tmp_path / "run"))
    capsys.readouterr()  # the training's progress bar
    status, out, err = _cli(capsys, evaluate_cli, f"--workdir={tmp_path / 'run'}",
                            "--checkpoint=best")
  assert status == 2 and out == "" and len(err.splitlines()) == 1
  assert err.startswith(f"error: {tmp_path / 'run'}: no best checkpoint (best/ is kept only by "
                        "runs trained with keep_best): resume the run with "
                        "--config.eval_every=N --config.keep_best=eval/lpips")


def _inception_npz(path: pathlib.Path) -> pathlib.Path:
  from tp2p_jax.metrics import init_inception_variables, to_torch_state_dict
  np.savez(path, **to_torch_state_dict(init_inception_variables(0)))
  return path


def test_evaluate_reports_every_metric(run_dir, tmp_path):
  """The subprocess smoke test of evaluate: `python -m tp2p_jax.cli.evaluate`,
  on the run's best checkpoint."""
  weights = _inception_npz(tmp_path / "inception.npz")
  out = run_module("tp2p_jax.cli.evaluate", [f"--workdir={run_dir}", "--batch_size=4",
                                             f"--inception_weights={weights}",
                                             "--inception_size=75", "--checkpoint=best"])
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Traceback" not in out.stderr
  # A line per phase while it works (8 pairs in batches of 4: bars too).
  for phase in ("evaluate: embedding the target photos (8 pairs)", "evaluate: generating (8",
                "evaluate: style accuracy: every sketch in each of", "evaluate: FID and KID"):
    assert phase in out.stderr, (phase, out.stderr[-2000:])
  result = json.loads(out.stdout.strip().splitlines()[-1])
  best = _best_step(run_dir)
  assert result["step"] == best and result["split"] == "validation"
  assert result["num_examples"] == 8
  for key in ("l1", "l1_untrained", "psnr", "ssim", "lpips", "style_accuracy",
              "encoder_eer", "encoder_accuracy", "encoder_centroid_accuracy", "fid", "kid",
              "kid_std"):
    assert np.isfinite(result[key]), key
  assert 0.0 <= result["l1"] <= 2.0 and 0.0 < result["l1_untrained"] <= 2.0
  assert 0.0 <= result["style_accuracy"] <= 1.0 and 0.0 <= result["encoder_eer"] <= 1.0
  assert set(result["style_accuracy_per_class"]) <= set(STYLE_NAMES)
  assert result["ssim"] <= 1.0 and result["lpips"] >= 0.0 and result["fid"] >= 0.0
  assert json.loads((run_dir / "eval" / f"{best}.json").read_text()) == result
  assert pathlib.Path(result["projection"]).is_file()
  assert pathlib.Path(result["inception_real_cache"]).is_file()


def test_untrained_floor_is_the_runs_own_initial_generator(loaded):
  """l1_untrained uses the weights the trainer started from (same seed and
  init path), not some other random draw."""
  import jax
  from tp2p_jax.methods import paired_gan
  gan = paired_gan.build(loaded.config)
  start = jax.jit(gan.init)(jax.random.PRNGKey(loaded.config.seed),
                            loaded.predictor.style_variables)
  untrained = loaded.predictor.initial_variables()["AtoB"]
  for a, b in zip(jax.tree.leaves(untrained), jax.tree.leaves(start.ema["g"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  trained = loaded.predictor.variables["AtoB"]
  moved = [not np.array_equal(a, b)
           for a, b in zip(jax.tree.leaves(untrained), jax.tree.leaves(trained))]
  assert any(moved)  # 40 steps moved the EMA generator away from its start


def test_export_round_trip_with_symbolic_batch(run_dir, loaded, tmp_path):
  """The subprocess smoke test of export: `python -m tp2p_jax.cli.export`."""
  from tp2p_jax.inference import exporting
  out = run_module("tp2p_jax.cli.export", [f"--workdir={run_dir}",
                                           f"--output={tmp_path / 'g.jaxexport'}"])
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  assert summary["step"] == 40 and summary["styles"] == list(STYLE_NAMES)
  assert json.loads((tmp_path / "g.jaxexport.json").read_text()) == summary
  program = exporting.load_exported(str(tmp_path / "g.jaxexport"))
  rng = np.random.default_rng(0)
  for batch in (1, 3):
    x = rng.uniform(-1, 1, (batch, 32, 32, 3)).astype(np.float32)
    s = rng.normal(size=(batch, loaded.predictor.style_dim)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(program.call(x, s)),
                               np.asarray(loaded.predictor.generate(x, s)), rtol=1e-5, atol=1e-5)
  with np.load(tmp_path / "g.jaxexport.styles.npz") as f:
    assert f["means"].shape == (len(STYLE_NAMES), loaded.predictor.style_dim)


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
  from tp2p_jax.experiments import pix2pix
  from tp2p_jax import training
  workdir = tmp_path_factory.mktemp("pix2pix_run")
  config = pix2pix.get_config("tiny")
  with config.unlocked():
    config.batch_size = 8  # one example per simulated device
  assert training.train_and_evaluate(config, str(workdir)) == 0
  return workdir


@pytest.mark.slow
def test_style_free_runs_predict_evaluate_and_export(pix2pix_run, sketches, tmp_path,
                                                     capsys):
  from tp2p_jax.inference import exporting
  args = [f"--workdir={pix2pix_run}", f"--input={sketches / 'cat0.png'}",
          f"--output={tmp_path / 'out'}"]
  status, _, err = _cli(capsys, predict_cli, *args, "--style=black")
  assert status == 2 and "(unet) takes no style input; drop --style" in err
  status, _, err = _cli(capsys, predict_cli, *args, "--grid")
  assert status == 2 and "drop --grid" in err
  status, _, err = _cli(capsys, predict_cli, *args)
  assert status == 0, err
  assert Image.open(tmp_path / "out" / "cat0.png").size == (SIZES[0][1], SIZES[0][0])

  status, out, err = _cli(capsys, evaluate_cli, f"--workdir={pix2pix_run}", "--batch_size=4")
  assert status == 0, err
  result = json.loads(out.strip().splitlines()[-1])
  assert result["model"] == "unet" and result["step"] == 4
  assert np.isfinite(result["l1"]) and np.isfinite(result["l1_untrained"])
  assert "style_accuracy" not in result and "encoder_eer" not in result

  run = run_loading.load_trained_run(str(pix2pix_run))
  status, out, err = _cli(capsys, export_cli, f"--workdir={pix2pix_run}",
                          f"--output={tmp_path / 'p2p.jaxexport'}")
  assert status == 0, err
  summary = json.loads(out.strip().splitlines()[-1])
  assert "styles" not in summary and summary["style_dim"] is None
  program = exporting.load_exported(str(tmp_path / "p2p.jaxexport"))
  x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(program.call(x)), np.asarray(run.predictor.generate(x)),
                             rtol=1e-5, atol=1e-5)


def test_paired_runs_refuse_the_reverse_direction(run_dir, sketches, tmp_path, capsys):
  status, _, err = _cli(capsys, predict_cli, f"--workdir={run_dir}", f"--input={sketches}",
                        f"--output={tmp_path}", "--style=black", "--direction=BtoA")
  assert status == 2 and "translates AtoB only" in err
  status, out, err = _cli(capsys, export_cli, f"--workdir={run_dir}",
                          f"--output={tmp_path / 'g.jaxexport'}", "--direction=BtoA")
  assert status == 2 and out == "" and "translates AtoB, not BtoA" in err
  assert not (tmp_path / "g.jaxexport").exists()


def test_evaluate_and_export_name_a_missing_run(tmp_path, capsys):
  for module, extra in [(evaluate_cli, []), (export_cli, [f"--output={tmp_path / 'g'}"])]:
    status, out, err = _cli(capsys, module, f"--workdir={tmp_path / 'nope'}", *extra)
    assert status == 2 and out == "" and "config.json: not found" in err, err


def test_a_class_without_photos_names_the_classes_that_have_them():
  bank = styles.ClassEmbeddings(("black", "ginger", "white"), np.ones((3, 4), np.float32),
                                np.array([0, 5, 2]))
  np.testing.assert_array_equal(bank.of("ginger"), np.ones(4))
  with pytest.raises(ValueError, match=r"'black' had no training photos.*classes with "
                     r"photos: ginger, white, or style by a reference photo"):
    bank.of("black")
  with pytest.raises(ValueError, match="unknown style class 'tabby'"):
    bank.index("tabby")
