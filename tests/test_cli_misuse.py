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
import stat
import threading
from types import ModuleType

from etils import epath
import numpy as np
from PIL import Image
import pytest

from tests.subprocess_runs import private_copy
from tp2p_jax.cli import checks
from tp2p_jax.cli import dream as dream_cli
from tp2p_jax.cli import evaluate as evaluate_cli
from tp2p_jax.cli import export as export_cli
from tp2p_jax.cli import output_paths
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


# --- 9. no command writes over what it reads ------------------------------------------

@pytest.fixture
def fake_run(tmp_path: pathlib.Path) -> pathlib.Path:
  """A folder laid out as a run (never loaded: the checks come first), with
  a stage folder below it."""
  run = tmp_path / "run"
  for stage in (run, run / "style_encoder"):
    (stage / "checkpoints" / "10").mkdir(parents=True)
    (stage / "config.json").write_text('{"method": "paired_gan"}\n')
  (run / "metrics.jsonl").write_text('{"step": 10}\n')
  return run


class _FifoWatch:
  """A FIFO, and a thread that notices any process opening it to read: it
  opens the FIFO to write without blocking, which succeeds only while a
  reader has it open, and closes it at once, so the blocked reader gets
  end-of-file instead of hanging the suite."""

  def __init__(self, path: pathlib.Path):
    self.path, self.opened, self._stop = path, False, threading.Event()
    os.mkfifo(path)
    self._thread = threading.Thread(target=self._watch, daemon=True)
    self._thread.start()

  def _watch(self) -> None:
    while not self._stop.wait(0.05):
      try:
        os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
        self.opened = True
      except OSError:  # ENXIO: no reader
        pass

  def stop(self) -> None:
    self._stop.set()
    self._thread.join()


@pytest.fixture
def fifo(tmp_path: pathlib.Path):
  """A FIFO named like an image; the test fails if anything opened it."""
  watch = _FifoWatch(tmp_path / "pipe.png")
  yield watch.path
  watch.stop()
  assert not watch.opened, "something opened the FIFO (and would have blocked there)"


def test_the_fifo_watch_sees_a_reader(tmp_path):
  """The control of the `fifo` fixture: a reader that opens the FIFO is
  noticed and released."""
  watch = _FifoWatch(tmp_path / "p.png")
  try:
    with open(watch.path, "rb") as f:  # blocks until the watch opens it to write
      assert f.read() == b""
  finally:
    watch.stop()
  assert watch.opened


@pytest.mark.parametrize("name", ["config", "config.json"])
def test_export_refuses_to_overwrite_the_runs_config(capsys, fake_run, no_run_loading, name):
  before = (fake_run / "config.json").read_bytes()
  output = fake_run / name
  _assert_usage_error(_cli(capsys, export_cli, f"--workdir={fake_run}", f"--output={output}"),
                      f"--output={output}", "would overwrite the run's config.json",
                      f"--workdir={fake_run}")
  assert (fake_run / "config.json").read_bytes() == before
  assert sorted(p.name for p in fake_run.iterdir()) == ["checkpoints", "config.json",
                                                         "metrics.jsonl", "style_encoder"]


@pytest.mark.parametrize("inside, own", [
    ("checkpoints/10/g.jaxexport", "checkpoints"), ("metrics.jsonl", "metrics.jsonl"),
    ("samples/g", "samples"), ("style_encoder/config", "style_encoder/config.json"),
    ("style_encoder/checkpoints/g", "style_encoder/checkpoints")])
def test_export_refuses_the_runs_other_files(capsys, fake_run, no_run_loading, inside, own):
  output = fake_run / inside
  _assert_usage_error(_cli(capsys, export_cli, f"--workdir={fake_run}", f"--output={output}"),
                      f"would overwrite the run's {own} ")


def test_outputs_beside_the_runs_files_are_free(fake_run):
  """Only the run's own names are refused: a program exported into the run
  folder, or a results folder inside it, are fine; paths compare resolved."""
  output_paths.check_outputs([output_paths.Output("output", "x", fake_run / "g.jaxexport"),
                              output_paths.Output("output", "x", fake_run / "out" / "config.json"),
                              output_paths.Output("output", "x", fake_run / "g.jaxexport.json")],
                             run=fake_run)
  alias = fake_run.parent / "alias"
  alias.symlink_to(fake_run)
  with pytest.raises(checks.UsageError, match="the run's config.json"):
    output_paths.check_outputs([output_paths.Output("output", "x", alias / "config.json")],
                               run=f"{fake_run}/./")


def test_urls_compare_as_normalised_strings():
  run = "gs://bucket/runs//cats/"
  with pytest.raises(checks.UsageError, match="the run's config.json"):
    output_paths.check_outputs([output_paths.Output("output", "o", "gs://bucket/runs/cats/./config.json")],
                               run=run)
  with pytest.raises(checks.UsageError, match="would overwrite the input --input=gs://bucket/a.png"):
    output_paths.check_outputs([output_paths.Output("output", "o", "gs://bucket/x/../a.png")],
                               inputs=[("--input=gs://bucket/a.png", "gs://bucket/a.png")])
  with pytest.raises(checks.UsageError, match="are the same file"):
    output_paths.check_outputs([output_paths.Output("output", "o", "gs://b/o.json"),
                                output_paths.Output("output", "o", "gs://b//o.json")])
  output_paths.check_outputs([output_paths.Output("output", "o", "gs://bucket/runs/cats2/config.json")],
                             run=run, inputs=[("in", "gs://bucket/a.png"), ("in", "/tmp/a.png")])


