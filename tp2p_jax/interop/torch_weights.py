"""PyTorch checkpoints of the original releases, imported without torch.

`read_state_dict(path)` reads a `.pth` file (zip or legacy format; a bare
state_dict or the release's {"state_dict": ..., "optimizer": ...}) through a
restricted unpickler that admits tensors, storages, OrderedDict and plain
containers only, so no code in the file is executed.

`import_network(kind, path_or_state_dict, **options)` returns
`(module, variables)`: the Flax module, applied as in this package's own
code (`module.apply(variables, real_a[, style], train=False)`; a
discriminator takes the channel-concatenated pair), and its variables.
`convert(...)` returns the same as a `Conversion` that also records where
each variable came from and which tensors the original never uses
(reported, then dropped). Every other tensor is used exactly once; a tensor
that does not fit gives a one-line error naming it.

Kinds: see `KINDS` (each converter's docstring lists its options).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping

import flax.linen as nn
import numpy as np

from tp2p_jax.interop import pix2pix_import, transpix2pix_import
from tp2p_jax.interop.mapping import Conversion, WeightImportError
from tp2p_jax.interop.pth_reader import read_state_dict

Converter = Callable[..., Conversion]

KINDS: dict[str, Converter] = {**transpix2pix_import.CONVERTERS, **pix2pix_import.CONVERTERS}


def _state_dict(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, np.ndarray]:
  if isinstance(source, Mapping):
    return {str(k): np.asarray(v) for k, v in source.items()}
  return read_state_dict(source)


def convert(kind: str, source: str | os.PathLike | Mapping[str, Any], **options: Any
            ) -> Conversion:
  """Imports `source` (a .pth path or a state_dict of arrays) as `kind`."""
  try:
    converter = KINDS[kind]
  except KeyError:
    raise WeightImportError(f"unknown kind {kind!r}; expected one of {sorted(KINDS)}") from None
  conversion = converter(_state_dict(source), **options)
  if conversion.unused:
    logging.info("%s: %d tensors the original never uses were dropped: %s", kind,
                 len(conversion.unused), ", ".join(conversion.unused[:8])
                 + (" ..." if len(conversion.unused) > 8 else ""))
  return conversion


def import_network(kind: str, source: str | os.PathLike | Mapping[str, Any], **options: Any
                   ) -> tuple[nn.Module, dict[str, Any]]:
  """(module, variables) for a PyTorch checkpoint of `kind`."""
  conversion = convert(kind, source, **options)
  return conversion.module, conversion.variables


__all__ = ["KINDS", "Conversion", "WeightImportError", "convert", "import_network",
           "read_state_dict"]
