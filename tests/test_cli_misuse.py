"""A hostile user's mistakes on the non-training command lines: each is one
`error:` line on stderr naming the path or flag, exit status 2, found before
any model is loaded or image generated, with no output folder or temporary
file left behind; inputs that are skipped are listed with the reason.

The commands run in-process (`main(argv)`). Where a check must come before
the run is loaded, the run loader is replaced by one that fails the test.
"""
from __future__ import annotations

import json
import os
import pathlib
from types import ModuleType

import numpy as np
from PIL import Image
import pytest

from tests.subprocess_runs import private_copy
from tp2p_jax.cli import checks
from tp2p_jax.cli import dream as dream_cli
from tp2p_jax.cli import evaluate as evaluate_cli
from tp2p_jax.cli import export as export_cli
from tp2p_jax.cli import predict as predict_cli
from tp2p_jax.cli import prepare as prepare_cli
from tp2p_jax.cli import stylize as stylize_cli
from tp2p_jax.data import image_files
from tp2p_jax.inference import run_loading


def _cli(capsys: pytest.CaptureFixture[str], module: ModuleType, *args: str
         ) -> tuple[int, str, str]:
  """`python -m MODULE ARGS` in-process: (status, stdout, stderr)."""
  status = module.main([module.__name__.rsplit(".", 1)[-1], *args])
  out = capsys.readouterr()
  return status, out.out, out.err


def _assert_usage_error(result: tuple[int, str, str], *fragments: str) -> None:
  """Exit status 2, nothing on stdout, exactly one `error:` line on stderr
  holding every fragment (the path or flag it names)."""
  status, out, err = result
  assert "Traceback" not in err, err
  assert status == 2, (status, err)
  assert out == "", out
  lines = err.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  for fragment in fragments:
    assert fragment in lines[0], (fragment, lines[0])


def _temp_files(root: pathlib.Path) -> list[pathlib.Path]:
  return [p for p in root.rglob("*") if ".tmp" in p.name]


@pytest.fixture
def no_run_loading(monkeypatch: pytest.MonkeyPatch) -> None:
  """Fails the test if a command restores a run: its checks must come first."""
  def load(*args, **kwargs):
    raise AssertionError(f"the run was loaded before the mistake was found: {args}")
  monkeypatch.setattr(run_loading, "load_trained_run", load)


@pytest.fixture
def image(tmp_path: pathlib.Path) -> pathlib.Path:
  """A small RGB PNG."""
  path = tmp_path / "inputs" / "cat.png"
  path.parent.mkdir()
  Image.fromarray(np.full((24, 24, 3), 200, np.uint8)).save(path)
  return path


@pytest.fixture
def not_an_image(tmp_path: pathlib.Path) -> pathlib.Path:
  """A text file with an image suffix."""
  path = tmp_path / "notes.png"
  path.write_text("not an image")
  return path


@pytest.fixture
def a_file(tmp_path: pathlib.Path) -> pathlib.Path:
  path = tmp_path / "a_file.txt"
  path.write_text("a file, not a folder")
  return path


@pytest.fixture(scope="module")
def run_copy(tiny_run: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
             ) -> pathlib.Path:
  """A private copy of the tiny run (predict stores class averages in it)."""
  return private_copy(tiny_run, tmp_path_factory, "misuse")


# --- 1. predict's --output ------------------------------------------------------------

def test_predict_output_that_is_a_file(capsys, tmp_path, image, a_file, no_run_loading):
  _assert_usage_error(_cli(capsys, predict_cli, f"--workdir={tmp_path}", f"--input={image}",
                           f"--output={a_file}", "--style=ginger"),
                      f"--output={a_file}", "is a file")
  _assert_usage_error(_cli(capsys, predict_cli, f"--workdir={tmp_path}", f"--input={image}",
                           f"--output={a_file / 'sub'}", "--style=ginger"),
                      str(a_file), "is a file")


def test_predict_output_that_is_not_writable(capsys, tmp_path, image, read_only_dir,
                                             no_run_loading):
  _assert_usage_error(_cli(capsys, predict_cli, f"--workdir={tmp_path}", f"--input={image}",
                           f"--output={read_only_dir}", "--style=ginger"),
                      f"--output={read_only_dir}", "not writable")
  nested = read_only_dir / "new" / "out"
  _assert_usage_error(_cli(capsys, predict_cli, f"--workdir={tmp_path}", f"--input={image}",
                           f"--output={nested}", "--style=ginger"),
                      f"--output={nested}", "not writable")
  assert list(read_only_dir.iterdir()) == []


