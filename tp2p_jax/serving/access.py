"""Who may use the server: an optional bearer token, the Host names it
answers to (against DNS rebinding of a server on loopback) and the web
origins whose pages may call it (a cross-site page cannot make a visitor's
browser use the server)."""
from __future__ import annotations

import dataclasses
import hmac
import ipaddress
from typing import Iterable

from tp2p_jax.serving.errors import RequestError
from tp2p_jax.serving.metrics import ERROR_CODE_STATE, App, Receive, Scope, Send

# The environment variable `tp2p_jax.cli.serve` reads the token from (a
# flag's value shows in the process list).
TOKEN_ENV = "TP2P_SERVE_AUTH_TOKEN"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
  """Whether a listen address only accepts connections from this machine."""
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host.strip("[]")).is_loopback
  except ValueError:
    return False


@dataclasses.dataclass(frozen=True)
class Access:
  """Who may use the server.

  Attributes:
    auth_token: if set, every request outside `public_paths` must carry
      `Authorization: Bearer <auth_token>` (else 401 "unauthorized").
    allowed_hosts: the names the Host header may give (port aside; "*":
      any); None: any.
    allowed_origins: web origins ("https://example.org") besides the
      server's own whose pages may call the API ("*": any); a request from
      another origin gets 403 "origin_not_allowed".
    public_paths: answered without the token: health for probes, and the
      drawing page and its files (the page sends the token it is given in
      its URL's #token=... to the API).
  """
  auth_token: str | None = None
  allowed_hosts: tuple[str, ...] | None = None
  allowed_origins: tuple[str, ...] = ()
  public_paths: frozenset[str] = frozenset({"/healthz", "/", "/static/app.js",
                                            "/static/style.css"})

  def __post_init__(self) -> None:
    if self.auth_token is not None and not self.auth_token.strip():
      raise ValueError("the auth token is empty")

  @staticmethod
  def for_listen_address(host: str, auth_token: str | None = None,
                         allowed_hosts: Iterable[str] = (),
                         allowed_origins: Iterable[str] = ()) -> "Access":
    """The command line's defaults: a server on loopback answers only to
    loopback names unless told otherwise; one on another address to any."""
    hosts = tuple(h.lower() for h in allowed_hosts)
    if not hosts:
      hosts = (*LOOPBACK_NAMES, host.lower()) if is_loopback(host) else ("*",)
    return Access(auth_token or None, None if "*" in hosts else hosts,
                  tuple(o.rstrip("/").lower() for o in allowed_origins))


def _host_name(host: str) -> str:
  """"Host" header value -> the name without its port ("[::1]:80" -> "::1")."""
  if host.startswith("["):
    return host[1:host.find("]")] if "]" in host else host
  return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class AccessGuard:
  """ASGI middleware that applies an `Access`, before any body is read.

  Args:
    app: the application.
    access: the rules.
  """

  def __init__(self, app: App, access: Access) -> None:
    self.app = app
    self.access = access
    self._token = (access.auth_token.encode() if access.auth_token is not None else None)

  def _problem(self, scope: Scope) -> RequestError | None:
    headers = dict(scope.get("headers", []))
    host = headers.get(b"host", b"").decode("latin-1").lower()
    rules = self.access
    if rules.allowed_hosts is not None and _host_name(host) not in rules.allowed_hosts:
      return RequestError(400, "host_not_allowed",
                          f"this server does not answer to Host {host!r}")
    origin = headers.get(b"origin")
    if origin is not None:
      origin_text = origin.decode("latin-1").rstrip("/").lower()
      own = f"{scope.get('scheme', 'http')}://{host}"
      if (origin_text != own and "*" not in rules.allowed_origins
          and origin_text not in rules.allowed_origins):
        return RequestError(403, "origin_not_allowed",
                            f"pages from {origin_text!r} may not call this server")
    if self._token is not None and scope["path"] not in rules.public_paths:
      given = headers.get(b"authorization", b"")
      scheme, _, token = given.partition(b" ")
      if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._token):
        return RequestError(401, "unauthorized",
                            "this server needs an 'Authorization: Bearer TOKEN' header"
                            if not given else "the bearer token is not this server's",
                            headers={"WWW-Authenticate": "Bearer"})
    return None

  async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http" or scope.get("method") == "OPTIONS":
      # CORS preflights carry no token; the CORS middleware outside answers them.
      await self.app(scope, receive, send)
      return
    error = self._problem(scope)
    if error is None:
      await self.app(scope, receive, send)
      return
    scope.setdefault("state", {})[ERROR_CODE_STATE] = error.code
    body = error.encoded()
    await send({"type": "http.response.start", "status": error.status,
                "headers": error.raw_headers(body, close=True)})
    await send({"type": "http.response.body", "body": body})
