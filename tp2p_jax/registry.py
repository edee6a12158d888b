"""Things of one kind looked up by name: the one way to extend the package.

Methods (`tp2p_jax.methods.METHODS`), generators and discriminators
(`tp2p_jax.models.GENERATORS`, `DISCRIMINATORS`) and data sources
(`tp2p_jax.data.sources.SOURCES`) are each a `Registry`. The package
registers its own when the registry's package is imported; other code adds
its own the same way, before the config that names it is used:

  from tp2p_jax import models
  models.GENERATORS.register("my_unet", MyUnet)

What a registered thing can do is an attribute of the thing itself (a
generator class's `takes_style`, a data source's `paired`/`unpaired`), so
callers never compare names.
"""
from __future__ import annotations

import contextlib
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """Named entries of one kind (`kind` names it in messages)."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, T] = {}

  def register(self, name: str, entry: T) -> T:
    """Adds `entry` under `name` and returns it; `ValueError` if the name is
    taken by another entry (registering the same entry again is a no-op)."""
    existing = self._entries.get(name)
    if existing is not None and existing is not entry:
      raise ValueError(f"a {self.kind} named {name!r} is already registered")
    self._entries[name] = entry
    return entry

  def unregister(self, name: str) -> None:
    """Removes `name` (absent: nothing happens)."""
    self._entries.pop(name, None)

  @contextlib.contextmanager
  def registered(self, name: str, entry: T) -> Iterator[T]:
    """`entry` registered under `name` for the block's duration."""
    self.register(name, entry)
    try:
      yield entry
    finally:
      self.unregister(name)

  def get(self, name: str) -> T:
    """The entry `name`; `ValueError` listing the known names."""
    try:
      return self._entries[name]
    except KeyError:
      raise ValueError(f"unknown {self.kind} {name!r}; known: "
                       f"{', '.join(self.names())}") from None

  def names(self) -> tuple[str, ...]:
    return tuple(sorted(self._entries))

  def __contains__(self, name: object) -> bool:
    return name in self._entries
