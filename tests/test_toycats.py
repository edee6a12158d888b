"""Tests of the procedural toy-cat renderer."""
from __future__ import annotations

import numpy as np
import pytest

from tp2p_jax.data.toycats import (NUM_STYLES, STYLE_NAMES, ToyCatsSource,
                                   render_example)
from tp2p_jax.data.toycats.geometry import sample_geometry
from tp2p_jax.data.toycats.source import _GEOMETRY_STREAM, _stream


def _dark(sketch: np.ndarray) -> np.ndarray:
  return sketch[..., 0] < 128


def test_style_names():
  assert NUM_STYLES == 9
  assert STYLE_NAMES == ("black", "black-white", "gray", "siberian", "siamese",
                         "ginger", "ginger-white", "white", "other")


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_shapes_and_dtypes(size: int):
  ex = render_example(5, size)
  assert set(ex) == {"sketch", "photo", "label"}
  for key in ("sketch", "photo"):
    assert ex[key].shape == (size, size, 3)
    assert ex[key].dtype == np.uint8
  assert ex["label"].dtype == np.int32
  assert ex["label"].shape == ()
  assert 0 <= int(ex["label"]) < NUM_STYLES


def test_deterministic_and_index_dependent():
  a, b = render_example(3, 64), render_example(3, 64)
  for key in ("sketch", "photo", "label"):
    np.testing.assert_array_equal(a[key], b[key])
  c = render_example(4, 64)
  assert not np.array_equal(a["sketch"], c["sketch"])
  assert not np.array_equal(a["photo"], c["photo"])


def test_seed_changes_examples():
  a, b = render_example(3, 48, seed=0), render_example(3, 48, seed=1)
  assert not np.array_equal(a["sketch"], b["sketch"])
  assert not np.array_equal(a["photo"], b["photo"])


def test_unforced_label_equals_forced_render():
  # Forcing the drawn label must reproduce the example exactly: the label is
  # the only thing `style` replaces.
  for i in range(6):
    ex = render_example(i, 40)
    forced = render_example(i, 40, style=int(ex["label"]))
    for key in ("sketch", "photo", "label"):
      np.testing.assert_array_equal(ex[key], forced[key])


def test_labels_roughly_uniform():
  n = 270
  labels = np.array([int(render_example(i, 16)["label"]) for i in range(n)])
  counts = np.bincount(labels, minlength=NUM_STYLES)
  assert counts.shape == (NUM_STYLES,)
  expected = n / NUM_STYLES
  assert counts.min() >= 0.4 * expected, counts
  assert counts.max() <= 1.8 * expected, counts


@pytest.mark.parametrize("size", [64, 128])
def test_sketch_is_thin_dark_lines_on_white(size: int):
  for i in range(12):
    sk = render_example(i, size)["sketch"]
    # Grayscale drawing.
    np.testing.assert_array_equal(sk[..., 0], sk[..., 1])
    np.testing.assert_array_equal(sk[..., 0], sk[..., 2])
    white = (sk[..., 0] > 230).mean()
    dark = _dark(sk)
    assert white > 0.75, (i, white)
    assert 0.005 < dark.mean() < 0.12, (i, dark.mean())
    # Thin lines: almost no dark pixel has an all-dark 3x3 neighbourhood.
    core = dark[1:-1, 1:-1].copy()
    for dy in (-1, 0, 1):
      for dx in (-1, 0, 1):
        core &= dark[1 + dy:size - 1 + dy, 1 + dx:size - 1 + dx]
    assert core.sum() <= 0.1 * dark.sum(), (i, core.sum(), dark.sum())


def test_sketch_identical_across_styles_while_photos_differ():
  for i in (0, 1, 2, 7):
    exs = [render_example(i, 48, style=s) for s in range(NUM_STYLES)]
    for ex in exs[1:]:
      np.testing.assert_array_equal(exs[0]["sketch"], ex["sketch"])
    photos = [ex["photo"] for ex in exs]
    for a in range(NUM_STYLES):
      assert int(exs[a]["label"]) == a
      for b in range(a + 1, NUM_STYLES):
        assert not np.array_equal(photos[a], photos[b]), (i, a, b)


def test_background_does_not_depend_on_style():
  # Away from the cat, forcing another coat changes no pixel.
  for i in range(4):
    black = render_example(i, 48, style=0)["photo"].astype(int)
    white = render_example(i, 48, style=7)["photo"].astype(int)
    same = (np.abs(black - white).sum(-1) == 0).mean()
    assert 0.2 < same < 0.98, (i, same)


def _coat_features(num: int, size: int) -> dict[int, np.ndarray]:
  """(num, 6) mean and std colour of the fur region per style.

  The fur region is where the black and the white coat of the same cat
  differ: geometry and background are shared by the two renders.
  """
  feats: dict[int, list[np.ndarray]] = {s: [] for s in range(NUM_STYLES)}
  for i in range(num):
    photos = [render_example(i, size, style=s)["photo"].astype(np.float32)
              for s in range(NUM_STYLES)]
    region = np.abs(photos[0] - photos[7]).sum(-1) > 150
    assert region.mean() > 0.03
    for s in range(NUM_STYLES):
      px = photos[s][region]
      feats[s].append(np.concatenate([px.mean(0), px.std(0)]))
  return {s: np.stack(f) for s, f in feats.items()}


