"""Optimisers (optax) and their weight-decay masks.

The reference uses PyTorch Adam's coupled L2 weight decay (the decay term is
added to the gradient before the Adam moments), applied only to conv/dense
kernels; generator gradients are clipped to a global norm before that. The
chain below reproduces that order.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import optax

Params = Any

# Generator parameters the reference excludes from weight decay besides
# biases and norms: squeeze-and-excitation layers and everything inside the
# transformer blocks (including their positional embeddings).
GENERATOR_NO_DECAY = (r"^cse$", r"^sse$", r"^T\d+$")


def decay_mask(params: Params, exclude: Sequence[str] = ()) -> Params:
  """Pytree of bools: True for conv/dense kernels (leaf name `kernel`) and
  CosFace class vectors, False for biases, norm scales/offsets, embeddings and
  any leaf with a path component matching one of the `exclude` regexes."""
  patterns = [re.compile(p) for p in exclude]

  def keep(path: tuple, _leaf: Any) -> bool:
    names = [str(getattr(k, "key", k)) for k in path]
    if names[-1] not in ("kernel", "class_vectors"):
      return False
    return not any(p.search(n) for p in patterns for n in names[:-1])

  return jax.tree_util.tree_map_with_path(keep, params)


def step_decay_schedule(lr: float, milestones: Sequence[int], factor: float) -> optax.Schedule:
  """lr multiplied by `factor` at each milestone step (PyTorch MultiStepLR)."""
  return optax.piecewise_constant_schedule(lr, {int(m): factor for m in milestones})


def adam_with_l2(schedule: optax.Schedule, b1: float, b2: float, weight_decay: float,
                 mask: Params | Callable[[Params], Params], clip_norm: float = 0.0
                 ) -> optax.GradientTransformation:
  """[clip to global norm] -> + weight_decay * masked params -> Adam -> -lr."""
  parts = []
  if clip_norm > 0:
    parts.append(optax.clip_by_global_norm(clip_norm))
  if weight_decay > 0:
    parts.append(optax.add_decayed_weights(weight_decay, mask))
  parts += [optax.scale_by_adam(b1=b1, b2=b2, eps=1e-8),
            optax.scale_by_learning_rate(schedule)]
  return optax.chain(*parts)
