r"""Neural style transfer from the command line (Gatys et al.; VGG16).

  python -m tp2p_jax.cli.stylize --content=photo.jpg --style=painting.jpg --output=out.png
  python -m tp2p_jax.cli.stylize --content=c.png --style=s.png --output=o.png --steps=500 \
      --optimizer=adam --learning_rate=0.02 --style_weight=1e4 --size=512

The content image is resized so that its longer side is `--size` (0 keeps
it); the style image likewise. Prints the final losses as JSON on the last
line. Exit status: 0 written; 2 a usage error: an unknown, missing or
malformed flag, an input that is missing, not an image or a FIFO, an
--output that is a folder, not writable, one of the inputs or a link to a
device (a link to a file is written through), an invalid setting (one line
on stderr naming the
file or the setting, checked before the optimisation starts; nothing is
written).

`stylize_files` is the same run from Python; `main(argv)` parses the flags
into its arguments.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Literal, Sequence

from absl import flags

from tp2p_jax.cli import checks, command, output_paths
from tqdm import tqdm

from tp2p_jax.art.style_transfer import (DEFAULT_STYLE_LAYER_WEIGHTS, DEFAULT_STYLE_LAYERS,
                                         OptimizerName, StyleTransferWeights, stylize_steps)
from tp2p_jax.data.image_files import ImageReadError, read_image, write_png
from tp2p_jax.models import vgg


def stylize_files(content: str | os.PathLike[str], style: str | os.PathLike[str],
                  output: str | os.PathLike[str], *, steps: int = 200, size: int | None = 256,
                  weights: StyleTransferWeights = StyleTransferWeights(),
                  optimizer: OptimizerName = "lbfgs", learning_rate: float = 0.02,
                  init: Literal["content", "noise"] = "content", seed: int = 0,
                  progress: bool = True) -> dict[str, Any]:
  """Stylizes the image file `content` after `style`, writing a PNG.

  Args:
    content: content image, any PIL-readable file; the output has its size
      (after `size`).
    style: style image, any PIL-readable file.
    output: PNG to write (folders created, written atomically).
    steps: optimisation steps.
    size: longer side both images are resized to; None keeps them.
    weights, optimizer, learning_rate, init, seed: see
      `tp2p_jax.art.style_transfer.stylize_steps`.
    progress: show a progress bar on stderr.

  Returns:
    {"output": path, "height": H, "width": W, "total", "content", "style", "tv"}: the
    loss terms of J at the start of the last step (absent for 0 steps).

  Raises:
    ImageReadError: an input is missing or not an image (names the file).
    UsageError: `output` is a folder, cannot be written, is an input, or is
      a link to a device; an input is a FIFO or device (checked first).
    ValueError: an image is smaller than 8x8, or a bad `size`/`init`.
  """
  # Before minutes of optimisation: the output can be written and replaces
  # neither input nor a device behind a link.
  checks.output_file_writable(output, "output")
  output_paths.regular_input(content, "content")
  output_paths.regular_input(style, "style")
  output_paths.check_outputs([output_paths.Output("output", output, output)],
                             inputs=[(f"--content={os.fspath(content)}", content),
                                     (f"--style={os.fspath(style)}", style)])
  content_image = read_image(content, "0..1", size)
  style_image = read_image(style, "0..1", size)
  run = stylize_steps(content_image, style_image, vgg.load_pretrained_vgg16(), steps=steps,
                      weights=weights, optimizer=optimizer, learning_rate=learning_rate,
                      init=init, seed=seed)
  image, losses = content_image, {}
  with tqdm(total=steps, desc="stylize", unit="step", dynamic_ncols=True,
            disable=not progress) as bar:
    for image, losses in run:
      bar.update(1)
      bar.set_postfix(loss=f"{losses['total']:.4g}", refresh=False)
  write_png(output, image, "0..1")
  return {"output": os.fspath(output), "height": int(image.shape[1]),
          "width": int(image.shape[2]), **losses}


def _define_flags() -> flags.FlagValues:
  """The flags, in a registry of their own: `main` can then run repeatedly
  in one process (tests) beside other tools' flags of the same names."""
  fv = flags.FlagValues()
  defaults = StyleTransferWeights()
  flags.DEFINE_string("content", None, "Content image (any PIL-readable file).", flag_values=fv)
  flags.DEFINE_string("style", None, "Style image (any PIL-readable file).", flag_values=fv)
  flags.DEFINE_string("output", None, "Output PNG path.", flag_values=fv)
  flags.DEFINE_integer("steps", 200, "Optimisation steps.", lower_bound=0, flag_values=fv)
  flags.DEFINE_integer("size", 256, "Longer side of the images in pixels (0: keep).",
                       flag_values=fv)
  flags.DEFINE_float("content_weight", defaults.content_weight,
                     "alpha: weight of the content loss.", flag_values=fv)
  flags.DEFINE_float("style_weight", defaults.style_weight,
                     "beta: weight of the style (Gram) loss.", flag_values=fv)
  flags.DEFINE_float("tv_weight", defaults.tv_weight,
                     "gamma: weight of the total-variation loss.", flag_values=fv)
  flags.DEFINE_string("content_layer", defaults.content_layer,
                      "VGG16 activation matched to the content image.", flag_values=fv)
  flags.DEFINE_list("style_layers", list(DEFAULT_STYLE_LAYERS),
                    "VGG16 activations whose Gram matrices are matched.", flag_values=fv)
  flags.DEFINE_list("style_layer_weights", [str(w) for w in DEFAULT_STYLE_LAYER_WEIGHTS],
                    "One weight per style layer.", flag_values=fv)
  flags.DEFINE_enum("optimizer", "lbfgs", ["lbfgs", "adam"], "optax optimiser.",
                    flag_values=fv)
  flags.DEFINE_float("learning_rate", 0.02, "Adam step size (pixels in [0, 1]).",
                     flag_values=fv)
  flags.DEFINE_enum("init", "content", ["content", "noise"], "Starting image.",
                    flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the noise start.", flag_values=fv)
  return fv


def _floats(values: Sequence[str]) -> tuple[float, ...]:
  """['1', '0.5'] -> (1.0, 0.5), with an error naming the bad entry."""
  out = []
  for v in values:
    try:
      out.append(float(v))
    except ValueError:
      raise ValueError(f"--style_layer_weights: not a number: {v!r}") from None
  return tuple(out)


def _stylize(fv: flags.FlagValues) -> int:
  if fv.size < 0:
    raise command.UsageError(f"--size={fv.size}: must be 0 (keep the size) or more")
  if fv.optimizer == "adam" and not fv.learning_rate > 0:
    raise command.UsageError(f"--learning_rate={fv.learning_rate}: must be > 0")
  try:
    weights = StyleTransferWeights(
        content_layer=fv.content_layer, style_layers=tuple(fv.style_layers),
        style_layer_weights=_floats(fv.style_layer_weights),
        content_weight=fv.content_weight, style_weight=fv.style_weight,
        tv_weight=fv.tv_weight)
    summary = stylize_files(fv.content, fv.style, fv.output, steps=fv.steps,
                            size=fv.size or None, weights=weights, optimizer=fv.optimizer,
                            learning_rate=fv.learning_rate, init=fv.init, seed=fv.seed)
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
  return command.run(argv, __doc__, lambda argv: _define_flags(), _stylize,
                     required=("content", "style", "output"))


if __name__ == "__main__":
  sys.exit(main(sys.argv))
