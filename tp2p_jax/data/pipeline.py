"""Input pipeline (grain) shared by the toy cats and real paired datasets.

Sources are random-access (``__len__`` / ``__getitem__``) and return records

  {'sketch': uint8 (H, W, 3), 'photo': uint8 (H, W, 3), 'label': int}

(grayscale (H, W) / (H, W, 1) and RGBA images are accepted and converted to
RGB). The pipeline resizes both images to ``image_size`` if needed, optionally
augments them, batches, and maps to model inputs:

  {'real_a': float32 (b, S, S, 3) sketch in [-1, 1],
   'real_b': float32 (b, S, S, 3) photo in [-1, 1],
   'label': int32 (b,)}

Layout is NHWC throughout.
"""
from __future__ import annotations

import functools
import json
import math
from typing import Any, Callable, Iterator, Mapping, Sequence

from absl import flags
import grain.python as grain
import jax
import numpy as np
from PIL import Image

Batch = dict[str, np.ndarray]

_IMAGE_KEYS = ("sketch", "photo")


def _as_rgb_uint8(image: Any, key: str) -> np.ndarray:
  """Returns `image` as a C-contiguous uint8 (H, W, 3) array."""
  x = np.asarray(image)
  if x.dtype != np.uint8:
    raise TypeError(f"record['{key}'] must be uint8, got {x.dtype}")
  if x.ndim == 2:
    x = x[:, :, None]
  if x.ndim != 3 or x.shape[2] not in (1, 3, 4):
    raise ValueError(
        f"record['{key}'] must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4);"
        f" got shape {x.shape}")
  if x.shape[2] == 1:
    x = np.repeat(x, 3, axis=2)
  elif x.shape[2] == 4:
    # Alpha is dropped rather than composited: paired datasets store opaque
    # images, and a transparent pixel's colour is as good a guess as any.
    x = x[:, :, :3]
  return np.ascontiguousarray(x)


def resize_image(image: np.ndarray, image_size: int) -> np.ndarray:
  """Resizes uint8 (H, W, 3) to (image_size, image_size, 3), bilinearly.

  Pillow's bilinear filter widens its support when shrinking, so downscaling
  averages like an area filter instead of aliasing. Non-square inputs are
  stretched, like the reference pix2pix loader that resizes straight to the
  square load size.
  """
  if image.shape[0] == image_size and image.shape[1] == image_size:
    return image
  out = Image.fromarray(image, "RGB").resize((image_size, image_size),
                                            Image.Resampling.BILINEAR)
  return np.asarray(out)


class PrepareRecord(grain.MapTransform):
  """Validates a source record, keeps only sketch/photo/label and resizes.

  Output: {'sketch': uint8 (S, S, 3), 'photo': uint8 (S, S, 3),
  'label': int32 0-d array}. Extra record fields are dropped so that batching
  never has to stack strings or ragged arrays.
  """

  def __init__(self, image_size: int):
    if image_size <= 0:
      raise ValueError(f"image_size must be > 0, got {image_size}")
    self.image_size = int(image_size)

  def map(self, element: Mapping[str, Any]) -> dict[str, np.ndarray]:
    missing = [k for k in (*_IMAGE_KEYS, "label") if k not in element]
    if missing:
      raise KeyError(f"record is missing {missing}; has {sorted(element)}")
    out = {
        k: resize_image(_as_rgb_uint8(element[k], k), self.image_size)
        for k in _IMAGE_KEYS
    }
    out["label"] = np.asarray(element["label"], np.int32).reshape(())
    return out


