"""The server's Prometheus metrics and the ASGI middleware that records them.

Each application has a registry of its own (several servers in one
process, as in tests, count separately). Names:
  tp2p_serve_requests_total{endpoint, status}
  tp2p_serve_errors_total{endpoint, code}        4xx and 5xx answers by error code;
                                                 status 499, code "client_disconnected":
                                                 the client left before its answer
  tp2p_serve_request_latency_seconds{endpoint}   histogram, receipt to last byte
  tp2p_serve_batch_size                          histogram, requests per generator call
  tp2p_serve_batch_seconds                       histogram, time per generator call
"""
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Iterable

import prometheus_client

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Where a request's error code is left for the middleware (scope["state"]).
ERROR_CODE_STATE = "tp2p_error_code"
# The status recorded for a request whose client left before its answer
# started (nginx's convention; no such answer is ever sent).
CLIENT_GONE_STATUS = 499


class ServerMetrics:
  """Counters and histograms of one server.

  Args:
    max_batch_size: the compiled batch size (the batch histogram's top bucket).
  """

  def __init__(self, max_batch_size: int) -> None:
    self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
    self.requests = prometheus_client.Counter(
        "tp2p_serve_requests", "HTTP requests answered.", ["endpoint", "status"],
        registry=self.registry)
    self.errors = prometheus_client.Counter(
        "tp2p_serve_errors", "Requests answered with an error (4xx, 5xx), by code.",
        ["endpoint", "code"], registry=self.registry)
    self.latency = prometheus_client.Histogram(
        "tp2p_serve_request_latency_seconds", "Time from receipt to the last byte sent.",
        ["endpoint"], buckets=_LATENCY_BUCKETS, registry=self.registry)
    self.batch_size = prometheus_client.Histogram(
        "tp2p_serve_batch_size", "Requests per generator call.",
        buckets=tuple(range(1, max_batch_size + 1)), registry=self.registry)
    self.batch_seconds = prometheus_client.Histogram(
        "tp2p_serve_batch_seconds", "Time per generator call (model thread).",
        buckets=_LATENCY_BUCKETS, registry=self.registry)

  def observe_batch(self, size: int, seconds: float) -> None:
    """One generator call of `size` requests that took `seconds`."""
    self.batch_size.observe(size)
    self.batch_seconds.observe(seconds)

  def exposition(self) -> bytes:
    """The Prometheus text format (version 0.0.4)."""
    return prometheus_client.generate_latest(self.registry)


CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST


class MetricsMiddleware:
  """Counts and times every HTTP request. Paths outside `endpoints` are
  counted as "other", so that probing random URLs cannot grow the label set.

  Args:
    app: the application.
    metrics: where to record.
    endpoints: the paths labelled by name.
  """

  def __init__(self, app: App, metrics: ServerMetrics, endpoints: Iterable[str]) -> None:
    self.app = app
    self.metrics = metrics
    self.endpoints = frozenset(endpoints)

  async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
      await self.app(scope, receive, send)
      return
    start = time.perf_counter()
    endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
    status = [500]
    code: list[str | None] = [None]
    started = [False]
    gone = [False]

    async def receive_noting_departure() -> dict[str, Any]:
      message = await receive()
      if message["type"] == "http.disconnect" and not started[0]:
        gone[0] = True
      return message

    async def send_recording_status(message: dict[str, Any]) -> None:
      if message["type"] == "http.response.start":
        status[0] = message["status"]
        started[0] = True
      await send(message)

    try:
      await self.app(scope, receive_noting_departure, send_recording_status)
    except Exception:
      # The server's error handler, outside this middleware, answers it.
      status[0], code[0] = 500, "internal_error"
      raise
    finally:
      if gone[0]:
        # Whatever the application made of it, nobody received an answer.
        status[0], code[0] = CLIENT_GONE_STATUS, "client_disconnected"
      self.metrics.requests.labels(endpoint, str(status[0])).inc()
      if status[0] >= 400:
        code[0] = code[0] or scope.get("state", {}).get(ERROR_CODE_STATE,
                                                        f"http_{status[0]}")
        self.metrics.errors.labels(endpoint, code[0]).inc()
      self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