@pytest.mark.parametrize("make", ["dream", "stylize-content", "stylize-style"])
@pytest.mark.parametrize("alias", ["same", "symlink", "hardlink"])
def test_art_output_that_is_an_input(capsys, tmp_path, make, alias):
  """Before: the 24x24 input was replaced by the result at --size."""
  big = tmp_path / "photo.png"
  Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).save(big)
  other = tmp_path / "other.png"
  Image.fromarray(np.full((24, 24, 3), 30, np.uint8)).save(other)
  before = big.read_bytes()
  output = {"same": big, "symlink": tmp_path / "link.png", "hardlink": tmp_path / "hard.png"}[alias]
  if alias == "symlink":
    output.symlink_to(big)
  elif alias == "hardlink":
    os.link(big, output)
  flag, args = {"dream": ("--input", (dream_cli, f"--input={big}")),
                "stylize-content": ("--content", (stylize_cli, f"--content={big}",
                                                  f"--style={other}")),
                "stylize-style": ("--style", (stylize_cli, f"--content={other}",
                                              f"--style={big}"))}[make]
  _assert_usage_error(_cli(capsys, *args, f"--output={output}", "--size=8", "--steps=1"),
                      f"--output={output}", f"would overwrite the input {flag}={big}")
  assert big.read_bytes() == before


@pytest.mark.parametrize("target, fragment", [
    ("/dev/null", "is a symbolic link to /dev/null, a character device, not a regular file"),
    ("loop", "is a symbolic link loop")])
@pytest.mark.parametrize("make", ["dream", "stylize", "export"])
def test_symlinked_output_to_a_device_or_loop(capsys, tmp_path, image, fake_run,
                                              no_run_loading, target, fragment, make):
  output = tmp_path / "out.png"
  output.symlink_to(target if target != "loop" else output)
  args = {"stylize": (stylize_cli, f"--content={image}", f"--style={image}"),
          "dream": (dream_cli, f"--input={image}"),
          "export": (export_cli, f"--workdir={fake_run}")}[make]
  _assert_usage_error(_cli(capsys, *args, f"--output={output}", *(
      ["--steps=1"] if make != "export" else [])), f"--output={output}", fragment)
  assert output.is_symlink() and _temp_files(tmp_path) == []


def test_a_device_as_output_is_refused(capsys, image):
  _assert_usage_error(_cli(capsys, dream_cli, f"--input={image}", "--output=/dev/null"),
                      "--output=/dev/null: is a character device, not a regular file")


def test_writes_go_through_a_symlink_and_keep_it(tmp_path):
  real = tmp_path / "real" / "out.png"
  real.parent.mkdir()
  real.write_bytes(b"old")
  link = tmp_path / "link.png"
  link.symlink_to(real)
  pixels = np.full((4, 4, 3), 7, np.uint8)
  image_files.save_png(link, pixels)
  assert link.is_symlink() and os.readlink(link) == str(real)
  np.testing.assert_array_equal(np.asarray(Image.open(real)), pixels)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["link.png", "real"]
  # A dangling link: the write creates the file it names.
  dangling = tmp_path / "dangling.png"
  dangling.symlink_to(real.parent / "new.png")
  image_files.save_png(dangling, pixels)
  assert dangling.is_symlink() and (real.parent / "new.png").is_file()
  # A device or a loop behind a link: one OSError naming it; nothing replaced.
  device = tmp_path / "device.png"
  device.symlink_to("/dev/null")
  with pytest.raises(OSError, match="symbolic link to /dev/null, which is not a regular file"):
    image_files.save_png(device, pixels)
  loop = tmp_path / "loop.png"
  loop.symlink_to(loop)
  with pytest.raises(OSError, match="symbolic link loop"):
    image_files.save_png(loop, pixels)
  assert device.is_symlink() and loop.is_symlink() and _temp_files(tmp_path) == []


def test_predict_output_over_the_runs_files(capsys, tmp_path, fake_run, no_run_loading):
  folder = tmp_path / "inputs"
  folder.mkdir()
  Image.fromarray(np.full((24, 24, 3), 200, np.uint8)).save(folder / "config.png")
  output = fake_run / "samples"
  _assert_usage_error(_cli(capsys, predict_cli, f"--workdir={fake_run}", f"--input={folder}",
                           f"--output={output}", "--style=ginger"),
                      f"--output={output}", "config.png there would overwrite the run's samples")
  assert not output.exists()


@pytest.mark.parametrize("flag", ["input", "style_image"])
def test_predict_fifo_as_input_or_style_image(capsys, tmp_path, image, fifo, no_run_loading,
                                              flag):
  given = {"input": image, "style_image": None, flag: fifo}
  args = [f"--{name}={value}" for name, value in given.items() if value is not None]
  _assert_usage_error(_cli(capsys, predict_cli, f"--workdir={tmp_path}", *args,
                           f"--output={tmp_path / 'out'}"),
                      f"--{flag}={fifo}: is a FIFO (named pipe), not a regular file")


