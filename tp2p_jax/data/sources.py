"""Data sources by name (`config.data.source`): `SOURCES`, a
`tp2p_jax.registry.Registry` of `DataSource`s.

Built in: "toycats" (procedural, paired and unpaired), "prepared" (a
dataset made by `tp2p prepare`, paired) and "folders" (CycleGAN's
trainA/trainB layout, unpaired). A new source registers the same way
(README, "Adding a dataset"):

  sources.SOURCES.register("my_pairs", sources.DataSource(paired=my_pairs))

A source's functions take the config's `data` section (an ml_collections
ConfigDict or a run's saved config: read fields with `.get` so that runs
saved before a field existed load) and return (train, held-out)
random-access sources of records {"sketch", "photo": uint8 (H, W, 3),
"label": int32} (paired) or the same layout with A in "sketch" and B in
"photo" (unpaired); the pipeline resizes to the config's image size.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

from tp2p_jax.core.storage import local_data_dir
from tp2p_jax.data.toycats import STYLE_NAMES, ToyCatsSource
from tp2p_jax.registry import Registry

log = logging.getLogger("tp2p_jax.data")

# Added to the run seed for the held-out toy cats: a different seed gives
# independent random streams, so no held-out cat repeats a training cat.
EVAL_SEED_OFFSET = 1_000_003

Make = Callable[[Any, int, int], tuple[Any, Any]]  # (data, image_size, seed)


@dataclasses.dataclass(frozen=True)
class DataSource:
  """An origin of training images.

  Attributes:
    paired: `paired(data, image_size, seed) -> (train, held_out)` of
      sketch/photo pairs, or None if the source has no pairs.
    unpaired: the same for two unpaired domains (CycleGAN), or None.
    class_names: `class_names(data) -> names`, index = label (the styles a
      style encoder learns); default one class.
  """
  paired: Make | None = None
  unpaired: Make | None = None
  class_names: Callable[[Any], tuple[str, ...]] = lambda data: ("all",)


SOURCES: Registry[DataSource] = Registry("data source")


def toycats_sources(*, num_train: int, num_eval: int, image_size: int, seed: int,
                    body_probability: float, background: str = "varied"
                    ) -> tuple[ToyCatsSource, ToyCatsSource]:
  """(train, held-out) procedural toy-cat sources rendered at `image_size`."""
  train = ToyCatsSource(num_train, image_size, seed=seed, body_probability=body_probability,
                        background=background)
  held_out = ToyCatsSource(num_eval, image_size, seed=seed + EVAL_SEED_OFFSET,
                           body_probability=body_probability, background=background)
  return train, held_out


def _toycats(data: Any, image_size: int, seed: int) -> tuple[ToyCatsSource, ToyCatsSource]:
  return toycats_sources(num_train=data.get("num_train", 0), num_eval=data.get("num_eval", 0),
                         image_size=image_size, seed=seed,
                         body_probability=data.get("body_probability", 0.5),
                         background=data.get("background", "varied"))


def _toycats_unpaired(data: Any, image_size: int, seed: int) -> tuple[Any, Any]:
  from tp2p_jax.data.unpaired import toycats_unpaired
  return toycats_unpaired(*_toycats(data, image_size, seed), seed=seed)


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


def _prepared_class_names(data: Any) -> tuple[str, ...]:
  from tp2p_jax.data.prepared import class_names as prepared_class_names
  return prepared_class_names(local_data_dir(data.get("data_dir", "")))


def _folders(data: Any, image_size: int, seed: int) -> tuple[Any, Any]:
  del image_size  # the pipeline resizes
  from tp2p_jax.data.unpaired import folder_sources
  data_dir = data.get("data_dir", "")
  return folder_sources(local_data_dir(data_dir) if data_dir else "", seed=seed)


SOURCES.register("toycats", DataSource(paired=_toycats, unpaired=_toycats_unpaired,
                                       class_names=lambda data: STYLE_NAMES))
SOURCES.register("prepared", DataSource(
    paired=lambda data, image_size, seed: prepared_sources(data.get("data_dir", "")),
    class_names=_prepared_class_names))
SOURCES.register("folders", DataSource(unpaired=_folders))


def class_names(data: Any) -> tuple[str, ...]:
  """Label names of the config's `data` section's source, index = label."""
  return tuple(SOURCES.get(data.source).class_names(data))


def sources_from_config(data: Any, *, image_size: int, seed: int) -> tuple[Any, Any]:
  """(train, held-out) paired sources of the config's `data` section."""
  source = SOURCES.get(data.source)
  if source.paired is None:
    raise ValueError(f"data source {data.source!r} has no sketch/photo pairs (it gives two "
                     "unpaired domains, for method 'cyclegan')")
  return source.paired(data, image_size, seed)


def unpaired_sources_from_config(data: Any, *, image_size: int, seed: int
                                 ) -> tuple[Any, Any]:
  """(train, held-out) unpaired two-domain sources of the `data` section."""
  source = SOURCES.get(data.source)
  if source.unpaired is None:
    raise ValueError(f"data source {data.source!r} has no unpaired domains (use 'toycats' or "
                     "'folders', or register one with `unpaired`)")
  return source.unpaired(data, image_size, seed)
