"""`python -m tp2p_jax.cli.import_torch`: PyTorch checkpoints of the originals
become a run directory that `load_trained_run`, predict and export use like
a trained one.

No torch here: state_dicts come from the synthetic recipe of the golden
fixtures' layouts, or from committed torch-saved files (the TransPix2Pix
style encoder and a PatchGAN under tests/golden/, a narrow junyanz ResNet
generator under tests/golden/import/, written by
tools/make_import_fixtures.py). Networks are small; the TransPix2Pix
generator (which needs 256x256 inputs) runs on one image.
"""
from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np
from PIL import Image
import pytest

from tests.golden_check import load
from tp2p_jax.cli import import_torch as import_cli
from tp2p_jax.cli import predict as predict_cli
from tp2p_jax.core.run_dir import RunError, restore_run_state
from tp2p_jax.data.toycats import render_example
from tp2p_jax.inference import evaluation, exporting, run_loading
from tp2p_jax.interop import run_import
from tp2p_jax.interop.synthetic import synthetic_state_dict
from tp2p_jax.interop.torch_weights import convert
from tp2p_jax.methods import networks, paired_gan
from tp2p_jax.methods.base import encoder_outputs

GOLDEN = pathlib.Path(__file__).parent / "golden"
RESNET_G = GOLDEN / "import" / "resnet_6blocks_ngf2.pth"  # junyanz netG, ngf 2, 3 -> 3
PATCHGAN_D = GOLDEN / "patchgan_basic_batch.pth"  # junyanz netD basic, ndf 8, 6 channels
STYLE_ENCODER = GOLDEN / "transpix2pix_style_encoder_checkpoint.pth"  # 8-d, 9 classes, 64x64


def _import_cli(capsys, *args: str) -> tuple[int, str, str]:
  """`python -m tp2p_jax.cli.import_torch ARGS` in-process: (status, stdout, stderr)."""
  status = import_cli.main(["import_torch", *args])  # restores the logging it quiets
  out = capsys.readouterr()
  return status, out.out, out.err


def _predict(capsys, *args: str) -> tuple[int, str]:
  """`python -m tp2p_jax.cli.predict ARGS` in-process: (status, stderr)."""
  status = predict_cli.main(["predict", *args])
  return status, capsys.readouterr().err


def _assert_one_line_error(status: int, err: str, *fragments: str) -> None:
  assert status == 2, err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  for fragment in fragments:
    assert fragment in lines[0], (fragment, lines[0])


def _like(tree: Any, reference: Any) -> Any:
  """`tree` on the devices and shardings of `reference` (a restored tree), so
  that a jitted function sees both alike and compiles once."""
  return {k: jax.tree.map(lambda x, r: jax.device_put(np.asarray(x), r.sharding), v,
                         reference[k]) for k, v in tree.items()}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, pathlib.Path]:
  """A toy-cat sketch (a file and a folder holding it) and a photo."""
  folder = tmp_path_factory.mktemp("images")
  example = render_example(3, 96)
  (folder / "sketches").mkdir()
  Image.fromarray(example["sketch"]).save(folder / "sketches" / "cat.png")
  Image.fromarray(example["photo"]).save(folder / "photo.png")
  return {"sketches": folder / "sketches", "photo": folder / "photo.png"}


def _sketch(size: int) -> np.ndarray:
  """(1, size, size, 3) in [-1, 1]."""
  image = Image.fromarray(render_example(3, 96)["sketch"]).resize((size, size))
  return (np.asarray(image, np.float32) / 127.5 - 1.0)[None]


def _narrow_transpix2pix(style_dim: int = 8) -> dict[str, np.ndarray]:
  """The narrow TransPix2Pix generator of the golden fixture, its style input
  `style_dim`-d (8: the committed style encoder's embeddings)."""
  layout = dict(load("transpix2pix_generator")["layout"])
  hidden = layout["StylePreNet.fcl1.weight"][0]
  layout["StylePreNet.fcl1.weight"] = [hidden, style_dim]
  return synthetic_state_dict(layout)


