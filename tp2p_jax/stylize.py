r"""Neural style transfer from the command line (Gatys et al.; VGG16).

  python -m tp2p_jax.stylize --content=photo.jpg --style=painting.jpg --output=out.png
  python -m tp2p_jax.stylize --content=c.png --style=s.png --output=o.png --steps=500 \
      --optimizer=adam --learning_rate=0.02 --style_weight=1e4 --size=512

The content image is resized so that its longer side is `--size` (0 keeps
it); the style image likewise. Prints the final losses as JSON on the last
line. Unreadable inputs give a one-line error naming the file and exit 1.
"""
from __future__ import annotations

import json
import sys

from absl import app, flags

from tp2p_jax.style_transfer import (DEFAULT_STYLE_LAYER_WEIGHTS, DEFAULT_STYLE_LAYERS,
                                     StyleTransferWeights)
from tp2p_jax.xla_flags import set_default_xla_flags

_DEFAULTS = StyleTransferWeights()
_CONTENT = flags.DEFINE_string("content", None, "Content image (any PIL-readable file).")
_STYLE = flags.DEFINE_string("style", None, "Style image (any PIL-readable file).")
_OUTPUT = flags.DEFINE_string("output", None, "Output PNG path.")
_STEPS = flags.DEFINE_integer("steps", 200, "Optimisation steps.")
_SIZE = flags.DEFINE_integer("size", 256, "Longer side of the images in pixels (0: keep).")
_CONTENT_WEIGHT = flags.DEFINE_float("content_weight", _DEFAULTS.content_weight,
                                     "alpha: weight of the content loss.")
_STYLE_WEIGHT = flags.DEFINE_float("style_weight", _DEFAULTS.style_weight,
                                   "beta: weight of the style (Gram) loss.")
_TV_WEIGHT = flags.DEFINE_float("tv_weight", _DEFAULTS.tv_weight,
                                "gamma: weight of the total-variation loss.")
_CONTENT_LAYER = flags.DEFINE_string("content_layer", _DEFAULTS.content_layer,
                                     "VGG16 activation matched to the content image.")
_STYLE_LAYERS = flags.DEFINE_list("style_layers", list(DEFAULT_STYLE_LAYERS),
                                  "VGG16 activations whose Gram matrices are matched.")
_STYLE_LAYER_WEIGHTS = flags.DEFINE_list(
    "style_layer_weights", [str(w) for w in DEFAULT_STYLE_LAYER_WEIGHTS],
    "One weight per style layer.")
_OPTIMIZER = flags.DEFINE_enum("optimizer", "lbfgs", ["lbfgs", "adam"], "optax optimiser.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.02, "Adam step size (pixels in [0, 1]).")
_INIT = flags.DEFINE_enum("init", "content", ["content", "noise"], "Starting image.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the noise start.")


def main(argv: list[str]) -> None:
  set_default_xla_flags()  # before JAX starts its backends
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for flag in (_CONTENT, _STYLE, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required")
  # Heavy imports after flag checks, so usage errors are instant.
  from tqdm import tqdm

  from tp2p_jax.data.image_files import ImageReadError, read_image, write_png
  from tp2p_jax.models import vgg
  from tp2p_jax.style_transfer import parse_floats, stylize_steps

  size = _SIZE.value or None
  try:
    content = read_image(_CONTENT.value, "0..1", size)
    style = read_image(_STYLE.value, "0..1", size)
    weights = StyleTransferWeights(
        content_layer=_CONTENT_LAYER.value, style_layers=tuple(_STYLE_LAYERS.value),
        style_layer_weights=parse_floats(_STYLE_LAYER_WEIGHTS.value),
        content_weight=_CONTENT_WEIGHT.value, style_weight=_STYLE_WEIGHT.value,
        tv_weight=_TV_WEIGHT.value)
    run = stylize_steps(content, style, vgg.load_pretrained_vgg16(), steps=_STEPS.value,
                        weights=weights, optimizer=_OPTIMIZER.value,
                        learning_rate=_LEARNING_RATE.value, init=_INIT.value,
                        seed=_SEED.value)
    image, losses = content, {}
    with tqdm(total=_STEPS.value, desc="stylize", unit="step", dynamic_ncols=True) as bar:
      for image, losses in run:
        bar.update(1)
        bar.set_postfix(loss=f"{losses['total']:.4g}", refresh=False)
  except (ImageReadError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  write_png(_OUTPUT.value, image, "0..1")
  print(json.dumps({"output": _OUTPUT.value, "size": list(image.shape[1:3]), **losses}))


if __name__ == "__main__":
  app.run(main)
