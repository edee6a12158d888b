"""Deterministic synthetic weights for a PyTorch state_dict layout.

Golden tests compare a network here with its PyTorch original on the same
weights. Shipping those weights would cost hundreds of megabytes, so both
sides rebuild them from a recipe instead: every tensor is drawn from
`numpy.random.default_rng(crc32(name))`, with a distribution chosen from its
name and shape so that activations stay O(1) through deep stacks and
BatchNorm running statistics are far from their (0, 1) defaults. A fixture
then stores only the layout (names and shapes), inputs and outputs.

The recipe is part of the fixture format: changing it invalidates every
stored fixture (regenerate them with tools/make_golden_fixtures.py).
"""
from __future__ import annotations

import math
import zlib
from typing import Mapping, Sequence

import numpy as np

# Buffers that are bookkeeping, not weights: counters.
_COUNTER_SUFFIXES = ("num_batches_tracked", "step")


def _rng(name: str) -> np.random.Generator:
  return np.random.default_rng(zlib.crc32(name.encode("utf-8")))


def synthetic_tensor(name: str, shape: Sequence[int]) -> np.ndarray:
  """One tensor of the recipe, a pure function of (name, shape).

  * running_mean: N(0, 0.1); running_var: U(0.5, 1.5) (eval-mode BatchNorm
    then really normalises with stored statistics).
  * 1-D `weight` (norm scales): U(0.2, 0.4); 1-D `bias`: N(0, 0.1).
  * counters (num_batches_tracked, step): zeros, int64.
  * everything else (conv, linear, embedding, attention projections):
    N(0, 1 / fan_in) with fan_in = prod(shape[1:]) (PyTorch's weight layouts
    put the output first), which keeps activations O(1); attention input
    projections (`in_proj_weight`) N(0, 1 / fan_in^2).
  """
  shape = tuple(int(s) for s in shape)
  leaf = name.rsplit(".", 1)[-1]
  if leaf in _COUNTER_SUFFIXES:
    return np.zeros(shape, np.int64)
  rng = _rng(name)
  if leaf == "running_mean":
    return rng.normal(0.0, 0.1, shape).astype(np.float32)
  if leaf == "running_var":
    return rng.uniform(0.5, 1.5, shape).astype(np.float32)
  if len(shape) == 1 and leaf.endswith("weight"):
    # Small scales keep train-mode activations (unit variance before the
    # scale) well inside the range where the TransPix2Pix decoder's unscaled
    # softmax(X X^T) attention is smooth rather than an argmax.
    return rng.uniform(0.2, 0.4, shape).astype(np.float32)
  if len(shape) == 1:
    return rng.normal(0.0, 0.1, shape).astype(np.float32)
  fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
  std = 1.0 / math.sqrt(max(fan_in, 1))
  if leaf == "in_proj_weight":
    # Transformer inputs arrive scaled by sqrt(d_model) (TransPix2Pix): keep
    # the attention logits O(1), or the softmax saturates and float32 noise
    # decides the output (the original would then disagree with itself in
    # float64).
    std /= math.sqrt(max(fan_in, 1))
  return (rng.standard_normal(shape) * std).astype(np.float32)


def synthetic_state_dict(layout: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
  """{name: shape} -> {name: tensor} by the recipe, in the layout's order."""
  return {name: synthetic_tensor(name, shape) for name, shape in layout.items()}


def output_weights(index: int, shape: Sequence[int]) -> np.ndarray:
  """Fixed weights w_i of the golden tests' scalar sum_i <output_i, w_i>,
  whose input gradient is compared; `shape` is the output's NHWC shape."""
  return np.random.default_rng(1000 + index).standard_normal(tuple(shape)).astype(np.float32)
