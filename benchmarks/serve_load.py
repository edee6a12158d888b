r"""Load test of the HTTP server: throughput and latency with dynamic batching
and with batching off, and a check that no request is lost.

  python benchmarks/serve_load.py --workdir=runs/toycats
  python benchmarks/serve_load.py --workdir=runs/toycats --clients=1,4,16 --requests=1000 \
      --malformed_fraction=0.05 --max_batch_size=16

For each mode ("batched": `--max_batch_size` requests per generator call,
gathered within `--batch_timeout_ms`; "unbatched": `--max_batch_size=1`) the
script starts `python -m tp2p_jax.serve` on the run in a subprocess, waits
for /healthz, and for each client count N sends `--requests` requests from
N concurrent clients (threads, one keep-alive connection each, each sending
its next request when the last is answered). A `--malformed_fraction` of
them are malformed (not an image, an empty or too large image, an unknown or
conflicting style, a bad mix, an unknown direction), spread through the run.
Every valid request must come back 200 with a PNG of the sketch's size and
every malformed one 4xx; anything else counts as lost.

Reported per (mode, clients): requests/s over the whole timed run, p50 and
p99 latency of the valid requests, and from the server's /metrics the mean
batch size and the mean time of a generator call, and the server's CPU
seconds per second during the timed run (Linux). The clients run on the
same machine as the server and take CPU from it. Progress goes to stderr; the last line of stdout is one
JSON object. Exit status 1 if anything was lost.

Hostile load: with any of --slow_clients (connections sending their
headers a byte at a time), --slow_body_clients (complete headers, then the
body a byte at a time), --leaving_clients (complete valid requests whose
client hangs up at once) or --large_clients (closed-loop uploads of a
--large_side square PNG, legal under the server's default limits), each
row is run a second time with those running alongside (in a process of
their own, so that they share the cores but not the normal clients'
interpreter lock), and the row gets
`hostile`: the normal clients' errors, error rate, p99 and its ratio to the
unloaded run's (goal: 0 errors, ratio <= 2), what the hostile clients got,
the server's CPU seconds per second and its peak RSS during the run. --memory_probe sends one
1 x 16,777,216 PNG and one 4096 x 4096 PNG and reports the server's peak RSS
growth for each (Linux: /proc/PID/status VmHWM, reset through clear_refs).
Everything goes to a server this script starts on 127.0.0.1, and every
hostile client stops at --hostile_deadline_s.

  python benchmarks/serve_load.py --workdir=runs/toycats --modes=batched --clients=4 \
      --requests=400 --slow_clients=1100 --leaving_clients=4 --large_clients=1 \
      --memory_probe --server_flags=--header_timeout_s=5
"""
from __future__ import annotations

import http.client
import io
import collections
import dataclasses
import itertools
import json
import multiprocessing
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
  sys.path.insert(0, _REPO_ROOT)

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.machine import describe_cpu  # noqa: E402
from tp2p_jax.methods import read_run_config  # noqa: E402
from tp2p_jax.data.toycats import render_example  # noqa: E402
from tp2p_jax.serving.uploads import encode_png  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to serve.", required=True)
_CLIENTS = flags.DEFINE_list("clients", ["1", "4", "16"], "Concurrent client counts.")
_REQUESTS = flags.DEFINE_integer("requests", 1000, "Requests per (mode, clients).",
                                 lower_bound=1)
_MALFORMED = flags.DEFINE_float("malformed_fraction", 0.05, "Share of malformed requests.",
                                lower_bound=0.0, upper_bound=1.0)
_MODES = flags.DEFINE_list("modes", ["batched", "unbatched"], "batched and/or unbatched.")
_MAX_BATCH = flags.DEFINE_integer("max_batch_size", 16, "Compiled batch size when batched.",
                                  lower_bound=1)
_TIMEOUT_MS = flags.DEFINE_float("batch_timeout_ms", 5.0, "The server's batch timeout.",
                                 lower_bound=0.0)
_SKETCH_SIZE = flags.DEFINE_integer("sketch_size", None, "Side of the uploaded sketches "
                                    "(default: the run's image size).", lower_bound=16)
_STARTUP = flags.DEFINE_float("startup_timeout_s", 900.0, "Longest wait for /healthz.")
_SLOW = flags.DEFINE_integer("slow_clients", 0, "Hostile: connections sending headers a "
                             "byte at a time.", lower_bound=0)
