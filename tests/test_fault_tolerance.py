"""Faults and misuse around a run directory, injected for real: two trainers
on one workdir, a resume with another config, damaged checkpoint files, a
process killed in the middle of a save, a full filesystem. Each must end in
one line on stderr (no traceback) and a run that still resumes exactly.

Most use `tests.painter_method` (a two-conv method that trains in seconds)
through the same loop, loader and command code as the built-in methods.
"""
from __future__ import annotations

import glob
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import painter_method
from tests.subprocess_runs import REPO, TINY, cli_env
from tp2p_jax import training
from tp2p_jax.cli import train as train_cli
from tp2p_jax.core.checkpoints import Checkpointer, CheckpointSaveError
from tp2p_jax.core.workdir_lock import LOCK_FILE, WorkdirBusyError, WorkdirLock
from tp2p_jax.inference.run_loading import load_trained_run


@pytest.fixture
def painter():
  with painter_method.registered() as method:
    yield method


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> pathlib.Path:
  """A painter run trained straight through 6 steps (checkpoints 2, 4, 6)."""
  workdir = tmp_path_factory.mktemp("straight")
  with painter_method.registered():
    assert training.train_and_evaluate(painter_method.config(6), str(workdir)) == 0
  return workdir


def _rows(workdir: pathlib.Path) -> dict[int, dict]:
  return {r["step"]: r for r in map(json.loads,
                                    (workdir / "metrics.jsonl").read_text().splitlines())}


def _first_steps(workdir: pathlib.Path, upto: int, copy: pathlib.Path) -> pathlib.Path:
  """A copy (at `copy`) of the run `workdir` as it was after step `upto`."""
  shutil.copytree(workdir, copy, ignore=lambda d, names: [
      n for n in names if n.isdigit() and int(n) > upto and d.endswith("checkpoints")])
  rows = [r for r in (copy / "metrics.jsonl").read_text().splitlines()
          if json.loads(r)["step"] <= upto]
  (copy / "metrics.jsonl").write_text("\n".join(rows) + "\n")
  return copy


def _truncate_array_files(checkpoint: pathlib.Path) -> None:
  """Cuts every array data file of a checkpoint to 10 bytes (a copy that
  ran out of space); which of them orbax still reads depends on its
  version, so all are cut."""
  files = glob.glob(str(checkpoint / "state" / "**" / "d" / "*"), recursive=True)
  assert files
  for path in files:
    os.truncate(path, 10)


def _error_lines(err: str) -> list[str]:
  assert "Traceback" not in err, err
  return [line for line in err.splitlines() if line.startswith("error:")]


def _tmp_folders(workdir: pathlib.Path) -> list[str]:
  return [p for p in glob.glob(str(workdir / "**" / "*"), recursive=True)
          if "orbax-checkpoint-tmp" in p or p.endswith(".tmp")]


def _painter(workdir: pathlib.Path, steps: int, **env: str) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "tests.painter_method", str(workdir),
                           str(steps)], cwd=REPO, env={**cli_env(), **env},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# --- one run per workdir ---------------------------------------------------------------


