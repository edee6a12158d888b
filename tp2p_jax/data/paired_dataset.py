"""Sketch/photo pair datasets as TFDS `array_record` files (no TensorFlow).

`SketchPhotoPairs` is a TFDS `GeneratorBasedBuilder` (name
``sketch_photo_pairs``) with one `BuilderConfig` per source:

* ``folder``: a directory of photos, one subfolder per style class (a flat
  folder is one class named after it). Photos of any size and mode (RGB, L,
  LA, RGBA, P, I;16, CMYK, ...) become RGB, are centre-cropped to a square and
  resized; the sketch is made from the photo by `sketch.sketch_from_photo`.
* ``pix2pix``: either files holding A|B side by side (``direction`` AtoB: A,
  the left half, is the sketch; BtoA: B is), or pix2pixHD-style folder pairs
  (``train_A/`` + ``train_B/``, or ``A/`` + ``B/``) matched by relative path
  without extension. Sketch and photo get the same crop and resize.
* ``tfds``: any TFDS image dataset (``image`` feature) already prepared in a
  TFDS data_dir, read with ``builder.as_data_source``. ``oxford_iiit_pet`` is
  restricted to its 12 cat breeds (the labels) and its ``segmentation_mask``
  trimaps are used as cat masks, so background lines vanish;
  ``cats_vs_dogs`` keeps its cats (one class).

Features of every record:

  photo:    uint8 (S, S, 3) RGB, zlib-compressed Tensor
  sketch:   uint8 (S, S, 3), dark lines on white, zlib-compressed Tensor
  label:    ClassLabel (class names in the features and in metadata.json)
  filename: Text, the source file (relative to the input) or TFDS key

Splits are ``train`` and ``validation``: an example goes to validation when a
hash of its key (relative path) and the seed falls below ``val_fraction``, so
the split is deterministic and does not depend on file order or on the other
files. Unreadable, truncated or non-image files, and unmatched or mismatched
pix2pix pairs, are skipped and recorded with the reason (`SkippedFile`; in
``metadata.json`` under ``skipped_files``).

Folder class subfolders that are all coat style names of the toy cats
(`toycats.STYLE_NAMES`) get the toy cats' labels (all nine names, in their
order), so a real dataset and the toy cats share one label space. Top-level
folders named like splits (train/val/test) are looked through: their
subfolders are the classes.

`PairedSource` reads a prepared dataset as a grain random-access source of
the input pipeline's records; `build` prepares one (the CLI is
`tp2p_jax.data.prepare`).
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import importlib.util
import multiprocessing
import os
import pathlib
import tempfile
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

from etils import epath
import grain.python as grain
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
from tqdm import tqdm

from tp2p_jax.data import sketch as sketch_lib
from tp2p_jax.data.image_files import describe_error as _describe_error
from tp2p_jax.data.image_files import load_image
from tp2p_jax.data.image_files import pil_to_rgb  # noqa: F401  (part of this module's API)
from tp2p_jax.data.toycats import STYLE_NAMES

DATASET_NAME = "sketch_photo_pairs"
SOURCES: tuple[str, ...] = ("folder", "pix2pix", "tfds")
DIRECTIONS: tuple[str, ...] = ("AtoB", "BtoA")
TRAIN, VALIDATION = "train", "validation"

# The cat breeds of oxford_iiit_pet, in the order of its `label` feature.
OXFORD_PET_CAT_BREEDS: tuple[str, ...] = (
    "Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair",
    "Egyptian_Mau", "Maine_Coon", "Persian", "Ragdoll", "Russian_Blue",
    "Siamese", "Sphynx")
# Oxford-IIIT Pet trimap values: 1 pet, 2 background, 3 pet boundary.
_TRIMAP_BACKGROUND = 2

# Top-level folder names taken as an existing split rather than as a class.
_SPLIT_DIR_NAMES = frozenset(
    {"train", "training", "val", "valid", "validation", "test", "testing"})


class InputError(ValueError):
  """The input cannot become a dataset: missing, empty, nothing readable, or
  the output already exists."""


@dataclasses.dataclass(frozen=True)
class SkippedFile:
  """An input that did not become a pair. `file` is relative to the input
  (or a TFDS key); `reason` says why."""
  file: str
  reason: str


# --------------------------------------------------------------------------
# Configs.


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
_PREDEFINED_CONFIGS: tuple[PairsConfig, ...] = (
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
  for predefined in _PREDEFINED_CONFIGS:
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


# --------------------------------------------------------------------------
# Images.


def _centre_square(image: np.ndarray) -> tuple[slice, slice]:
  """Slices of the largest centred square of an (H, W, ...) array."""
  h, w = image.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  return slice(top, top + side), slice(left, left + side)


def _resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 (H, W, 3) -> (size, size, 3); PIL's bilinear filter averages like
  an area filter when shrinking."""
  if image.shape[:2] == (size, size):
    return np.ascontiguousarray(image)
  return np.asarray(Image.fromarray(np.ascontiguousarray(image), "RGB").resize(
      (size, size), Image.Resampling.BILINEAR))


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
  if mask.shape == (height, width):
    return mask
  img = Image.fromarray(mask.astype(np.uint8) * 255, "L")
  return np.asarray(img.resize((width, height), Image.Resampling.NEAREST)) > 127


