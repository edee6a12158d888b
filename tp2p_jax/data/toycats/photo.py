"""The photo: the cat painted with its coat over a background, then shaded."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tp2p_jax.data.toycats.canvas import canvas_coords, supersampling
from tp2p_jax.data.toycats.coats import Coat
from tp2p_jax.data.toycats.colours import RGB, jitter
from tp2p_jax.data.toycats.geometry import Geometry
from tp2p_jax.data.toycats.points import Points, apply_affine


_EYE_COLOURS: tuple[RGB, ...] = (
    (118, 170, 60),   # green
    (214, 190, 60),   # yellow
    (212, 142, 40),   # amber
    (90, 150, 212),   # blue
    (188, 110, 42),   # copper
    (160, 200, 96),   # light green
)


def iris_colour(rng: np.random.Generator) -> RGB:
  """An eye colour drawn from the eye stream `rng`."""
  return jitter(rng, _EYE_COLOURS[int(rng.integers(len(_EYE_COLOURS)))], 0.08, 8.0)


def render_photo(geo: Geometry, coat: Coat, iris: RGB,
                 background: Image.Image, image_size: int) -> np.ndarray:
  """Paints the cat with `coat` over `background` and shades it.

  Args:
    geo: the cat's shapes.
    coat: colours and markings of every part.
    iris: eye colour.
    background: RGB image of the supersampled canvas, side
      S * supersampling(S); it is drawn on in place.
    image_size: output side S.

  Returns:
    uint8 (S, S, 3) RGB in [0, 255].
  """
  ss = supersampling(image_size)
  canvas = image_size * ss
  photo = background
  draw = ImageDraw.Draw(photo)
  # Union of the fur, used for shading; the head alone casts a soft shadow
  # on the body so same-coloured head and body do not merge into one blob.
  fur = Image.new("L", (canvas, canvas), 0)
  fur_draw = ImageDraw.Draw(fur)

  def paint(part: str, polys: list[Points]) -> None:
    flat = [canvas_coords(p, canvas) for p in polys]
    for f in flat:
      fur_draw.polygon(f, fill=255)
    marks = coat.marks[part]
    if not marks:
      for f in flat:
        draw.polygon(f, fill=coat.base[part])
      return
    # Marks must not spill outside the part, so draw them on a layer that is
    # pasted through the part's mask.
    layer = Image.new("RGB", (canvas, canvas), coat.base[part])
    layer_draw = ImageDraw.Draw(layer)
    for m in marks:
      if m.kind == "poly":
        layer_draw.polygon(canvas_coords(m.pts, canvas), fill=m.colour)
      else:
        layer_draw.line(canvas_coords(m.pts, canvas), fill=m.colour,
                        width=max(1, round(m.width * canvas)), joint="curve")
    mask = Image.new("L", (canvas, canvas), 0)
    mask_draw = ImageDraw.Draw(mask)
    for f in flat:
      mask_draw.polygon(f, fill=255)
    photo.paste(layer, (0, 0), mask)

  has_body = geo.body is not None
  if has_body:
    paint("tail", [geo.tail])
    paint("body", [geo.body])
    paint("legs", list(geo.legs) + list(geo.paws))
  paint("ears", list(geo.ears))
  for inner in geo.inner_ears:
    draw.polygon(canvas_coords(inner, canvas), fill=coat.inner_ear)
  paint("head", [geo.head])

  px = geo.scale * canvas  # head radius in canvas pixels
  rim = max(1, round(0.025 * px))
  for eye, pupil, hl in zip(geo.eyes, geo.pupils, geo.highlights):
    draw.polygon(canvas_coords(eye, canvas), fill=iris, outline=(28, 22, 18),
                 width=rim)
    draw.polygon(canvas_coords(pupil, canvas), fill=(12, 10, 10))
    draw.polygon(canvas_coords(hl, canvas), fill=(250, 250, 250))
  draw.polygon(canvas_coords(geo.nose, canvas), fill=coat.nose)
  mouth_w = max(1, round(0.03 * px))
  for m in geo.mouth:
    draw.line(canvas_coords(m, canvas), fill=coat.mouth, width=mouth_w, joint="curve")
  whisker_w = max(1, round(0.012 * px))
  for w in geo.whiskers:
    draw.line(canvas_coords(w, canvas), fill=coat.whisker, width=whisker_w)

  photo_small = photo.reduce(ss)
  fur_small = fur.reduce(ss)
  size = image_size
  alpha = np.asarray(fur_small, np.float32) / 255.0
  blur = np.asarray(
      fur_small.filter(ImageFilter.GaussianBlur(max(1.0, 0.4 * geo.scale
                                                    * size))),
      np.float32) / 255.0
  # Soft rim darkening from the blurred silhouette plus a light falling off
  # from the upper left of the head: cheap stand-ins for real shading.
  centre = apply_affine(geo.head_to_image, np.array([[-0.35, -0.45]]))[0] * size
  yy, xx = np.ogrid[0:size, 0:size]
  dist = np.hypot(xx + 0.5 - centre[0], yy + 0.5 - centre[1]) / (
      3.2 * geo.scale * size)
  shade = (0.68 + 0.32 * blur) * (1.12 - 0.3 * np.minimum(dist, 1.0) ** 2)
  if has_body:
    head_mask = Image.new("L", (size, size), 0)
    drop = np.array([0.0, 0.12 * geo.scale])
    ImageDraw.Draw(head_mask).polygon(canvas_coords(geo.head + drop, size), fill=255)
    shadow = np.asarray(head_mask.filter(ImageFilter.GaussianBlur(
        max(1.0, 0.12 * geo.scale * size))), np.float32) / 255.0
    own = Image.new("L", (size, size), 0)
    ImageDraw.Draw(own).polygon(canvas_coords(geo.head, size), fill=255)
    shadow *= 1.0 - np.asarray(own, np.float32) / 255.0
    shade *= 1.0 - 0.3 * shadow
  factor = 1.0 + alpha * (shade - 1.0)
  out = np.asarray(photo_small, np.float32) * factor[:, :, None]
  return np.clip(np.round(out), 0, 255).astype(np.uint8)
