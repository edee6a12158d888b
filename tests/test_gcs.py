"""Run directories and data on Cloud Storage (`gs://`), end to end against a
Cloud Storage API server on 127.0.0.1 (the `gcs` fixture, tests/gcs_server.py):
training, the lock, the readers (predict, evaluate, export, import-torch),
damaged checkpoints and a gs:// data folder. Killing and resuming a run in
the bucket, on two processes of four devices, is in tests/test_multihost.py.

The tiny toy-cats run is trained into the bucket by `run_train.py`; the
readers run in this process. `_train` runs the painter method
(tests/painter_method.py, seconds to compile) through the training command
(`python -m tests.test_multihost`, `run_train.py` with the painter
registered).
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading

import numpy as np
import pytest

from tests.subprocess_runs import REPO, TINY, cli_env
from tp2p_jax.core import storage, workdir_lock
from tp2p_jax.core.workdir_lock import WorkdirBusyError, WorkdirLock

pytestmark = pytest.mark.slow  # runs train and serve the tiny run against a storage server


def _train(workdir: str, gcs, *extra_env: tuple[str, str]) -> subprocess.CompletedProcess:
  env = {**cli_env(), **gcs.env, **dict(extra_env)}
  return subprocess.run([sys.executable, "-m", "tests.test_multihost",
                         "--config=tests/test_multihost.py", f"--workdir={workdir}"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _no_local_gs_folder() -> None:
  # os.path.abspath("gs://b/run") would have made this folder.
  assert not (REPO / "gs:").exists()


def test_a_second_trainer_on_a_gs_run_is_refused_naming_the_holder(gcs):
  first = WorkdirLock(gcs.url("locked"))
  first.acquire()
  try:
    with pytest.raises(WorkdirBusyError, match=r"gs://.*/locked: in use by another training "
                       r"run \(pid \d+ on .*refreshed \d+ s ago"):
      WorkdirLock(gcs.url("locked")).acquire()
  finally:
    first.release()
  assert not gcs.filesystem().exists(gcs.url("locked/train.lock"))
  again = WorkdirLock(gcs.url("locked"))
  again.acquire()
  again.release()


def test_a_holder_notices_its_lock_taken_over_and_leaves_the_new_one(gcs):
  lock = WorkdirLock(gcs.url("taken"))
  lock.acquire()
  fs = gcs.filesystem()
  taker = {"host": "another-host", "pid": 7, "started": "2026-01-01T00:00:00"}
  fs.pipe_file(gcs.url("taken/train.lock"), json.dumps(taker).encode())
  assert not lock.lost  # the next heartbeat is 30 s away ...
  assert lock.lost_now()  # ... the check before a save asks now
  lock.release()
  assert "another-host" in gcs.filesystem().cat_file(gcs.url("taken/train.lock")).decode()


def test_a_stale_lock_from_another_host_is_taken_over(gcs, monkeypatch, caplog):
  fs = gcs.filesystem()
  record = {"host": "another-host", "pid": 4242, "started": "2026-01-01T00:00:00"}
  fs.pipe_file(gcs.url("stale/train.lock"), json.dumps(record).encode())
  with pytest.raises(WorkdirBusyError, match="pid 4242 on another-host"):
    WorkdirLock(gcs.url("stale")).acquire()  # fresh: its holder may be alive
  monkeypatch.setattr(workdir_lock, "STALE_S", 0.0)
  lock = WorkdirLock(gcs.url("stale"))
  with caplog.at_level(logging.WARNING, logger="tp2p_jax.train"):
    lock.acquire()
  lock.release()
  assert "taking over the lock" in caplog.text and "another-host" in caplog.text


def test_of_trainers_starting_at_once_exactly_one_holds_the_lock(gcs):
  outcomes: list[str] = []
  locks = [WorkdirLock(gcs.url("race")) for _ in range(4)]
  barrier = threading.Barrier(len(locks))

  def start(lock: WorkdirLock) -> None:
    barrier.wait()
    try:
      lock.acquire()
      outcomes.append("held")
    except WorkdirBusyError:
      outcomes.append("refused")

  threads = [threading.Thread(target=start, args=(lock,)) for lock in locks]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  for lock in locks:
    lock.release()
  assert sorted(outcomes) == ["held", "refused", "refused", "refused"]


@pytest.fixture(scope="module")
def gs_tiny_run(gcs) -> str:
  """The tiny toy-cats run (both stages, TransPix2Pix) trained straight into
  the bucket (its programs are in the session's compilation cache)."""
  url = gcs.url("tiny")
  out = subprocess.run([sys.executable, "run_train.py", *TINY, "--config.total_steps=10",
                        "--config.checkpoint_every=5",
                        f"--workdir={url}"], cwd=REPO, env={**cli_env(), **gcs.env},
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  names = {p.rsplit("/", 1)[-1] for p in gcs.filesystem().find(url)}
  assert {"config.json", "metrics.jsonl", "eval.json", "step_0000010.png"} <= names
  assert any(n.startswith("events.out.tfevents") for n in names)
  return url


def _command(main, capsys, *args: str) -> tuple[int, str, str]:
  """A command's `main` in this process: (status, stdout, stderr)."""
  status = main(["command", *args])
  out = capsys.readouterr()
  return status, out.out, out.err


def test_predict_evaluate_and_export_read_a_gs_run(gs_tiny_run, gcs, tmp_path, capsys):
  from PIL import Image

  from tp2p_jax.cli import evaluate, export, predict
  sketches = tmp_path / "sketches"
  sketches.mkdir()
  Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(sketches / "a.png")
  status, _, err = _command(predict.main, capsys, f"--workdir={gs_tiny_run}",
                            f"--input={sketches}", f"--output={gcs.url('predicted')}",
                            "--style=ginger")
  assert status == 0, err
  assert gcs.filesystem().exists(gcs.url("predicted/a.png"))

  # The run validated at its last step and kept it in the bucket's best/.
  status, out, err = _command(evaluate.main, capsys, f"--workdir={gs_tiny_run}",
                              "--batch_size=8", "--checkpoint=best")
  assert status == 0, err
  result = json.loads(out.strip().splitlines()[-1])
  assert 0 <= result["l1"] <= 2 and result["step"] == 10
  assert gcs.filesystem().exists(f"{gs_tiny_run}/eval/10.json")
  assert gcs.filesystem().exists(f"{gs_tiny_run}/best/10/metrics/metrics")

  exported = gcs.url("export/g.jaxexport")
  status, _, err = _command(export.main, capsys, f"--workdir={gs_tiny_run}",
                            f"--output={exported}")
  assert status == 0, err
  fs = gcs.filesystem()
  assert fs.exists(exported) and fs.exists(exported + ".json")
  _no_local_gs_folder()


def test_a_damaged_checkpoint_in_the_bucket_is_moved_aside(gs_tiny_run, gcs, tmp_path,
                                                            capsys):
  from tp2p_jax.cli import export
  fs = gcs.filesystem()
  fs.mkdir("tp2p-damaged-bucket")  # a bucket of its own: the server lists by scanning
  url = "gs://tp2p-damaged-bucket/run"
  # What export reads, not the samples, logs and best/: the server lists by
  # scanning every object, so each file copied slows every later listing.
  local = tmp_path / "run"
  local.mkdir()
  for entry in fs.ls(gs_tiny_run):
    name = entry.rstrip("/").rsplit("/", 1)[-1]
    if name not in ("best", "samples", "tensorboard"):
      fs.get(entry, str(local / name), recursive=True)
  fs.put(str(local), url, recursive=True)  # (the server's own copy is slow)
  steps = sorted(int(p.rsplit("/", 1)[-1]) for p in fs.ls(f"{url}/checkpoints")
                 if p.rsplit("/", 1)[-1].isdigit())
  newest = steps[-1]
  for name in fs.find(f"{url}/checkpoints/{newest}/state"):
    if "/d/" in name:  # the array data files
      fs.rm(name)
  status, out, err = _command(export.main, capsys, f"--workdir={url}",
                              f"--output={tmp_path / 'g.jaxexport'}")
  assert status == 0, err
  assert f"checkpoint {url}/checkpoints/{newest} is damaged" in err
  assert json.loads(out.strip().splitlines()[-1])["step"] == steps[-2]
  fs = gcs.filesystem()
  assert not fs.exists(f"{url}/checkpoints/{newest}")
  reason = fs.cat_file(f"{url}/checkpoints.damaged/{newest}/REASON.txt").decode()
  assert reason.startswith("moved aside")
  _no_local_gs_folder()


def test_a_gs_data_folder_is_staged_once_and_again_when_it_changes(gcs, tmp_path, caplog):
  fs = gcs.filesystem()
  url = gcs.url("data/cats")
  fs.pipe_file(f"{url}/trainA/a.png", b"A" * 10)
  fs.pipe_file(f"{url}/trainB/b.png", b"B" * 20)
  cache = tmp_path / "cache"
  with caplog.at_level(logging.INFO, logger="tp2p_jax"):
    local = storage.staged_locally(url, cache)
  assert (local / "trainA" / "a.png").read_bytes() == b"A" * 10
  assert (local / "trainB" / "b.png").read_bytes() == b"B" * 20
  assert "copying 2 files" in caplog.text and str(local) in caplog.text
  caplog.clear()
  with caplog.at_level(logging.INFO, logger="tp2p_jax"):
    assert storage.staged_locally(url, cache) == local
  assert "using its local copy" in caplog.text
  fs.pipe_file(f"{url}/trainA/c.png", b"C")
  assert (storage.staged_locally(url, cache) / "trainA" / "c.png").read_bytes() == b"C"
  assert not list(cache.glob("staged/*.partial-*"))


def test_a_missing_bucket_is_one_line_before_any_work(gcs, tmp_path):
  out = _train("gs://no-such-bucket-here/run", gcs)
  assert out.returncode == 2, out.stderr[-3000:]
  assert out.stderr.strip().splitlines()[-1] == (
      "error: gs://no-such-bucket-here/run: bucket gs://no-such-bucket-here does not exist "
      "(--workdir)")
  _no_local_gs_folder()


def test_import_torch_reads_weights_from_and_writes_a_run_to_gs(gcs, capsys):
  from tests.test_import_torch import PATCHGAN_D, RESNET_G
  from tp2p_jax.cli import import_torch as import_cli
  from tp2p_jax.inference import run_loading
  fs = gcs.filesystem()
  weights = gcs.url("weights/latest_net_G.pth")
  fs.put_file(str(RESNET_G), weights)
  run = gcs.url("imported")
  status = import_cli.main(["import_torch", "--family=pix2pix", f"--generator={weights}",
                            f"--discriminator={PATCHGAN_D}", f"--workdir={run}",
                            "--config.image_size=64"])
  err = capsys.readouterr().err
  assert status == 0, err
  loaded = run_loading.load_trained_run(run)
  assert loaded.step == 0 and loaded.predictor.image_size == 64
  assert gcs.filesystem().exists(f"{run}/config.json")
  status = import_cli.main(["import_torch", "--family=pix2pix",
                            f"--generator={gcs.url('weights/missing.pth')}",
                            f"--workdir={gcs.url('imported2')}"])
  err = capsys.readouterr().err
  assert status == 2 and "weights/missing.pth: no such file (--generator)" in err
  _no_local_gs_folder()


def test_prepare_into_gs_is_one_line_saying_what_to_do(gcs, tmp_path, capsys):
  from tp2p_jax.cli import prepare as prepare_cli
  status = prepare_cli.main(["prepare", "--source=folder", f"--input={tmp_path}",
                             f"--data_dir={gcs.url('prepared')}"])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 2 and len(err) == 1, err
  assert "prepare writes a local folder" in err[0] and "--config.data.data_dir=gs://" in err[0]
