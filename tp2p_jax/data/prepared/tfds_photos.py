"""Reading photos (with labels and subject masks) from TFDS image datasets.

A `TfdsSpec` says how to read one dataset: which records to keep and under
which label, which subject mask to use and which stable key to store.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from tp2p_jax.data.prepared.discovery import InputError

# The cat breeds of oxford_iiit_pet, in the order of its `label` feature.
OXFORD_PET_CAT_BREEDS: tuple[str, ...] = (
    "Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair",
    "Egyptian_Mau", "Maine_Coon", "Persian", "Ragdoll", "Russian_Blue",
    "Siamese", "Sphynx")
# Oxford-IIIT Pet trimap values: 1 pet, 2 background, 3 pet boundary.
_TRIMAP_BACKGROUND = 2


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """How to read photos from one TFDS dataset."""
  class_names: tuple[str, ...]
  # record -> label in class_names, or None to leave the record out.
  label_of: Callable[[dict[str, Any]], int | None]
  # record -> bool (H, W) subject mask, or None.
  mask_of: Callable[[dict[str, Any]], np.ndarray | None]
  # record -> stable key, or None to use split[index].
  key_of: Callable[[dict[str, Any]], str | None]


def decode_text(value: Any) -> str:
  """A TFDS Text value (bytes, np.bytes_ or already str) as str."""
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8", "replace")
  return str(value)


def tfds_spec(name: str, info: Any) -> TfdsSpec:
  """Reading rules for TFDS dataset `name` with DatasetInfo `info`."""
  base = name.split("/")[0].split(":")[0]
  features = info.features
  if base == "oxford_iiit_pet":
    breeds = list(features["label"].names)
    to_cat = {breeds.index(b): i for i, b in enumerate(OXFORD_PET_CAT_BREEDS)}

    def trimap(r: dict[str, Any]) -> np.ndarray:
      return np.asarray(r["segmentation_mask"])[..., 0] != _TRIMAP_BACKGROUND

    return TfdsSpec(OXFORD_PET_CAT_BREEDS,
                    lambda r: to_cat.get(int(r["label"])), trimap,
                    lambda r: decode_text(r["file_name"]))
  if base == "cats_vs_dogs":
    cat = list(features["label"].names).index("cat")
    return TfdsSpec(("cat",),
                    lambda r: 0 if int(r["label"]) == cat else None,
                    lambda r: None, lambda r: decode_text(r["image/filename"]))
  if "image" not in features:
    raise InputError(f"TFDS dataset {name} has no 'image' feature")
  label = features["label"] if "label" in features else None
  if isinstance(label, tfds.features.ClassLabel) and label.names:
    return TfdsSpec(tuple(label.names), lambda r: int(r["label"]),
                    lambda r: None, lambda r: None)
  return TfdsSpec((base,), lambda r: 0, lambda r: None, lambda r: None)


def tfds_record(record: dict[str, Any], spec: TfdsSpec) -> dict[str, Any]:
  """{'image': uint8 (H, W, 3) RGB (grey repeated, RGBA composited over
  white), 'mask': the spec's subject mask or None} of a decoded record."""
  image = np.asarray(record["image"])
  if image.dtype != np.uint8:
    raise ValueError(f"image dtype {image.dtype} is not uint8")
  if image.ndim == 2 or image.shape[-1] == 1:
    image = np.repeat(image.reshape(image.shape[:2])[:, :, None], 3, axis=2)
  elif image.shape[-1] == 4:
    rgba = Image.fromarray(image, "RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    image = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
  return {"image": image, "mask": spec.mask_of(record)}