def test_a_held_workdir_refuses_a_second_holder_and_names_the_first(tmp_path):
  with WorkdirLock(str(tmp_path)):
    holder = json.loads((tmp_path / LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid()
    with pytest.raises(WorkdirBusyError, match=rf"in use by another training run \(pid "
                                               rf"{os.getpid()} on "):
      WorkdirLock(str(tmp_path)).acquire()
  assert (tmp_path / LOCK_FILE).read_text() == ""  # released cleanly
  with WorkdirLock(str(tmp_path)):  # free again
    pass


def test_the_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path, caplog):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  (tmp_path / LOCK_FILE).write_text(json.dumps(
      {"host": os.uname().nodename, "pid": int(dead.stdout), "started": "earlier"}))
  with caplog.at_level("WARNING", logger="tp2p_jax"), WorkdirLock(str(tmp_path)):
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
  assert f"pid {int(dead.stdout)}" in caplog.text and "taking over" in caplog.text


@pytest.mark.slow
def test_a_second_trainer_on_a_busy_workdir_refuses_in_one_line(straight, tmp_path):
  workdir = tmp_path / "run"
  first = _painter(workdir, 100_000)
  try:
    deadline = time.time() + 300
    while not (workdir / "metrics.jsonl").exists():  # first holds the lock and trains
      assert first.poll() is None, first.communicate()[1][-2000:]
      assert time.time() < deadline
      time.sleep(0.5)
    second = subprocess.run([sys.executable, "-m", "tests.painter_method", str(workdir), "8"],
                            cwd=REPO, env=cli_env(), capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 2, second.stderr[-2000:]
    (line,) = _error_lines(second.stderr)
    assert f"in use by another training run (pid {first.pid} on" in line
  finally:
    first.send_signal(signal.SIGTERM)  # saves a checkpoint and exits 0
    out, err = first.communicate(timeout=300)
  assert first.returncode == 0, err[-2000:]
  steps = [json.loads(r)["step"] for r in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert steps == sorted(set(steps))  # one writer: no duplicated steps
  assert not _tmp_folders(workdir)
  assert (workdir / LOCK_FILE).read_text() == ""


# --- resume only what the checkpoints hold -------------------------------------------


def test_a_resume_with_another_architecture_changes_nothing(painter, straight, tmp_path,
                                                            capsys):
  run = tmp_path / "run"
  shutil.copytree(straight, run)
  before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
  changed = painter_method.config(8)
  changed.features = 16
  assert train_cli.train(changed, str(run)) == 2
  (line,) = _error_lines(capsys.readouterr().err)
  assert "holds a run with another config (features 8 -> 16)" in line
  assert "choose another --workdir" in line
  after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
  assert after == before


def test_a_checkpoint_that_does_not_fit_leaves_the_config_as_it_was(painter, straight,
                                                                     tmp_path, capsys):
  """A stored config without the field (written by an older version) cannot
  tell; the checkpoint's shapes do, and config.json is not rewritten."""
  run = tmp_path / "run"
  shutil.copytree(straight, run)
  stored = json.loads((run / "config.json").read_text())
  del stored["features"]
  (run / "config.json").write_text(json.dumps(stored))
  before = (run / "config.json").read_bytes()
  changed = painter_method.config(8)
  changed.features = 16
  assert train_cli.train(changed, str(run)) == 2
  (line,) = _error_lines(capsys.readouterr().err)
  assert "checkpoints/6: ema/Conv_0/bias has shape (8,) in the checkpoint, (16,) in this config" in line
  assert (run / "config.json").read_bytes() == before
  assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["2", "4", "6"]


def test_a_resume_may_change_the_schedule(painter, straight, tmp_path):
  run = _first_steps(straight, 4, tmp_path / "run")
  longer = painter_method.config(6)
  longer.checkpoint_every = 1  # when to save is not what is saved
  assert training.train_and_evaluate(longer, str(run)) == 0
  assert json.loads((run / "config.json").read_text())["checkpoint_every"] == 1
  rows, expected = _rows(run), _rows(straight)
  for step in (5, 6):
    assert rows[step]["l1"] == pytest.approx(expected[step]["l1"], rel=1e-6)


def test_the_toycats_probe_a_changed_style_net_leaves_the_run_loadable(tiny_run, tmp_path,
                                                                       capsys):
  """The reported probe: `--config.generator_kwargs.style_hidden=64` on an
  existing run used to overwrite config.json before the restore failed."""
  run = tmp_path / "run"
  shutil.copytree(tiny_run, run)
  config_before = (run / "config.json").read_bytes()
  status = train_cli.main(["run_train.py", *TINY, "--config.generator_kwargs.style_hidden=64",
                           f"--workdir={run}"])
  assert status == 2
  (line,) = _error_lines(capsys.readouterr().err)
  assert "generator_kwargs.style_hidden" in line and "-> 64" in line
  assert (run / "config.json").read_bytes() == config_before


# --- damaged checkpoints -------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated array file", "deleted manifest"])
def test_loaders_fall_back_from_a_damaged_checkpoint_and_move_it_aside(
    painter, straight, tmp_path, damage, caplog):
  run = tmp_path / "run"
  shutil.copytree(straight, run)
  if damage == "truncated array file":
    _truncate_array_files(run / "checkpoints" / "6")
  else:
    (run / "checkpoints" / "6" / "state" / "manifest.ocdbt").unlink()
  with caplog.at_level("WARNING", logger="tp2p_jax"):
    loaded = load_trained_run(str(run))
  assert loaded.step == 4
  assert "checkpoints/6 is damaged" in caplog.text
  assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["2", "4"]
  moved = run / "checkpoints.damaged" / "6"
  assert moved.is_dir() and "moved aside" in (moved / "REASON.txt").read_text()
  reference = load_trained_run(str(straight), step=4)
  x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(loaded.predictor.generate(x)),
                                np.asarray(reference.predictor.generate(x)))


def test_a_reader_leaves_a_damaged_checkpoint_in_place_while_a_trainer_holds_the_run(
    painter, straight, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(straight, run)
  _truncate_array_files(run / "checkpoints" / "6")
  with WorkdirLock(str(run)):  # a trainer owns the directory
    assert load_trained_run(str(run)).step == 4
  assert (run / "checkpoints" / "6").is_dir() and not (run / "checkpoints.damaged").exists()


def test_training_resumes_from_the_newest_checkpoint_that_restores(painter, straight,
                                                                   tmp_path):
  run = _first_steps(straight, 4, tmp_path / "all_damaged")
  _truncate_array_files(run / "checkpoints" / "4")
  shutil.rmtree(run / "checkpoints" / "2" / "data")  # 2 is damaged too: back to scratch?
  with pytest.raises(Exception, match="no checkpoint restores"):
    training.train_and_evaluate(painter_method.config(6), str(run))
  assert sorted(p.name for p in (run / "checkpoints.damaged").iterdir()) == ["2", "4"]

  run = _first_steps(straight, 4, tmp_path / "newest_damaged")
  _truncate_array_files(run / "checkpoints" / "4")
  assert training.train_and_evaluate(painter_method.config(6), str(run)) == 0
  rows, expected = _rows(run), _rows(straight)
  for step in (3, 4, 5, 6):  # steps 3-4 trained again from checkpoint 2, exactly
    assert rows[step]["l1"] == pytest.approx(expected[step]["l1"], rel=1e-6)
  assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["2", "4", "6"]


def test_no_readable_checkpoint_is_one_line(painter, straight, tmp_path, capsys):
  from tp2p_jax.cli import predict
  run = tmp_path / "run"
  shutil.copytree(straight, run)
  for step in ("2", "4", "6"):
    _truncate_array_files(run / "checkpoints" / step)
  sketch = tmp_path / "sketch.png"
  from PIL import Image
  Image.new("RGB", (16, 16), "white").save(sketch)
  status = predict.main(["predict", f"--workdir={run}", f"--input={sketch}",
                         f"--output={tmp_path / 'out'}"])
  assert status == 2
  (line,) = _error_lines(capsys.readouterr().err)
  assert "no checkpoint restores" in line and str(run / "checkpoints") in line


# --- killed in the middle of a save -------------------------------------------------------


@pytest.mark.slow
def test_a_process_killed_mid_save_resumes_exactly(straight, tmp_path):
  run = tmp_path / "run"
  killed = _painter(run, 6, PAINTER_KILL_DURING_SAVE="4")
  _, err = killed.communicate(timeout=300)
  assert killed.returncode == -signal.SIGKILL, err[-2000:]
  assert glob.glob(str(run / "checkpoints" / "4.orbax-checkpoint-tmp*"))  # the half save
  assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]

  again = _painter(run, 6)
  _, err = again.communicate(timeout=300)
  assert again.returncode == 0, err[-2000:]
  assert "taking over the lock" in err
  assert not _tmp_folders(run)
  rows, expected = _rows(run), _rows(straight)
  for step in (3, 4, 5, 6):
    assert rows[step]["l1"] == pytest.approx(expected[step]["l1"], rel=1e-6)


# --- a full filesystem ------------------------------------------------------------------


@pytest.fixture
def small_filesystem(tmp_path):
  """A 1 MiB tmpfs (where this machine lets the tests mount one)."""
  mount = tmp_path / "small"
  mount.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                           capture_output=True)
  if mounted.returncode != 0:
    pytest.skip("cannot mount a tmpfs here (needs root)")
  yield mount
  subprocess.run(["umount", str(mount)], check=True)


def test_a_save_on_a_full_disk_cleans_up_and_keeps_the_earlier_checkpoints(small_filesystem):
  import jax.numpy as jnp
  state = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(256, 256)), jnp.float32)}
  ckpt = Checkpointer(str(small_filesystem / "checkpoints"), keep=100, writer=True)
  saved = []
  with pytest.raises(CheckpointSaveError) as failure:
    for step in range(1, 10):  # 256 KiB each, barely compressible: the 4th cannot fit
      ckpt.save(step, {"w": state["w"] + step}, "{}", {})
      saved.append(step)
  ckpt.close()
  message = str(failure.value)
  assert len(message.splitlines()) == 1
  assert str(small_filesystem / "checkpoints") in message and "MiB free" in message
  assert f"checkpoints {saved} are intact" in message
  assert not _tmp_folders(small_filesystem)
  import jax
  ckpt = Checkpointer(str(small_filesystem / "checkpoints"), keep=100)
  assert ckpt.all_steps() == saved
  restored = ckpt.restore_newest(jax.eval_shape(lambda: state))
  assert restored.step == saved[-1]
  np.testing.assert_array_equal(np.asarray(restored.state["w"]),
                                np.asarray(state["w"] + saved[-1]))
  ckpt.close()


