r"""Evaluates a trained run on held-out sketch/photo pairs.

  python -m tp2p_jax.evaluate --workdir=runs/toycats
  python -m tp2p_jax.evaluate --workdir=RUN --split=validation \
      --inception_weights=pt_inception.npz       # adds FID and KID

Metrics (the last stdout line is one JSON object with all of them, also
written to `RUN/eval/<step>.json`):

* `l1`, `psnr`, `ssim`, `lpips`: the EMA generator's output for each
  held-out sketch, styled by its target photo's embedding, against that
  photo (L1 on the [-1, 1] scale; PSNR/SSIM on [0, 1]; LPIPS-VGG).
  `l1_untrained`: the same L1 for the generator as the run initialised it.
* `style_accuracy`: every held-out sketch is generated with each class's
  average embedding and the frozen style encoder classifies the result; the
  fraction landing in the requested class (`style_accuracy_per_class` too).
* `encoder_eer`, `encoder_centroid_accuracy`: the style encoder's
  verification EER and nearest-centroid accuracy from cosine scores of the
  held-out photos against the class-average embeddings; `encoder_accuracy`:
  its own CosFace head. `RUN/eval/embeddings_<step>.png` maps the held-out
  embeddings to 2-D (UMAP if installed, else PCA), coloured by class.
* `fid`, `kid`, `kid_std` (with `--inception_weights`, a local Inception-v3
  `.npz`; nothing is downloaded): generated vs real photos; the real
  photos' features are cached in `RUN/eval/`.
"""
from __future__ import annotations

import json
import sys

from absl import app, flags

from tp2p_jax.console import quiet_libraries
from tp2p_jax.xla_flags import set_default_xla_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by run_train.py.")
_SPLIT = flags.DEFINE_enum("split", "validation", ["validation", "train"],
                           "Which pairs: the held-out ones, or the training ones.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", None, "Pairs evaluated (default: the "
                                     "whole validation split; train: 256).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Images per network call.")
_INCEPTION = flags.DEFINE_string("inception_weights", None, "Local Inception-v3 weights "
                                 "(.npz, see tp2p_jax.metrics.load_inception_weights); "
                                 "enables FID and KID.")
_INCEPTION_SIZE = flags.DEFINE_integer("inception_size", 299, "Inception input side (keep "
                                       "299 for FIDs comparable with other work).")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"],
                           "Generator compute dtype (default: the run's).")


def main(argv: list[str]) -> None:
  set_default_xla_flags()  # before JAX starts its backends
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from tp2p_jax.inference import evaluation
  from tp2p_jax.inference.run_loading import RunError
  from tp2p_jax.metrics import InceptionWeightError
  quiet_libraries()
  if not _WORKDIR.value:
    print("error: --workdir is required", file=sys.stderr)
    sys.exit(2)
  try:
    result = evaluation.evaluate(_WORKDIR.value, split=_SPLIT.value, step=_STEP.value,
                      num_examples=_NUM_EXAMPLES.value, batch_size=_BATCH_SIZE.value,
                      inception_weights=_INCEPTION.value, inception_size=_INCEPTION_SIZE.value,
                      dtype=_DTYPE.value)
  except (RunError, InceptionWeightError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
