"""Test-wide JAX setup.

Eight simulated CPU devices let the data-parallel tests compare a one-device
mesh with an eight-device one inside the same process. The flags must be set
before jax is imported anywhere, which is why they live here.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

# The entry points' CPU flags (tp2p_jax.core.xla_flags), so that tests and the
# training subprocesses they start compile what users run.
from tp2p_jax.core.xla_flags import set_default_xla_flags  # noqa: E402

set_default_xla_flags()

# With most optimisations off (below), XLA's earlier CPU fusion emitter
# compiles about a third faster than the MLIR one (tiny TransPix2Pix train
# step 37 -> 25 s; first-step losses equal to float rounding). With
# optimisations on it is the slower, so only the tests use it; the training
# subprocesses inherit it through the environment.
if "xla_cpu_use_fusion_emitters" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_cpu_use_fusion_emitters=false"

import jax  # noqa: E402

# Tests run tiny models where compile time dominates; skipping most XLA
# optimisation passes keeps the suite fast without changing numerics beyond
# float tolerance.
jax.config.update("jax_disable_most_optimizations", True)

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=8, deadline=None, derandomize=True)
settings.load_profile("ci")

# Identical programs recur across tests and in the training subprocesses the
# tests start; a per-run persistent compilation cache compiles each once.
import tempfile  # noqa: E402

_cache_dir = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                                   tempfile.mkdtemp(prefix="tp2p_jax_xla_cache_"))
jax.config.update("jax_compilation_cache_dir", _cache_dir)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

import pathlib  # noqa: E402

import pytest  # noqa: E402


# Fixtures that train in a subprocess: a test that uses one is in the slow tier.
_SLOW_FIXTURES = frozenset({"tiny_run", "gcs"})
_SLOW_TIERS = ("slow", "multiprocess", "browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  for item in items:
    if _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
      item.add_marker(pytest.mark.slow)
  # Files with slow-tier tests are dispatched first: the two workers take
  # whole files (`--dist loadfile`), and a long file picked up last would
  # leave one worker idle to the end. Stable: each file keeps its order.
  slow_files = {item.path for item in items
                if any(item.get_closest_marker(m) for m in _SLOW_TIERS)}
  items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> pathlib.Path:
  """A finished tiny toy-cats run (`run_train.py` with tests/subprocess_runs.TINY:
  10 style-encoder steps, 40 GAN steps, checkpoints every 10, validation at
  20 and 40 with the best step in best/). Tests that write into a run work
  on a copy.

  Built once per test session: under pytest-xdist the workers share the
  session's base temporary folder (the parent of each worker's own), and the
  first worker to need the run trains it while the others wait on a file
  lock. A failed build leaves no marker, so the next worker to ask retries
  it and reports its own failure."""
  import shutil

  from filelock import FileLock

  from tests.subprocess_runs import TINY, run_train
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # shared by the session's workers
  workdir = root / "tiny_run"
  done = root / "tiny_run.done"
  with FileLock(str(root / "tiny_run.lock")):
    if not done.is_file():
      shutil.rmtree(workdir, ignore_errors=True)  # an earlier failed build
      out = run_train([*TINY, f"--workdir={workdir}"])
      assert out.returncode == 0, out.stderr[-3000:]
      done.touch()
  return workdir


@pytest.fixture(autouse=True)
def _logging_as_before():
  """Command-line entry points run in-process quiet the libraries' loggers
  and attach a handler to the test's captured stderr; every test starts and
  ends with the logging state it found."""
  import logging

  from absl import logging as absl_logging
  ours = logging.getLogger("tp2p_jax")
  saved = (ours.level, list(ours.handlers), ours.propagate, absl_logging.get_verbosity())
  yield
  ours.setLevel(saved[0])
  ours.handlers[:] = saved[1]
  ours.propagate = saved[2]
  absl_logging.set_verbosity(saved[3])


@pytest.fixture
def read_only_dir(tmp_path: pathlib.Path):
  """A folder this process cannot write into (skips where permissions are
  not enforced, as for root)."""
  path = tmp_path / "read_only"
  path.mkdir()
  path.chmod(0o555)
  try:
    if os.access(path, os.W_OK):
      pytest.skip("this user writes into read-only folders (root)")
    yield path
  finally:
    path.chmod(0o755)


class GcsServer:
  """A Cloud Storage API server on 127.0.0.1 (tests/gcs_server.py) and the
  environment that points gcsfs, epath and tensorstore at it.

  Attributes:
    bucket: the bucket it serves (tests take a prefix of their own in it).
    env: environment variables for subprocesses (on top of os.environ,
      which the fixture sets the same way for this process).
  """

  def __init__(self, port: int, bucket: str):
    self.bucket = bucket
    address = f"http://127.0.0.1:{port}"
    self.env = {"STORAGE_EMULATOR_HOST": address, "TENSORSTORE_GCS_HTTP_URL": address,
                "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
                # gcsfs's default probes each bucket through Google's control
                # API for zonal features; the emulator has none of it.
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

  def url(self, name: str) -> str:
    return f"gs://{self.bucket}/{name}"

  def filesystem(self):
    """A gcsfs filesystem with no cached listings (other processes write)."""
    import fsspec
    fs = fsspec.filesystem("gs")
    fs.invalidate_cache()
    return fs


@pytest.fixture(scope="session")
def gcs():
  """The session's GCS server (one per test worker process)."""
  import socket
  import subprocess
  import sys
  import time

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  repo = pathlib.Path(__file__).resolve().parents[1]
  server = subprocess.Popen([sys.executable, "-m", "tests.gcs_server", f"--port={port}",
                             "--bucket=tp2p-test-bucket"], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
  try:
    line = server.stdout.readline()
    assert line.startswith("{"), f"the GCS server did not start (exit {server.poll()})"
    info = GcsServer(port, "tp2p-test-bucket")
    deadline = time.monotonic() + 30
    while True:
      try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
          break
      except OSError:
        assert time.monotonic() < deadline, "the GCS server does not accept connections"
        time.sleep(0.1)
    previous = {k: os.environ.get(k) for k in info.env}
    os.environ.update(info.env)
    yield info
    for k, v in previous.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  finally:
    server.kill()
    server.wait()
