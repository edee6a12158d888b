"""Refuses request bodies above a size before the form is parsed: from the
Content-Length header when there is one, else while the body streams in."""
from __future__ import annotations

import json
from typing import Any

from tp2p_jax.serving.errors import RequestError
from tp2p_jax.serving.metrics import ERROR_CODE_STATE, App, Receive, Scope, Send


class BodySizeLimit:
  """ASGI middleware: 413 "upload_too_large" for bodies above `max_bytes`.

  Args:
    app: the application.
    max_bytes: the largest request body accepted (the whole multipart body).
  """

  def __init__(self, app: App, max_bytes: int) -> None:
    self.app = app
    self.max_bytes = max_bytes

  def _error(self, size: str) -> RequestError:
    return RequestError(413, "upload_too_large",
                        f"the request body is {size} bytes; the limit is {self.max_bytes}")

  async def _refuse(self, scope: Scope, send: Send, error: RequestError) -> None:
    scope.setdefault("state", {})[ERROR_CODE_STATE] = error.code
    body = json.dumps(error.body()).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})

  async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
      await self.app(scope, receive, send)
      return
    headers = dict(scope.get("headers", []))
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and int(length) > self.max_bytes:
      await self._refuse(scope, send, self._error(length.decode()))
      return
    received = 0
    too_large = False
    started = False

    async def counting_receive() -> dict[str, Any]:
      nonlocal received, too_large
      message = await receive()
      if message["type"] == "http.request":
        received += len(message.get("body", b""))
        if received > self.max_bytes:
          too_large = True
          # The application sees the client leave and stops reading.
          return {"type": "http.disconnect"}
      return message

    async def guarded_send(message: dict[str, Any]) -> None:
      nonlocal started
      if too_large:
        return  # whatever the application answers, ours is the answer
      started = True
      await send(message)

    try:
      await self.app(scope, counting_receive, guarded_send)
    except Exception:  # pylint: disable=broad-except
      if not too_large:
        raise
    if too_large and not started:
      await self._refuse(scope, send, self._error(f"more than {self.max_bytes}"))
