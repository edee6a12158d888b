"""Rematerialisation (gradient checkpointing) of network blocks.

With `remat="blocks"` a network keeps, for the backward pass, only the
inputs of its blocks and runs each block's forward again when the gradient
reaches it (`flax.linen.remat`, i.e. `jax.checkpoint` with nothing inside a
block saved): what the backward pass needs from the forward shrinks to the
block inputs, for about one more forward pass of the blocks. How much
memory that saves is the compiler's doing (its schedule decides how long
recomputed values live): on XLA:CPU little, 6% of the reference train
step's temporaries (benchmarks/PERFORMANCE.md, "Rematerialisation").
Parameters, their names and the function computed are the same either way,
so checkpoints are interchangeable and a run may switch.
"""
from __future__ import annotations

from typing import Literal

import flax.linen as nn

RematMode = Literal["none", "blocks"]
REMAT_MODES: tuple[str, ...] = ("none", "blocks")


def check_remat(remat: str) -> None:
  """ValueError unless `remat` is one of `REMAT_MODES`."""
  if remat not in REMAT_MODES:
    raise ValueError(f"unknown remat {remat!r}; expected one of {REMAT_MODES}")


def remat_block(module_class: type[nn.Module], remat: bool) -> type[nn.Module]:
  """`module_class` itself, or with `remat` its `nn.remat` form, which saves
  only its call's inputs for the backward pass and runs its forward again
  there.

  For blocks called as `block(x, train)`: `train` (argument 2, counting the
  module) is static. A block's explicit `name` gives the same parameter tree
  either way, and dropout draws the same masks (the lifted call passes the
  same RNG streams).
  """
  if not remat:
    return module_class
  return nn.remat(module_class, static_argnums=(2,))
