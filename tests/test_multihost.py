"""One run on two JAX processes, for real: two `run_train`-style processes on
localhost (CPU, one device each, gloo collectives, a free port) train,
stop and resume together.

The processes train `tests.painter_method` (compiles in seconds) through the
training command's own code: this file is also the config file
(`get_config`) and, run as `python -m tests.test_multihost FLAGS`, the
command (`tp2p_jax.cli.train.main` with the painter registered). With
MULTIHOST_SIGNAL_AFTER_SAVE=STEP:SIGNAL in its environment a process sends
itself SIGNAL right after saving checkpoint STEP, so that kills and
preemption notices land at a known step rather than after a sleep; with
MULTIHOST_NAN_AT_STEP=STEP it alone sees a NaN loss at that step.

The batches' independence of the process count, augmentation included, is
checked in-process on the pipeline (`HostSliceSampler`).
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from tests import painter_method
from tests.subprocess_runs import REPO, cli_env
from tp2p_jax.data import pipeline
from tp2p_jax.data.sources import ToyCatsSource

STEPS = 6  # checkpoints at 2, 4, 6


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """This file as a config file: the painter run of `STEPS` steps."""
  del variant
  return painter_method.config(STEPS)


# --- the data: one global stream, a slice of each global batch per process ------------


def _batches(shard_index: int, shard_count: int, count: int, **kwargs) -> list[dict]:
  it = pipeline.make_dataset_iterator(
      ToyCatsSource(20, 16, seed=1), global_batch_size=4, image_size=16, seed=3,
      augment="flip_or_crop", shard_index=shard_index, shard_count=shard_count, **kwargs)
  return [next(it) for _ in range(count)]


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_split_the_one_process_batches_row_by_row(processes):
  # 12 batches of 4 from 20 records: three epochs, each reshuffled.
  whole = _batches(0, 1, 12)
  parts = [_batches(i, processes, 12) for i in range(processes)]
  for t, batch in enumerate(whole):
    for key, value in batch.items():
      np.testing.assert_array_equal(
          np.concatenate([p[t][key] for p in parts]), value, err_msg=f"batch {t}: {key}")


def test_a_finite_stream_ends_at_the_same_global_batch_on_every_process():
  whole = list(_iterator_epochs(0, 1))
  halves = [list(_iterator_epochs(i, 2)) for i in range(2)]
  assert len(whole) == len(halves[0]) == len(halves[1]) == 5  # 20 records, batches of 4
  np.testing.assert_array_equal(np.concatenate([h[-1]["label"] for h in halves]),
                                whole[-1]["label"])


def _iterator_epochs(shard_index: int, shard_count: int):
  return pipeline.make_dataset_iterator(
      ToyCatsSource(20, 16, seed=1), global_batch_size=4, image_size=16, seed=3,
      augment=False, num_epochs=1, shard_index=shard_index, shard_count=shard_count)


def test_every_process_gets_its_own_input_position_back():
  states = []
  for i in range(2):
    it = _iterator_epochs(i, 2)
    next(it)
    states.append(pipeline.iterator_state_to_json(it))
  assert states[0] != states[1]  # each names its own slice
  saved = pipeline.process_states_to_json(states)
  for i in range(2):
    fresh = _iterator_epochs(i, 2)
    pipeline.restore_iterator_state(fresh, pipeline.process_state_from_json(saved, i, 2))
    expected = _iterator_epochs(i, 2)
    next(expected)
    np.testing.assert_array_equal(next(fresh)["real_a"], next(expected)["real_a"])
  with pytest.raises(pipeline.IteratorStateError, match="saved by 2 process.*resume it with 2"):
    pipeline.process_state_from_json(saved, 0, 1)


def test_a_one_process_position_is_saved_as_before():
  # One-process checkpoints, old and new, hold grain's own state.
  it = _iterator_epochs(0, 1)
  next(it)
  state = pipeline.iterator_state_to_json(it)
  assert pipeline.process_states_to_json([state]) == state
  assert json.loads(pipeline.process_state_from_json(state, 0, 1)) == json.loads(state)
  with pytest.raises(pipeline.IteratorStateError, match="saved by 1 process"):
    pipeline.process_state_from_json(state, 1, 2)


# --- two real processes ------------------------------------------------------------------


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _command(workdir: pathlib.Path | str, *config_args: str) -> list[str]:
  return [sys.executable, "-m", "tests.test_multihost", "--config=tests/test_multihost.py",
          f"--workdir={workdir}", *config_args]


def _run_processes(workdir: pathlib.Path | str, *, via_environment: bool = False,
                   signal_after_save: dict[int, str] | None = None,
                   non_finite_at: dict[int, int] | None = None,
                   devices_per_process: int = 1, extra_env: dict[str, str] | None = None,
                   log_dir: pathlib.Path | None = None, config_args: tuple[str, ...] = (),
                   timeout: float = 600) -> list[tuple[int, str]]:
  """Trains the painter in `workdir` (a folder or a gs:// URL) on two
  processes of `devices_per_process` CPU devices each; returns each one's
  (exit status, stderr). `signal_after_save`: process -> "STEP:SIGNAL";
  `non_finite_at`: process -> the step whose l1 that process sees as NaN;
  logs go to `log_dir` (default: beside a local workdir); `config_args`
  (`--config.FIELD=VALUE`) go to both."""
  port, procs = _free_port(), []
  logs = log_dir if log_dir is not None else pathlib.Path(workdir).parent
  name = str(workdir).rstrip("/").rsplit("/", 1)[-1]
  for i in range(2):
    env = {**cli_env(devices_per_process), **(extra_env or {})}
    command = _command(workdir, *config_args)
    if via_environment:
      env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                 JAX_PROCESS_ID=str(i))
    else:
      command += [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                  f"--process_id={i}"]
    if signal_after_save and i in signal_after_save:
      env["MULTIHOST_SIGNAL_AFTER_SAVE"] = signal_after_save[i]
    if non_finite_at and i in non_finite_at:
      env["MULTIHOST_NAN_AT_STEP"] = str(non_finite_at[i])
    log = open(logs / f"{name}.process{i}.log", "w+")
    procs.append((subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                   stderr=log, text=True), log))
  results = []
  try:
    for proc, log in procs:
      proc.wait(timeout=timeout)
      log.seek(0)
      results.append((proc.returncode, log.read()))
  finally:
    for proc, log in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
      log.close()
  return results


def _rows(workdir: pathlib.Path) -> dict[int, dict]:
  return {r["step"]: r for r in map(json.loads,
                                    (workdir / "metrics.jsonl").read_text().splitlines())}


def _checkpoints(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> pathlib.Path:
  """The painter trained straight through `STEPS` steps on two processes."""
  workdir = tmp_path_factory.mktemp("two") / "run"
  workdir.parent.mkdir(exist_ok=True)
  for status, err in _run_processes(workdir):
    assert status == 0, err[-3000:]
  return workdir


@pytest.mark.multiprocess
def test_two_processes_train_the_one_process_run(two_process_run, tmp_path):
  assert _checkpoints(two_process_run) == [2, 4, 6]
  data = json.loads((two_process_run / "checkpoints" / "6" / "data" / "metadata").read_text())
  positions = json.loads(data["iterator"])["process_iterator_states"]
  assert len(positions) == 2 and positions[0] != positions[1]
  one = subprocess.run(_command(tmp_path / "one"), cwd=REPO, env=cli_env(),
                       capture_output=True, text=True, timeout=600)
  assert one.returncode == 0, one.stderr[-3000:]
  # The same global batch on one device or split over two: only the order
  # of the L1 mean's additions differs (float32 rounding, ~1e-7).
  first_one, first_two = _rows(tmp_path / "one")[1], _rows(two_process_run)[1]
  for key in ("l1", "grad_norm"):
    assert first_two[key] == pytest.approx(first_one[key], rel=1e-5), key


@pytest.mark.multiprocess
def test_both_killed_after_a_checkpoint_resume_to_the_same_losses(two_process_run, tmp_path):
  workdir = tmp_path / "run"
  killed = _run_processes(workdir, signal_after_save={0: "4:SIGKILL", 1: "4:SIGKILL"})
  # Process 0 finalises each checkpoint; process 1 may die of losing process
  # 0 (its coordinator) before it reaches its own SIGKILL.
  assert killed[0][0] == -signal.SIGKILL, killed[0][1][-3000:]
  assert killed[1][0] != 0, killed[1][1][-3000:]
  assert _checkpoints(workdir) == [2, 4]
  again = _run_processes(workdir)
  for status, err in again:
    assert status == 0, err[-3000:]
    assert "resumed from step 4" in err
  rows, expected = _rows(workdir), _rows(two_process_run)
  assert sorted(rows) == list(range(1, STEPS + 1))
  for step in (5, 6):
    assert rows[step] == expected[step], step  # bit for bit


@pytest.mark.multiprocess
def test_sigterm_to_one_process_stops_both_at_one_checkpoint(tmp_path):
  workdir = tmp_path / "run"
  # Process 1 gets the notice right after saving checkpoint 2; the processes
  # agree on it one step later (step 3's vote is read at step 4).
  stopped = _run_processes(workdir, via_environment=True,
                           signal_after_save={1: "2:SIGTERM"})
  for status, err in stopped:
    assert status == 0, err[-3000:]
    assert "finished at step 4" in err and "stopped by SIGTERM" in err
  assert "SIGTERM received by another process; saved checkpoint 4" in stopped[0][1]
  assert "SIGTERM received; saved checkpoint 4" in stopped[1][1]
  assert _checkpoints(workdir) == [2, 4]


@pytest.mark.multiprocess
def test_a_non_finite_loss_on_one_process_stops_both(tmp_path):
  workdir = tmp_path / "run"
  stopped = _run_processes(workdir, non_finite_at={1: 3})
  for status, err in stopped:
    assert status == 1, err[-3000:]
  assert "non-finite values at step 3: on another process" in stopped[0][1]
  assert "non-finite values at step 3: {'l1': nan}" in stopped[1][1]
  assert _checkpoints(workdir) == [2]


@pytest.mark.multiprocess
def test_a_two_process_checkpoint_on_one_process_is_one_line(two_process_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(two_process_run, workdir)
  out = subprocess.run(_command(workdir), cwd=REPO, env=cli_env(), capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 2, out.stderr[-3000:]
  assert out.stderr.strip().splitlines()[-1] == (
      f"error: {workdir}/checkpoints/6: the input position was saved by 2 process(es), and "
      "this run has 1; resume it with 2")


# --- pod-shaped hosts on a shared gs:// run directory -------------------------------------


def _gcs_rows(gcs, url: str) -> dict[int, dict]:
  text = gcs.filesystem().cat_file(f"{url}/metrics.jsonl").decode()
  return {r["step"]: r for r in map(json.loads, text.splitlines())}


@pytest.mark.multiprocess
def test_two_hosts_of_four_devices_share_a_gs_run_and_resume(gcs, tmp_path):
  """2 processes x 4 devices (an 8-device mesh, as on TPU v4/v5p hosts) on one
  gs:// run directory are killed after a checkpoint and resume (process 0
  taking over the killed run's lock object) to the losses, held-out scores
  and best checkpoint of the same pair's uninterrupted run in a local
  folder; its first step equals one process with 8 devices. Validation: 5
  held-out pairs in a padded batch of 8, each process scoring its devices'
  rows, at the last step (one device against eight: tests/test_validation.py)."""
  straight, resumed = tmp_path / "straight", gcs.url("pod")
  validation = ("--config.eval_every=6", "--config.eval_examples=5",
                "--config.keep_best=eval/l1")
  pod = dict(devices_per_process=4, extra_env=gcs.env, log_dir=tmp_path,
             config_args=validation)
  for status, err in _run_processes(straight, **pod):
    assert status == 0, err[-3000:]
    assert "8 device(s)" in err  # one global mesh over both hosts
  killed = _run_processes(resumed, signal_after_save={0: "4:SIGKILL", 1: "4:SIGKILL"}, **pod)
  assert killed[0][0] == -signal.SIGKILL, killed[0][1][-3000:]
  assert killed[1][0] != 0, killed[1][1][-3000:]
  assert gcs.filesystem().exists(f"{resumed}/train.lock")  # the killed run's
  again = _run_processes(resumed, **pod)
  for status, err in again:
    assert status == 0, err[-3000:]
    assert "resumed from step 4" in err
  assert "taking over the lock of a run that ended without releasing it" in again[0][1]
  rows, expected = _gcs_rows(gcs, resumed), _rows(straight)
  assert sorted(rows) == list(range(1, STEPS + 1))  # each step once
  for step in (5, 6):
    assert rows[step] == expected[step], step  # bit for bit, eval/ scores at 6 too
  assert "eval/lpips" in rows[6]
  assert again[0][1].count("eval in") == again[1][1].count("eval in") == 1
  fs = gcs.filesystem()
  assert [p.rsplit("/", 1)[-1] for p in fs.ls(f"{resumed}/best")] == ["6"]
  assert sorted(p.name for p in (straight / "best").iterdir()) == ["6"]
  names = {p.rsplit("/", 1)[-1] for p in fs.find(resumed)}
  assert {"config.json", "step_0000006.png", "commit_success.txt"} <= names
  assert any(n.startswith("events.out.tfevents") for n in names)
  assert "train.lock" not in names  # released at the end
  one = subprocess.run(_command(tmp_path / "one"), cwd=REPO, env=cli_env(8),
                       capture_output=True, text=True, timeout=600)
  assert one.returncode == 0, one.stderr[-3000:]
  assert "8 device(s)" in one.stderr
  first_one = _rows(tmp_path / "one")[1]
  for key in ("l1", "grad_norm"):
    assert expected[1][key] == pytest.approx(first_one[key], rel=1e-4), key
  assert not (REPO / "gs:").exists()


@pytest.mark.multiprocess
@pytest.mark.parametrize("via_environment", [False, True])
def test_an_unreachable_coordinator_is_one_line(via_environment, tmp_path):
  address, env = f"127.0.0.1:{_free_port()}", cli_env()
  flags = ["--num_processes=2", "--process_id=1", f"--coordinator_address={address}"]
  if via_environment:
    env.update(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1")
    flags = []
  out = subprocess.run([sys.executable, "run_train.py", f"--workdir={tmp_path / 'w'}",
                        "--initialization_timeout=1", *flags], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-3000:]
  assert out.stderr.strip().count("\n") == 0, out.stderr
  assert f"cannot reach the coordinator at {address} within 1 s" in out.stderr
  assert not (tmp_path / "w").exists()


@pytest.mark.multiprocess
def test_a_partial_multi_process_start_is_one_line(tmp_path):
  out = subprocess.run([sys.executable, "run_train.py", f"--workdir={tmp_path / 'w'}",
                        "--num_processes=2"], cwd=REPO, env=cli_env(), capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-3000:]
  assert out.stderr.strip().count("\n") == 0, out.stderr
  assert "needs --coordinator_address, --process_id too" in out.stderr


def _signal_after_save(spec: str) -> None:
  """This process sends itself a signal right after saving a checkpoint
  ("STEP:SIGNAL", e.g. "4:SIGKILL")."""
  from tp2p_jax.core import checkpoints
  step_text, name = spec.split(":")
  save = checkpoints.Checkpointer.save

  def save_then_signal(self, step: int, *args, **kwargs) -> None:
    save(self, step, *args, **kwargs)
    if step == int(step_text):
      os.kill(os.getpid(), getattr(signal, name))

  checkpoints.Checkpointer.save = save_then_signal


def _non_finite_at(step: int) -> None:
  """This process alone sees a NaN l1 at `step` of a fresh run (the loop
  fetches the metrics once per step: the painter logs every step)."""
  from tp2p_jax.core import loop
  fetch, calls = loop._host_metrics, [0]

  def fetch_with_nan(metrics):
    calls[0] += 1
    host = fetch(metrics)
    return {**host, "l1": float("nan")} if calls[0] == step else host

  loop._host_metrics = fetch_with_nan


if __name__ == "__main__":
  from tp2p_jax.cli import train as train_cli
  if os.environ.get("MULTIHOST_SIGNAL_AFTER_SAVE"):
    _signal_after_save(os.environ["MULTIHOST_SIGNAL_AFTER_SAVE"])
  if os.environ.get("MULTIHOST_NAN_AT_STEP"):
    _non_finite_at(int(os.environ["MULTIHOST_NAN_AT_STEP"]))
  with painter_method.registered():
    sys.exit(train_cli.main(sys.argv))