_SLOW_BODY = flags.DEFINE_integer("slow_body_clients", 0, "Hostile: connections sending "
                                  "the body a byte at a time.", lower_bound=0)
_LEAVING = flags.DEFINE_integer("leaving_clients", 0, "Hostile: clients sending complete "
                                "requests and hanging up at once.", lower_bound=0)
_LARGE = flags.DEFINE_integer("large_clients", 0, "Hostile: closed-loop clients uploading "
                              "large legal images.", lower_bound=0)
_LARGE_SIDE = flags.DEFINE_integer("large_side", 4096, "Side of the large uploads.",
                                   lower_bound=16)
_SLOW_INTERVAL = flags.DEFINE_float("slow_interval_s", 0.5, "Seconds between a slow "
                                    "client's bytes.", lower_bound=0.001)
_HOSTILE_DEADLINE = flags.DEFINE_float("hostile_deadline_s", 300.0, "Longest a hostile run "
                                       "lasts.", lower_bound=1.0)
_HOSTILE_WARMUP = flags.DEFINE_float("hostile_warmup_s", 3.0, "How long the hostile "
                                     "clients run before the timed run starts.",
                                     lower_bound=0.0)
_ROUNDS = flags.DEFINE_integer("rounds", 1, "With hostile clients: timed runs of each "
                               "row, unloaded and hostile alternating; percentiles are over "
                               "all of a kind's requests.", lower_bound=1)
_MEMORY_PROBE = flags.DEFINE_bool("memory_probe", False, "Report the server's peak RSS "
                                  "growth for a 1 x 16,777,216 and a 4096 x 4096 PNG.")
_SERVER_FLAGS = flags.DEFINE_list("server_flags", [], "Extra flags for the server.")
_SERVER_NOFILE = flags.DEFINE_integer("server_nofile", None, "The server's open-file limit "
                                      "(soft and hard), e.g. 1024 as on many hosts.",
                                      lower_bound=64)

_STYLELESS_MALFORMED = ("not_an_image", "empty", "too_many_pixels", "direction")
_MALFORMED_KINDS = _STYLELESS_MALFORMED + ("unknown_style", "two_styles", "bad_mix")
_BOUNDARY = "tp2p-load-boundary"


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def _multipart(files: dict[str, bytes], fields: dict[str, str]) -> bytes:
  parts = []
  for name, data in files.items():
    parts.append(f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
                 f'filename="{name}.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
                 + data + b"\r\n")
  for name, value in fields.items():
    parts.append(f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                 f"{value}\r\n".encode())
  return b"".join(parts) + f"--{_BOUNDARY}--\r\n".encode()


class Workload:
  """The requests of one timed run: (body, expected (height, width) or None
  for a malformed request), deterministic in the index."""

  def __init__(self, styles: list[str], directions: list[str], sketch_size: int,
               total: int, malformed_fraction: float) -> None:
    self.sketches = [encode_png(render_example(i, sketch_size)["sketch"]) for i in range(8)]
    self.size = sketch_size
    self.styles = styles
    n_bad = round(total * malformed_fraction)
    # Spread through the run, not bunched at one end.
    self.malformed = {int(k * total / n_bad) for k in range(n_bad)} if n_bad else set()
    kinds = _MALFORMED_KINDS if styles else _STYLELESS_MALFORMED
    self.kinds = kinds
    self.flat = encode_png(np.full((4100, 4100, 3), 255, np.uint8))  # > 16.7 M pixels
    self.total = total
    self.extra = {"direction": directions[0]} if len(directions) > 1 else {}

  def request(self, i: int) -> tuple[bytes, tuple[int, int] | None]:
    sketch = self.sketches[i % len(self.sketches)]
    style = {"style": self.styles[i % len(self.styles)]} if self.styles else {}
    if i not in self.malformed:
      return _multipart({"sketch": sketch}, {**style, **self.extra}), (self.size, self.size)
    kind = self.kinds[sorted(self.malformed).index(i) % len(self.kinds)]
    bad = {
        "not_an_image": lambda: _multipart({"sketch": b"GIF? no, text"}, style),
        "empty": lambda: _multipart({"sketch": b""}, style),
        "too_many_pixels": lambda: _multipart({"sketch": self.flat}, style),
        "direction": lambda: _multipart({"sketch": sketch}, {**style, "direction": "up"}),
        "unknown_style": lambda: _multipart({"sketch": sketch}, {"style": "no such class"}),
        "two_styles": lambda: _multipart({"sketch": sketch}, {
            "style": self.styles[0], "style_mix": f"{self.styles[0]}:{self.styles[-1]}:0.5"}),
        "bad_mix": lambda: _multipart({"sketch": sketch}, {"style_mix": "a-b-0.5"}),
    }
    return bad[kind](), None


