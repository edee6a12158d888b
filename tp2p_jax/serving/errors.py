"""The one kind of error a request can earn: a status, a stable code and a
message naming the problem, sent as JSON."""
from __future__ import annotations

import json


class RequestError(Exception):
  """A request the server refuses (4xx), or cannot answer now (503).

  Attributes:
    status: the HTTP status.
    code: a stable machine-readable name, e.g. "not_an_image".
    message: one line for people, naming the field at fault.
    headers: extra response headers (e.g. Retry-After on a 503).
  """

  def __init__(self, status: int, code: str, message: str,
               headers: dict[str, str] | None = None) -> None:
    super().__init__(message)
    self.status = status
    self.code = code
    self.message = message
    self.headers = dict(headers or {})

  def body(self) -> dict[str, dict[str, str]]:
    """The JSON body: {"error": {"code": ..., "message": ...}}."""
    return {"error": {"code": self.code, "message": self.message}}

  def raw_headers(self, body: bytes, close: bool = False) -> list[tuple[bytes, bytes]]:
    """ASGI response headers for `body` (this error's JSON), for middleware
    that answers before the application."""
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in self.headers.items()]
    if close:
      headers.append((b"connection", b"close"))
    return headers

  def encoded(self) -> bytes:
    """The JSON body as bytes."""
    return json.dumps(self.body()).encode()