def test_pix2pix_cli_run_restores_and_predicts(tmp_path, capsys, images):
  workdir = tmp_path / "run"
  status, out, err = _import_cli(capsys, "--family=pix2pix", f"--generator={RESNET_G}",
                                 f"--discriminator={PATCHGAN_D}", f"--workdir={workdir}",
                                 "--config.image_size=64")
  assert status == 0, err
  assert "as resnet_6blocks (ResnetGenerator), 8,339 parameters" in out
  assert "as patchgan (PatchGANDiscriminator)" in out
  assert "dropped 3 tensor(s) the original never uses: 3 BatchNorm counters" in out
  assert f"python -m tp2p_jax.cli.predict --workdir={workdir} --input=SKETCHES --output=OUT" in out

  # The config describes exactly the imported networks ...
  g = convert("resnet_6blocks", RESNET_G)
  d = convert("patchgan", PATCHGAN_D)
  run = run_loading.load_trained_run(str(workdir))
  predictor = run.predictor
  assert run.step == 0 and predictor.image_size == 64 and predictor.style_dim is None
  assert predictor.generator == g.module
  assert networks.discriminator_from_config(run.config) == d.module
  assert run.config.imported.fresh == [] and run.config.imported.kinds.generator == "resnet_6blocks"

  # ... and the checkpoint is the trainer's: G as trained and EMA weights,
  # the imported D (with its BatchNorm statistics), fresh optimiser states.
  state, step = restore_run_state(str(workdir), paired_gan.state_shapes(run.config))
  assert step == 0 and int(state.step) == 0
  for got, want in [(state.g_params, g.variables["params"]), (state.ema["g"]["params"],
                                                               g.variables["params"]),
                    (state.d_params, d.variables["params"]),
                    (state.d_batch_stats, d.variables["batch_stats"]),
                    (state.ema["d"]["batch_stats"], d.variables["batch_stats"])]:
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(got), want)
  assert all(not np.any(np.asarray(m)) for m in jax.tree.leaves(state.g_opt_state)
             if np.ndim(m) > 0)

  # The restored EMA generator computes the imported network's function.
  x = _sketch(64)
  expected = jax.jit(lambda v, x: g.module.apply(v, x, train=False))(
      _like(g.variables, predictor.variables["AtoB"]), x)
  np.testing.assert_allclose(np.asarray(predictor.generate(x)), np.asarray(expected), atol=1e-6)

  out_dir = tmp_path / "out"
  status, err = _predict(capsys, f"--workdir={workdir}", f"--input={images['sketches']}",
                         f"--output={out_dir}", "--batch_size=1")
  assert status == 0, err
  assert Image.open(out_dir / "cat.png").size == (96, 96)

  # A second import into the run needs --overwrite, and then replaces it.
  status, _, err = _import_cli(capsys, "--family=pix2pix", f"--generator={RESNET_G}",
                               f"--workdir={workdir}", "--config.image_size=64")
  _assert_one_line_error(status, err, str(workdir), "--overwrite")
  status, out, err = _import_cli(capsys, "--family=pix2pix", f"--generator={RESNET_G}",
                                 f"--workdir={workdir}", "--config.image_size=64",
                                 "--overwrite", "--step=7")
  assert status == 0, err
  assert "discriminator: not given (--discriminator); initialised from the config" in out
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["7"]