@pytest.mark.parametrize("make", ["stylize", "dream", "export"])
def test_file_outputs_in_a_read_only_folder(capsys, tmp_path, image, read_only_dir,
                                            no_run_loading, make):
  output = read_only_dir / "out.png"
  args = {"stylize": (stylize_cli, f"--content={image}", f"--style={image}"),
          "dream": (dream_cli, f"--input={image}"),
          "export": (export_cli, f"--workdir={tmp_path}")}[make]
  _assert_usage_error(_cli(capsys, *args, f"--output={output}"),
                      f"--output={output}", "not writable")


# --- 2. prepare's --data_dir and --input ----------------------------------------------

def _photos(folder: pathlib.Path, count: int = 2) -> pathlib.Path:
  folder.mkdir(parents=True, exist_ok=True)
  for i in range(count):
    Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)).save(folder / f"photo{i}.png")
  return folder


def test_prepare_data_dir_that_is_a_file(capsys, tmp_path, a_file):
  photos = _photos(tmp_path / "photos")
  _assert_usage_error(_cli(capsys, prepare_cli, "--source=folder", f"--input={photos}",
                           f"--data_dir={a_file}", "--num_workers=0", "--noprogress"),
                      f"--data_dir={a_file}", "is a file")


def test_prepare_data_dir_that_is_not_writable(capsys, tmp_path, read_only_dir):
  photos = _photos(tmp_path / "photos")
  _assert_usage_error(_cli(capsys, prepare_cli, "--source=folder", f"--input={photos}",
                           f"--data_dir={read_only_dir}", "--num_workers=0", "--noprogress"),
                      f"--data_dir={read_only_dir}", "not writable")
  assert list(read_only_dir.iterdir()) == []


def test_prepare_input_that_does_not_exist(capsys, tmp_path, a_file):
  data_dir = tmp_path / "data"
  _assert_usage_error(_cli(capsys, prepare_cli, "--source=folder",
                           f"--input={tmp_path / 'nowhere'}", f"--data_dir={data_dir}",
                           "--num_workers=0", "--noprogress"),
                      str(tmp_path / "nowhere"), "does not exist")
  _assert_usage_error(_cli(capsys, prepare_cli, "--source=folder", f"--input={a_file}",
                           f"--data_dir={data_dir}", "--num_workers=0", "--noprogress"),
                      str(a_file), "not a directory")
  assert not data_dir.exists()


# --- 3. --batch_size below 1 ----------------------------------------------------------