def test_predict_link_loop_as_input(capsys, tmp_path, no_run_loading):
  loop = tmp_path / "loop.png"
  loop.symlink_to(loop)
  _assert_usage_error(_cli(capsys, predict_cli, f"--workdir={tmp_path}", f"--input={loop}",
                           f"--output={tmp_path / 'out'}", "--style=ginger"),
                      f"--input={loop}: is a symbolic link loop")


@pytest.mark.parametrize("make", ["dream", "stylize", "evaluate", "import_torch"])
def test_fifo_inputs_of_the_other_commands(capsys, tmp_path, image, fifo, no_run_loading, make):
  from tp2p_jax.cli import import_torch as import_cli
  args, flag = {
      "dream": ((dream_cli, f"--input={fifo}", f"--output={tmp_path / 'o.png'}"), "input"),
      "stylize": ((stylize_cli, f"--content={image}", f"--style={fifo}",
                   f"--output={tmp_path / 'o.png'}"), "style"),
      "evaluate": ((evaluate_cli, f"--workdir={tmp_path}", f"--inception_weights={fifo}"),
                   "inception_weights"),
      "import_torch": ((import_cli, "--family=pix2pix", f"--generator={fifo}",
                        f"--workdir={tmp_path / 'imported'}"), "generator")}[make]
  _assert_usage_error(_cli(capsys, *args), f"--{flag}={fifo}: is a FIFO (named pipe)")


def test_import_overwrite_keeps_its_inputs(capsys, fake_run):
  from tp2p_jax.cli import import_torch as import_cli
  weights = fake_run / "latest_net_G.pth"
  weights.write_bytes(b"weights the user keeps in the run folder")
  _assert_usage_error(_cli(capsys, import_cli, "--family=pix2pix", f"--generator={weights}",
                           f"--workdir={fake_run}", "--overwrite"),
                      f"--generator={weights}: lies inside --workdir={fake_run}",
                      "--overwrite replaces")
  assert weights.is_file() and (fake_run / "config.json").is_file()


def test_evaluate_weights_inside_the_eval_folder(capsys, fake_run, no_run_loading):
  weights = fake_run / "eval" / "pt_inception.npz"
  weights.parent.mkdir()
  np.savez(weights, w=np.zeros(1))
  _assert_usage_error(_cli(capsys, evaluate_cli, f"--workdir={fake_run}",
                           f"--inception_weights={weights}"),
                      f"--inception_weights={weights}: lies in the run's eval/ folder")


def test_output_names_are_distinct():
  paths = [epath.Path(f"/in/{name}") for name in
           ["cat.jpg", "cat.png", "cat.png.bmp", "cat_png.bmp", "Dog.png", "dog.jpg", "solo.png"]]
  names = predict_cli._output_names(paths)  # pylint: disable=protected-access
  assert names == ["cat.jpg", "cat.png", "cat.png~2", "cat_png", "Dog.png", "dog.jpg", "solo"]
  assert len({n.casefold() for n in names}) == len(paths)


def test_predict_collisions_loops_and_fifos_in_a_folder(capsys, tmp_path, run_copy):
  """Before: cat.png, cat.jpg and cat_png.bmp gave "wrote 3 image(s)" and two
  files; a link loop in the folder was a RuntimeError traceback; a FIFO
  hung the command. Now: three files, the loop and the FIFO each named and
  counted, exit 1, and a log line names the renamed outputs."""
  folder = tmp_path / "inputs"
  folder.mkdir()
  for name, value in [("cat.png", 40), ("cat.jpg", 120), ("cat_png.bmp", 220)]:
    Image.fromarray(np.full((24, 24, 3), value, np.uint8)).save(folder / name)
  (folder / "loop.png").symlink_to(folder / "loop.png")
  watch = _FifoWatch(folder / "pipe.png")
  output = tmp_path / "out"
  try:
    status, out, err = _cli(capsys, predict_cli, f"--workdir={run_copy}", f"--input={folder}",
                            f"--output={output}", "--style=ginger")
  finally:
    watch.stop()
  assert not watch.opened, "predict opened the FIFO (and would have blocked there)"
  assert status == 1 and "Traceback" not in err, err
  assert "wrote 3 image(s)" in out and "2 input(s) failed" in out, out
  assert sorted(p.name for p in output.iterdir()) == ["cat.jpg.png", "cat.png.png", "cat_png.png"]
  failures = sorted(line for line in err.splitlines() if line.startswith("error: "))
  assert failures == [f"error: {folder / 'loop.png'}: cannot read: a symbolic link loop",
                      f"error: {folder / 'pipe.png'}: cannot read: a FIFO (named pipe), not a "
                      "regular file"], err
  assert "cat.jpg -> cat.jpg.png, cat.png -> cat.png.png" in err
  assert not stat.S_ISREG(os.lstat(folder / "pipe.png").st_mode)