@pytest.mark.slow
def test_transpix2pix_run_styles_by_reference_photo(tmp_path, capsys, images):
  workdir = tmp_path / "release"
  generator = _narrow_transpix2pix()
  result = run_import.import_run("transpix2pix", str(workdir), generator,
                                 style_encoder=STYLE_ENCODER, step=1200)
  lines = run_import.report(result)
  text = "\n".join(lines)
  assert "--style_image=PHOTO" in lines[-1] and "discriminator: not given" in text
  assert "no class-average style embeddings" in text

  g, e = result.conversions["generator"], result.conversions["style_encoder"]
  run = run_loading.load_trained_run(str(workdir))
  predictor = run.predictor
  assert run.step == 1200 and predictor.image_size == 256 and predictor.style_dim == 8
  assert predictor.generator == g.module and predictor.style_encoder == e.module
  assert len(run.class_names) == 9  # the encoder's classes

  photo = (np.asarray(Image.open(images["photo"]), np.float32) / 127.5 - 1.0)[None]
  style = np.asarray(run.embed(photo))
  np.testing.assert_allclose(
      style, np.asarray(encoder_outputs(
          e.module, _like(e.variables, predictor.style_variables), photo)["embedding"]),
      atol=1e-6)
  # The same module (above) with the converted weights, leaf for leaf: the
  # predictor computes the converted generator (predict runs it below).
  assert jax.tree.structure(predictor.variables["AtoB"]) == jax.tree.structure(g.variables)
  for got, want in zip(jax.tree.leaves(predictor.variables["AtoB"]),
                       jax.tree.leaves(g.variables)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

  out_dir = tmp_path / "out"
  common = [f"--workdir={workdir}", f"--input={images['sketches']}", f"--output={out_dir}",
            "--batch_size=1"]
  status, err = _predict(capsys, *common, f"--style_image={images['photo']}")
  assert status == 0, err
  assert Image.open(out_dir / "cat.png").size == (96, 96)
  # Class averages need training data the release does not ship.
  for args in (["--style=black"], []):
    status, err = _predict(capsys, *common, *args)
    _assert_one_line_error(status, err, "--style_image=PHOTO")
  with pytest.raises(RunError, match="--config.data.data_dir"):
    evaluation.evaluate(str(workdir))
  summary = exporting.write_export(run, str(tmp_path / "g.jaxexport"))
  assert summary["styles"] == [] and summary["style_dim"] == 8


@pytest.mark.slow
def test_transpix2pix_without_style_encoder_needs_embeddings(tmp_path, capsys, images):
  release_width = synthetic_state_dict(load("transpix2pix_generator")["layout"])
  # The committed encoder's 8-d embeddings do not fit a 256-d style input.
  with pytest.raises(run_import.ImportRunError, match="8-d.*256-d"):
    run_import.import_run("transpix2pix", str(tmp_path / "mismatch"), release_width,
                          style_encoder=STYLE_ENCODER)
  assert not (tmp_path / "mismatch").exists()

  workdir = tmp_path / "no_encoder"
  result = run_import.import_run("transpix2pix", str(workdir), release_width)
  text = "\n".join(run_import.report(result))
  assert "needs 256-d style embeddings" in text and "--style_encoder=STYLE.pth" in text
  assert result.fresh == ("discriminator", "style_encoder")
  status, err = _predict(capsys, f"--workdir={workdir}", f"--input={images['sketches']}",
                         f"--output={tmp_path / 'out'}", f"--style_image={images['photo']}")
  _assert_one_line_error(status, err, "without a style encoder", "256-d")


@pytest.mark.slow
def test_cyclegan_run_translates_with_the_imported_generator(tmp_path, capsys, images):
  config = run_import.load_family_config("cyclegan")
  config.image_size = 32
  workdir = tmp_path / "cyclegan"
  result = run_import.import_run("cyclegan", str(workdir), RESNET_G, config=config)
  assert result.fresh == ("discriminator", "generator_b", "discriminator_b")
  assert "only --direction=AtoB translates" in "\n".join(run_import.report(result))
  g = result.conversions["generator"]
  run = run_loading.load_trained_run(str(workdir))
  predictor = run.predictor
  assert predictor.generator == g.module and run.step == 0
  assert predictor.directions == ("AtoB",)  # imported without G_BA
  x = _sketch(32)
  expected = jax.jit(lambda v, x: g.module.apply(v, x, train=False))(
      _like(g.variables, predictor.variables["AtoB"]), x)
  np.testing.assert_allclose(np.asarray(predictor.generate(x, direction="AtoB")),
                             np.asarray(expected), atol=1e-6)
  status, err = _predict(capsys, f"--workdir={workdir}", f"--input={images['sketches']}",
                         f"--output={tmp_path / 'out'}", "--direction=BtoA")
  _assert_one_line_error(status, err, "AtoB only")


@pytest.mark.parametrize("args, fragments", [
    ([f"--generator={GOLDEN / 'import' / 'missing.pth'}"], ["missing.pth", "no such file"]),
    ([f"--generator={PATCHGAN_D}"], ["patchgan_basic_batch.pth (--generator)",
                                     "not a pix2pix generator"]),
    ([f"--generator={RESNET_G}", f"--discriminator={RESNET_G}"],
     ["(--discriminator)", "not a junyanz NLayerDiscriminator"]),
    ([f"--generator={GOLDEN / 'transpix2pix_style_encoder_checkpoint.npz'}"],
     ["not a torch checkpoint"]),
    ([f"--generator={RESNET_G}", "--config.no_such_field=1"], ["no_such_field"]),
    ([f"--generator={RESNET_G}", "--config.image_size=30"], ["multiples of 4"]),
    ([f"--generator={RESNET_G}", "--netG=unet_256"], ["unet_256", "(--generator)"]),
    ([f"--generator={RESNET_G}", f"--style_encoder={STYLE_ENCODER}"], ["not part of a pix2pix"]),
])
def test_refusals_are_one_line(tmp_path, capsys, args, fragments):
  status, out, err = _import_cli(capsys, "--family=pix2pix", f"--workdir={tmp_path / 'run'}",
                                 *args)
  _assert_one_line_error(status, err, *fragments)
  assert out == "" and not (tmp_path / "run").exists()


def test_refuses_workdirs_and_missing_flags(tmp_path, capsys):
  status, _, err = _import_cli(capsys, f"--generator={RESNET_G}", f"--workdir={tmp_path}")
  _assert_one_line_error(status, err, "--family is required")
  busy = tmp_path / "busy"
  busy.mkdir()
  (busy / "notes.txt").write_text("not a run")
  for extra in ([], ["--overwrite"]):
    status, _, err = _import_cli(capsys, "--family=pix2pix", f"--generator={RESNET_G}",
                                 f"--workdir={busy}", *extra)
    _assert_one_line_error(status, err, str(busy), "not empty")
  assert (busy / "notes.txt").read_text() == "not a run"


def test_step_from_release_file_names():
  assert run_import.parse_step("runs/EMA_gen_iter_400000.pth") == 400000
  assert run_import.parse_step("checkpoints/facades/latest_net_G.pth") == 0
  assert run_import.parse_step({"a": np.zeros(1)}) == 0