def _png_size(data: bytes) -> tuple[int, int] | None:
  """(height, width) from a PNG's IHDR, None if it is not a PNG."""
  if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n":
    return None
  width, height = struct.unpack(">II", data[16:24])
  return height, width


def _post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, str, bytes]:
  conn.request("POST", "/v1/generate", body=body, headers={
      "Content-Type": f"multipart/form-data; boundary={_BOUNDARY}"})
  response = conn.getresponse()
  return response.status, response.getheader("Content-Type", ""), response.read()


def drive(port: int, workload: Workload, clients: int,
          on_start: Any = None) -> dict[str, Any]:
  """Sends the workload from `clients` threads; counts and times answers."""
  counter = itertools.count()
  lock = threading.Lock()
  latencies: list[float] = []
  tally = {"ok": 0, "refused": 0, "lost": 0}
  failures: list[str] = []

  def client() -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    while True:
      with lock:
        i = next(counter)
      if i >= workload.total:
        break
      body, expected = workload.request(i)
      start = time.perf_counter()
      try:
        status, kind, data = _post(conn, body)
      except (OSError, http.client.HTTPException) as e:
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        status, kind, data = -1, "", repr(e).encode()
      elapsed = time.perf_counter() - start
      with lock:
        if expected is not None:
          good = status == 200 and kind == "image/png" and _png_size(data) == expected
          if good:
            latencies.append(elapsed)
        else:
          good = 400 <= status < 500 and kind.startswith("application/json")
        tally["ok" if good and expected else "refused" if good else "lost"] += 1
        if not good and len(failures) < 5:
          failures.append(f"request {i}: {status} {data[:200]!r}")
    conn.close()

  threads = [threading.Thread(target=client) for _ in range(clients)]
  if on_start is not None:
    on_start()
  start = time.perf_counter()
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  seconds = time.perf_counter() - start
  ms = sorted(1000 * x for x in latencies)
  return {"clients": clients, "requests": workload.total,
          "valid": workload.total - len(workload.malformed),
          "malformed": len(workload.malformed), **tally, "seconds": round(seconds, 3),
          "throughput_rps": round(workload.total / seconds, 2),
          "images_per_s": round(tally["ok"] / seconds, 2),
          "p50_ms": round(statistics.median(ms), 1) if ms else None,
          "p99_ms": _p99(ms), "failures": failures, "latencies_ms": ms}


def _p99(ms: list[float]) -> float | None:
  """The 99th percentile of sorted latencies (the nearest rank at or below)."""
  return round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1) if ms else None


def _pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
  """`drive`'s results of several timed runs as one: counts summed,
  latency percentiles over all their requests, each run's p99 listed."""
  ms = sorted(x for run in runs for x in run["latencies_ms"])
  seconds = sum(run["seconds"] for run in runs)
  total = {key: sum(run[key] for run in runs)
           for key in ("requests", "valid", "malformed", "ok", "refused", "lost")}
  return {"clients": runs[0]["clients"], **total, "rounds": len(runs),
          "seconds": round(seconds, 3),
          "throughput_rps": round(total["requests"] / seconds, 2),
          "images_per_s": round(total["ok"] / seconds, 2),
          "p50_ms": round(statistics.median(ms), 1) if ms else None, "p99_ms": _p99(ms),
          "p99_ms_rounds": [run["p99_ms"] for run in runs],
          "failures": [f for run in runs for f in run["failures"]][:5]}


def _per_second(runs: list[dict[str, Any]], key: str) -> float | None:
  """CPU seconds per second over runs whose `key` holds CPU seconds."""
  if any(run[key] is None for run in runs):
    return None
  return round(sum(run[key] for run in runs) / sum(run["seconds"] for run in runs), 3)


