r"""DeepDream from the command line (VGG16).

  python -m tp2p_jax.dream --input=photo.jpg --output=dream.png
  python -m tp2p_jax.dream --input=p.jpg --output=d.png --layer=relu3_3 --octaves=5 \
      --octave_scale=1.4 --steps=30 --step_size=0.01 --jitter=16

Raises the mean squared activation of `--layer` by gradient ascent on the
pixels over `--octaves` scales. The input is resized so that its longer side
is `--size` (0 keeps it). Unreadable inputs give a one-line error naming the
file and exit 1.
"""
from __future__ import annotations

import json
import sys

from absl import app, flags

from tp2p_jax.deepdream import DreamSettings
from tp2p_jax.xla_flags import set_default_xla_flags

_DEFAULTS = DreamSettings()
_INPUT = flags.DEFINE_string("input", None, "Input image (any PIL-readable file).")
_OUTPUT = flags.DEFINE_string("output", None, "Output PNG path.")
_LAYER = flags.DEFINE_string("layer", _DEFAULTS.layer, "VGG16 activation to amplify.")
_OCTAVES = flags.DEFINE_integer("octaves", _DEFAULTS.octaves, "Number of image scales.")
_OCTAVE_SCALE = flags.DEFINE_float("octave_scale", _DEFAULTS.octave_scale,
                                   "Size ratio between consecutive octaves.")
_STEPS = flags.DEFINE_integer("steps", _DEFAULTS.steps, "Gradient-ascent steps per octave.")
_STEP_SIZE = flags.DEFINE_float("step_size", _DEFAULTS.step_size,
                                "Pixel step (gradient normalised to mean magnitude 1).")
_JITTER = flags.DEFINE_integer("jitter", _DEFAULTS.jitter, "Maximum random shift in pixels.")
_SIZE = flags.DEFINE_integer("size", 512, "Longer side of the image in pixels (0: keep).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the jitter.")


def main(argv: list[str]) -> None:
  set_default_xla_flags()  # before JAX starts its backends
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for flag in (_INPUT, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required")
  from tqdm import tqdm

  from tp2p_jax.data.image_files import ImageReadError, read_image, write_png
  from tp2p_jax.deepdream import activation_norm, dream, octave_sizes
  from tp2p_jax.models import vgg

  try:
    settings = DreamSettings(layer=_LAYER.value, octaves=_OCTAVES.value,
                             octave_scale=_OCTAVE_SCALE.value, steps=_STEPS.value,
                             step_size=_STEP_SIZE.value, jitter=_JITTER.value)
    image = read_image(_INPUT.value, "0..1", _SIZE.value or None)
    variables = vgg.load_pretrained_vgg16()
    total = len(octave_sizes(image.shape[1], image.shape[2], settings)) * settings.steps
    with tqdm(total=total, desc="dream", unit="step", dynamic_ncols=True) as bar:
      out = dream(image, variables, settings, seed=_SEED.value, on_step=lambda: bar.update(1))
  except (ImageReadError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  write_png(_OUTPUT.value, out, "0..1")
  before = float(activation_norm(image, variables, settings.layer))
  after = float(activation_norm(out, variables, settings.layer))
  print(json.dumps({"output": _OUTPUT.value, "size": list(out.shape[1:3]),
                    "layer": settings.layer, "activation_before": before,
                    "activation_after": after}))


if __name__ == "__main__":
  app.run(main)
