"""Writes the golden-test fixtures (tests/golden/*.npz) from the PyTorch originals.

Each original is imported from a work tree given on the command line and is
never copied into this project; its weights come from the shared recipe
(tp2p_jax/interop/synthetic.py), so a fixture stores only the layout, the
inputs and what the original computes. Needs torch (CPU) and numpy.

  python tools/make_golden_fixtures.py \
      --transpix2pix PATH/TransPix2Pix \
      --junyanz PATH/pytorch-CycleGAN-and-pix2pix \
      --pix2pixhd PATH/pix2pixHD [--only NAME ...] [--out tests/golden]

The suite checks them without torch: python -m pytest tests/test_golden.py
"""
from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tools.golden.driver import record  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--transpix2pix", type=pathlib.Path, help="TransPix2Pix release work tree")
  parser.add_argument("--junyanz", type=pathlib.Path,
                      help="pytorch-CycleGAN-and-pix2pix work tree (models/networks.py)")
  parser.add_argument("--pix2pixhd", type=pathlib.Path, help="NVIDIA pix2pixHD work tree")
  parser.add_argument("--out", type=pathlib.Path,
                      default=pathlib.Path(__file__).resolve().parents[1] / "tests" / "golden")
  parser.add_argument("--only", nargs="*", default=None, help="fixture names to (re)write")
  args = parser.parse_args()
  cases = []
  # Each family's cases import their original only when its path is given.
  if args.transpix2pix:
    from tools.golden import transpix2pix_cases
    cases += transpix2pix_cases.cases(args.transpix2pix)
  if args.junyanz or args.pix2pixhd:
    from tools.golden import pix2pix_cases
    cases += pix2pix_cases.cases(args.junyanz, args.pix2pixhd)
  if not cases:
    parser.error("give at least one of --transpix2pix, --junyanz, --pix2pixhd")
  for case in cases:
    if args.only and case.name not in args.only:
      continue
    path = record(case, args.out)
    print(f"{case.name}: {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
  main()
