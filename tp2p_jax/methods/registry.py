"""Methods by name (`config.method`): `METHODS`, a `tp2p_jax.registry.Registry`.

`tp2p_jax.methods` registers the package's own methods on import; a new
method registers the same way (README, "Adding a method"):
`methods.register(method)` adds it under `method.name`."""
from __future__ import annotations

import contextlib

from tp2p_jax.methods.base import Method
from tp2p_jax.registry import Registry

METHODS: Registry[Method] = Registry("method")


def register(method: Method) -> Method:
  """Adds `method` under `method.name`; `ValueError` if the name is taken by
  another method."""
  return METHODS.register(method.name, method)


def registered(method: Method) -> contextlib.AbstractContextManager[Method]:
  """`method` registered for a `with` block's duration."""
  return METHODS.registered(method.name, method)


def unregister(name: str) -> None:
  METHODS.unregister(name)


def get(name: str) -> Method:
  """The method `name`; `ValueError` listing the known ones."""
  return METHODS.get(name)


def names() -> tuple[str, ...]:
  return METHODS.names()
