"""Random-access data sources by name, for the trainer and the CLIs."""
from __future__ import annotations

import logging
from typing import Any

from tp2p_jax.core.storage import local_data_dir
from tp2p_jax.data.toycats import STYLE_NAMES, ToyCatsSource

log = logging.getLogger("tp2p_jax.data")

SOURCES: tuple[str, ...] = ("toycats", "prepared")

# Added to the run seed for the held-out toy cats: a different seed gives
# independent random streams, so no held-out cat repeats a training cat.
EVAL_SEED_OFFSET = 1_000_003


def toycats_sources(*, num_train: int, num_eval: int, image_size: int, seed: int,
                    body_probability: float, background: str = "varied"
                    ) -> tuple[ToyCatsSource, ToyCatsSource]:
  """(train, held-out) procedural toy-cat sources rendered at `image_size`."""
  train = ToyCatsSource(num_train, image_size, seed=seed, body_probability=body_probability,
                        background=background)
  held_out = ToyCatsSource(num_eval, image_size, seed=seed + EVAL_SEED_OFFSET,
                           body_probability=body_probability, background=background)
  return train, held_out


def prepared_sources(data_dir: str) -> tuple[Any, Any]:
  """(train, validation) sources of a dataset made by `tp2p_jax.cli.prepare`.

  A dataset without a validation split (too few files for `val_fraction`)
  is evaluated on its training split, with a warning. A `gs://` data_dir is
  read from a local copy (`storage.local_data_dir`).
  """
  from tp2p_jax.data.prepared import PairedSource  # imports TFDS: only when used
  if not data_dir:
    raise ValueError("data.source='prepared' needs data.data_dir: the --data_dir given to "
                     "python -m tp2p_jax.cli.prepare")
  data_dir = local_data_dir(data_dir)
  train = PairedSource(data_dir, "train")
  try:
    held_out = PairedSource(data_dir, "validation")
  except ValueError:
    log.warning("%s has no validation split; held-out samples come from train", data_dir)
    held_out = train
  return train, held_out


def class_names(source: str, data_dir: str = "") -> tuple[str, ...]:
  """Label names of a source, index = label."""
  if source == "toycats":
    return STYLE_NAMES
  if source == "prepared":
    from tp2p_jax.data.prepared import class_names as prepared_class_names
    return prepared_class_names(local_data_dir(data_dir))
  raise ValueError(f"unknown data source {source!r}; expected one of {SOURCES}")


def make_sources(source: str, *, image_size: int, seed: int, num_train: int = 0,
                 num_eval: int = 0, body_probability: float = 0.5, data_dir: str = "",
                 background: str = "varied") -> tuple[Any, Any]:
  """(train, held-out) sources: "toycats" (procedural, rendered at
  `image_size` from `num_train`/`num_eval`/`body_probability`/`background`)
  or "prepared" (a dataset in `data_dir`; the pipeline resizes to
  `image_size`)."""
  if source == "toycats":
    return toycats_sources(num_train=num_train, num_eval=num_eval, image_size=image_size,
                           seed=seed, body_probability=body_probability,
                           background=background)
  if source == "prepared":
    return prepared_sources(data_dir)
  raise ValueError(f"unknown data source {source!r}; expected one of {SOURCES}")


def sources_from_config(data: Any, *, image_size: int, seed: int) -> tuple[Any, Any]:
  """`make_sources` from a config's `data` section (ml_collections or a run's
  saved config; fields added later take their defaults)."""
  return make_sources(data.source, image_size=image_size, seed=seed,
                      num_train=data.get("num_train", 0), num_eval=data.get("num_eval", 0),
                      body_probability=data.get("body_probability", 0.5),
                      data_dir=data.get("data_dir", ""),
                      background=data.get("background", "varied"))
