"""Random-access data sources by name, for the trainer and the CLIs."""
from __future__ import annotations

from typing import Any

from tp2p_jax.data.toycats import ToyCatsSource

# Added to the run seed for the held-out toy cats: a different seed gives
# independent random streams, so no held-out cat repeats a training cat.
EVAL_SEED_OFFSET = 1_000_003


def toycats_sources(*, num_train: int, num_eval: int, image_size: int, seed: int,
                    body_probability: float) -> tuple[ToyCatsSource, ToyCatsSource]:
  """(train, held-out) procedural toy-cat sources rendered at `image_size`."""
  train = ToyCatsSource(num_train, image_size, seed=seed, body_probability=body_probability)
  held_out = ToyCatsSource(num_eval, image_size, seed=seed + EVAL_SEED_OFFSET,
                           body_probability=body_probability)
  return train, held_out


def make_sources(source: str, *, image_size: int, seed: int, **options: Any
                 ) -> tuple[Any, Any]:
  """(train, held-out) sources for `source` ("toycats")."""
  if source == "toycats":
    return toycats_sources(image_size=image_size, seed=seed, **options)
  raise ValueError(f"unknown data source {source!r}; expected 'toycats'")