def _get(port: int, path: str) -> tuple[int, bytes]:
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
  try:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()
  finally:
    conn.close()


def _batch_counts(port: int) -> tuple[float, float, float]:
  """(generator calls, requests in them, seconds in them) so far, from /metrics."""
  text = _get(port, "/metrics")[1].decode()
  found = re.findall(r"^tp2p_serve_batch_(size|seconds)_(count|sum) (\S+)$", text, re.M)
  values = {(name, kind): float(v) for name, kind, v in found}
  return values["size", "count"], values["size", "sum"], values["seconds", "sum"]


def process_cpu_s(pid: int) -> float | None:
  """CPU seconds process `pid` has used (user + system, all its threads);
  None where /proc does not tell."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    return None


def _cpu_since(process: "Server | HostileProcess", cpu_before: float | None
               ) -> float | None:
  """A process's CPU seconds since `cpu_before` was read from it."""
  cpu_after = process.cpu_s()
  if cpu_before is None or cpu_after is None:
    return None
  return cpu_after - cpu_before


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Server:
  """`python -m tp2p_jax.serve` in a subprocess on 127.0.0.1, healthy on entry."""

  def __init__(self, workdir: str, batch: int, timeout_ms: float,
               extra: list[str] | None = None) -> None:
    self.port = _free_port()
    self.log = tempfile.TemporaryFile()
    self.args = [sys.executable, "-m", "tp2p_jax.serve", f"--workdir={workdir}",
                 "--host=127.0.0.1", f"--port={self.port}", f"--max_batch_size={batch}",
                 f"--batch_timeout_ms={timeout_ms}", *(extra or [])]

  def rss_mb(self, field: str = "VmRSS") -> float | None:
    """The server's resident memory ("VmRSS") or its peak ("VmHWM"), MiB;
    None where /proc does not tell."""
    try:
      with open(f"/proc/{self.process.pid}/status") as f:
        for line in f:
          if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    except OSError:
      pass
    return None

  def cpu_s(self) -> float | None:
    """CPU seconds the server has used (user + system, all its threads);
    None where /proc does not tell. Less at the mercy of other jobs on the
    machine than latencies are."""
    return process_cpu_s(self.process.pid)

  def reset_peak_rss(self) -> None:
    """Sets the peak (VmHWM) back to the current RSS (Linux >= 4.0)."""
    try:
      with open(f"/proc/{self.process.pid}/clear_refs", "w") as f:
        f.write("5")
    except OSError:
      pass

  def log_text(self) -> str:
    self.log.seek(0, os.SEEK_END)
    size = self.log.tell()
    self.log.seek(0)
    text = self.log.read(size).decode(errors="replace")
    self.log.seek(0, os.SEEK_END)
    return text

  def __enter__(self) -> "Server":
    start = time.monotonic()
    nofile = _SERVER_NOFILE.value

    def limit_files() -> None:
      import resource
      resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    self.process = subprocess.Popen(self.args, cwd=_REPO_ROOT, stdout=self.log,
                                    stderr=subprocess.STDOUT,
                                    preexec_fn=limit_files if nofile else None)
    while True:
      if self.process.poll() is not None:
        self.log.seek(0)
        raise RuntimeError(f"the server exited ({self.process.returncode}): "
                           f"{self.log.read()[-2000:].decode(errors='replace')}")
      try:
        if _get(self.port, "/healthz")[0] == 200:
          break
      except OSError:
        pass
      if time.monotonic() - start > _STARTUP.value:
        raise RuntimeError("the server did not become healthy in time")
      time.sleep(0.25)
    self.startup_s = time.monotonic() - start
    return self

  def __exit__(self, *exc: object) -> None:
    self.process.terminate()
    try:
      self.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
      self.process.kill()
      self.process.wait()
    self.log.close()


@dataclasses.dataclass(frozen=True)
class HostileLoad:
  """What the hostile clients send (the flags' values, given explicitly
  because they run in a process of their own)."""
  slow: int
  slow_body: int
  leaving: int
  large: int
  slow_interval_s: float
  deadline_s: float
  warmup_s: float


