"""Tests of the classical sketcher (tp2p_jax.data.sketch)."""
from __future__ import annotations

import dataclasses

from hypothesis import given, strategies as st
import numpy as np
from PIL import Image, ImageDraw
import pytest
from scipy import ndimage

from tp2p_jax.data import sketch, toycats

_EIGHT = np.ones((3, 3), bool)


def _at_most_two_pixels_wide(lines: np.ndarray) -> bool:
  """No line pixel with all four direct neighbours on (distance to the
  background <= 1) and no full 3 x 3 block: nothing wider than 2 px."""
  if not lines.any():
    return True
  return (ndimage.distance_transform_edt(lines).max() <= 1.0
          and not ndimage.binary_erosion(lines, _EIGHT).any())


def _shapes_photo(size: int = 64) -> np.ndarray:
  """uint8 (size, size, 3): a dark disc on the left and a dark square on the
  right, on a light grey background."""
  img = Image.new("RGB", (size, size), (200, 205, 210))
  d = ImageDraw.Draw(img)
  d.ellipse([size * 0.08, size * 0.3, size * 0.42, size * 0.64],
            fill=(40, 30, 20))
  d.rectangle([size * 0.6, size * 0.3, size * 0.9, size * 0.6],
              fill=(30, 40, 90))
  return np.asarray(img)


def _dark(image: np.ndarray, level: int = 128) -> np.ndarray:
  return image[..., 0] < level


def test_params_are_frozen_and_validated():
  params = sketch.SketchParams()
  with pytest.raises(dataclasses.FrozenInstanceError):
    params.sigma = 2.0  # type: ignore[misc]
  with pytest.raises(ValueError):
    sketch.SketchParams(k=1.0)
  with pytest.raises(ValueError):
    sketch.SketchParams(supersample=0)


def test_xdog_leaves_flat_regions_white_whatever_their_luminance():
  for level in (0.0, 0.05, 0.5, 1.0):
    flat = np.full((32, 32), level, np.float32)
    out = sketch.xdog(flat, sigma=1.0, k=1.6, p=60.0, epsilon=-0.02, phi=25.0)
    np.testing.assert_array_equal(out, 1.0)
  black = np.zeros((48, 48, 3), np.uint8)
  assert (sketch.sketch_from_photo(black) == 255).all()


def test_xdog_darkens_the_dark_side_of_an_edge():
  lum = np.ones((32, 32), np.float32)
  lum[:, :16] = 0.2
  out = sketch.xdog(lum, sigma=1.0, k=1.6, p=60.0, epsilon=-0.02, phi=25.0)
  assert out[:, 14:16].max() < 0.5  # just inside the dark half
  assert out[:, 17:].min() == 1.0  # bright side stays white
  assert out[:, :10].min() == 1.0  # far from the edge: flat


def test_photo_lines_are_thin_before_redrawing():
  for photo in (_shapes_photo(64),
                toycats.render_example(3, 64, seed=2)["photo"],
                toycats.render_example(4, 96, seed=2)["photo"]):
    lines = sketch.photo_lines(photo)
    assert lines.shape == (photo.shape[0] * 2, photo.shape[1] * 2)
    assert lines.any()
    assert _at_most_two_pixels_wide(lines)


@given(st.lists(st.tuples(st.integers(0, 63), st.integers(0, 63),
                          st.integers(0, 63), st.integers(0, 63),
                          st.integers(3, 9)), min_size=1, max_size=5))
def test_thin_keeps_components_and_leaves_two_pixel_lines(strokes):
  img = Image.new("L", (64, 64), 0)
  d = ImageDraw.Draw(img)
  for x0, y0, x1, y1, width in strokes:
    d.line([x0, y0, x1, y1], fill=255, width=width)
  thick = np.asarray(img) > 0
  thin = sketch.thin(thick)
  assert _at_most_two_pixels_wide(thin)
  assert not (thin & ~thick).any()
  # Thinning never splits or erases a stroke: same 8-connected pieces.
  _, before = ndimage.label(thick, structure=_EIGHT)
  _, after = ndimage.label(thin, structure=_EIGHT)
  assert after == before


def test_render_lines_draws_the_standard_width():
  skeleton = np.zeros((128, 128), bool)
  skeleton[10:118, 64] = True
  out = sketch.render_lines(skeleton, width=3.0, supersample=2)
  assert out.shape == (64, 64, 3) and out.dtype == np.uint8
  darkness = (255.0 - out[..., 0].astype(np.float64)) / 255.0
  # 3 working px at 2x supersampling: 1.5 output px across every row.
  np.testing.assert_allclose(darkness[10:54].sum(axis=1), 1.5, atol=0.01)


