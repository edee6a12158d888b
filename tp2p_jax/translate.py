"""Translation with trained CycleGAN generators, in either direction.

`translate(generator, state_or_params, images, direction)` is pure and
jit-able (mark `generator`, `direction` and `use_ema` static, or close over
them).
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

import flax.linen as nn
import jax

from tp2p_jax.train.cyclegan_state import CycleGANState

Direction = Literal["AtoB", "BtoA"]
DIRECTIONS: tuple[str, ...] = ("AtoB", "BtoA")
_PARAM_KEYS = {"AtoB": "ab", "BtoA": "ba"}


def generator_params(state_or_params: CycleGANState | Mapping[str, Any],
                     direction: Direction, use_ema: bool = True) -> Any:
  """The parameters of G_AB (direction "AtoB") or G_BA ("BtoA").

  Args:
    state_or_params: a `CycleGANState` (its EMA generators when `use_ema`,
      else the trained ones), or a mapping {"ab": params, "ba": params}.
    direction: "AtoB" or "BtoA".
    use_ema: with a state, pick the EMA weights.
  """
  if direction not in _PARAM_KEYS:
    raise ValueError(f"unknown direction {direction!r}; expected one of {DIRECTIONS}")
  key = _PARAM_KEYS[direction]
  if isinstance(state_or_params, CycleGANState):
    return (state_or_params.ema if use_ema else state_or_params.g_params)[key]
  return state_or_params[key]


def translate(generator: nn.Module, state_or_params: CycleGANState | Mapping[str, Any],
              images: jax.Array, direction: Direction, use_ema: bool = True) -> jax.Array:
  """Maps a batch of domain-A images to B ("AtoB") or B to A ("BtoA").

  Args:
    generator: the CycleGAN generator module (e.g. from
      `tp2p_jax.train.cyclegan_builders.build_cyclegan(config).generator`).
    state_or_params: see `generator_params`.
    images: (B, H, W, 3) NHWC float in [-1, 1]; H, W multiples of 4.
    direction: "AtoB" or "BtoA".
    use_ema: with a state, translate with the EMA generator.

  Returns:
    (B, H, W, 3) float32 in [-1, 1], generator in eval mode.
  """
  params = generator_params(state_or_params, direction, use_ema)
  return generator.apply({"params": params}, images, train=False)
