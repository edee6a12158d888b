"""Weights converted from another framework, turned into a method's state.

`tp2p import-torch` converts a release's checkpoint files network by
network (`tp2p_jax.interop`) and hands them to the run's method as an
`ImportedWeights`; the method's `imported_state(config, weights)` hook
builds its train state from them (networks the files lack initialised as
a fresh run of `config` would, optimiser states fresh). The helpers here
check that what was imported is what the config builds.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tp2p_jax.core.init_rng import param_key

Variables = Mapping[str, Any]

# Module fields that are not architecture (and so not config fields).
_NOT_CONFIG_FIELDS = ("parent", "name", "dtype", "param_dtype")


class ImportedWeightsError(ValueError):
  """Imported weights that do not fit the run's config; one line."""


@dataclasses.dataclass(frozen=True)
class ImportedWeights:
  """Networks read off checkpoint files, by role: "generator",
  "discriminator", and where a method has them "generator_b",
  "discriminator_b" (the B -> A direction and domain A's judge) and
  "style_encoder".

  Attributes:
    modules: role -> the converted Flax module (its fields as read off the
      file); only imported roles.
    variables: role -> {"params": ..., "batch_stats": ...}; only imported
      roles.
    labels: role -> how messages name it (its file, or "(initialised)"),
      for every role of the run.
    step: the checkpoint step the state gets.
  """
  modules: Mapping[str, nn.Module]
  variables: Mapping[str, Variables]
  labels: Mapping[str, str]
  step: int


def _plain(value: Any) -> Any:
  """Module field values as JSON-like config values (tuples -> lists)."""
  if isinstance(value, (tuple, list)):
    return [_plain(v) for v in value]
  if isinstance(value, Mapping):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, np.generic):
    return value.item()
  return value


def module_kwargs(module: nn.Module, skip: Sequence[str] = ()) -> dict[str, Any]:
  """A module's architecture fields (all dataclass fields but the parent,
  name and dtypes, and `skip`), as config values."""
  return {f.name: _plain(getattr(module, f.name)) for f in dataclasses.fields(module)
          if f.init and f.name not in _NOT_CONFIG_FIELDS and f.name not in skip}


def check_rebuilds(label: str, built: nn.Module, imported: nn.Module) -> None:
  """The config must describe exactly the imported module (the run is
  rebuilt from the config alone)."""
  imported = imported.clone(dtype=built.dtype)
  if type(built) is not type(imported) or built != imported:
    theirs = module_kwargs(imported)
    diff = [f"{k}: config {v!r} vs imported {theirs.get(k)!r}"
            for k, v in module_kwargs(built).items() if theirs.get(k) != v]
    raise ImportedWeightsError(f"{label}: the run's config does not rebuild the imported "
                               f"{type(imported).__name__} "
                               f"({'; '.join(diff) or type(built).__name__})")


def _leaves(tree: Any) -> dict[str, Any]:
  return {jax.tree_util.keystr(path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def fit(what: str, tree: Any, reference: Any) -> Any:
  """`tree` as jax arrays of `reference`'s dtypes, after checking that it has
  exactly the variables and shapes of `reference` (what a run of the config
  restores into); a one-line `ImportedWeightsError` naming the first
  difference otherwise."""
  got, want = _leaves(tree), _leaves(reference)
  missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
  if missing or extra:
    raise ImportedWeightsError(
        f"{what}: variables differ from the config's network (missing: "
        f"{', '.join(missing[:4]) or '-'}; extra: {', '.join(extra[:4]) or '-'})")
  for key, ref in want.items():
    shape = tuple(np.shape(got[key]))
    if shape != tuple(ref.shape):
      raise ImportedWeightsError(
          f"{what}: {key} has shape {shape}, a run here needs {tuple(ref.shape)} (runs take "
          "3-channel sketches and photos; a discriminator sees them concatenated)")
  if jax.tree.structure(tree) != jax.tree.structure(reference):
    raise ImportedWeightsError(f"{what}: the variable tree differs from the config's network")
  return jax.tree.map(lambda x, r: jnp.asarray(x, r.dtype), tree, reference)


def init_variables(module: nn.Module, key: jax.Array, *inputs: jax.Array,
                   dropout: bool = False) -> dict[str, Any]:
  """`module`'s variables as a fresh run initialises them from `key`."""
  def init(k: jax.Array, *x: jax.Array) -> dict[str, Any]:
    rngs = {"params": param_key(k), **({"dropout": k} if dropout else {})}
    return module.init(rngs, *x, train=False)
  return dict(jax.jit(init)(key, *inputs))


def variables_of(weights: ImportedWeights, role: str) -> dict[str, Any] | None:
  """{"params", "batch_stats"} of an imported role, None if not imported."""
  if role not in weights.variables:
    return None
  v = weights.variables[role]
  return {"params": v["params"], "batch_stats": v.get("batch_stats", {})}
