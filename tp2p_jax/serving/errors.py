"""The one kind of error a request can earn: a status, a stable code and a
message naming the problem, sent as JSON."""
from __future__ import annotations


class RequestError(Exception):
  """A request the server refuses (4xx), or cannot answer yet (503).

  Attributes:
    status: the HTTP status.
    code: a stable machine-readable name, e.g. "not_an_image".
    message: one line for people, naming the field at fault.
  """

  def __init__(self, status: int, code: str, message: str) -> None:
    super().__init__(message)
    self.status = status
    self.code = code
    self.message = message

  def body(self) -> dict[str, dict[str, str]]:
    """The JSON body: {"error": {"code": ..., "message": ...}}."""
    return {"error": {"code": self.code, "message": self.message}}
