"""What shapes a prepared dataset: its builder config, name, splits and the
rule that assigns examples to splits."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Sequence

import tensorflow_datasets as tfds

from tp2p_jax.data import sketch as sketch_lib

DATASET_NAME = "sketch_photo_pairs"
SOURCES: tuple[str, ...] = ("folder", "pix2pix", "tfds")
DIRECTIONS: tuple[str, ...] = ("AtoB", "BtoA")
TRAIN, VALIDATION = "train", "validation"


@dataclasses.dataclass(eq=False)
class PairsConfig(tfds.core.BuilderConfig):
  """Builder config: the source kind and everything that shapes the data.

  Attributes:
    source: "folder", "pix2pix" or "tfds".
    image_size: side S of the stored square images.
    direction: pix2pix only: "AtoB" (A is the sketch) or "BtoA".
    val_fraction: expected fraction of examples in the validation split.
    split_seed: salt of the split hash; another seed gives another split.
    tfds_name: tfds only: the photo dataset's TFDS name.
    tfds_splits: tfds only: the source splits to read; () reads all of them.
    sketch: sketcher parameters (folder and tfds sources).
  """
  source: str = "folder"
  image_size: int = 256
  direction: str = "AtoB"
  val_fraction: float = 0.06
  split_seed: int = 0
  tfds_name: str = ""
  tfds_splits: tuple[str, ...] = ()
  sketch: sketch_lib.SketchParams = sketch_lib.SketchParams()

  def validate(self) -> None:
    if self.source not in SOURCES:
      raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
    if self.image_size < 16:
      raise ValueError(f"image_size must be >= 16, got {self.image_size}")
    if self.direction not in DIRECTIONS:
      raise ValueError(
          f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
    if not 0.0 <= self.val_fraction < 1.0:
      raise ValueError(
          f"val_fraction must be in [0, 1), got {self.val_fraction}")
    if self.source == "tfds" and not self.tfds_name:
      raise ValueError("the tfds source needs tfds_name")

  def params(self) -> dict[str, Any]:
    """The data-shaping fields as JSON-able values."""
    return {
        "source": self.source,
        "image_size": self.image_size,
        "direction": self.direction,
        "val_fraction": self.val_fraction,
        "split_seed": self.split_seed,
        "tfds_name": self.tfds_name,
        "tfds_splits": list(self.tfds_splits),
        "sketch": dataclasses.asdict(self.sketch),
    }


_DEFAULT_TFDS_NAME = "oxford_iiit_pet"
PREDEFINED_CONFIGS: tuple[PairsConfig, ...] = (
    PairsConfig(name="folder", source="folder",
                description="Photos in class subfolders; classical sketches."),
    PairsConfig(name="pix2pix", source="pix2pix",
                description="pix2pix A|B files or pix2pixHD _A/_B folders."),
    PairsConfig(name="tfds", source="tfds", tfds_name=_DEFAULT_TFDS_NAME,
                description="Cats of a TFDS dataset (oxford_iiit_pet), "
                "trimap-masked classical sketches."),
)


def make_config(source: str, *, image_size: int = 256, direction: str = "AtoB",
                val_fraction: float = 0.06, split_seed: int = 0,
                tfds_name: str = "", tfds_splits: Sequence[str] = (),
                sketch: sketch_lib.SketchParams = sketch_lib.SketchParams()
                ) -> PairsConfig:
  """The config for these settings.

  The predefined config of `source` when every setting is its default (TFDS
  insists on getting that very object back), otherwise a config whose name
  lists the settings that differ, e.g. ``folder-64px-seed3``, so different
  settings never share a dataset directory.
  """
  if source == "tfds" and not tfds_name:
    tfds_name = _DEFAULT_TFDS_NAME
  config = PairsConfig(
      name=source, source=source, image_size=int(image_size),
      direction=direction, val_fraction=float(val_fraction),
      split_seed=int(split_seed), tfds_name=tfds_name if source == "tfds"
      else "", tfds_splits=tuple(tfds_splits), sketch=sketch)
  config.validate()
  for predefined in PREDEFINED_CONFIGS:
    if (predefined.source == source
        and predefined.params() == config.params()):
      return predefined
  parts = [source]
  if source == "tfds" and tfds_name != _DEFAULT_TFDS_NAME:
    parts.append(tfds_name.replace("/", ".").replace(":", "."))
  if config.image_size != 256:
    parts.append(f"{config.image_size}px")
  if source == "pix2pix" and direction != "AtoB":
    parts.append(direction)
  if config.val_fraction != 0.06:
    parts.append(f"val{config.val_fraction:g}")
  if config.split_seed != 0:
    parts.append(f"seed{config.split_seed}")
  if config.tfds_splits:
    parts.append("splits." + "+".join(config.tfds_splits))
  if sketch != sketch_lib.SketchParams():
    digest = hashlib.sha256(repr(sketch).encode()).hexdigest()[:8]
    parts.append(f"sketch{digest}")
  config.name = "-".join(parts)
  config.description = f"Custom settings: {config.params()}"
  return config


def is_validation(key: str, val_fraction: float, seed: int = 0) -> bool:
  """Whether `key` goes to the validation split: a SHA-256 of (seed, key)
  read as a uniform number in [0, 1) is below `val_fraction`."""
  digest = hashlib.sha256(f"{seed}\0{key}".encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction
