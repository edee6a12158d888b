"""The TFDS builder of sketch/photo pair datasets, and `build`, which runs it.

`SketchPhotoPairs` plans the examples (scans and decodes the input once),
then writes them with TFDS's `array_record` writer, optionally with worker
processes that decode and sketch.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import importlib.util
import logging
import multiprocessing
import os
import tempfile
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from tp2p_jax.data import sketch as sketch_lib
from tp2p_jax.data.image_files import describe_error
from tp2p_jax.data.prepared.config import (DATASET_NAME, PREDEFINED_CONFIGS, TRAIN, VALIDATION,
                                           PairsConfig, is_validation, make_config)
from tp2p_jax.data.prepared.discovery import (ClassLayout, InputError, Item, SkippedFile,
                                              ab_folder_pairs, class_layout, folder_items,
                                              pix2pix_hd_items, require_dir)
from tp2p_jax.data.prepared.pairs import Pair, check_item, make_pair
from tp2p_jax.data.prepared.tfds_photos import TfdsSpec, tfds_record, tfds_spec

log = logging.getLogger("tp2p_jax")

# Work items in flight at once with an executor: enough to keep a few
# workers busy, few enough that finished pairs never pile up in memory.
_WINDOW = 16
# Below this many inputs, worker processes are not started: each one spends
# about two seconds importing its libraries, more than it would save.
_MIN_ITEMS_FOR_WORKERS = 100


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


@dataclasses.dataclass
class _Plan:
  """What the build will write: items per split, files already skipped."""
  splits: dict[str, list[Item]]
  skipped: list[SkippedFile]


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
  BUILDER_CONFIGS = list(PREDEFINED_CONFIGS)

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
    self._layout: ClassLayout | None = None
    self._tfds_builder: Any = None
    self._tfds_spec: TfdsSpec | None = None
    self._tfds_sources: dict[str, Any] = {}
    self.skipped: list[SkippedFile] = []
    # Pairs written per split and label (the classes a dataset really has).
    self.class_counts: dict[str, list[int]] = {}
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
                         f"{describe_error(e)}") from e
      self._tfds_spec = tfds_spec(config.tfds_name, self._tfds_builder.info)
      return self._tfds_spec.class_names
    root = require_dir(self._input_path)
    if config.source == "pix2pix" and ab_folder_pairs(root):
      return (root.resolve().name or "pairs",)
    self._layout = class_layout(root)
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
    splits: dict[str, list[Item]] = {TRAIN: [], VALIDATION: []}
    for item in items:
      val = is_validation(item.key, config.val_fraction, config.split_seed)
      splits[VALIDATION if val else TRAIN].append(item)
    if not splits[TRAIN]:
      # Too few examples for both splits: TFDS cannot write an empty split,
      # and training needs data more than validation does.
      splits = {TRAIN: splits[VALIDATION], VALIDATION: []}
    return _Plan(splits, skipped)

  def _file_items(self, config: PairsConfig
                  ) -> tuple[list[Item], list[SkippedFile]]:
    root = require_dir(self._input_path)
    hd_pairs = ab_folder_pairs(root) if config.source == "pix2pix" else []
    if hd_pairs:
      items, skipped = pix2pix_hd_items(root, hd_pairs)
    else:
      assert self._layout is not None
      kind = "photo" if config.source == "folder" else "ab"
      items, skipped = folder_items(root, self._layout, kind)
    work_side = config.image_size * config.sketch.supersample
    reasons = _ordered_map(check_item, ((it, work_side) for it in items),
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
        f"with network): {describe_error(error)}")

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
              f"{describe_error(e)}") from e
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

  def _tfds_items(self) -> tuple[list[Item], list[SkippedFile]]:
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
          tfds_record(record, self._tfds_spec)
          key = self._tfds_spec.key_of(record)
        except Exception as e:  # pylint: disable=broad-except
          skipped.append(SkippedFile(fallback, describe_error(e)))
          continue
        key = f"{config.tfds_name}/{split}/{key}" if key else fallback
        items.append(Item("tfds", key, label, (split, index)))
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

  # TFDS announces "Downloading and preparing dataset ..." with download
  # sizes; nothing is downloaded here, so say what happens instead.
  def _log_download_bytes(self) -> None:
    log.info("preparing sketch/photo pairs from %s (nothing is downloaded) into %s",
             self._input_path or self.builder_config.tfds_name, self.data_dir)

  def _log_download_done(self) -> None:
    log.info("prepared %s", self.data_dir)

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
                         items: list[Item]) -> Iterator[tuple[str, Pair]]:
    config = self.builder_config

    def args() -> Iterator[tuple[Any, ...]]:
      if not items or items[0].kind != "tfds":
        for item in items:
          yield item, config, None
        return
      # Records are read here, where the TFDS source lives; workers only get
      # the arrays. Items are in stored order, split by split.
      by_split: dict[str, list[Item]] = collections.defaultdict(list)
      for item in items:
        by_split[item.data[0]].append(item)
      for source_split, split_items in by_split.items():
        records = self._tfds_read(source_split,
                                  [it.data[1] for it in split_items])
        for item, (_, record) in zip(split_items, records, strict=True):
          try:
            if isinstance(record, Exception):
              raise record
            yield item, config, tfds_record(record, self._tfds_spec)
          except Exception as e:  # pylint: disable=broad-except
            yield item, config, e

    results = _ordered_map(make_pair, args(), self._workers(len(items)),
                           _WINDOW)
    for item, (example, reason) in zip(
        items, self._progress(results, len(items), f"{split} pairs"),
        strict=True):
      if example is None:
        # Passed the check but failed now (e.g. changed on disk meanwhile).
        self.skipped.append(SkippedFile(item.key, str(reason)))
        continue
      counts = self.class_counts.setdefault(split, [0] * len(self._class_names or ()))
      if 0 <= item.label < len(counts):
        counts[item.label] += 1
      yield item.key, example
    self._record_metadata()

  def _record_metadata(self) -> None:
    meta = self.info.metadata
    meta["params"] = self.builder_config.params()
    meta["input"] = str(self._input_path)
    meta["class_names"] = list(self._class_names or ())
    meta["class_counts"] = {k: list(v) for k, v in self.class_counts.items()}
    meta["skipped_files"] = [dataclasses.asdict(s) for s in
                             sorted(set(self.skipped), key=lambda s: s.file)]


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
    class_counts: pairs per label, per split ("train", "validation"); a
      folder whose class subfolders are some of the toy cats' coat names has
      all nine labels, the others with 0 pairs.
    splits: pairs per split ("train", "validation").
    seconds: wall time of the build.
  """
  dataset: str
  dataset_dir: str
  written: int
  skipped: tuple[SkippedFile, ...]
  classes: tuple[str, ...]
  class_counts: dict[str, list[int]]
  splits: dict[str, int]
  seconds: float

  def classes_without_pairs(self) -> tuple[str, ...]:
    """Labels no training pair has: a run on this data has no style for them."""
    train = self.class_counts.get(TRAIN, [0] * len(self.classes))
    return tuple(name for name, n in zip(self.classes, train) if n == 0)

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
      class_counts={k: list(v) for k, v in builder.class_counts.items()},
      splits=splits,
      seconds=time.perf_counter() - start,
  )
