"""Optimisers (optax) and their weight-decay masks.

The reference uses PyTorch Adam's coupled L2 weight decay (the decay term is
added to the gradient before the Adam moments), applied only to conv/dense
kernels; generator gradients are clipped to a global norm before that. The
chain below reproduces that order.
"""
from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
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


class ZeroUntilState(NamedTuple):
  count: jax.Array  # int32 updates seen
  inner: Any


def zero_until(inner: optax.GradientTransformation, steps: int
               ) -> optax.GradientTransformation:
  """Zero updates (and an untouched `inner` state) for the first `steps`
  updates, `inner` from then on: its Adam moments and schedule count start
  at the unfreeze, as pix2pixHD builds a fresh optimiser over all parameters
  after `niter_fix_global`."""
  def init(params: Params) -> ZeroUntilState:
    return ZeroUntilState(jnp.zeros((), jnp.int32), inner.init(params))

  def update(updates, state: ZeroUntilState, params: Params | None = None):
    def frozen():
      return jax.tree.map(jnp.zeros_like, updates), state.inner

    def live():
      return inner.update(updates, state.inner, params)

    new_updates, inner_state = jax.lax.cond(state.count < steps, frozen, live)
    return new_updates, ZeroUntilState(state.count + 1, inner_state)

  return optax.GradientTransformation(init, update)


def freeze_subtrees(tx: optax.GradientTransformation, frozen: Sequence[str],
                    steps: int = -1) -> optax.GradientTransformation:
  """`tx` on every parameter except the top-level subtrees named in
  `frozen`, whose updates are exactly zero (so they stay bit-identical) for
  the first `steps` updates, or always when `steps < 0`; after that they are
  trained by their own copy of `tx`. E.g. pix2pixHD's G1 (`global`) while
  the local enhancer learns. Gradient clipping inside `tx` then acts per
  group (pix2pixHD does not clip)."""
  names = set(frozen)

  def labels(params: Params) -> Params:
    return {k: jax.tree.map(lambda _: "frozen" if k in names else "trained", v)
            for k, v in params.items()}

  frozen_tx = optax.set_to_zero() if steps < 0 else zero_until(tx, steps)
  return optax.multi_transform({"trained": tx, "frozen": frozen_tx}, labels)
