"""Writes examples/: the small inputs the README's commands use.

Everything is drawn here, nothing is downloaded:

  examples/sketches/cat_{0,1,2}.png   line sketches of three toy cats (128x128)
  examples/photo.png                  a toy-cat photo (128x128, ginger coat)
  examples/painting.png               a procedural "painting": brush strokes over
                                      colour fields (128x128)
  examples/cats/<coat>/*.png          toy-cat photos sorted by coat, a folder of
                                      photos for `prepare --source=folder` (64x64)

The cats come from the project's procedural renderer
(tp2p_jax.data.toycats.render_example) with seeds that the training data does
not use (the toy-cats configs draw seed 0), so predict's outputs are on
sketches the model never saw. The output is deterministic: rerunning the
script rewrites the same bytes.

  python tools/make_examples.py            # into examples/
  python tools/make_examples.py --out=DIR
"""
from __future__ import annotations

import argparse
import pathlib
import shutil

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tp2p_jax.data.toycats import STYLE_NAMES, render_example

_SEED = 7  # The toy-cats configs use seed 0: these cats are not in their data.
_SKETCH_SIZE = 128
_PHOTO_SIZE = 128
_CATS_SIZE = 64
# Coat folders for `prepare` (a subset of the nine: the summary then names the
# classes without pairs) and photos per folder.
_CATS_COATS = ("black", "ginger", "white")
_CATS_PER_COAT = 4


def _save_png(image: np.ndarray | Image.Image, path: pathlib.Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(image, np.ndarray):
    image = Image.fromarray(image)
  image.save(path, format="PNG", optimize=True)


def _sketch(index: int) -> np.ndarray:
  """A toy cat's line sketch as a one-channel image (the lines are grey)."""
  rgb = render_example(index, _SKETCH_SIZE, seed=_SEED, background="studio")["sketch"]
  return rgb[..., 0]


def painting(size: int, seed: int = 0) -> Image.Image:
  """A procedural painting: soft colour fields under layers of brush strokes
  in a small palette, smaller strokes on top."""
  rng = np.random.default_rng(seed)
  palette = np.array([[32, 48, 112], [224, 176, 48], [200, 72, 40],
                      [40, 120, 96], [240, 232, 208], [24, 24, 40]], np.uint8)
  big = size * 2  # Drawn at twice the size and downsampled: smooth edges.
  canvas = Image.new("RGB", (big, big), tuple(int(v) for v in palette[0]))
  draw = ImageDraw.Draw(canvas)
  for _ in range(6):  # Colour fields.
    x, y = rng.integers(-big // 4, big, size=2)
    r = int(rng.integers(big // 4, big // 2))
    draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.choice(palette)))
  canvas = canvas.filter(ImageFilter.GaussianBlur(big // 16))
  draw = ImageDraw.Draw(canvas)
  for layer, (count, width) in enumerate(((24, big // 10), (40, big // 18), (48, big // 32))):
    for _ in range(count):  # Curved strokes: polylines with a drifting angle.
      x, y = rng.uniform(0, big, size=2)
      angle = rng.uniform(0, 2 * np.pi)
      points = []
      for _ in range(9):
        points.append((float(x), float(y)))
        angle += rng.normal(0, 0.3)
        step = rng.uniform(big / 40, big / 20) / (layer + 1) ** 0.5
        x, y = x + step * np.cos(angle), y + step * np.sin(angle)
      colour = rng.choice(palette).astype(int) + rng.integers(-16, 17, size=3)
      draw.line(points, fill=tuple(int(v) for v in np.clip(colour, 0, 255)),
                width=int(width), joint="curve")
  canvas = canvas.resize((size, size), Image.LANCZOS)
  # A 64-colour palette PNG: a fraction of the full-colour bytes.
  return canvas.quantize(64, dither=Image.Dither.NONE)


def write_examples(out: pathlib.Path) -> list[pathlib.Path]:
  """Writes every example under `out` (its sketches/ and cats/ replaced);
  returns the files written."""
  for folder in ("sketches", "cats"):
    shutil.rmtree(out / folder, ignore_errors=True)
  written = []
  for i in range(3):
    written.append(out / "sketches" / f"cat_{i}.png")
    _save_png(_sketch(i), written[-1])
  ginger = STYLE_NAMES.index("ginger")
  photo = render_example(3, _PHOTO_SIZE, seed=_SEED, style=ginger, background="studio")["photo"]
  written.append(out / "photo.png")
  _save_png(photo, written[-1])
  written.append(out / "painting.png")
  _save_png(painting(_PHOTO_SIZE), written[-1])
  index = 100
  for coat in _CATS_COATS:
    for k in range(_CATS_PER_COAT):
      cat = render_example(index, _CATS_SIZE, seed=_SEED, style=STYLE_NAMES.index(coat),
                           background="studio")["photo"]
      index += 1
      written.append(out / "cats" / coat / f"{coat}_{k}.png")
      _save_png(cat, written[-1])
  return written


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[1] / "examples"),
                      help="Folder to write (default: the repository's examples/).")
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  written = write_examples(out)
  total = sum(p.stat().st_size for p in written)
  print(f"wrote {len(written)} files, {total / 1024:.1f} KiB, under {out}")


if __name__ == "__main__":
  main()
