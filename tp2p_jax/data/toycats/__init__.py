"""Procedural toy cats: a built-in sketch-to-photo dataset that needs no download.

Each example is a cartoon cat (a head, optionally on a sitting body) drawn
twice from one set of shapes:

* ``photo``: filled shapes with one of nine coat styles, soft shading, eyes,
  nose, mouth and whiskers, on a varied background;
* ``sketch``: thin dark contour lines of the same shapes on white.

Randomness comes from independent streams derived from ``(seed, index)``:
geometry, label, coat, background and eye colour. The sketch reads only the
geometry stream, so for a given example it is pixel-identical whatever the
coat, and nothing about the coat (or the background) can be read from it. The
background stream is likewise independent of the label, so backgrounds carry
no information about the class.

Geometry is sampled in fractions of the image side, so an ``(index, seed)``
pair gives the same cat at every resolution; only line widths and the
supersampling factor depend on the output size. Shapes are drawn with PIL at
2x-4x the output size and box-downsampled, which anti-aliases both images.

Modules: `source` renders examples (`render_example`, `ToyCatsSource`) from
`geometry` (the shapes, built from `points` primitives), `lines` (the
sketch), `coats` (the style classes), `backgrounds` and `photo`; `canvas` is
the supersampled drawing surface and `colours` the RGB helpers.
"""
from __future__ import annotations

from tp2p_jax.data.toycats.backgrounds import BACKGROUNDS
from tp2p_jax.data.toycats.coats import NUM_STYLES, STYLE_NAMES
from tp2p_jax.data.toycats.source import ToyCatsSource, render_example

__all__ = ["BACKGROUNDS", "NUM_STYLES", "STYLE_NAMES", "ToyCatsSource", "render_example"]