class Hostile:
  """Slow, departing and large-upload clients running beside a timed run
  until `stop` (or the deadline), as threads of this process."""

  def __init__(self, port: int, load: HostileLoad, request: bytes, large_request: bytes
               ) -> None:
    """`request`: a valid request's multipart body; `large_request`: one
    with the large upload."""
    self.port = port
    self.load = load
    self.request = request
    self.large_request = large_request
    self.done = threading.Event()
    self.lock = threading.Lock()
    self.counts: dict[str, int] = {"slow_dropped_by_server": 0, "slow_refused": 0,
                                   "leaving_sent": 0, "large_ok": 0, "large_busy": 0,
                                   "large_other": 0, "slow_body_answers": 0}
    self.threads: list[threading.Thread] = []

  def _count(self, key: str) -> None:
    with self.lock:
      self.counts[key] += 1

  def _slow_headers(self, sockets: list[socket.socket]) -> None:
    """One thread trickles every slow connection's headers."""
    head = b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000
    sent = [0] * len(sockets)
    while not self.done.is_set():
      for i, sock in enumerate(sockets):
        if self.done.is_set():
          break
        try:
          sock.send(head[sent[i] % len(head):][:1])
          sent[i] += 1
        except OSError:
          self._count("slow_dropped_by_server")
          sock.close()
          try:
            sockets[i] = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sent[i] = 0
          except OSError:
            self._count("slow_refused")
      self.done.wait(self.load.slow_interval_s)
    for sock in sockets:
      sock.close()

  def _head(self, body: bytes) -> bytes:
    return (f"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            f"multipart/form-data; boundary={_BOUNDARY}\r\nContent-Length: {len(body)}"
            "\r\n\r\n").encode()

  def _slow_body(self) -> None:
    body = self.request
    while not self.done.is_set():
      try:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
          sock.sendall(self._head(body))
          for i in range(len(body)):
            if self.done.wait(self.load.slow_interval_s):
              break
            sock.sendall(body[i:i + 1])
      except OSError:
        self._count("slow_body_answers")  # cut off (408 or closed)

  def _leaving(self) -> None:
    request = self._head(self.request) + self.request
    while not self.done.is_set():
      try:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
          sock.sendall(request)
        self._count("leaving_sent")
      except OSError:
        pass
      self.done.wait(0.05)

  def _large(self) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
    while not self.done.is_set():
      try:
        status, _, _ = _post(conn, self.large_request)
      except (OSError, http.client.HTTPException):
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        status = -1
      self._count("large_ok" if status == 200 else "large_busy" if status == 503
                  else "large_other")
      if status == 503:
        self.done.wait(1.0)  # as Retry-After says

  def start(self) -> None:
    """Starts every client, then waits `warmup_s` with them running."""
    if self.load.slow:
      sockets = []
      for _ in range(self.load.slow):
        try:
          sockets.append(socket.create_connection(("127.0.0.1", self.port), timeout=5))
        except OSError:
          self._count("slow_refused")
      self.threads.append(threading.Thread(target=self._slow_headers, args=(sockets,)))
    self.threads += [threading.Thread(target=self._slow_body)
                     for _ in range(self.load.slow_body)]
    self.threads += [threading.Thread(target=self._leaving) for _ in range(self.load.leaving)]
    self.threads += [threading.Thread(target=self._large) for _ in range(self.load.large)]
    for t in self.threads:
      t.daemon = True
      t.start()
    # Bounded in time whatever happens to the timed run.
    self.timer = threading.Timer(self.load.deadline_s, self.done.set)
    self.timer.daemon = True
    self.timer.start()
    # The server is under the hostile load before the timed run starts.
    self.done.wait(self.load.warmup_s)

  def stop(self) -> dict[str, int]:
    self.done.set()
    self.timer.cancel()
    for t in self.threads:
      t.join(timeout=30)
    return dict(self.counts)


def _hostile_main(port: int, load: HostileLoad, request: bytes, large_request: bytes,
                  started: Any, stop: Any, results: Any) -> None:
  """A hostile process: runs the clients from start to `stop` (an Event)."""
  hostile = Hostile(port, load, request, large_request)
  hostile.start()
  started.set()
  stop.wait(load.deadline_s)
  results.put(hostile.stop())


