"""Tests of the grain input pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tp2p_jax.data import pipeline
from tp2p_jax.data.toycats import ToyCatsSource


class _NoiseSource:
  """Record i: random uint8 noise with sketch == photo and label == i.

  Noise makes every flip and crop visible, and the label identifies the
  record.
  """

  def __init__(self, n: int, size: int, channels: int = 3):
    self.n, self.size, self.channels = n, size, channels

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> dict:
    img = np.random.default_rng(int(i)).integers(
        0, 256, (self.size, self.size, self.channels), dtype=np.uint8)
    if self.channels == 1:
      img = img[..., 0]
    return {"sketch": img, "photo": img.copy(), "label": int(i),
            "name": f"record-{i}"}

  def __repr__(self) -> str:
    return f"_NoiseSource({self.n}, {self.size}, {self.channels})"


class _NoReprSource(_NoiseSource):
  __repr__ = object.__repr__


def _take(it, n: int) -> list[dict]:
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a: list[dict], b: list[dict]) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def _iterator(source, **kwargs):
  args = dict(global_batch_size=4, image_size=32, seed=0, augment=True,
              shard_index=0, shard_count=1)
  args.update(kwargs)
  return pipeline.make_dataset_iterator(source, **args)


def test_batch_format():
  it = _iterator(ToyCatsSource(16, 32), global_batch_size=4)
  for batch in _take(it, 3):
    assert set(batch) == {"real_a", "real_b", "label"}
    for k in ("real_a", "real_b"):
      assert batch[k].shape == (4, 32, 32, 3)
      assert batch[k].dtype == np.float32
      assert batch[k].min() >= -1.0 and batch[k].max() <= 1.0
    assert batch["label"].shape == (4,)
    assert batch["label"].dtype == np.int32
    # Sketches are mostly white paper; photos are not.
    assert batch["real_a"].mean() > 0.6
    assert batch["real_b"].mean() < 0.6


def test_deterministic_under_seed():
  src = ToyCatsSource(16, 32)
  _assert_batches_equal(_take(_iterator(src, seed=7), 3),
                        _take(_iterator(src, seed=7), 3))


def test_different_seeds_differ():
  src = _NoiseSource(64, 16)
  a = _take(_iterator(src, seed=1, image_size=16), 2)
  b = _take(_iterator(src, seed=2, image_size=16), 2)
  assert not all(np.array_equal(x["label"], y["label"]) for x, y in zip(a, b))


def test_no_shuffle_keeps_source_order_and_epochs_repeat():
  it = _iterator(_NoiseSource(6, 8), image_size=8, augment=False,
                 shuffle=False, global_batch_size=4)
  labels = np.concatenate([b["label"] for b in _take(it, 3)])
  np.testing.assert_array_equal(labels, [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5])


def test_shuffle_visits_every_record_once_per_epoch():
  it = _iterator(_NoiseSource(12, 8), image_size=8, seed=3, num_epochs=2,
                 global_batch_size=4)
  labels = [b["label"] for b in it]
  assert len(labels) == 6
  first, second = np.concatenate(labels[:3]), np.concatenate(labels[3:])
  assert sorted(first) == list(range(12)) == sorted(second)
  assert not np.array_equal(first, np.arange(12))
  assert not np.array_equal(first, second)  # reshuffled per epoch


def test_final_partial_batch():
  kept = list(_iterator(_NoiseSource(10, 8), image_size=8, num_epochs=1,
                        global_batch_size=4, drop_remainder=False))
  assert [len(b["label"]) for b in kept] == [4, 4, 2]
  dropped = list(_iterator(_NoiseSource(10, 8), image_size=8, num_epochs=1,
                           global_batch_size=4))
  assert [len(b["label"]) for b in dropped] == [4, 4]


@pytest.mark.parametrize("augment", [False, True])
def test_checkpoint_round_trip(augment: bool):
  src = ToyCatsSource(20, 32, seed=1)
  it = _iterator(src, seed=5, augment=augment)
  _take(it, 3)
  state = pipeline.iterator_state_to_json(it)
  assert isinstance(state, str)
  json.loads(state)
  expected = _take(it, 2)

  fresh = _iterator(src, seed=5, augment=augment)
  pipeline.restore_iterator_state(fresh, state)
  _assert_batches_equal(_take(fresh, 2), expected)
  # bytes are accepted too (grain's own format).
  again = _iterator(src, seed=5, augment=augment)
  pipeline.restore_iterator_state(again, state.encode())
  _assert_batches_equal(_take(again, 2), expected)


def test_restore_rejects_a_different_pipeline():
  src = _NoiseSource(16, 8)
  it = _iterator(src, image_size=8, seed=1)
  next(it)
  state = pipeline.iterator_state_to_json(it)
  with pytest.raises(ValueError):
    pipeline.restore_iterator_state(_iterator(src, image_size=8, seed=2),
                                    state)


def test_restore_works_for_sources_without_a_repr():
  # Two instances of a class with the default repr (which embeds a memory
  # address) must still accept each other's state.
  it = _iterator(_NoReprSource(16, 8), image_size=8, seed=1)
  _take(it, 2)
  state = pipeline.iterator_state_to_json(it)
  expected = _take(it, 2)
  fresh = _iterator(_NoReprSource(16, 8), image_size=8, seed=1)
  pipeline.restore_iterator_state(fresh, state)
  _assert_batches_equal(_take(fresh, 2), expected)


def test_sharding_splits_records_and_batch():
  src = _NoiseSource(16, 8)
  seen = []
  for shard in range(2):
    it = _iterator(src, image_size=8, global_batch_size=8, seed=4,
                   num_epochs=1, shard_index=shard, shard_count=2)
    batches = list(it)
    assert all(b["label"].shape == (4,) for b in batches)
    assert all(b["real_a"].shape == (4, 8, 8, 3) for b in batches)
    seen.append(set(np.concatenate([b["label"] for b in batches]).tolist()))
  assert seen[0].isdisjoint(seen[1])
  assert seen[0] | seen[1] == set(range(16))


def test_default_sharding_is_this_process():
  it = pipeline.make_dataset_iterator(_NoiseSource(8, 8), global_batch_size=4,
                                      image_size=8, seed=0, augment=False)
  assert next(it)["label"].shape == (4,)  # one process: whole global batch
  with pytest.raises(ValueError):
    _iterator(_NoiseSource(8, 8), global_batch_size=3, shard_count=2)
  with pytest.raises(ValueError):
    pipeline.make_dataset_iterator(_NoiseSource(8, 8), global_batch_size=4,
                                   image_size=8, seed=0, augment=False,
                                   shard_index=0)


def test_augment_applies_the_same_transform_to_sketch_and_photo():
  size = 24
  src = _NoiseSource(64, size)
  plain = list(_iterator(src, image_size=size, augment=False, num_epochs=1,
                         global_batch_size=8, seed=9))
  aug = list(_iterator(src, image_size=size, augment=True, num_epochs=1,
                       global_batch_size=8, seed=9))
  kinds = {"identity": 0, "flip": 0, "crop": 0}
  for p, a in zip(plain, aug):
    np.testing.assert_array_equal(p["label"], a["label"])
    np.testing.assert_array_equal(a["real_a"], a["real_b"])
    for x, y in zip(p["real_a"], a["real_a"]):
      if np.array_equal(x, y):
        kinds["identity"] += 1
      elif np.array_equal(x[:, ::-1], y):
        kinds["flip"] += 1
      else:
        kinds["crop"] += 1
  # Half are augmented, split between flips and crops (a full-size crop is
  # an identity, hence the loose bounds).
  assert 20 <= kinds["identity"] <= 48, kinds
  assert kinds["flip"] >= 6 and kinds["crop"] >= 6, kinds


def test_crop_is_a_zoom_of_the_input():
  # A crop enlarges a sub-square: a horizontal ramp stays monotone and
  # spans a smaller range than the input.
  s = 64
  ramp = np.tile(np.linspace(0, 255, s).astype(np.uint8)[None, :, None],
                 (s, 1, 3))
  aug = pipeline.RandomFlipOrCrop(s, probability=1.0)
  zooms = 0
  for seed in range(16):
    out = aug.random_map({"sketch": ramp, "photo": ramp, "label": 0},
                         np.random.default_rng(seed))["photo"]
    row = out[s // 2, :, 0].astype(int)
    if row[0] > row[-1]:
      np.testing.assert_array_equal(out, ramp[:, ::-1])
    else:
      assert np.all(np.diff(row) >= 0)
      zooms += row[-1] - row[0] < 250
  assert zooms > 0


def test_resizes_and_converts_source_images():
  it = _iterator(_NoiseSource(8, 48, channels=1), image_size=32,
                 augment=False)
  batch = next(it)
  assert batch["real_a"].shape == (4, 32, 32, 3)
  np.testing.assert_array_equal(batch["real_a"][..., 0],
                                batch["real_a"][..., 2])


def test_to_model_inputs_range():
  batch = {"sketch": np.array([[[[0, 255, 128]]]], np.uint8),
           "photo": np.array([[[[255, 0, 0]]]], np.uint8),
           "label": np.array([3])}
  out = pipeline.to_model_inputs(batch)
  np.testing.assert_allclose(out["real_a"][0, 0, 0], [-1.0, 1.0, 128 / 127.5
                                                      - 1.0], atol=1e-6)
  np.testing.assert_allclose(out["real_b"][0, 0, 0], [1.0, -1.0, -1.0])
  assert out["label"].dtype == np.int32


def test_make_eval_batches():
  src = _NoiseSource(10, 16)
  batches = list(pipeline.make_eval_batches(src, batch_size=4, image_size=16))
  assert [len(b["label"]) for b in batches] == [4, 4, 2]
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]),
                                np.arange(10))
  for b in batches:
    for j, label in enumerate(b["label"]):
      ref = src[int(label)]["sketch"].astype(np.float32) / 127.5 - 1.0
      np.testing.assert_allclose(b["real_a"][j], ref, atol=1e-6)
      np.testing.assert_array_equal(b["real_a"][j], b["real_b"][j])
  limited = list(pipeline.make_eval_batches(src, batch_size=4, image_size=8,
                                            num_examples=5))
  assert [b["real_a"].shape for b in limited] == [(4, 8, 8, 3), (1, 8, 8, 3)]
  # Repeatable: a fresh call gives the same batches.
  _assert_batches_equal(
      batches, list(pipeline.make_eval_batches(src, batch_size=4,
                                               image_size=16)))


@given(
    src_h=st.integers(4, 80),
    src_w=st.integers(4, 80),
    image_size=st.integers(4, 80),
    channels=st.sampled_from([1, 3, 4]),
    seed=st.integers(0, 2**32 - 1),
)
def test_augment_output_shape_and_range(src_h: int, src_w: int,
                                        image_size: int, channels: int,
                                        seed: int):
  rng = np.random.default_rng(seed)
  lo, hi = sorted(rng.integers(0, 256, size=2).tolist())
  img = rng.integers(lo, hi + 1, (src_h, src_w, channels), dtype=np.uint8)
  record = {"sketch": img, "photo": img, "label": 2, "extra": "dropped"}
  prepared = pipeline.PrepareRecord(image_size).map(record)
  assert set(prepared) == {"sketch", "photo", "label"}
  out = pipeline.RandomFlipOrCrop(image_size, probability=1.0).random_map(
      prepared, np.random.default_rng(seed))
  for k in ("sketch", "photo"):
    assert out[k].shape == (image_size, image_size, 3)
    assert out[k].dtype == np.uint8
    # Bilinear resampling only averages: values stay within the input range.
    assert lo <= out[k].min() and out[k].max() <= hi
  np.testing.assert_array_equal(out["sketch"], out["photo"])
  assert int(out["label"]) == 2
  model_in = pipeline.to_model_inputs(
      {k: np.asarray(v)[None] for k, v in out.items()})
  assert model_in["real_a"].min() >= -1.0 and model_in["real_a"].max() <= 1.0