@pytest.mark.slow
def test_training_on_a_full_disk_stops_in_one_line(painter, small_filesystem, capsys):
  config = painter_method.config(400)
  config.features = 64  # ~200 KiB per checkpoint: the disk fills within a few saves
  config.checkpoint_every = 1
  status = train_cli.train(config, str(small_filesystem / "run"))
  assert status == 1
  (line,) = _error_lines(capsys.readouterr().err)
  assert str(small_filesystem / "run") in line
  assert not _tmp_folders(small_filesystem)
  # What was saved restores, once the disk has room again.
  steps = sorted(int(p.name) for p in (small_filesystem / "run" / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps and load_trained_run(str(small_filesystem / "run")).step == steps[-1]


# --- configs and workdirs that cannot be used ---------------------------------------------


@pytest.mark.parametrize("override, expected", [
    ("--config.lamda_l1=5", "no field 'lamda_l1' in the config (did you mean 'lambda_l1'?)"),
    ("--config.nonexistent.x=1", "no field 'nonexistent'"),
    ("--config.batch_size=0", "--config.batch_size=0: must be an integer >= 1"),
    ("--config=experiments/nope.py", "--config=experiments/nope.py: cannot load"),
])
def test_config_mistakes_are_one_line_before_any_work(override, expected, tmp_path, capsys):
  status = train_cli.main(["run_train.py", "--config=experiments/toycats.py:tiny", override,
                           f"--workdir={tmp_path / 'run'}"])
  assert status == 2
  (line,) = _error_lines(capsys.readouterr().err)
  assert expected in line
  assert not (tmp_path / "run").exists()


def test_a_workdir_that_is_a_file_is_one_line(tmp_path, capsys):
  target = tmp_path / "file"
  target.write_text("not a run")
  status = train_cli.main(["run_train.py", "--config=experiments/toycats.py:tiny",
                           f"--workdir={target}"])
  assert status == 2
  (line,) = _error_lines(capsys.readouterr().err)
  assert f"{target}: exists and is not a directory" in line
  assert target.read_text() == "not a run"


def test_an_unwritable_workdir_is_one_line(read_only_dir, capsys):
  status = train_cli.main(["run_train.py", "--config=experiments/toycats.py:tiny",
                           f"--workdir={read_only_dir / 'run'}"])
  assert status == 2
  (line,) = _error_lines(capsys.readouterr().err)
  assert "is not writable" in line


def test_a_divergence_before_the_first_checkpoint_says_what_a_rerun_does(painter, tmp_path,
                                                                       capsys):
  config = painter_method.config(4)
  # NaN weights after the first update, on every CPU. (A huge finite rate
  # overflowed to +-inf, and whether a sum then met both signs, giving NaN,
  # or saturated tanh with zero gradients depended on the summation order.)
  config.lr = float("nan")
  status = train_cli.train(config, str(tmp_path / "run"))
  assert status == 1
  (line,) = _error_lines(capsys.readouterr().err)
  assert "non-finite" in line and "no checkpoint was written yet" in line
  assert "step None" not in line


def test_a_batch_the_devices_cannot_split_is_one_line_before_any_work(painter, tmp_path,
                                                                      capsys):
  import jax
  config = painter_method.config(4)
  config.batch_size = 12  # the suite runs on 8 simulated devices
  assert jax.device_count() == 8
  assert train_cli.train(config, str(tmp_path / "run")) == 2
  (line,) = _error_lines(capsys.readouterr().err)
  assert "batch_size 12 is not divisible by the 8 devices" in line
  assert not (tmp_path / "run").exists()


def test_predict_onto_a_full_disk_is_one_line_and_leaves_no_partial_file(
    painter, straight, small_filesystem, tmp_path, capsys):
  from PIL import Image

  from tp2p_jax.cli import predict
  sketch = tmp_path / "sketch.png"
  Image.new("RGB", (16, 16), "white").save(sketch)
  fd = os.open(small_filesystem / "filler", os.O_WRONLY | os.O_CREAT)
  try:  # fill the disk to the last block
    while True:
      os.write(fd, b"\0" * 4096)
  except OSError:
    pass
  finally:
    os.close(fd)
  status = predict.main(["predict", f"--workdir={straight}", f"--input={sketch}",
                         f"--output={small_filesystem / 'out'}"])
  assert status == 1
  (line,) = _error_lines(capsys.readouterr().err)
  assert "No space left on device" in line
  assert not _tmp_folders(small_filesystem)
