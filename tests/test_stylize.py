"""Neural style transfer, DeepDream, the image I/O they share, and their
command lines: in-process, plus one `python -m` run of each."""
from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from tests.subprocess_runs import run_module
from tp2p_jax.art import deepdream, style_transfer
from tp2p_jax.cli import dream as dream_cli
from tp2p_jax.cli import stylize as stylize_cli
from tp2p_jax.data import image_files as image_io
from tp2p_jax.models import vgg


@pytest.fixture(scope="module")
def vgg_variables():
  return vgg.load_pretrained_vgg16()


def _image(side: int, seed: int = 0) -> np.ndarray:
  """(1, side, side, 3) smooth blobs in [0, 1]."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(size=(1, 4, 4, 3)).astype(np.float32)
  return np.asarray(jax.image.resize(coarse, (1, side, side, 3), "linear"))


# --- Gram matrices and the objective -------------------------------------------------------

def test_gram_matrix_of_known_features():
  f = jnp.array([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # (1, H=2, W=1, C=2)
  expected = np.array([[10.0, 14.0], [14.0, 20.0]]) / (2 * 1 * 2)
  np.testing.assert_allclose(style_transfer.gram_matrix(f)[0], expected, rtol=1e-6)


@settings(max_examples=6)
@given(h=st.integers(1, 5), w=st.integers(1, 5), c=st.integers(1, 4), seed=st.integers(0, 99))
def test_gram_matrix_ignores_positions_and_image_size(h, w, c, seed):
  f = jax.random.normal(jax.random.key(seed), (1, h, w, c))
  g = style_transfer.gram_matrix(f)
  assert g.shape == (1, c, c)
  np.testing.assert_allclose(g, jnp.swapaxes(g, 1, 2), rtol=1e-6)
  shuffled = jax.random.permutation(jax.random.key(1), f.reshape(1, h * w, c), axis=1)
  np.testing.assert_allclose(style_transfer.gram_matrix(shuffled.reshape(1, h, w, c)), g,
                             rtol=1e-5, atol=1e-6)
  tiled = jnp.tile(f, (1, 2, 3, 1))  # same texture, six times the area
  np.testing.assert_allclose(style_transfer.gram_matrix(tiled), g, rtol=1e-5, atol=1e-6)


def test_total_variation():
  assert float(style_transfer.total_variation(jnp.full((1, 4, 4, 3), 0.3))) == 0.0
  stripes = jnp.tile(jnp.array([0.0, 1.0]), 2)[None, None, :, None] * jnp.ones((1, 4, 4, 1))
  assert float(style_transfer.total_variation(stripes)) == pytest.approx(1.0)


def test_bad_weights_are_refused():
  with pytest.raises(ValueError, match="style layer weights"):
    style_transfer.StyleTransferWeights(style_layers=("relu1_2",), style_layer_weights=(1, 2))
  with pytest.raises(ValueError, match="relu9_9"):
    style_transfer.StyleTransferWeights(content_layer="relu9_9")


def test_style_transfer_lowers_its_loss_monotonically(vgg_variables):
  content, style = _image(32, 0), _image(32, 1)
  # Shallow layers keep the L-BFGS line search's compiled program small.
  weights = style_transfer.StyleTransferWeights(
      content_layer="relu2_1", style_layers=("relu1_2", "relu2_2"),
      style_layer_weights=(1.0, 0.5))
  out, history = style_transfer.stylize(content, style, vgg_variables, steps=5,
                                        weights=weights, optimizer="lbfgs")
  totals = [h["total"] for h in history]
  assert all(b <= a * (1 + 1e-6) for a, b in zip(totals, totals[1:])), totals
  assert totals[-1] < totals[0]
  # It starts from the content image. Not exactly 0: the targets and the
  # loss are separate compiled programs, whose convolutions may sum in a
  # different order.
  assert history[0]["content"] < 1e-8  # float32 rounding of O(1) activations: ~1e-12
  assert history[0]["style"] > 0.0
  assert out.shape == content.shape
  assert float(jnp.min(out)) >= 0.0 and float(jnp.max(out)) <= 1.0


# --- DeepDream ---------------------------------------------------------------------------

def test_deepdream_increases_the_chosen_activation_norm(vgg_variables):
  image = _image(32, 2)
  settings_ = deepdream.DreamSettings(layer="relu3_3", octaves=2, octave_scale=1.5, steps=3,
                                      step_size=0.02, jitter=2)
  out = deepdream.dream(image, vgg_variables, settings_)
  before = float(deepdream.activation_norm(image, vgg_variables, "relu3_3"))
  after = float(deepdream.activation_norm(out, vgg_variables, "relu3_3"))
  assert after > 1.2 * before
  assert out.shape == image.shape


@settings(max_examples=6)
@given(h=st.integers(1, 300), w=st.integers(1, 300), octaves=st.integers(1, 6),
       layer=st.sampled_from(["relu1_1", "relu3_3", "relu5_3"]))
def test_octave_sizes_grow_to_the_full_size(h, w, octaves, layer):
  sizes = deepdream.octave_sizes(h, w, deepdream.DreamSettings(layer=layer, octaves=octaves))
  assert all(min(s) >= vgg.min_input_side(layer) for s in sizes)
  assert sizes == sorted(sizes)
  if min(h, w) >= vgg.min_input_side(layer):
    assert sizes[-1] == (h, w)


@settings(max_examples=3)
@given(side=st.sampled_from([8, 12, 20]), seed=st.integers(0, 9))
def test_deepdream_keeps_the_size_and_the_valid_range(side, seed, vgg_variables):
  out = deepdream.dream(_image(side, seed), vgg_variables,
                        deepdream.DreamSettings(layer="relu1_2", octaves=1, steps=1,
                                                step_size=5.0, jitter=1))
  assert out.shape == (1, side, side, 3)
  assert float(jnp.min(out)) >= 0.0 and float(jnp.max(out)) <= 1.0


# --- image I/O ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
def test_read_image_any_mode_to_float_ranges(tmp_path, mode):
  path = tmp_path / f"x_{mode.replace(';', '')}.png"
  Image.new("RGB", (6, 4), (255, 0, 128)).convert(mode).save(path)
  x = image_io.read_image(path, "-1..1")
  assert x.shape == (1, 4, 6, 3) and x.dtype == np.float32
  assert x.min() >= -1.0 and x.max() <= 1.0
  y = image_io.read_image(path, "0..1", size=3)
  assert y.shape == (1, 2, 3, 3) and y.min() >= 0.0 and y.max() <= 1.0


@settings(max_examples=6)
@given(h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 99))
def test_png_round_trip(tmp_path_factory, h, w, seed):
  x = np.random.default_rng(seed).integers(0, 256, (1, h, w, 3)).astype(np.float32) / 255.0
  path = tmp_path_factory.mktemp("png") / "x.png"
  image_io.write_png(path, x, "0..1")
  np.testing.assert_allclose(image_io.read_image(path, "0..1"), x, atol=1e-6)


def test_unreadable_image_error_names_the_file(tmp_path):
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
  with pytest.raises(image_io.ImageReadError, match="broken.jpg"):
    image_io.read_image(bad)
  with pytest.raises(image_io.ImageReadError, match="missing.png: no such file"):
    image_io.read_image(tmp_path / "missing.png")


# --- command lines -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, pathlib.Path]:
  d = tmp_path_factory.mktemp("pictures")
  paths = {"content": d / "content.png", "style": d / "style.jpg", "corrupt": d / "corrupt.png"}
  image_io.write_png(paths["content"], _image(20, 3), "0..1")
  Image.fromarray((_image(16, 4)[0] * 255).astype(np.uint8)).save(paths["style"])
  paths["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  return paths


_MAINS = {"stylize": stylize_cli.main, "dream": dream_cli.main}


@pytest.mark.slow
def test_stylize_cli_end_to_end(pictures, tmp_path):
  # The one `python -m` run of stylize: the module is a working command.
  out = tmp_path / "out" / "stylized.png"
  run = run_module("tp2p_jax.cli.stylize", [
      f"--content={pictures['content']}", f"--style={pictures['style']}", f"--output={out}",
      "--steps=2", "--size=0", "--optimizer=adam", "--style_layers=relu1_2,relu2_2",
      "--style_layer_weights=1,0.5"], timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  summary = json.loads(run.stdout.strip().splitlines()[-1])
  assert (summary["height"], summary["width"]) == (20, 20)
  assert np.isfinite(summary["total"])
  assert Image.open(out).size == (20, 20)


@pytest.mark.slow
def test_dream_cli_end_to_end(pictures, tmp_path):
  # The one `python -m` run of dream.
  out = tmp_path / "dream.png"
  run = run_module("tp2p_jax.cli.dream", [
      f"--input={pictures['content']}", f"--output={out}", "--layer=relu2_2", "--octaves=2",
      "--steps=2", "--jitter=2", "--size=0"], timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  summary = json.loads(run.stdout.strip().splitlines()[-1])
  assert summary["activation_after"] > summary["activation_before"]
  assert Image.open(out).size == (20, 20)


def test_dream_file_resizes_and_reports_the_activation(pictures, tmp_path):
  out = tmp_path / "small.png"
  summary = dream_cli.dream_file(
      pictures["content"], out, size=12, seed=1, progress=False,
      settings=deepdream.DreamSettings(layer="relu1_2", octaves=1, steps=2, jitter=1))
  assert summary["output"] == str(out) and summary["layer"] == "relu1_2"
  assert (summary["height"], summary["width"]) == (12, 12)
  assert summary["activation_after"] > summary["activation_before"]
  assert Image.open(out).size == (12, 12)


@pytest.mark.parametrize("command,args", [
    ("stylize", ("--content={corrupt}", "--style={style}")),
    ("stylize", ("--content={content}", "--style={missing}")),
    ("dream", ("--input={corrupt}",)),
])
def test_cli_unreadable_input_is_a_clear_error(pictures, tmp_path, capsys, command, args):
  names = {k: str(v) for k, v in pictures.items()} | {"missing": str(tmp_path / "nope.png")}
  out = tmp_path / "never.png"
  status = _MAINS[command]([command, *(a.format(**names) for a in args), f"--output={out}"])
  stderr = capsys.readouterr().err
  assert status == 2
  assert "Traceback" not in stderr
  bad = names["missing"] if "missing" in "".join(args) else names["corrupt"]
  assert f"error: {bad}" in stderr
  assert not out.exists()


@pytest.mark.parametrize("command,args,message", [
    ("stylize", ("--content={content}", "--style={style}", "--content_layer=relu9_9"),
     "relu9_9"),
    ("stylize", ("--content={content}", "--style={style}", "--style_layer_weights=1,2,3,x"),
     "not a number: 'x'"),
    ("stylize", ("--content={content}", "--style={style}", "--style_layers=relu1_2",
                 "--style_layer_weights=1,2"), "1 style layers but 2 style layer weights"),
    ("dream", ("--input={content}", "--layer=relu9_9"), "relu9_9"),
    ("dream", ("--input={content}", "--octave_scale=1"), "octave_scale > 1"),
    ("dream", ("--input={content}", "--layer=relu5_3", "--size=8"), "needs at least 16x16"),
])
def test_cli_invalid_setting_is_a_clear_error(pictures, tmp_path, capsys, command, args,
                                              message):
  names = {k: str(v) for k, v in pictures.items()}
  out = tmp_path / "never.png"
  status = _MAINS[command]([command, *(a.format(**names) for a in args), f"--output={out}"])
  last_line = capsys.readouterr().err.strip().splitlines()[-1]  # after any progress bar
  assert status == 2
  assert last_line.startswith("error: ") and message in last_line
  assert not out.exists()


@pytest.mark.parametrize("command,args,message", [
    ("stylize", ("--content=a.png", "--output=o.png"), "--style is required"),
    ("stylize", ("--content=a.png", "--style=b.png", "--output=o.png", "--optimizer=sgd"),
     "--optimizer"),
    ("dream", ("--output=o.png",), "--input is required"),
    ("dream", ("--input=a.png", "--output=o.png", "--colour=red"), "colour"),
    ("dream", ("--input=a.png", "--output=o.png", "stray"), "unexpected arguments"),
])
def test_cli_usage_error_exits_2(capsys, command, args, message):
  assert _MAINS[command]([command, *args]) == 2
  stderr = capsys.readouterr().err
  assert stderr.startswith("error: ") and message in stderr


@pytest.mark.parametrize("command", ["stylize", "dream"])
def test_cli_help_lists_the_flags(capsys, command):
  assert _MAINS[command]([command, "--help"]) == 0
  stdout = capsys.readouterr().out
  assert f"python -m tp2p_jax.cli.{command}" in stdout
  assert "--output" in stdout and "--size" in stdout
