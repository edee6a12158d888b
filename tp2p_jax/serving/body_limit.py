"""Refuses request bodies above a size or slower than a deadline, before
the form is parsed: the size from the Content-Length header when there is
one, else while the body streams in; the deadline from the moment the
headers were in."""
from __future__ import annotations

import asyncio
from typing import Any

from tp2p_jax.serving.errors import RequestError
from tp2p_jax.serving.metrics import ERROR_CODE_STATE, App, Receive, Scope, Send


class BodySizeLimit:
  """ASGI middleware: 413 "upload_too_large" for bodies above `max_bytes`,
  408 "body_timeout" for bodies not complete `timeout_s` after the headers
  (a client trickling its upload holds a connection and a form parser).

  Args:
    app: the application.
    max_bytes: the largest request body accepted (the whole multipart body).
    timeout_s: the longest time a whole body may take to arrive (None: no limit).
  """

  def __init__(self, app: App, max_bytes: int, timeout_s: float | None = None) -> None:
    self.app = app
    self.max_bytes = max_bytes
    self.timeout_s = timeout_s

  def _too_large(self, size: str) -> RequestError:
    return RequestError(413, "upload_too_large",
                        f"the request body is {size} bytes; the limit is {self.max_bytes}")

  async def _refuse(self, scope: Scope, send: Send, error: RequestError) -> None:
    scope.setdefault("state", {})[ERROR_CODE_STATE] = error.code
    body = error.encoded()
    # Closing: the rest of the body is not worth reading.
    await send({"type": "http.response.start", "status": error.status,
                "headers": error.raw_headers(body, close=True)})
    await send({"type": "http.response.body", "body": body})

  async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
      await self.app(scope, receive, send)
      return
    headers = dict(scope.get("headers", []))
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and int(length) > self.max_bytes:
      await self._refuse(scope, send, self._too_large(length.decode()))
      return
    loop = asyncio.get_running_loop()
    deadline = None if self.timeout_s is None else loop.time() + self.timeout_s
    received = 0
    refusal: RequestError | None = None
    body_done = False
    started = False

    async def limited_receive() -> dict[str, Any]:
      nonlocal received, refusal, body_done
      if body_done or refusal is not None or deadline is None:
        message = await receive()
      else:
        try:
          message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except TimeoutError:
          refusal = RequestError(408, "body_timeout", f"the request body did not arrive "
                                 f"within {self.timeout_s:g} s")
          # The application sees the client leave and stops reading.
          return {"type": "http.disconnect"}
      if message["type"] == "http.request" and not body_done:
        received += len(message.get("body", b""))
        body_done = not message.get("more_body", False)
        if received > self.max_bytes:
          refusal = self._too_large(f"more than {self.max_bytes}")
          return {"type": "http.disconnect"}
      return message

    async def guarded_send(message: dict[str, Any]) -> None:
      nonlocal started
      if refusal is not None:
        return  # whatever the application answers, ours is the answer
      started = True
      await send(message)

    try:
      await self.app(scope, limited_receive, guarded_send)
    except Exception:  # pylint: disable=broad-except
      if refusal is None:
        raise
    if refusal is not None and not started:
      await self._refuse(scope, send, refusal)
