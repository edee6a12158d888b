"""Connection limits for uvicorn: a deadline on request headers, a cap on
open connections that sheds the oldest one still waiting for its headers,
and the uvicorn configuration the server runs with.

Uvicorn itself times out only idle keep-alive connections: a client that
opens a connection and sends its headers a byte at a time holds it (and a
file descriptor) for good, and a few hundred of them exhaust the process's
descriptors, after which accepting fails for everyone. Here every
connection must complete each request's headers within `header_timeout_s`
of opening (or of its previous answer), and when `max_connections` are
open, a new connection pushes out the one that has waited longest for its
headers; requests already being read or answered are never pushed out.
The request body's own deadline is `body_limit.BodySizeLimit`'s.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import resource
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tp2p_jax.serving.errors import RequestError

log = logging.getLogger("tp2p_jax.serving")

# Descriptors kept for everything but client connections (model files,
# logs, upload spools, the event loop's own).
_RESERVED_FDS = 128


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
  """Limits on client connections.

  Attributes:
    max_connections: the most open client connections.
    header_timeout_s: the longest a connection may take to send a request's
      headers, from opening or from its previous answer.
    keep_alive_timeout_s: how long an idle keep-alive connection is kept.
  """
  max_connections: int = 512
  header_timeout_s: float = 10.0
  keep_alive_timeout_s: float = 5.0

  def __post_init__(self) -> None:
    if self.max_connections < 1:
      raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")
    if self.header_timeout_s <= 0 or self.keep_alive_timeout_s <= 0:
      raise ValueError(f"timeouts must be > 0, got {self}")


def _busy_response() -> bytes:
  """A raw HTTP 503 for a connection refused before any request was read."""
  error = RequestError(503, "server_busy", "too many open connections; retry shortly",
                       headers={"Retry-After": "1"})
  body = error.encoded()
  head = b"".join(k + b": " + v + b"\r\n" for k, v in error.raw_headers(body, close=True))
  return b"HTTP/1.1 503 Service Unavailable\r\n" + head + b"\r\n" + body


def protocol_class(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
  """Uvicorn's httptools protocol with `limits`' header deadline and
  connection cap. httptools parses in C: a slow client's every byte, and
  every connection a reconnecting flood opens, cost the event loop (and
  the interpreter lock the image threads need) a fraction of what h11's
  pure-Python parser does."""
  # The connections in the order their header wait began, oldest first:
  # the one to push out is found at the front in O(1) amortised (scanning
  # all 512 open connections cost about a millisecond per accepted one,
  # and a reconnecting flood's 500-650 accepts a second spent that on the
  # event loop). Entries that have since started a request are dropped when they
  # reach the front; each comes back at the end when its next wait begins.
  header_waits: collections.OrderedDict[HttpToolsProtocol, None] = collections.OrderedDict()

  class LimitedProtocol(HttpToolsProtocol):
    """One client connection (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
      super().__init__(*args, **kwargs)
      self._header_timer: asyncio.TimerHandle | None = None

    def _waiting_for_headers(self) -> bool:
      # A request's cycle starts when its headers are complete; until then
      # the connection holds the previous (answered) one, or none.
      return (not self.transport.is_closing()
              and (self.cycle is None or self.cycle.response_complete))

    def _arm_header_deadline(self) -> None:
      if self._header_timer is not None:
        self._header_timer.cancel()
      header_waits.pop(self, None)
      header_waits[self] = None
      self._header_timer = self.loop.call_later(limits.header_timeout_s,
                                                self._header_deadline)

    def _header_deadline(self) -> None:
      self._header_timer = None
      if self._waiting_for_headers():
        self._drop()

    def _drop(self) -> None:
      # Out of the count now: its connection_lost comes a loop turn later.
      self.connections.discard(self)
      header_waits.pop(self, None)
      self.transport.abort()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
      super().connection_made(transport)
      self._arm_header_deadline()
      if len(self.connections) <= limits.max_connections:
        return
      while (oldest := next(iter(header_waits))) is not self:
        del header_waits[oldest]
        if oldest._waiting_for_headers():  # pylint: disable=protected-access
          oldest._drop()  # pylint: disable=protected-access
          return
      # Every other connection is mid-request: this one is told to come back.
      self.connections.discard(self)
      header_waits.pop(self, None)
      transport.write(_busy_response())
      transport.close()

    def on_response_complete(self) -> None:
      super().on_response_complete()
      if not self.transport.is_closing():
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
      if self._header_timer is not None:
        self._header_timer.cancel()
        self._header_timer = None
      header_waits.pop(self, None)
      super().connection_lost(exc)

  return LimitedProtocol


def fit_to_file_limit(max_connections: int) -> int:
  """Raises the process's open-file limit as far as allowed, and returns
  `max_connections` or less, so that connections can never exhaust the
  descriptors (the point where accepting fails for everyone)."""
  soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
  wanted = max_connections + _RESERVED_FDS
  if soft != resource.RLIM_INFINITY and soft < wanted:
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
      resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
      soft = target
    except (ValueError, OSError):
      pass
  if soft != resource.RLIM_INFINITY and soft < wanted:
    fitted = max(1, soft - _RESERVED_FDS)
    log.warning("--max_connections=%d lowered to %d: the open-file limit is %d",
                max_connections, fitted, soft)
    return fitted
  return max_connections


def uvicorn_config(app: Any, limits: ConnectionLimits, **kwargs: Any) -> uvicorn.Config:
  """The uvicorn configuration of `app` under `limits` (kwargs: host, port,
  log_level... as uvicorn.Config takes them)."""
  kwargs.setdefault("log_level", "warning")
  kwargs.setdefault("access_log", False)
  return uvicorn.Config(
      app, http=protocol_class(limits), timeout_keep_alive=limits.keep_alive_timeout_s,
      # A backstop only: the cap above keeps connections at max_connections,
      # and uvicorn's own limit would answer requests 503 (plain text) while
      # slow clients merely hold connections.
      limit_concurrency=limits.max_connections + 1, **kwargs)
