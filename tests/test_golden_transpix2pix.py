"""Golden tests: the TransPix2Pix release's networks and ours, same weights,
same inputs, same outputs (eval and train mode), input gradients and
BatchNorm statistics within 1e-4 relative. Fixtures: tests/golden/, written
by tools/make_golden_fixtures.py from the release."""
from __future__ import annotations

import pytest

from tests.golden_check import check

# The 256x256 generator's float64 input gradients take most of a minute.
FIXTURES = [pytest.param("transpix2pix_generator", marks=pytest.mark.slow),
            "transpix2pix_discriminator",
            pytest.param("transpix2pix_style_encoder", marks=pytest.mark.slow),
            "transpix2pix_style_encoder_checkpoint"]


@pytest.mark.parametrize("name", FIXTURES)
def test_matches_release(name: str) -> None:
  errors = check(name)
  assert errors and max(errors.values()) < 1e-4
