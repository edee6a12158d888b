"""Sample grids (tp2p_jax.core.run_log.image_grid): the layout and the header
row that names every column in full."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tp2p_jax.core.run_log import image_grid


def _columns(count: int, size: int, rows: int = 2) -> list[np.ndarray]:
  return [np.full((rows, size, size, 3), -1.0 + j * 0.2, np.float32) for j in range(count)]


def test_grid_without_captions_keeps_tiles_at_their_size():
  grid = image_grid(_columns(3, 16, rows=2), pad=2)
  assert grid.shape == (2 * 18 + 2, 3 * 18 + 2, 3) and grid.dtype == np.uint8
  assert np.all(grid[2:18, 2:18] == 0)  # -1 -> 0


@pytest.mark.parametrize("size", [16, 32, 64, 128])
def test_captions_are_written_in_full_over_tiles_wide_enough(size):
  names = ["sketch", "tortoiseshell", "black-white"]
  grid = image_grid(_columns(3, size), pad=2, captions=names)
  draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  widest = max(draw.textlength(n) for n in names)
  tile = (grid.shape[1] - 2) // 3 - 2
  assert tile % size == 0 and tile >= widest
  assert tile == size or tile - size < widest  # the smallest whole factor
  header_rows = grid.shape[0] - (2 * (tile + 2) + 2)
  assert header_rows > 0
  header = grid[:header_rows]
  for j in range(3):  # some ink above every column
    x0 = 2 + j * (tile + 2)
    assert (header[:, x0:x0 + tile] < 128).any()


def test_enlarged_tiles_repeat_pixels():
  column = np.linspace(-1, 1, 4 * 4 * 3, dtype=np.float32).reshape(1, 4, 4, 3)
  grid = image_grid([column], pad=0, captions=["a long caption"])
  tile = grid.shape[1]
  body = grid[grid.shape[0] - tile:]
  factor = tile // 4
  np.testing.assert_array_equal(body[::factor, ::factor], image_grid([column], pad=0))


def test_one_caption_per_column():
  with pytest.raises(ValueError, match="2 captions for 3 columns"):
    image_grid(_columns(3, 8), captions=["a", "b"])