def pair_from_photo(photo: np.ndarray, image_size: int,
                    params: sketch_lib.SketchParams = sketch_lib.SketchParams(),
                    mask: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """A photo of any shape -> (photo, sketch), both centre-cropped squares.

  Args:
    photo: uint8 (H, W, 3) RGB.
    image_size: output side S.
    params: sketcher parameters.
    mask: optional bool (H', W') subject mask (resized to (H, W)).

  Returns:
    (photo uint8 (S, S, 3), sketch uint8 (S, S, 3) dark lines on white).
    The sketch is computed from the crop at `params.supersample` x S.
  """
  rows, cols = _centre_square(photo)
  crop = photo[rows, cols]
  if mask is not None:
    mask = _resize_mask(np.asarray(mask, bool), *photo.shape[:2])[rows, cols]
  work = _resize_rgb(crop, image_size * params.supersample)
  sketch = sketch_lib.sketch_from_photo(work, params, mask=mask,
                                        image_size=image_size)
  return _resize_rgb(crop, image_size), sketch


def pair_from_sketch_and_photo(sketch: np.ndarray, photo: np.ndarray,
                               image_size: int
                               ) -> tuple[np.ndarray, np.ndarray]:
  """An existing aligned pair -> (photo, sketch), same crop and resize.

  Args:
    sketch, photo: uint8 (H, W, 3) RGB of one shape.
    image_size: output side S.

  Returns:
    (photo uint8 (S, S, 3), sketch uint8 (S, S, 3)).
  """
  rows, cols = _centre_square(photo)
  return (_resize_rgb(photo[rows, cols], image_size),
          _resize_rgb(sketch[rows, cols], image_size))


def split_ab(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Halves of an A|B image (H, W, C): (A = left, B = right), each
  (H, W // 2, C); an odd middle column belongs to neither."""
  half = image.shape[1] // 2
  return image[:, :half], image[:, image.shape[1] - half:]


# --------------------------------------------------------------------------
# Work items. Each kind has a check (decode only; the plan keeps what passes)
# and a make (the pair); both are top-level functions so that worker
# processes can run them.

Pair = dict[str, Any]
# Work items in flight at once with an executor: enough to keep a few
# workers busy, few enough that finished pairs never pile up in memory.
_WINDOW = 16
# Below this many inputs, worker processes are not started: each one spends
# about two seconds importing its libraries, more than it would save.
_MIN_ITEMS_FOR_WORKERS = 100


@dataclasses.dataclass(frozen=True)
class _Item:
  """One future example. `key` is unique, hashed for the split and stored
  as `filename`; `data` is what the worker needs."""
  kind: str
  key: str
  label: int
  data: tuple[Any, ...]


def _check_item(item: _Item, work_side: int) -> str | None:
  """Decodes the item's files; returns the reason it is unusable, or None."""
  try:
    if item.kind == "photo":
      load_image(item.data[0], work_side)
    elif item.kind == "ab":
      image = load_image(item.data[0])
      if image.shape[1] < 2:
        return f"an A|B file needs a width >= 2, got {image.shape[1]}"
    elif item.kind == "a_b":
      a, b = load_image(item.data[0]), load_image(item.data[1])
      if a.shape != b.shape:
        return (f"A is {a.shape[1]}x{a.shape[0]} but B is "
                f"{b.shape[1]}x{b.shape[0]} (width x height)")
  except Exception as e:  # pylint: disable=broad-except
    return _describe_error(e)
  return None


def _make_pair(item: _Item, config: PairsConfig,
               record: dict[str, Any] | Exception | None = None
               ) -> tuple[Pair | None, str | None]:
  """(example, None) for a usable item, else (None, reason). `record` is
  the decoded TFDS record of a "tfds" item (or the error reading it)."""
  s, params = config.image_size, config.sketch
  try:
    if item.kind == "photo":
      photo, sketch = pair_from_photo(
          load_image(item.data[0], s * params.supersample), s, params)
    elif item.kind == "tfds":
      if isinstance(record, Exception):
        raise record
      assert record is not None
      photo, sketch = pair_from_photo(record["image"], s, params,
                                      record.get("mask"))
    else:
      if item.kind == "ab":
        a, b = split_ab(load_image(item.data[0]))
      else:
        a, b = load_image(item.data[0]), load_image(item.data[1])
        if a.shape != b.shape:
          return None, "A and B sizes differ"
      sketch_half, photo_half = (a, b) if config.direction == "AtoB" else (b, a)
      photo, sketch = pair_from_sketch_and_photo(sketch_half, photo_half, s)
  except Exception as e:  # pylint: disable=broad-except
    return None, _describe_error(e)
  return {"photo": photo, "sketch": sketch, "label": item.label,
          "filename": item.key}, None


def _ordered_map(fn: Callable[..., Any], args: Iterable[tuple[Any, ...]],
                 executor: concurrent.futures.Executor | None,
                 window: int) -> Iterator[Any]:
  """fn(*a) for a in args, in order; with an executor at most `window`
  calls in flight, so results never pile up in memory."""
  if executor is None:
    for a in args:
      yield fn(*a)
    return
  pending: collections.deque[concurrent.futures.Future[Any]] = (
      collections.deque())
  for a in args:
    pending.append(executor.submit(fn, *a))
    if len(pending) >= window:
      yield pending.popleft().result()
  while pending:
    yield pending.popleft().result()


def is_validation(key: str, val_fraction: float, seed: int = 0) -> bool:
  """Whether `key` goes to the validation split: a SHA-256 of (seed, key)
  read as a uniform number in [0, 1) is below `val_fraction`."""
  digest = hashlib.sha256(f"{seed}\0{key}".encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


# --------------------------------------------------------------------------
# Scanning inputs.


def _files_under(root: pathlib.Path) -> list[pathlib.Path]:
  """Every file under `root` (recursively), sorted by relative path."""
  return sorted((p for p in root.rglob("*") if p.is_file()),
                key=lambda p: p.relative_to(root).as_posix())


def _subdirs(root: pathlib.Path) -> list[pathlib.Path]:
  return sorted((p for p in root.iterdir() if p.is_dir()),
                key=lambda p: p.name)


def _require_dir(path: str | None) -> pathlib.Path:
  if not path:
    raise InputError("no input directory given")
  root = pathlib.Path(path)
  if not root.exists():
    raise InputError(f"input directory {root} does not exist")
  if not root.is_dir():
    raise InputError(f"input {root} is not a directory")
  if not any(root.iterdir()):
    raise InputError(f"input directory {root} is empty")
  return root


@dataclasses.dataclass(frozen=True)
class _ClassLayout:
  """Where the files of each class are. `class_dirs[i]` lists the folders of
  class label i; `loose` are files outside every class folder."""
  names: tuple[str, ...]
  class_dirs: tuple[tuple[pathlib.Path, ...], ...]
  loose: tuple[pathlib.Path, ...]


def _class_layout(root: pathlib.Path) -> _ClassLayout:
  """Classes of a folder input: its subfolders (looking through top-level
  split folders), or the folder itself as one class when it has none."""
  top = _subdirs(root)
  bases = top if top and all(d.name.lower() in _SPLIT_DIR_NAMES
                             for d in top) else [root]
  # Files next to the split folders belong to no split and no class.
  loose = ([p for p in sorted(root.iterdir()) if p.is_file()]
           if bases != [root] else [])
  by_name: dict[str, list[pathlib.Path]] = collections.defaultdict(list)
  for base in bases:
    for d in _subdirs(base):
      by_name[d.name].append(d)
  if not by_name:
    return _ClassLayout((root.resolve().name or "photos",), (tuple(bases),),
                        tuple(loose))
  for base in bases:
    loose += [p for p in sorted(base.iterdir()) if p.is_file()]
  if set(by_name) <= set(STYLE_NAMES):
    names = STYLE_NAMES
  else:
    names = tuple(sorted(by_name))
  return _ClassLayout(names, tuple(tuple(by_name.get(n, ())) for n in names),
                      tuple(loose))


def _ab_folder_pairs(root: pathlib.Path
                     ) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """pix2pixHD-style (X_A, X_B) folder pairs (or (A, B)) directly in root."""
  names = {d.name: d for d in _subdirs(root)}
  pairs = []
  for name, d in sorted(names.items()):
    if name == "A" or name.endswith("_A"):
      partner = name[:-1] + "B"
      if partner in names:
        pairs.append((d, names[partner]))
  return pairs


def _relative(path: pathlib.Path, root: pathlib.Path) -> str:
  return path.relative_to(root).as_posix()


@dataclasses.dataclass
class _Plan:
  """What the build will write: items per split, files already skipped."""
  splits: dict[str, list[_Item]]
  skipped: list[SkippedFile]


def _folder_items(root: pathlib.Path, layout: _ClassLayout, kind: str
                  ) -> tuple[list[_Item], list[SkippedFile]]:
  items, skipped = [], []
  for path in layout.loose:
    skipped.append(SkippedFile(_relative(path, root),
                               "file outside the class subfolders"))
  seen: set[str] = set()
  for label, dirs in enumerate(layout.class_dirs):
    for d in dirs:
      for path in _files_under(d):
        key = _relative(path, root)
        if key not in seen:
          seen.add(key)
          items.append(_Item(kind, key, label, (str(path),)))
  return items, skipped


def _pix2pix_hd_items(root: pathlib.Path,
                      pairs: list[tuple[pathlib.Path, pathlib.Path]]
                      ) -> tuple[list[_Item], list[SkippedFile]]:
  items, skipped = [], []
  paired = {d for pair in pairs for d in pair}
  for p in sorted(root.iterdir()):
    if p not in paired:
      skipped.append(SkippedFile(
          _relative(p, root), "not inside an _A/_B folder pair"))
  for dir_a, dir_b in pairs:
    def by_stem(d: pathlib.Path,
                skipped: list[SkippedFile] = skipped) -> dict[str,
                                                            pathlib.Path]:
      out: dict[str, pathlib.Path] = {}
      for p in _files_under(d):
        stem = p.relative_to(d).with_suffix("").as_posix()
        if stem in out:
          skipped.append(SkippedFile(
              _relative(p, root),
              f"same name as {_relative(out[stem], root)} but another "
              "extension; cannot tell which one to pair"))
        else:
          out[stem] = p
      return out

    files_a, files_b = by_stem(dir_a), by_stem(dir_b)
    for stem in sorted(set(files_a) | set(files_b)):
      if stem not in files_b:
        skipped.append(SkippedFile(_relative(files_a[stem], root),
                                   f"no file named {stem}.* in {dir_b.name}/"))
      elif stem not in files_a:
        skipped.append(SkippedFile(_relative(files_b[stem], root),
                                   f"no file named {stem}.* in {dir_a.name}/"))
      else:
        items.append(_Item("a_b", _relative(files_a[stem], root), 0,
                           (str(files_a[stem]), str(files_b[stem]))))
  return items, skipped


# --------------------------------------------------------------------------
# TFDS photo sources.


@dataclasses.dataclass(frozen=True)
class _TfdsSpec:
  """How to read photos from one TFDS dataset."""
  class_names: tuple[str, ...]
  # record -> label in class_names, or None to leave the record out.
  label_of: Callable[[dict[str, Any]], int | None]
  # record -> bool (H, W) subject mask, or None.
  mask_of: Callable[[dict[str, Any]], np.ndarray | None]
  # record -> stable key, or None to use split[index].
  key_of: Callable[[dict[str, Any]], str | None]


def _text(value: Any) -> str:
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8", "replace")
  return str(value)


def _tfds_spec(name: str, info: Any) -> _TfdsSpec:
  """Reading rules for TFDS dataset `name` with DatasetInfo `info`."""
  base = name.split("/")[0].split(":")[0]
  features = info.features
  if base == "oxford_iiit_pet":
    breeds = list(features["label"].names)
    to_cat = {breeds.index(b): i for i, b in enumerate(OXFORD_PET_CAT_BREEDS)}

    def trimap(r: dict[str, Any]) -> np.ndarray:
      return np.asarray(r["segmentation_mask"])[..., 0] != _TRIMAP_BACKGROUND

    return _TfdsSpec(OXFORD_PET_CAT_BREEDS,
                     lambda r: to_cat.get(int(r["label"])), trimap,
                     lambda r: _text(r["file_name"]))
  if base == "cats_vs_dogs":
    cat = list(features["label"].names).index("cat")
    return _TfdsSpec(("cat",),
                     lambda r: 0 if int(r["label"]) == cat else None,
                     lambda r: None, lambda r: _text(r["image/filename"]))
  if "image" not in features:
    raise InputError(f"TFDS dataset {name} has no 'image' feature")
  label = features["label"] if "label" in features else None
  if isinstance(label, tfds.features.ClassLabel) and label.names:
    return _TfdsSpec(tuple(label.names), lambda r: int(r["label"]),
                     lambda r: None, lambda r: None)
  return _TfdsSpec((base,), lambda r: 0, lambda r: None, lambda r: None)


def _tfds_record(record: dict[str, Any], spec: _TfdsSpec) -> dict[str, Any]:
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


# --------------------------------------------------------------------------
# The builder.


class SketchPhotoPairs(tfds.core.GeneratorBasedBuilder):
  """Sketch/photo pairs from a folder, pix2pix data or a TFDS dataset.

  Construct with `config=make_config(...)`, `data_dir` (the TFDS data root),
  `input_path` (the folder, or the TFDS data_dir of the photo dataset),
  optionally `num_workers` (decoding and sketching processes, started only
  for inputs of at least 100 files) and `file_format="array_record"`; call
  `plan()` (optional: it checks the input early), `download_and_prepare()`
  and `close()` (stops the workers). `skipped` then lists every input that
  did not become a pair. Reading needs none of this: see `PairedSource`.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = list(_PREDEFINED_CONFIGS)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's own lookup, for builders inside a package, touches
    # `importlib_resources`, a backport that only its Python < 3.9 installs
    # pull in; the path it would return is simply this file.
    return epath.Path(__file__)

  def __init__(self, *, input_path: str | None = None, num_workers: int = 0,
               show_progress: bool = False, **kwargs: Any):
    self._input_path = input_path
    self._num_workers = num_workers
    self._executor: concurrent.futures.Executor | None = None
    self._show_progress = show_progress
    self._plan: _Plan | None = None
    self._layout: _ClassLayout | None = None
    self._tfds_builder: Any = None
    self._tfds_spec: _TfdsSpec | None = None
    self._tfds_sources: dict[str, Any] = {}
    self.skipped: list[SkippedFile] = []
    # `_info()` runs inside the base __init__ and needs the class names, so
    # the config is resolved and the input looked at first.
    config = kwargs.get("config")
    if isinstance(config, str):
      config = self.builder_configs[config]
    building = config is not None and (input_path is not None
                                       or config.source == "tfds")
    self._class_names = self._discover_classes(config) if building else None
    super().__init__(**kwargs)

  # ---- info

  def _discover_classes(self, config: PairsConfig) -> tuple[str, ...]:
    config.validate()
    if config.source == "tfds":
      try:
        self._tfds_builder = tfds.builder(config.tfds_name,
                                          data_dir=self._input_path or None)
      except Exception as e:  # pylint: disable=broad-except
        raise InputError(f"cannot load TFDS dataset {config.tfds_name}: "
                         f"{_describe_error(e)}") from e
      self._tfds_spec = _tfds_spec(config.tfds_name, self._tfds_builder.info)
      return self._tfds_spec.class_names
    root = _require_dir(self._input_path)
    if config.source == "pix2pix" and _ab_folder_pairs(root):
      return (root.resolve().name or "pairs",)
    self._layout = _class_layout(root)
    return self._layout.names

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    image = (size, size, 3)
    label = (tfds.features.ClassLabel(names=list(self._class_names))
             if self._class_names else tfds.features.ClassLabel())
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Paired sketches (dark lines on white) and photos, uint8 "
            f"{size}x{size}x3 RGB. " + (self.builder_config.description or "")),
        features=tfds.features.FeaturesDict({
            "photo": tfds.features.Tensor(shape=image, dtype=np.uint8,
                                          encoding="zlib"),
            "sketch": tfds.features.Tensor(shape=image, dtype=np.uint8,
                                           encoding="zlib"),
            "label": label,
            "filename": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  # ---- planning

  def plan(self) -> dict[str, int]:
    """Scans and decodes the input once; returns the planned split sizes.

    Raises:
      InputError: the input is missing or empty, or nothing in it is usable.
    """
    if self._plan is None:
      self._plan = self._make_plan()
    return {k: len(v) for k, v in self._plan.splits.items()}

  def _make_plan(self) -> _Plan:
    config = self.builder_config
    if self._class_names is None:
      raise InputError("building a folder or pix2pix dataset needs input_path")
    if config.source == "tfds":
      items, skipped = self._tfds_items()
    else:
      items, skipped = self._file_items(config)
    if not items:
      detail = "" if not skipped else (
          f"; {len(skipped)} skipped, e.g. {skipped[0].file}: "
          f"{skipped[0].reason}")
      raise InputError(f"no usable images in {self._input_path}{detail}")
    splits: dict[str, list[_Item]] = {TRAIN: [], VALIDATION: []}
    for item in items:
      val = is_validation(item.key, config.val_fraction, config.split_seed)
      splits[VALIDATION if val else TRAIN].append(item)
    if not splits[TRAIN]:
      # Too few examples for both splits: TFDS cannot write an empty split,
      # and training needs data more than validation does.
      splits = {TRAIN: splits[VALIDATION], VALIDATION: []}
    return _Plan(splits, skipped)

  def _file_items(self, config: PairsConfig
                  ) -> tuple[list[_Item], list[SkippedFile]]:
    root = _require_dir(self._input_path)
    hd_pairs = _ab_folder_pairs(root) if config.source == "pix2pix" else []
    if hd_pairs:
      items, skipped = _pix2pix_hd_items(root, hd_pairs)
    else:
      assert self._layout is not None
      kind = "photo" if config.source == "folder" else "ab"
      items, skipped = _folder_items(root, self._layout, kind)
    work_side = config.image_size * config.sketch.supersample
    reasons = _ordered_map(_check_item, ((it, work_side) for it in items),
                           self._workers(len(items)), _WINDOW)
    usable = []
    for item, reason in zip(
        items, self._progress(reasons, len(items), "checking inputs"),
        strict=True):
      if reason is None:
        usable.append(item)
      else:
        skipped.append(SkippedFile(item.key, reason))
    return usable, sorted(skipped, key=lambda s: s.file)

  def _tfds_cannot_read(self, split: str, error: BaseException) -> InputError:
    name = self.builder_config.tfds_name
    return InputError(
        f"cannot read split {split!r} of TFDS dataset {name} in "
        f"{self._input_path or 'the default TFDS data_dir'}; prepare it "
        f"there first (e.g. `tfds build {name} --data_dir=...` on a machine "
        f"with network): {_describe_error(error)}")

  def _tfds_source(self, split: str) -> Any | None:
    """The split's random-access source, or None when it is stored in a
    format without random access (TFRecord) and TensorFlow can stream it."""
    if split not in self._tfds_sources:
      try:
        self._tfds_sources[split] = self._tfds_builder.as_data_source(split)
      except NotImplementedError as e:
        # TFDS's default format, TFRecord, has no random access; reading it
        # needs TensorFlow.
        if importlib.util.find_spec("tensorflow") is None:
          raise InputError(
              f"TFDS dataset {self.builder_config.tfds_name} is stored as "
              "TFRecord, which only TensorFlow reads; install tensorflow, or "
              "prepare it with --file_format=array_record: "
              f"{_describe_error(e)}") from e
        self._tfds_sources[split] = None
      except Exception as e:  # pylint: disable=broad-except
        raise self._tfds_cannot_read(split, e) from e
    return self._tfds_sources[split]

  def _tfds_read(self, split: str, indices: Sequence[int] | None = None
                 ) -> Iterator[tuple[int, dict[str, Any] | Exception]]:
    """(index, record) of a source split in stored order, all of them or
    those at `indices` (ascending); a record that fails to decode comes as
    its exception."""
    source = self._tfds_source(split)
    if source is not None:
      for index in range(len(source)) if indices is None else indices:
        try:
          yield index, source[index]
        except Exception as e:  # pylint: disable=broad-except
          yield index, e
      return
    wanted = None if indices is None else set(indices)
    stream = tfds.as_numpy(self._tfds_builder.as_dataset(
        split, shuffle_files=False))
    for index, record in enumerate(stream):
      if wanted is None or index in wanted:
        yield index, record

  def _tfds_items(self) -> tuple[list[_Item], list[SkippedFile]]:
    config = self.builder_config
    assert self._tfds_spec is not None
    splits = list(config.tfds_splits) or list(self._tfds_builder.info.splits)
    if not splits:
      raise InputError(
          f"TFDS dataset {config.tfds_name} lists no splits; name them "
          "(tfds_splits)")
    items, skipped = [], []
    for split in splits:
      source = self._tfds_source(split)
      known = self._tfds_builder.info.splits
      total = (len(source) if source is not None else
               known[split].num_examples if split in known else None)
      for index, record in self._progress(self._tfds_read(split), total,
                                          f"checking {split}"):
        fallback = f"{config.tfds_name}/{split}[{index}]"
        try:
          if isinstance(record, Exception):
            raise record
          label = self._tfds_spec.label_of(record)
          if label is None:
            continue  # Not a cat: the filter is the point, not a failure.
          _tfds_record(record, self._tfds_spec)
          key = self._tfds_spec.key_of(record)
        except Exception as e:  # pylint: disable=broad-except
          skipped.append(SkippedFile(fallback, _describe_error(e)))
          continue
        key = f"{config.tfds_name}/{split}/{key}" if key else fallback
        items.append(_Item("tfds", key, label, (split, index)))
    keys = collections.Counter(it.key for it in items)
    # Keys must be unique (TFDS writer, split hash); fall back to positions
    # where the dataset repeats a file name.
    items = [it if keys[it.key] == 1 else dataclasses.replace(
        it, key=f"{config.tfds_name}/{it.data[0]}[{it.data[1]}]")
             for it in items]
    return items, skipped

  # ---- generation

  def _workers(self, num_items: int) -> concurrent.futures.Executor | None:
    """The worker pool, started on first need; None: work in this process."""
    if self._executor is None and self._num_workers > 0 and (
        num_items >= _MIN_ITEMS_FOR_WORKERS):
      # Spawned rather than forked: the parent may be multithreaded (JAX,
      # grain, TFDS), and forking a threaded process can deadlock the child.
      self._executor = concurrent.futures.ProcessPoolExecutor(
          max_workers=self._num_workers,
          mp_context=multiprocessing.get_context("spawn"))
    return self._executor

  def close(self) -> None:
    """Stops the worker processes, if any were started."""
    if self._executor is not None:
      self._executor.shutdown()
      self._executor = None

  def _progress(self, iterable: Iterable[Any], total: int | None,
                desc: str) -> Iterable[Any]:
    if not self._show_progress:
      return iterable
    return tqdm(iterable, total=total, desc=desc, unit="file",
                dynamic_ncols=True, leave=False)

  def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
    del dl_manager  # Nothing is downloaded.
    self.plan()
    assert self._plan is not None
    self.skipped = list(self._plan.skipped)
    return {name: self._generate_examples(name, items)
            for name, items in self._plan.splits.items() if items}

  def _generate_examples(self, split: str,
                         items: list[_Item]) -> Iterator[tuple[str, Pair]]:
    config = self.builder_config

    def args() -> Iterator[tuple[Any, ...]]:
      if not items or items[0].kind != "tfds":
        for item in items:
          yield item, config, None
        return
      # Records are read here, where the TFDS source lives; workers only get
      # the arrays. Items are in stored order, split by split.
      by_split: dict[str, list[_Item]] = collections.defaultdict(list)
      for item in items:
        by_split[item.data[0]].append(item)
      for source_split, split_items in by_split.items():
        records = self._tfds_read(source_split,
                                  [it.data[1] for it in split_items])
        for item, (_, record) in zip(split_items, records, strict=True):
          try:
            if isinstance(record, Exception):
              raise record
            yield item, config, _tfds_record(record, self._tfds_spec)
          except Exception as e:  # pylint: disable=broad-except
            yield item, config, e

    results = _ordered_map(_make_pair, args(), self._workers(len(items)),
                           _WINDOW)
    for item, (example, reason) in zip(
        items, self._progress(results, len(items), f"{split} pairs"),
        strict=True):
      if example is None:
        # Passed the check but failed now (e.g. changed on disk meanwhile).
        self.skipped.append(SkippedFile(item.key, str(reason)))
        continue
      yield item.key, example
    self._record_metadata()

  def _record_metadata(self) -> None:
    meta = self.info.metadata
    meta["params"] = self.builder_config.params()
    meta["input"] = str(self._input_path)
    meta["class_names"] = list(self._class_names or ())
    meta["skipped_files"] = [dataclasses.asdict(s) for s in
                             sorted(set(self.skipped), key=lambda s: s.file)]


# --------------------------------------------------------------------------
# Building.


@dataclasses.dataclass(frozen=True)
class BuildResult:
  """What `build` wrote.

  Attributes:
    dataset: "sketch_photo_pairs/CONFIG:VERSION".
    dataset_dir: the prepared dataset (for `PairedSource`,
      `tfds.builder_from_directory`).
    written: number of pairs written (all splits).
    skipped: inputs that did not become pairs, with reasons.
    classes: label names, index = label.
    splits: pairs per split ("train", "validation").
    seconds: wall time of the build.
  """
  dataset: str
  dataset_dir: str
  written: int
  skipped: tuple[SkippedFile, ...]
  classes: tuple[str, ...]
  splits: dict[str, int]
  seconds: float

  @property
  def pairs_per_s(self) -> float:
    return self.written / max(self.seconds, 1e-9)


def build(source: str, input_path: str | None, data_dir: str, *,
          image_size: int = 256, direction: str = "AtoB",
          val_fraction: float = 0.06, seed: int = 0, tfds_name: str = "",
          tfds_splits: Sequence[str] = (),
          sketch_params: sketch_lib.SketchParams = sketch_lib.SketchParams(),
          overwrite: bool = False, num_workers: int = 0,
          show_progress: bool = False) -> BuildResult:
  """Prepares a sketch/photo pair dataset; the result is deterministic.

  Args:
    source: "folder", "pix2pix" or "tfds".
    input_path: the input folder; for "tfds" the TFDS data_dir holding the
      photo dataset (None: TFDS's default).
    data_dir: TFDS data root to write into; the dataset lands in
      data_dir/sketch_photo_pairs/CONFIG/VERSION.
    image_size: stored image side.
    direction: pix2pix: "AtoB" (A is the sketch) or "BtoA".
    val_fraction: expected validation fraction (hash of the key).
    seed: split hash salt.
    tfds_name: the TFDS photo dataset (tfds source; default oxford_iiit_pet).
    tfds_splits: its splits to read; () reads all.
    sketch_params: sketcher parameters.
    overwrite: replace an existing dataset with the same config.
    num_workers: processes decoding and sketching; 0 (and any input of fewer
      than 100 files) works in this process. The processes are spawned, so
      a script calling `build` with workers needs the usual
      `if __name__ == "__main__":` guard.
    show_progress: tqdm bars on stderr.

  Returns:
    A `BuildResult`.

  Raises:
    InputError: missing/empty input, nothing usable, or the dataset exists
      and `overwrite` is False.
  """
  start = time.perf_counter()
  input_path = os.path.abspath(input_path) if input_path else None
  data_dir = os.path.abspath(data_dir)
  config = make_config(source, image_size=image_size, direction=direction,
                       val_fraction=val_fraction, split_seed=seed,
                       tfds_name=tfds_name, tfds_splits=tfds_splits,
                       sketch=sketch_params)
  builder = SketchPhotoPairs(config=config, data_dir=data_dir,
                             input_path=input_path, num_workers=num_workers,
                             show_progress=show_progress,
                             file_format="array_record")
  try:
    if (builder.data_path / "dataset_info.json").exists() and not overwrite:
      raise InputError(
          f"{builder.data_path} already exists; pass overwrite=True "
          "(--overwrite) to replace it")
    builder.plan()
    with tempfile.TemporaryDirectory(prefix="sketch_photo_pairs_") as tmp:
      builder.download_and_prepare(
          download_dir=tmp,
          download_config=tfds.download.DownloadConfig(
              download_mode=tfds.download.GenerateMode.FORCE_REDOWNLOAD))
  finally:
    builder.close()
  splits = {name: 0 for name in (TRAIN, VALIDATION)}
  for name, info in builder.info.splits.items():
    splits[name] = int(info.num_examples)
  return BuildResult(
      dataset=f"{DATASET_NAME}/{config.name}:{builder.version}",
      dataset_dir=os.fspath(builder.data_path),
      written=sum(splits.values()),
      skipped=tuple(sorted(set(builder.skipped), key=lambda s: s.file)),
      classes=tuple(builder.info.features["label"].names),
      splits=splits,
      seconds=time.perf_counter() - start,
  )


# --------------------------------------------------------------------------
# Reading.


def resolve_dataset_dir(path: str | os.PathLike[str]) -> str:
  """The prepared dataset directory for `path`.

  `path` is either the dataset directory itself (it holds dataset_info.json)
  or a TFDS data root holding exactly one sketch_photo_pairs dataset.
  """
  root = pathlib.Path(path)
  if (root / "dataset_info.json").is_file():
    return os.fspath(root)
  found = sorted(root.glob(f"{DATASET_NAME}/*/*/dataset_info.json"))
  if len(found) == 1:
    return os.fspath(found[0].parent)
  if not found:
    raise FileNotFoundError(f"no {DATASET_NAME} dataset under {root}")
  raise ValueError(
      f"{len(found)} {DATASET_NAME} datasets under {root}; pick one of "
      f"{[os.fspath(f.parent) for f in found]}")


def class_names(data_dir: str | os.PathLike[str]) -> tuple[str, ...]:
  """Label names (index = label) of a prepared dataset (see
  `resolve_dataset_dir` for `data_dir`)."""
  builder = tfds.builder_from_directory(resolve_dataset_dir(data_dir))
  return tuple(builder.info.features["label"].names)


class PairedSource(grain.RandomAccessDataSource):
  """A prepared split as a source of the input pipeline's records.

  Records: {'sketch': uint8 (S, S, 3), 'photo': uint8 (S, S, 3),
  'label': int32 scalar array, 'filename': str}. Reads through
  `tfds.builder_from_directory(dir).as_data_source(split)` (array_record
  random access, no TensorFlow). Picklable (workers reopen the files) and
  with a repr that depends only on the dataset and split.
  """

  def __init__(self, data_dir: str | os.PathLike[str], split: str = TRAIN):
    self._dir = resolve_dataset_dir(data_dir)
    self._split = split
    self._source = self._open()

  def _open(self) -> Any:
    builder = tfds.builder_from_directory(self._dir)
    if self._split not in builder.info.splits:
      raise ValueError(
          f"split {self._split!r} not in {self._dir}; it has "
          f"{sorted(builder.info.splits)}")
    return builder.as_data_source(self._split)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    n = len(self._source)
    if index < 0:
      index += n
    if not 0 <= index < n:
      raise IndexError(f"index {index} out of range for {n} records")
    record = self._source[index]
    return {
        "sketch": np.asarray(record["sketch"], np.uint8),
        "photo": np.asarray(record["photo"], np.uint8),
        "label": np.asarray(record["label"], np.int32),
        "filename": _text(record["filename"]),
    }

  def __getstate__(self) -> dict[str, str]:
    return {"dir": self._dir, "split": self._split}

  def __setstate__(self, state: dict[str, str]) -> None:
    self._dir, self._split = state["dir"], state["split"]
    self._source = self._open()

  def __repr__(self) -> str:
    return (f"PairedSource(data_dir={self._dir!r}, split={self._split!r}, "
            f"num_records={len(self)})")