def test_sketch_format_and_determinism():
  photo = toycats.render_example(7, 128, seed=5)["photo"]
  a = sketch.sketch_from_photo(photo)
  b = sketch.sketch_from_photo(photo.copy())
  np.testing.assert_array_equal(a, b)
  assert a.shape == (128, 128, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a[..., 0], a[..., 1])
  np.testing.assert_array_equal(a[..., 0], a[..., 2])
  assert 0.005 < _dark(a).mean() < 0.1
  assert (a == 255).all(axis=2).mean() > 0.85
  # Output size may differ from the input's.
  assert sketch.sketch_from_photo(photo, image_size=64).shape == (64, 64, 3)


def test_mask_is_respected():
  photo = _shapes_photo(64)
  mask = np.zeros((64, 64), bool)
  mask[16:44, 4:30] = True  # covers the disc only
  params = sketch.SketchParams()
  unmasked = sketch.sketch_from_photo(photo, params)
  masked = sketch.sketch_from_photo(photo, params, mask=mask)
  allowed = sketch.dilated_mask(mask, 64, params)
  assert (masked[~allowed] == 255).all()
  assert _dark(unmasked[:, 36:]).any()  # the square has lines without mask
  assert not (masked[:, 36:] < 255).any()  # and none with it
  np.testing.assert_array_equal(masked[:, :30], unmasked[:, :30])
  # A mask of another resolution is resized to the photo's.
  big = np.asarray(Image.fromarray(mask).resize((256, 256)))
  np.testing.assert_array_equal(
      sketch.sketch_from_photo(photo, params, mask=big), masked)


def _paper_drawing(h: int, w: int, stroke: int, seed: int = 0) -> np.ndarray:
  """Thick coloured strokes on off-white, unevenly lit, slightly noisy
  paper: uint8 (h, w, 3)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  light = 0.6 + 0.4 * np.exp(-2.0 * (((xx - 0.8 * w) / w) ** 2 +
                                     ((yy - 0.2 * h) / h) ** 2))
  paper = np.stack([246 * light, 238 * light, 212 * light], -1)
  paper += rng.normal(0.0, 3.0, paper.shape)
  img = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))
  d = ImageDraw.Draw(img)
  d.ellipse([w * 0.3, h * 0.25, w * 0.7, h * 0.8], outline=(40, 60, 170),
            width=stroke)
  d.line([w * 0.35, h * 0.35, w * 0.4, h * 0.08, w * 0.48, h * 0.27],
         fill=(190, 30, 40), width=stroke)
  d.line([w * 0.52, h * 0.27, w * 0.6, h * 0.08, w * 0.65, h * 0.35],
         fill=(190, 30, 40), width=stroke)
  d.ellipse([w * 0.42, h * 0.45, w * 0.47, h * 0.52], outline=(25, 25, 25),
            width=max(2, stroke // 2))
  return np.asarray(img)


def test_hand_drawn_becomes_thin_dark_lines_on_white():
  drawing = _paper_drawing(300, 400, stroke=9)
  out = sketch.prepare_hand_drawn(drawing, 64)
  assert out.shape == (64, 64, 3) and out.dtype == np.uint8
  assert 0.01 < _dark(out).mean() < 0.12
  assert (out == 255).all(axis=2).mean() > 0.8  # paper became pure white
  # Landscape input is centred on a square: the side margins are blank.
  assert (out[:, :6] == 255).all() and (out[:, -6:] == 255).all()
  lines = sketch.hand_drawn_lines(drawing, 64)
  assert lines.any() and _at_most_two_pixels_wide(lines)
  np.testing.assert_array_equal(out, sketch.prepare_hand_drawn(drawing, 64))


def test_hand_drawn_line_style_does_not_depend_on_stroke_width():
  thin = sketch.prepare_hand_drawn(_paper_drawing(300, 400, stroke=3), 64)
  thick = sketch.prepare_hand_drawn(_paper_drawing(300, 400, stroke=14), 64)
  ratio = _dark(thick).mean() / _dark(thin).mean()
  assert 0.6 < ratio < 1.6


def test_hand_drawn_grey_rgba_and_blank_inputs():
  drawing = _paper_drawing(120, 90, stroke=5)
  grey = np.asarray(Image.fromarray(drawing).convert("L"))
  assert 0.01 < _dark(sketch.prepare_hand_drawn(grey, 64)).mean() < 0.12
  rgba = np.zeros((100, 100, 4), np.uint8)  # transparent = paper
  rgba[20:80, 48:53] = (0, 0, 0, 255)
  out = sketch.prepare_hand_drawn(rgba, 64)
  assert _dark(out)[15:50, 28:36].any() and (out[:, :20] == 255).all()
  blank = np.full((80, 80, 3), 235, np.uint8)
  blank += np.random.default_rng(0).integers(0, 6, blank.shape, np.uint8)
  assert (sketch.prepare_hand_drawn(blank, 64) == 255).all()


def test_otsu_threshold_separates_two_modes():
  rng = np.random.default_rng(0)
  values = np.concatenate([rng.normal(0.2, 0.03, 300),
                           rng.normal(0.9, 0.03, 3000)])
  assert 0.3 < sketch.otsu_threshold(values) < 0.8