def test_class_colours_are_separable():
  feats = _coat_features(8, 40)
  mean_rgb = {s: f[:, :3].mean(0) for s, f in feats.items()}
  lum = {s: float(v.mean()) for s, v in mean_rgb.items()}
  idx = {name: i for i, name in enumerate(STYLE_NAMES)}
  assert lum[idx["black"]] < 70
  assert lum[idx["white"]] > 190
  assert lum[idx["black"]] + 40 < lum[idx["gray"]] < lum[idx["white"]] - 40
  r, g, b = mean_rgb[idx["ginger"]]
  assert r - b > 90 and r > g > b
  r, g, b = mean_rgb[idx["gray"]]
  assert abs(r - b) < 25  # no warm cast on gray
  r, g, b = mean_rgb[idx["siberian"]]
  assert r > b + 15  # brownish, unlike gray
  # Patched coats are more varied inside the fur than their solid versions.
  std = {s: float(f[:, 3:].mean()) for s, f in feats.items()}
  assert std[idx["black-white"]] > std[idx["black"]] + 20
  assert std[idx["ginger-white"]] > std[idx["ginger"]] + 10
  # Every pair of classes has clearly different average features, and a
  # nearest-centroid rule on them mostly recovers the class.
  centroids = np.stack([feats[s].mean(0) for s in range(NUM_STYLES)])
  dist = np.linalg.norm(centroids[:, None] - centroids[None], axis=-1)
  off_diag = dist[~np.eye(NUM_STYLES, dtype=bool)]
  assert off_diag.min() > 30, np.round(dist)
  x = np.concatenate([feats[s] for s in range(NUM_STYLES)])
  y = np.repeat(np.arange(NUM_STYLES), len(feats[0]))
  pred = np.argmin(((x[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
  assert (pred == y).mean() > 0.8


def test_body_probability_controls_bodies():
  def has_body(p: float, i: int) -> bool:
    rng = _stream(0, i, _GEOMETRY_STREAM)
    return sample_geometry(rng, p).body is not None

  assert not any(has_body(0.0, i) for i in range(20))
  assert all(has_body(1.0, i) for i in range(20))
  frac = np.mean([has_body(0.5, i) for i in range(200)])
  assert 0.35 < frac < 0.65
  # The body shows up in the drawing.
  a = render_example(1, 48, body_probability=0.0)["sketch"]
  b = render_example(1, 48, body_probability=1.0)["sketch"]
  assert not np.array_equal(a, b)


def test_cat_stays_mostly_in_frame():
  for i in range(10):
    dark = _dark(render_example(i, 64)["sketch"])
    # The border may be crossed by whisker tips at most.
    border = np.concatenate([dark[0], dark[-1], dark[:, 0], dark[:, -1]])
    assert border.sum() <= 6, (i, border.sum())


def test_source():
  src = ToyCatsSource(5, 32, seed=2, body_probability=0.3)
  assert len(src) == 5
  ex = src[3]
  ref = render_example(3, 32, seed=2, body_probability=0.3)
  for key in ("sketch", "photo", "label"):
    np.testing.assert_array_equal(ex[key], ref[key])
  np.testing.assert_array_equal(src[-1]["photo"], src[4]["photo"])
  with pytest.raises(IndexError):
    src[5]
  assert repr(src) == repr(ToyCatsSource(5, 32, seed=2, body_probability=0.3))
  assert repr(src) != repr(ToyCatsSource(5, 32, seed=3, body_probability=0.3))


def test_studio_backgrounds_are_pale_and_keep_everything_else():
  import colorsys
  for i in range(12):
    studio = render_example(i, 48, background="studio")
    varied = render_example(i, 48)
    # Same cat and sketch; only the backdrop differs.
    np.testing.assert_array_equal(studio["sketch"], varied["sketch"])
    assert studio["label"] == varied["label"]
    corners = studio["photo"][[0, 0, -1, -1], [0, -1, 0, -1]].astype(np.float64) / 255.0
    for r, g, b in corners:
      _, sat, value = colorsys.rgb_to_hsv(r, g, b)
      assert value >= 0.8 and sat <= 0.16, (i, r, g, b)
  src = ToyCatsSource(3, 32, background="studio")
  np.testing.assert_array_equal(src[1]["photo"],
                                render_example(1, 32, background="studio")["photo"])
  assert repr(src) != repr(ToyCatsSource(3, 32))
  with pytest.raises(ValueError, match="background"):
    ToyCatsSource(3, 32, background="jungle")


@pytest.mark.parametrize("kwargs", [
    dict(index=0, image_size=32, background="jungle"),
    dict(index=-1, image_size=32),
    dict(index=0, image_size=8),
    dict(index=0, image_size=32, seed=-1),
    dict(index=0, image_size=32, style=9),
    dict(index=0, image_size=32, body_probability=1.5),
])
def test_invalid_arguments(kwargs):
  with pytest.raises(ValueError):
    render_example(**kwargs)
