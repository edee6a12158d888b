r"""DeepDream from the command line (VGG16).

  python -m tp2p_jax.cli.dream --input=photo.jpg --output=dream.png
  python -m tp2p_jax.cli.dream --input=p.jpg --output=d.png --layer=relu3_3 --octaves=5 \
      --octave_scale=1.4 --steps=30 --step_size=0.01 --jitter=16

Raises the mean squared activation of `--layer` by gradient ascent on the
pixels over `--octaves` scales. The input is resized so that its longer side
is `--size` (0 keeps it). Prints a JSON summary (the layer's activation
before and after) on the last line. Exit status: 0 written; 2 a usage error:
an unknown, missing or malformed flag, an input that is missing, not an
image or a FIFO, an --output that is a folder, not writable, the input
itself or a link to a device (a link to a file is written through), an
invalid setting (one
line on stderr naming the file or the setting, checked before the gradient
ascent starts; nothing is written).

`dream_file` is the same run from Python; `main(argv)` parses the flags into
its arguments.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

from absl import flags

from tp2p_jax.cli import checks, command, output_paths
from tqdm import tqdm

from tp2p_jax.art.deepdream import DreamSettings, activation_norm, dream, octave_sizes
from tp2p_jax.data.image_files import ImageReadError, read_image, write_png
from tp2p_jax.models import vgg


def dream_file(input_path: str | os.PathLike[str], output: str | os.PathLike[str], *,
               settings: DreamSettings = DreamSettings(), size: int | None = 512,
               seed: int = 0, progress: bool = True) -> dict[str, Any]:
  """DeepDreams the image file `input_path`, writing a PNG.

  Args:
    input_path: any PIL-readable image file.
    output: PNG to write (folders created, written atomically), the input's
      size after `size`.
    settings: layer, octaves, steps, step size, jitter.
    size: longer side the input is resized to; None keeps it.
    seed: seeds the jitter.
    progress: show a progress bar on stderr.

  Returns:
    {"output": path, "height": H, "width": W, "layer", "activation_before",
    "activation_after"}: the layer's mean squared activation for the input
    and for the output.

  Raises:
    ImageReadError: the input is missing or not an image (names the file).
    UsageError: `output` is a folder, cannot be written, is the input, or is
      a link to a device; the input is a FIFO or device (checked first).
    ValueError: the image is too small for the layer, or a bad `size`.
  """
  # Before minutes of gradient ascent: the output can be written and
  # replaces neither the input nor a device behind a link.
  checks.output_file_writable(output, "output")
  output_paths.regular_input(input_path, "input")
  output_paths.check_outputs([output_paths.Output("output", output, output)],
                             inputs=[(f"--input={os.fspath(input_path)}", input_path)])
  image = read_image(input_path, "0..1", size)
  variables = vgg.load_pretrained_vgg16()
  total = len(octave_sizes(image.shape[1], image.shape[2], settings)) * settings.steps
  with tqdm(total=total, desc="dream", unit="step", dynamic_ncols=True,
            disable=not progress) as bar:
    out = dream(image, variables, settings, seed=seed, on_step=lambda: bar.update(1))
  write_png(output, out, "0..1")
  before = float(activation_norm(image, variables, settings.layer))
  after = float(activation_norm(out, variables, settings.layer))
  return {"output": os.fspath(output), "height": int(out.shape[1]), "width": int(out.shape[2]),
          "layer": settings.layer,
          "activation_before": before, "activation_after": after}


def _define_flags() -> flags.FlagValues:
  """The flags, in a registry of their own: `main` can then run repeatedly
  in one process (tests) beside other tools' flags of the same names."""
  fv = flags.FlagValues()
  defaults = DreamSettings()
  flags.DEFINE_string("input", None, "Input image (any PIL-readable file).", flag_values=fv)
  flags.DEFINE_string("output", None, "Output PNG path.", flag_values=fv)
  flags.DEFINE_string("layer", defaults.layer, "VGG16 activation to amplify.", flag_values=fv)
  flags.DEFINE_integer("octaves", defaults.octaves, "Number of image scales.", flag_values=fv)
  flags.DEFINE_float("octave_scale", defaults.octave_scale,
                     "Size ratio between consecutive octaves.", flag_values=fv)
  flags.DEFINE_integer("steps", defaults.steps, "Gradient-ascent steps per octave.",
                       flag_values=fv)
  flags.DEFINE_float("step_size", defaults.step_size,
                     "Pixel step (gradient normalised to mean magnitude 1).", flag_values=fv)
  flags.DEFINE_integer("jitter", defaults.jitter, "Maximum random shift in pixels.",
                       flag_values=fv)
  flags.DEFINE_integer("size", 512, "Longer side of the image in pixels (0: keep).",
                       flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the jitter.", flag_values=fv)
  return fv


def _dream(fv: flags.FlagValues) -> int:
  if fv.size < 0:
    raise command.UsageError(f"--size={fv.size}: must be 0 (keep the size) or more")
  try:
    settings = DreamSettings(layer=fv.layer, octaves=fv.octaves, octave_scale=fv.octave_scale,
                             steps=fv.steps, step_size=fv.step_size, jitter=fv.jitter)
    summary = dream_file(fv.input, fv.output, settings=settings, size=fv.size or None,
                         seed=fv.seed)
  except (ImageReadError, ValueError) as e:
    raise command.UsageError(str(e)) from None
  print(json.dumps(summary))
  return 0


def main(argv: Sequence[str]) -> int:
  """Runs the command line on `argv` (argv[0] is the program name).

  Returns:
    The exit status: 0 written, 2 usage error (a bad flag, an unreadable
    input or output, an invalid setting); errors are one line on stderr, the
    summary JSON on stdout.
  """
  return command.run(argv, __doc__, lambda argv: _define_flags(), _dream,
                     required=("input", "output"))


if __name__ == "__main__":
  sys.exit(main(sys.argv))