@pytest.mark.parametrize("module", [predict_cli, evaluate_cli], ids=["predict", "evaluate"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_batch_size_below_one(capsys, tmp_path, image, module, value, no_run_loading):
  args = [f"--workdir={tmp_path}", f"--batch_size={value}"]
  if module is predict_cli:
    args += [f"--input={image}", f"--output={tmp_path / 'out'}", "--style=ginger"]
  _assert_usage_error(_cli(capsys, module, *args), "--batch_size")
  assert not (tmp_path / "out").exists()


def test_every_batch_size_flag_is_bounded():
  """No other command grows a --batch_size without the bound."""
  for module in (predict_cli, evaluate_cli, export_cli, stylize_cli, dream_cli, prepare_cli):
    fv = module._define_flags()  # pylint: disable=protected-access
    if "batch_size" in fv:
      with pytest.raises(Exception, match="batch_size"):
        fv(["x", "--batch_size=0"])


# --- 4. a folder as a file --output: no temporary files left --------------------------

@pytest.mark.parametrize("make", ["stylize", "dream", "export"])
def test_folder_as_file_output(capsys, tmp_path, image, no_run_loading, make):
  folder = tmp_path / "a_folder"
  folder.mkdir()
  args = {"stylize": (stylize_cli, f"--content={image}", f"--style={image}", "--steps=1"),
          "dream": (dream_cli, f"--input={image}", "--steps=1", "--octaves=1"),
          "export": (export_cli, f"--workdir={tmp_path}")}[make]
  _assert_usage_error(_cli(capsys, *args, f"--output={folder}"),
                      f"--output={folder}", "is a folder")
  assert _temp_files(tmp_path) == [] and list(folder.iterdir()) == []


def test_png_writes_leave_no_temporary_file(tmp_path, monkeypatch):
  pixels = np.zeros((4, 4, 3), np.uint8)
  folder = tmp_path / "taken"
  folder.mkdir()
  with pytest.raises(IsADirectoryError):
    image_files.save_png(folder, pixels)

  def no_rename(src, dst):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(os, "replace", no_rename)
  with pytest.raises(OSError, match="No space"):
    image_files.save_png(tmp_path / "out.png", pixels)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


# --- 5. evaluate's Inception weights --------------------------------------------------

@pytest.mark.parametrize("content", [b"inception weights, honestly\n", bytes(range(256)) * 64,
                                     "zip"], ids=["text", "random", "wrong-npz"])
def test_evaluate_refuses_bad_inception_weights_up_front(capsys, tmp_path, content,
                                                         no_run_loading):
  weights = tmp_path / "inception.npz"
  if content == "zip":
    np.savez(weights, not_inception=np.zeros(3, np.float32))
  else:
    weights.write_bytes(content)
  _assert_usage_error(_cli(capsys, evaluate_cli, f"--workdir={tmp_path}",
                           f"--inception_weights={weights}"), str(weights))


def test_evaluate_refuses_missing_inception_weights(capsys, tmp_path, no_run_loading):
  missing = tmp_path / "nowhere.npz"
  _assert_usage_error(_cli(capsys, evaluate_cli, f"--workdir={tmp_path}",
                           f"--inception_weights={missing}"),
                      f"--inception_weights={missing}", "no such file")
  _assert_usage_error(_cli(capsys, evaluate_cli, f"--workdir={tmp_path}",
                           f"--inception_weights={tmp_path}"),
                      f"--inception_weights={tmp_path}", "is a folder")


def test_evaluate_refuses_a_run_it_cannot_write_into(capsys, tmp_path, read_only_dir,
                                                     no_run_loading):
  _assert_usage_error(_cli(capsys, evaluate_cli, f"--workdir={read_only_dir}"),
                      f"--workdir={read_only_dir}", "eval/")


# --- 6. prepare lists broken links and names that are not UTF-8 -----------------------

def _bad_name(folder: pathlib.Path, name: bytes) -> pathlib.Path:
  """A file named by raw bytes that are not UTF-8 (skips where the file
  system refuses such names)."""
  path = os.fsencode(folder) + b"/" + name
  try:
    with open(path, "wb") as f:
      f.write((folder / "photo0.png").read_bytes())
  except OSError as e:
    pytest.skip(f"this file system refuses names that are not UTF-8: {e}")
  return pathlib.Path(os.fsdecode(path))


@pytest.mark.parametrize("layout", ["flat", "classes"])
def test_prepare_lists_broken_links_and_undecodable_names(capsys, tmp_path, layout):
  root = tmp_path / "photos"
  folder = _photos(root / "ginger" if layout == "classes" else root)
  if layout == "classes":
    _photos(root / "black")
  _bad_name(folder, b"bad\xff.png")
  (folder / "gone.png").symlink_to(tmp_path / "deleted.png")
  prefix = "ginger/" if layout == "classes" else ""
  expected = {f"{prefix}bad\\xff.png": "not valid UTF-8",
              f"{prefix}gone.png": "broken symbolic link"}
  if layout == "classes":
    bad_class = pathlib.Path(os.fsdecode(os.fsencode(root) + b"/cl\xfess"))
    bad_class.mkdir()
    expected["cl\\xfess/"] = "not valid UTF-8"
  status, out, err = _cli(capsys, prepare_cli, "--source=folder", f"--input={root}",
                          f"--data_dir={tmp_path / 'data'}", "--image_size=16",
                          "--num_workers=0", "--noprogress")
  assert status == 0 and "Traceback" not in err, err
  result = json.loads(out.strip().splitlines()[-1])
  assert result["written"] == (4 if layout == "classes" else 2)
  skipped = {s["file"]: s["reason"] for s in result["skipped_files"]}
  assert set(skipped) == set(expected), skipped
  for name, reason in expected.items():
    assert reason in skipped[name]
    assert f"skipped {name}: " in err


# --- 7. predict validates before it creates -------------------------------------------

def test_predict_unknown_style_creates_nothing(capsys, tmp_path, image, run_copy):
  output = tmp_path / "out"
  _assert_usage_error(_cli(capsys, predict_cli, f"--workdir={run_copy}", f"--input={image}",
                           f"--output={output}", "--style=tabby"),
                      "'tabby'", "this run's classes: black,")
  assert not output.exists()


@pytest.mark.parametrize("args, fragment", [
    (["--style_mix=black-white"], "--style_mix expects CLASS_A:CLASS_B:T"),
    (["--style_image={missing}"], "--style_image={missing}: no such file"),
    (["--style_image={not_an_image}"], "not an image"),
])
def test_predict_style_options_checked_before_loading(capsys, tmp_path, image, not_an_image,
                                                      no_run_loading, args, fragment):
  names = {"missing": tmp_path / "nowhere.jpg", "not_an_image": not_an_image}
  output = tmp_path / "out"
  _assert_usage_error(_cli(capsys, predict_cli, f"--workdir={tmp_path}", f"--input={image}",
                           f"--output={output}", *(a.format(**names) for a in args)),
                      fragment.format(**names))
  assert not output.exists()


# --- 8. other everyday mistakes -------------------------------------------------------

def test_predict_inputs_that_are_missing_or_not_images(capsys, tmp_path, not_an_image,
                                                       no_run_loading):
  output = tmp_path / "out"
  base = [f"--workdir={tmp_path}", f"--output={output}", "--style=ginger"]
  missing = tmp_path / "nowhere.png"
  _assert_usage_error(_cli(capsys, predict_cli, *base, f"--input={missing}"),
                      f"--input={missing}", "no such file")
  _assert_usage_error(_cli(capsys, predict_cli, *base, f"--input={not_an_image}"),
                      f"--input={not_an_image}", "not an image")
  junk = tmp_path / "junk"
  junk.mkdir()
  (junk / "a.png").write_text("no")
  (junk / "b.jpg").write_bytes(b"\xff\xd8 no")
  _assert_usage_error(_cli(capsys, predict_cli, *base, f"--input={junk}"),
                      f"--input={junk}", "none of its 2 image files")
  empty = tmp_path / "empty"
  empty.mkdir()
  _assert_usage_error(_cli(capsys, predict_cli, *base, f"--input={empty}"),
                      f"--input={empty}", "no image files")
  assert not output.exists()


def test_predict_lists_each_skipped_input(capsys, tmp_path, image, run_copy):
  """Some inputs unreadable: the rest are written, each failure named."""
  folder = image.parent
  (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  (folder / "gone.png").symlink_to(tmp_path / "deleted.png")
  status, out, err = _cli(capsys, predict_cli, f"--workdir={run_copy}", f"--input={folder}",
                          f"--output={tmp_path / 'out'}", "--style=ginger")
  assert status == 1 and "Traceback" not in err, err
  failures = [line for line in err.splitlines() if line.startswith("error: ")]
  assert len(failures) == 2, err
  assert str(folder / "broken.png") in failures[0] and str(folder / "gone.png") in failures[1]
  assert "wrote 1 image(s)" in out and "2 input(s) failed" in out
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cat.png"]


@pytest.mark.parametrize("module", [predict_cli, export_cli, evaluate_cli],
                         ids=["predict", "export", "evaluate"])
def test_workdir_that_is_a_file_or_not_a_run(capsys, tmp_path, image, a_file, module):
  extra = {predict_cli: [f"--input={image}", f"--output={tmp_path / 'out'}", "--style=ginger"],
           export_cli: [f"--output={tmp_path / 'g.jaxexport'}"], evaluate_cli: []}[module]
  _assert_usage_error(_cli(capsys, module, f"--workdir={a_file}", *extra),
                      f"--workdir={a_file}", "is a file")
  not_a_run = tmp_path / "not_a_run"
  not_a_run.mkdir()
  _assert_usage_error(_cli(capsys, module, f"--workdir={not_a_run}", *extra),
                      "config.json", str(not_a_run))
  assert not (tmp_path / "out").exists() and not (tmp_path / "g.jaxexport").exists()
  assert list(not_a_run.iterdir()) == []


@pytest.mark.parametrize("make", ["stylize", "dream"])
def test_art_inputs_that_are_missing_or_not_images(capsys, tmp_path, image, not_an_image,
                                                   make):
  output = tmp_path / "out.png"
  missing = tmp_path / "nowhere.png"
  for bad, fragment in [(missing, "no such file"), (not_an_image, "not an image")]:
    args = ((stylize_cli, f"--content={image}", f"--style={bad}") if make == "stylize"
            else (dream_cli, f"--input={bad}"))
    _assert_usage_error(_cli(capsys, *args, f"--output={output}"), str(bad), fragment)
  assert not output.exists()


@pytest.mark.parametrize("make", ["stylize", "dream"])
def test_art_negative_size(capsys, tmp_path, image, make):
  args = ((stylize_cli, f"--content={image}", f"--style={image}") if make == "stylize"
          else (dream_cli, f"--input={image}"))
  _assert_usage_error(_cli(capsys, *args, f"--output={tmp_path / 'o.png'}", "--size=-5"),
                      "--size=-5")


@pytest.mark.parametrize("make, args, fragment", [
    ("dream", ["--step_size=-0.01"], "step_size > 0"),
    ("dream", ["--octave_scale=nan"], "octave_scale > 1"),
    ("stylize", ["--content_weight=-1"], "content_weight must be >= 0"),
    ("stylize", ["--style_layer_weights=1,1,-1,1"], "style_layer_weights[2] must be >= 0"),
    ("stylize", ["--optimizer=adam", "--learning_rate=-0.02"], "--learning_rate=-0.02"),
])
def test_art_settings_that_would_run_backwards(capsys, tmp_path, image, make, args, fragment):
  """Refused before any optimisation: each would have run for minutes."""
  output = tmp_path / "o.png"
  base = ((stylize_cli, f"--content={image}", f"--style={image}") if make == "stylize"
          else (dream_cli, f"--input={image}"))
  _assert_usage_error(_cli(capsys, *base, f"--output={output}", *args), fragment)
  assert not output.exists()


def test_export_unknown_platform(capsys, tmp_path, no_run_loading):
  output = tmp_path / "g.jaxexport"
  _assert_usage_error(_cli(capsys, export_cli, f"--workdir={tmp_path}", f"--output={output}",
                           "--platforms=cpu,gpu"), "'gpu'", "--platforms")
  assert not output.exists()


@pytest.mark.parametrize("grid", [False, True])
def test_predict_output_that_would_overwrite_an_input(capsys, tmp_path, no_run_loading, grid):
  folder = tmp_path / "inputs"
  folder.mkdir()
  name = "cat_styles.png" if grid else "cat.png"
  # The input whose name an output would take: under --grid, cat.png's figure.
  Image.fromarray(np.full((24, 24, 3), 200, np.uint8)).save(folder / "cat.png")
  if grid:
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(folder / name)
  before = {p.name: p.read_bytes() for p in folder.iterdir()}
  _assert_usage_error(_cli(capsys, predict_cli, f"--workdir={tmp_path}", f"--input={folder}",
                           f"--output={folder}", *(["--grid"] if grid else ["--style=ginger"])),
                      f"--output={folder}", name, "overwrite")
  assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_checks_name_the_flag_and_create_nothing(tmp_path, a_file):
  """The shared checks directly: the message starts with --FLAG=PATH."""
  with pytest.raises(checks.UsageError, match=r"^--out=.*a_file.txt: is a file"):
    checks.output_dir_writable(a_file, "out")
  with pytest.raises(checks.UsageError, match=r"^--out=.*: is a folder"):
    checks.output_file_writable(tmp_path, "out")
  with pytest.raises(checks.UsageError, match=r"^--out=.*: is a folder"):
    checks.output_file_writable(f"{tmp_path / 'new'}{os.sep}", "out")
  broken = tmp_path / "broken"
  broken.symlink_to(tmp_path / "deleted")
  with pytest.raises(checks.UsageError, match="broken symbolic link"):
    checks.output_dir_writable(broken, "out")
  with pytest.raises(checks.UsageError, match="broken symbolic link"):
    checks.input_file(broken, "in")
  assert checks.output_dir_writable(tmp_path / "a" / "b", "out") == tmp_path / "a" / "b"
  assert checks.output_file_writable(tmp_path / "a" / "f.png", "out") == tmp_path / "a" / "f.png"
  assert not (tmp_path / "a").exists()
  with pytest.raises(checks.UsageError, match=r"^--n=0: must be at least 1"):
    checks.positive(0, "n")
  checks.positive(None, "n")
