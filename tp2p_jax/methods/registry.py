"""Methods by name: `register(method)` adds one, `get(name)` finds it.

The built-in methods register themselves when `tp2p_jax.methods` is
imported; a new method registers in its own module (see README, "Adding a
method")."""
from __future__ import annotations

from tp2p_jax.methods.base import Method

_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
  """Adds `method` under `method.name`; `ValueError` if the name is taken by
  another method."""
  existing = _METHODS.get(method.name)
  if existing is not None and existing is not method:
    raise ValueError(f"a method named {method.name!r} is already registered")
  _METHODS[method.name] = method
  return method


def unregister(name: str) -> None:
  """Removes a method (tests that register their own)."""
  _METHODS.pop(name, None)


def get(name: str) -> Method:
  """The method `name`; `ValueError` listing the known ones."""
  try:
    return _METHODS[name]
  except KeyError:
    raise ValueError(f"unknown method {name!r}; known methods: "
                     f"{', '.join(sorted(_METHODS))}") from None


def names() -> tuple[str, ...]:
  return tuple(sorted(_METHODS))