class HostileProcess:
  """`Hostile` in a process of its own: its threads (a thousand sockets
  written in a Python loop) do not take the interpreter lock from the
  normal clients, whose latencies would otherwise include the load
  generator's own contention. It still shares the machine's cores with the
  server, as hostile clients on the same host would."""

  def __init__(self, port: int, load: HostileLoad, request: bytes, large_request: bytes
               ) -> None:
    context = multiprocessing.get_context("spawn")
    self.started, self.stop_event = context.Event(), context.Event()
    self.results = context.Queue()
    self.load = load
    self.process = context.Process(target=_hostile_main, daemon=True, args=(
        port, load, request, large_request, self.started, self.stop_event, self.results))

  def start(self) -> None:
    self.process.start()
    if not self.started.wait(self.load.warmup_s + 120):
      self.process.kill()
      raise RuntimeError("the hostile clients did not start")

  def cpu_s(self) -> float | None:
    """CPU seconds the hostile clients have used."""
    return process_cpu_s(self.process.pid)

  def stop(self) -> dict[str, int]:
    self.stop_event.set()
    counts = self.results.get(timeout=120)
    self.process.join(timeout=30)
    return counts


def _hostile_enabled() -> bool:
  return any(f.value for f in (_SLOW, _SLOW_BODY, _LEAVING, _LARGE))


def _flat_png(height: int, width: int) -> bytes:
  from PIL import Image
  out = io.BytesIO()
  Image.new("RGB", (width, height), (255, 255, 255)).save(out, format="PNG")
  return out.getvalue()


def memory_probe(server: Server, styles: list[str]) -> dict[str, Any]:
  """Peak RSS growth of the server for one upload each of a 1 x 16,777,216
  PNG and a 4096 x 4096 PNG (the default pixel limit)."""
  conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
  style = {"style": styles[0]} if styles else {}
  report: dict[str, Any] = {}
  for name, (h, w) in {"1x16777216": (1, 16_777_216), "4096x4096": (4096, 4096)}.items():
    body = _multipart({"sketch": _flat_png(h, w)}, style)
    time.sleep(0.5)
    base = server.rss_mb()
    server.reset_peak_rss()
    start = time.perf_counter()
    status, _, data = _post(conn, body)
    seconds = time.perf_counter() - start
    peak = server.rss_mb("VmHWM")
    code = json.loads(data)["error"]["code"] if status != 200 else None
    report[name] = {"upload_bytes": len(body), "status": status, "code": code,
                    "seconds": round(seconds, 2), "rss_before_mb": base, "peak_rss_mb": peak,
                    "peak_growth_mb": round(peak - base, 1) if peak and base else None}
    _log(f"memory probe {name}: {report[name]}")
  conn.close()
  return report


