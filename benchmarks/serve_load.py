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
batch size and the mean time of a generator call. The clients run on the same machine as the server and
take CPU from it. Progress goes to stderr; the last line of stdout is one
JSON object. Exit status 1 if anything was lost.
"""
from __future__ import annotations

import http.client
import itertools
import json
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


def drive(port: int, workload: Workload, clients: int) -> dict[str, Any]:
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
          "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1) if ms else None,
          "failures": failures}


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


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Server:
  """`python -m tp2p_jax.serve` in a subprocess, healthy on entry."""

  def __init__(self, workdir: str, batch: int, timeout_ms: float) -> None:
    self.port = _free_port()
    self.log = tempfile.TemporaryFile()
    self.args = [sys.executable, "-m", "tp2p_jax.serve", f"--workdir={workdir}",
                 f"--port={self.port}", f"--max_batch_size={batch}",
                 f"--batch_timeout_ms={timeout_ms}"]

  def __enter__(self) -> "Server":
    start = time.monotonic()
    self.process = subprocess.Popen(self.args, cwd=_REPO_ROOT, stdout=self.log,
                                    stderr=subprocess.STDOUT)
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
  for mode in modes:
    batch = _MAX_BATCH.value if mode == "batched" else 1
    with Server(_WORKDIR.value, batch, _TIMEOUT_MS.value) as server:
      _log(f"{mode}: server healthy after {server.startup_s:.1f} s (batch {batch})")
      status, body = _get(server.port, "/v1/styles")
      info = json.loads(body)
      styles = [s["name"] for s in info["styles"]]
      workload = Workload(styles, info["directions"], sketch_size, _REQUESTS.value,
                          _MALFORMED.value)
      for n in clients:
        warm = Workload(styles, info["directions"], sketch_size, n, 0.0)
        drive(server.port, warm, n)  # connections and threads up before timing
        calls, rows, busy = _batch_counts(server.port)
        row = drive(server.port, workload, n)
        calls_after, rows_after, busy_after = _batch_counts(server.port)
        n_calls = max(calls_after - calls, 1)
        row = {"mode": mode, "max_batch_size": batch, **row,
               "mean_batch": round((rows_after - rows) / n_calls, 2),
               "model_ms_per_call": round(1000 * (busy_after - busy) / n_calls, 1),
               "startup_s": round(server.startup_s, 1)}
        _log(json.dumps(row))
        results.append(row)
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
            "load_average": os.getloadavg()}
  print(json.dumps(report))
  sys.exit(1 if lost else 0)


if __name__ == "__main__":
  app.run(main)