class RandomFlipOrCrop(grain.RandomMapTransform):
  """With probability `probability`, a horizontal flip or a random sized crop.

  The reference release's augmentation: half of the records are left alone;
  the other half get, with equal chance, either a horizontal flip or a square
  crop of side uniform in [floor(min_crop_fraction * S), S] (230..256 at
  S = 256) at a uniformly random position, resized back to S x S. Sketch and
  photo always receive the same transform so the pair stays aligned. The
  randomness comes from grain's per-record generator, so the result is a
  deterministic function of (seed, record position).

  Input/output: {'sketch', 'photo'}: uint8 (S, S, 3); other keys pass through.
  """

  def __init__(self, image_size: int, *, probability: float = 0.5,
               min_crop_fraction: float = 0.9):
    if image_size <= 0:
      raise ValueError(f"image_size must be > 0, got {image_size}")
    if not 0.0 <= probability <= 1.0:
      raise ValueError(f"probability must be in [0, 1], got {probability}")
    if not 0.0 < min_crop_fraction <= 1.0:
      raise ValueError(
          f"min_crop_fraction must be in (0, 1], got {min_crop_fraction}")
    self.image_size = int(image_size)
    self.probability = float(probability)
    self.min_crop_fraction = float(min_crop_fraction)

  def random_map(self, element: dict[str, np.ndarray],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    # Draw every number up front so each record consumes the same amount of
    # randomness whatever branch it takes.
    apply, use_flip = rng.random() < self.probability, rng.random() < 0.5
    s = self.image_size
    side = int(rng.integers(max(1, math.floor(self.min_crop_fraction * s)),
                            s + 1))
    x0, y0 = (int(v) for v in rng.integers(0, s - side + 1, size=2))
    if not apply:
      return element
    out = dict(element)
    for k in _IMAGE_KEYS:
      img = element[k]
      if img.shape[:2] != (s, s):
        raise ValueError(
            f"RandomFlipOrCrop expects ({s}, {s}) images, got {img.shape}")
      if use_flip:
        out[k] = np.ascontiguousarray(img[:, ::-1])
      else:
        out[k] = np.asarray(Image.fromarray(img, "RGB").resize(
            (s, s), Image.Resampling.BILINEAR,
            box=(x0, y0, x0 + side, y0 + side)))
    return out


def jitter_load_size(image_size: int) -> int:
  """pix2pix's load size for a crop of `image_size`: 286 for 256, scaled
  proportionally (rounded) for other sizes, e.g. 72 for 64."""
  return int(round(image_size * 286 / 256))


class RandomJitter(grain.RandomMapTransform):
  """pix2pix's random jitter: resize to `load_size` (286 for 256), random
  `image_size` crop, horizontal mirror with probability 0.5.

  Sketch and photo get the same crop and mirror, so the pair stays aligned.
  The resize is bicubic, as pix2pix's loader. Deterministic given grain's
  per-record generator.

  Input/output: {'sketch', 'photo'}: uint8 (S, S, 3); other keys pass through.
  """

  def __init__(self, image_size: int, *, load_size: int | None = None):
    if image_size <= 0:
      raise ValueError(f"image_size must be > 0, got {image_size}")
    self.image_size = int(image_size)
    self.load_size = int(load_size) if load_size else jitter_load_size(image_size)
    if self.load_size < self.image_size:
      raise ValueError(f"load_size {self.load_size} < image_size {self.image_size}")

  def random_map(self, element: dict[str, np.ndarray],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    s, load = self.image_size, self.load_size
    x0, y0 = (int(v) for v in rng.integers(0, load - s + 1, size=2))
    mirror = rng.random() < 0.5
    out = dict(element)
    for k in _IMAGE_KEYS:
      img = Image.fromarray(element[k], "RGB").resize((load, load), Image.Resampling.BICUBIC)
      img = np.asarray(img)[y0:y0 + s, x0:x0 + s]
      out[k] = np.ascontiguousarray(img[:, ::-1] if mirror else img)
    return out


class RandomFlip(grain.RandomMapTransform):
  """Horizontal mirror of sketch and photo together with probability 0.5
  (pix2pixHD's only augmentation). uint8 (S, S, 3) in and out."""

  def random_map(self, element: dict[str, np.ndarray],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    if rng.random() >= 0.5:
      return element
    out = dict(element)
    for k in _IMAGE_KEYS:
      out[k] = np.ascontiguousarray(element[k][:, ::-1])
    return out


AUGMENTATIONS: tuple[str, ...] = ("none", "flip", "flip_or_crop", "jitter")


def augmentation(image_size: int, augment: bool | str) -> list[grain.Transformation]:
  """The augmentation transforms by name: "flip_or_crop" (or True; the
  TransPix2Pix release's `RandomFlipOrCrop`), "jitter" (pix2pix's
  `RandomJitter`), "flip" (pix2pixHD's `RandomFlip`), "none" (or False)."""
  if isinstance(augment, bool):
    mode = "flip_or_crop" if augment else "none"
  else:
    mode = augment
  if mode == "flip_or_crop":
    return [RandomFlipOrCrop(image_size)]
  if mode == "jitter":
    return [RandomJitter(image_size)]
  if mode == "flip":
    return [RandomFlip()]
  if mode == "none":
    return []
  raise ValueError(f"unknown augment {augment!r}; expected a bool or one of {AUGMENTATIONS}")


def to_model_inputs(batch: Mapping[str, np.ndarray]) -> Batch:
  """uint8 sketch/photo batch -> float32 [-1, 1] 'real_a'/'real_b' + labels.

  Args:
    batch: {'sketch', 'photo': uint8 (b, S, S, 3), 'label': int (b,)}.

  Returns:
    {'real_a': float32 (b, S, S, 3), 'real_b': float32 (b, S, S, 3),
     'label': int32 (b,)}.
  """
  scale = np.float32(1.0 / 127.5)
  return {
      "real_a": np.asarray(batch["sketch"], np.float32) * scale - 1.0,
      "real_b": np.asarray(batch["photo"], np.float32) * scale - 1.0,
      "label": np.asarray(batch["label"], np.int32),
  }


class ToModelInputs(grain.MapTransform):
  """grain wrapper of `to_model_inputs`, applied after batching."""

  def map(self, element: Mapping[str, np.ndarray]) -> Batch:
    return to_model_inputs(element)


class _StableReprSource:
  """Forwards to a source whose repr is the default `<... at 0x...>` one, or
  a plain list or tuple of records.

  grain refuses to restore an iterator state whose recorded source repr
  differs from the current one; a memory address would differ in every
  process and make every checkpoint unrestorable, and a list's repr would
  put every record's pixels into every checkpoint.
  """

  def __init__(self, source: Any):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> Any:
    return self._source[index]

  def __repr__(self) -> str:
    cls = type(self._source)
    return f"{cls.__module__}.{cls.__qualname__}(num_records={len(self)})"


def _with_stable_repr(source: Any) -> Any:
  if type(source).__repr__ is object.__repr__ or isinstance(source, (list, tuple)):
    return _StableReprSource(source)
  return source


def _shard_options(shard_index: int | None,
                   shard_count: int | None) -> grain.ShardOptions:
  if shard_index is None and shard_count is None:
    shard_index, shard_count = jax.process_index(), jax.process_count()
  elif shard_index is None or shard_count is None:
    raise ValueError("give both shard_index and shard_count, or neither")
  if shard_count <= 0 or not 0 <= shard_index < shard_count:
    raise ValueError(
        f"need 0 <= shard_index < shard_count, got {shard_index}, "
        f"{shard_count}")
  return grain.ShardOptions(shard_index=shard_index, shard_count=shard_count,
                            drop_remainder=True)


# One record stream, unsharded: plain ShardOptions rather than
# grain.NoSharding, because the sampler's repr is part of the saved state and
# one-process runs saved this one before hosts took slices of global batches.
_WHOLE_STREAM = grain.ShardOptions(shard_index=0, shard_count=1, drop_remainder=True)


class HostSliceSampler:
  """One host's rows of every global batch of a global record stream.

  `sampler` numbers the records of the whole run (one global shuffle, and
  grain's per-record augmentation generator seeded by the global position).
  grain's loader hands each of its `worker_count` workers (1 when loading in
  the main process) every `worker_count`-th index and batches them per
  worker, so worker w's k-th global batch is the stream positions
  w + W * (k * B + r), r < B. This sampler gives host `shard_index` of
  `shard_count` the rows [i * b, (i + 1) * b) of each of them (b = B / N):
  the N hosts' batches, concatenated in process order, are exactly the
  batches one host would load with the whole global batch size, augmented
  alike, whatever N is.

  Args:
    sampler: the global stream's sampler (unsharded).
    host_batch_size: b, this host's rows of each global batch.
    shard_index, shard_count: this host and the number of hosts.
    worker_count: the loader's grain worker count (0: the main process).
  """

  def __init__(self, sampler: grain.IndexSampler, *, host_batch_size: int, shard_index: int,
               shard_count: int, worker_count: int):
    self._sampler = sampler
    self._b, self._i, self._n = host_batch_size, shard_index, shard_count
    self._workers = worker_count
    self._w = max(worker_count, 1)
    # _global is increasing, so the local length is where it first reaches
    # the global stream's end.
    lo, hi = 0, len(sampler)
    while lo < hi:
      mid = (lo + hi) // 2
      if self._global(mid) < len(sampler):
        lo = mid + 1
      else:
        hi = mid
    self._len = lo

  def _global(self, index: int) -> int:
    worker, per_worker = index % self._w, index // self._w
    batch, row = divmod(per_worker, self._b)
    return worker + self._w * ((batch * self._n + self._i) * self._b + row)

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    if not 0 <= index < self._len:
      raise IndexError(f"index {index} is outside [0, {self._len})")
    record = self._sampler[self._global(index)]
    return grain.RecordMetadata(index=index, record_key=record.record_key, rng=record.rng)

  def __repr__(self) -> str:
    return (f"HostSliceSampler({self._sampler!r}, host_batch_size={self._b}, "
            f"shard_index={self._i}, shard_count={self._n}, worker_count={self._workers})")


def make_dataset_iterator(
    source: Any,
    *,
    global_batch_size: int,
    image_size: int,
    seed: int,
    augment: bool | str,
    shuffle: bool = True,
    num_epochs: int | None = None,
    worker_count: int = 0,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = True,
    read_options: grain.ReadOptions | None = None,
) -> grain.PyGrainDatasetIterator:
  """Builds the training/eval input iterator of one host.

  Args:
    source: random-access source of {'sketch', 'photo', 'label'} records (see
      the module docstring). It should have a stable repr (grain checks it on
      restore); sources with the default object repr are given one.
    global_batch_size: batch size summed over all hosts.
    image_size: output side S; records of another size are resized.
    seed: shuffling and augmentation seed, 0 <= seed < 2**32.
    augment: True / "flip_or_crop": `RandomFlipOrCrop`; "jitter": pix2pix's
      `RandomJitter`; "flip": `RandomFlip`; False / "none": no augmentation.
    shuffle: globally shuffle the records (per epoch).
    num_epochs: number of passes; None repeats forever.
    worker_count: grain worker processes; 0 processes in this process.
    shard_index: this host's shard; defaults to `jax.process_index()`.
    shard_count: number of shards; defaults to `jax.process_count()`. The
      hosts share one record stream and each takes its rows of every global
      batch (`HostSliceSampler`), so the global batches, their order and
      their augmentation do not depend on the number of hosts; one host
      reads the stream exactly as runs did before hosts were sliced.
    drop_remainder: drop a final batch smaller than the host batch.
    read_options: grain read threads/prefetch. The default uses 2 threads and
      a small buffer: rendering and decoding mostly hold the GIL, so more
      threads only queue up work, and a 500-record buffer (grain's default)
      would render hundreds of records ahead of need.

  Returns:
    A grain `DataLoader` iterator yielding
      {'real_a': float32 (b, S, S, 3) sketch in [-1, 1],
       'real_b': float32 (b, S, S, 3) photo in [-1, 1],
       'label': int32 (b,)}
    with b = global_batch_size // shard_count: rows [i * b, (i + 1) * b)
    of each global batch on shard i. It is deterministic under
    `seed` for a given `worker_count` (each grain worker assembles whole
    batches from its own slice of the record stream, so the batch
    composition depends on the worker count) and supports
    get_state()/set_state() (see `iterator_state_to_json` /
    `restore_iterator_state`).
  """
  options = _shard_options(shard_index, shard_count)
  if global_batch_size <= 0 or global_batch_size % options.shard_count:
    raise ValueError(
        f"global_batch_size {global_batch_size} must be a positive multiple "
        f"of the shard count {options.shard_count}")
  if not 0 <= seed < 2**32:
    raise ValueError(f"seed must be in [0, 2**32), got {seed}")
  batch_size = global_batch_size // options.shard_count
  if len(source) < options.shard_count:
    raise ValueError(
        f"source has {len(source)} records, fewer than the "
        f"{options.shard_count} shards")
  sampler: Any = grain.IndexSampler(
      num_records=len(source),
      shard_options=_WHOLE_STREAM,
      shuffle=shuffle,
      num_epochs=num_epochs,
      # Also needed without shuffling: it seeds the per-record augmentation
      # generators.
      seed=int(seed),
  )
  if options.shard_count > 1:
    sampler = HostSliceSampler(sampler, host_batch_size=batch_size,
                               shard_index=options.shard_index,
                               shard_count=options.shard_count, worker_count=worker_count)
  operations: list[grain.Transformation] = [PrepareRecord(image_size)]
  operations += augmentation(image_size, augment)
  operations += [
      grain.Batch(batch_size=batch_size, drop_remainder=drop_remainder),
      ToModelInputs(),
  ]
  if worker_count > 0 and not flags.FLAGS.is_parsed():
    # grain reads one of its absl flags when it starts worker processes, and
    # absl refuses to read flags before they are parsed. Outside an absl app
    # nothing parses them, so settle for the defaults (a later app.run still
    # parses argv normally).
    flags.FLAGS.mark_as_parsed()
  if read_options is None:
    read_options = grain.ReadOptions(num_threads=2,
                                     prefetch_buffer_size=max(4, batch_size))
  loader = grain.DataLoader(
      data_source=_with_stable_repr(source),
      sampler=sampler,
      operations=operations,
      worker_count=worker_count,
      # The sampler has already picked this host's records.
      shard_options=_WHOLE_STREAM,
      read_options=read_options,
  )
  return iter(loader)


def iterator_state_to_json(it: grain.PyGrainDatasetIterator) -> str:
  """The iterator's position as a JSON string (grain's state is UTF-8 JSON
  bytes), e.g. for storing inside a checkpoint."""
  state = it.get_state()
  if isinstance(state, (bytes, bytearray)):
    state = bytes(state).decode("utf-8")
  # Round-trip through json so a non-JSON state fails here, at save time,
  # rather than at restore time.
  return json.dumps(json.loads(state))


def restore_iterator_state(it: grain.PyGrainDatasetIterator,
                           state: str | bytes) -> None:
  """Moves `it` to the position saved by `iterator_state_to_json`.

  `it` must come from `make_dataset_iterator` with the same source, sampler
  settings (seed, shuffle, epochs, sharding) and worker count; grain raises
  a ValueError otherwise.
  """
  if isinstance(state, str):
    state = state.encode("utf-8")
  it.set_state(bytes(state))


_PROCESS_STATES = "process_iterator_states"


class IteratorStateError(ValueError):
  """A saved input position that this run's processes cannot take up."""


def process_states_to_json(states: Sequence[str]) -> str:
  """Every process's input position (`iterator_state_to_json` of each, in
  process order) as one JSON text: a lone process's state unchanged (what
  one-process runs have always saved), else
  {"process_iterator_states": [state_0, ..., state_{N-1}]}."""
  if not states:
    raise ValueError("no iterator states")
  if len(states) == 1:
    return states[0]
  return json.dumps({_PROCESS_STATES: [json.loads(s) for s in states]})


def process_state_from_json(saved: str, process_index: int, process_count: int) -> str:
  """Process `process_index`'s position in text from `process_states_to_json`
  (or a checkpoint's single-process state).

  Raises:
    IteratorStateError: the text was saved by another number of processes
      (each process's position names its own slice of the batches).
  """
  table = json.loads(saved)
  states = table[_PROCESS_STATES] if _PROCESS_STATES in table else [table]
  if len(states) != process_count:
    raise IteratorStateError(
        f"the input position was saved by {len(states)} process(es), and this run has "
        f"{process_count}; resume it with {len(states)}")
  return json.dumps(states[process_index])


def make_eval_batches(source: Any, *, batch_size: int, image_size: int,
                      num_examples: int | None = None) -> Iterator[Batch]:
  """Yields the first `num_examples` records (all if None) in source order.

  No shuffling, augmentation or sharding; the final partial batch is kept.
  Batches have the same format as `make_dataset_iterator`'s.
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be > 0, got {batch_size}")
  n = len(source) if num_examples is None else min(int(num_examples),
                                                   len(source))
  for start in range(0, n, batch_size):
    yield examples_at(source, range(start, min(start + batch_size, n)),
                      image_size=image_size)


def examples_at(source: Any, indices: Sequence[int], *, image_size: int) -> Batch:
  """The records at `indices` (in that order, repeats allowed) as one
  batch in `make_eval_batches`'s format."""
  prepare = PrepareRecord(image_size)
  records = [prepare.map(source[int(i)]) for i in indices]
  return to_model_inputs({k: np.stack([r[k] for r in records]) for k in records[0]})


def first_examples(source: Any, *, num_examples: int, image_size: int
                   ) -> Callable[[], Batch]:
  """`() -> batch` of the first `num_examples` records in source order (as
  `make_eval_batches`), read on the first call and kept: the fixed rows of
  a run's sample grids, read only once a grid is due."""
  @functools.cache
  def batch() -> Batch:
    return next(make_eval_batches(source, batch_size=num_examples, image_size=image_size,
                                  num_examples=num_examples))
  return batch