def main(argv: list[str]) -> None:
  del argv
  config = read_run_config(_WORKDIR.value)
  clients = [int(c) for c in _CLIENTS.value]
  modes = [m for m in _MODES.value]
  if set(modes) - {"batched", "unbatched"}:
    raise app.UsageError(f"--modes: batched and/or unbatched, got {modes}")
  sketch_size = _SKETCH_SIZE.value or int(config.image_size)
  results = []
  info: dict[str, Any] = {}
  probe: dict[str, Any] | None = None
  for mode in modes:
    batch = _MAX_BATCH.value if mode == "batched" else 1
    with Server(_WORKDIR.value, batch, _TIMEOUT_MS.value, _SERVER_FLAGS.value) as server:
      _log(f"{mode}: server healthy after {server.startup_s:.1f} s (batch {batch})")
      status, body = _get(server.port, "/v1/styles")
      info = json.loads(body)
      styles = [s["name"] for s in info["styles"]]
      workload = Workload(styles, info["directions"], sketch_size, _REQUESTS.value,
                          _MALFORMED.value)
      large_request = b""
      if _LARGE.value:
        style = {"style": styles[0]} if styles else {}
        large_request = _multipart({"sketch": _flat_png(_LARGE_SIDE.value, _LARGE_SIDE.value)},
                                   {**style, **workload.extra})
      hostile_load = HostileLoad(_SLOW.value, _SLOW_BODY.value, _LEAVING.value, _LARGE.value,
                                 _SLOW_INTERVAL.value, _HOSTILE_DEADLINE.value,
                                 _HOSTILE_WARMUP.value)
      for n in clients:
        warm = Workload(styles, info["directions"], sketch_size, n, 0.0)
        drive(server.port, warm, n)  # connections and threads up before timing
        unloaded: list[dict[str, Any]] = []
        loaded: list[dict[str, Any]] = []
        got: collections.Counter[str] = collections.Counter()
        calls = rows = busy = 0.0
        peak_rss: list[float] = []
        rss_before = server.rss_mb()
        for _ in range(_ROUNDS.value):
          # Unloaded and hostile runs alternate, so that a change in the
          # machine's own load between them weighs on both alike.
          before = _batch_counts(server.port)
          cpu_before = server.cpu_s()
          run = drive(server.port, workload, n)
          run["cpu_s"] = _cpu_since(server, cpu_before)
          after = _batch_counts(server.port)
          calls, rows, busy = (calls + after[0] - before[0], rows + after[1] - before[1],
                               busy + after[2] - before[2])
          unloaded.append(run)
          if not _hostile_enabled():
            continue
          hostile = HostileProcess(server.port, hostile_load, workload.request(0)[0],
                                   large_request)
          server.reset_peak_rss()
          cpu_at_start: list[float | None] = []

          def start_hostile() -> None:
            hostile.start()  # pylint: disable=cell-var-from-loop
            # The timed part only, as unloaded.
            cpu_at_start.extend([server.cpu_s(), hostile.cpu_s()])  # pylint: disable=cell-var-from-loop

          run = drive(server.port, workload, n, on_start=start_hostile)
          run["cpu_s"] = _cpu_since(server, cpu_at_start[0])
          run["hostile_cpu_s"] = _cpu_since(hostile, cpu_at_start[1])
          got.update(hostile.stop())
          peak_rss.append(server.rss_mb("VmHWM") or 0.0)
          loaded.append(run)
        row = {"mode": mode, "max_batch_size": batch, **_pooled(unloaded),
               "server_cpu_s_per_s": _per_second(unloaded, "cpu_s"),
               "mean_batch": round(rows / max(calls, 1), 2),
               "model_ms_per_call": round(1000 * busy / max(calls, 1), 1),
               "startup_s": round(server.startup_s, 1)}
        if loaded:
          pooled = _pooled(loaded)
          errors = pooled["lost"]
          row["hostile"] = {
              "slow_clients": _SLOW.value, "slow_body_clients": _SLOW_BODY.value,
              "leaving_clients": _LEAVING.value, "large_clients": _LARGE.value,
              "large_side": _LARGE_SIDE.value, "normal_errors": errors,
              "normal_error_rate": round(errors / max(1, pooled["requests"]), 4),
              "p50_ms": pooled["p50_ms"], "p99_ms": pooled["p99_ms"],
              "p99_ratio": (round(pooled["p99_ms"] / row["p99_ms"], 2)
                            if pooled["p99_ms"] and row["p99_ms"] else None),
              "p99_ms_rounds": pooled["p99_ms_rounds"],
              "seconds": pooled["seconds"], "failures": pooled["failures"], **got,
              "server_cpu_s_per_s": _per_second(loaded, "cpu_s"),
              "hostile_clients_cpu_s_per_s": _per_second(loaded, "hostile_cpu_s"),
              "server_rss_before_mb": rss_before,
              "server_peak_rss_mb": max(peak_rss) if peak_rss else None,
              "server_log_tracebacks": server.log_text().count("Traceback")}
          row["lost"] += errors
        _log(json.dumps(row))
        results.append(row)
      if _MEMORY_PROBE.value and probe is None:
        probe = memory_probe(server, styles)
  speedup = {}
  for n in clients:
    pair = {r["mode"]: r["throughput_rps"] for r in results if r["clients"] == n}
    if len(pair) == 2:
      speedup[str(n)] = round(pair["batched"] / pair["unbatched"], 2)
  lost = sum(r["lost"] for r in results)
  report = {"machine": describe_cpu(), "workdir": os.path.abspath(_WORKDIR.value),
            "model": info.get("model"), "image_size": int(config.image_size),
            "sketch_size": sketch_size, "dtype": str(config.get("dtype", "float32")),
            "batch_timeout_ms": _TIMEOUT_MS.value, "results": results,
            "speedup_batched_over_unbatched": speedup, "lost": lost,
            "memory_probe": probe, "server_flags": _SERVER_FLAGS.value,
            "server_nofile": _SERVER_NOFILE.value,
            "load_average": os.getloadavg()}
  print(json.dumps(report))
  sys.exit(1 if lost else 0)


if __name__ == "__main__":
  app.run(main)
