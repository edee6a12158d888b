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

import hashlib
import json
import logging
import os
import sys
from typing import Any

from absl import app, flags
import numpy as np

from tp2p_jax.console import quiet_libraries

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

log = logging.getLogger("tp2p_jax.evaluate")


def _file_digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()[:16]


def _inception_metrics(run, real: np.ndarray, fake: np.ndarray, weights_path: str,
                       input_size: int, split: str, batch_size: int) -> dict[str, Any]:
  """FID and KID of generated vs real photos (N, S, S, 3) in [-1, 1]; the
  real features are cached in the run, keyed by split, count and weights."""
  import jax
  from tp2p_jax import metrics
  from tp2p_jax.atomic_files import write_npz_atomically
  from tp2p_jax.inference.run_loading import in_fixed_batches
  variables = jax.device_put(metrics.load_inception_weights(weights_path))

  def features(images: np.ndarray) -> np.ndarray:
    fn = lambda x: metrics.inception_features(x, variables, input_size=input_size)  # noqa: E731
    return in_fixed_batches(fn, [images], batch_size).astype(np.float64)

  cache = os.path.join(run.workdir, "eval", f"inception_real_{split}_{len(real)}_"
                       f"{input_size}_{_file_digest(weights_path)}.npz")
  real_features = None
  if os.path.exists(cache):
    try:
      with np.load(cache, allow_pickle=False) as f:
        real_features = np.asarray(f["features"])
    except (OSError, ValueError, KeyError) as e:
      log.warning("ignoring unreadable %s (%s)", cache, e)
  if real_features is None or len(real_features) != len(real):
    real_features = features(real)
    write_npz_atomically(cache, {"features": real_features})
  fake_features = features(fake)
  subset = min(1000, len(real))
  kid_mean, kid_std = metrics.kid(real_features, fake_features, subset_size=subset)
  return {"fid": metrics.fid_from_features(real_features, fake_features), "kid": kid_mean,
          "kid_std": kid_std, "kid_subset_size": subset, "inception_real_cache": cache}


def evaluate(workdir: str, *, split: str = "validation", step: int | None = None,
             num_examples: int | None = None, batch_size: int = 16,
             inception_weights: str | None = None, inception_size: int = 299,
             dtype: str | None = None) -> dict[str, Any]:
  """All metrics of a run (see the module docstring); writes
  `RUN/eval/<step>.json` and the embedding plot, returns the metrics."""
  from tp2p_jax import metrics
  from tp2p_jax.data import pipeline
  from tp2p_jax.data.sources import make_sources
  from tp2p_jax.inference import run_loading, styles

  run = run_loading.load_trained_run(workdir, step, dtype)
  c = run.config
  train_source, held_out = make_sources(
      c.data.source, image_size=c.image_size, seed=c.seed, num_train=c.data.num_train,
      num_eval=c.data.num_eval, body_probability=c.data.body_probability,
      data_dir=c.data.data_dir)
  source = held_out if split == "validation" else train_source
  if num_examples is None and split == "train":
    num_examples = 256
  batches = list(pipeline.make_eval_batches(source, batch_size=batch_size,
                                            image_size=run.image_size,
                                            num_examples=num_examples))
  if not batches:
    raise run_loading.RunError(f"{workdir}: the {split} split is empty")
  real_a = np.concatenate([b["real_a"] for b in batches])
  real_b = np.concatenate([b["real_b"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  n = len(real_a)
  fixed = lambda fn, *arrays: run_loading.in_fixed_batches(fn, list(arrays), batch_size)  # noqa: E731

  # Reconstruction: each sketch in the style of its own target photo.
  embeddings = fixed(run.embed, real_b)
  fake = fixed(run.generate, real_a, embeddings)
  untrained = run_loading.untrained_generator_variables(run)
  fake_untrained = fixed(lambda x, s: run.generate(x, s, untrained), real_a, embeddings)
  result: dict[str, Any] = {"step": run.step, "split": split, "num_examples": n,
                            "image_size": run.image_size}
  result["l1"] = float(np.mean(fixed(metrics.l1, fake, real_b)))
  result["l1_untrained"] = float(np.mean(fixed(metrics.l1, fake_untrained, real_b)))
  result["psnr"] = metrics.mean_psnr(fixed(metrics.psnr, fake, real_b))
  if run.image_size >= 11:
    result["ssim"] = float(np.mean(fixed(metrics.ssim, fake, real_b)))
  if run.image_size >= 16:
    result["lpips"] = float(np.mean(fixed(metrics.lpips, fake, real_b)))

  # Style adaptation: every sketch in every class's average style.
  bank = styles.class_embeddings(run)
  per_class = {}
  for k, name in enumerate(bank.names):
    if bank.counts[k] == 0:
      continue
    styled = fixed(run.generate, real_a, np.repeat(bank.means[k][None], n, axis=0))
    predicted = np.argmax(fixed(run.classify, styled), axis=-1)
    per_class[name] = float(np.mean(predicted == k))
  result["style_accuracy"] = float(np.mean(list(per_class.values())))
  result["style_accuracy_per_class"] = per_class

  # The style encoder itself, on the real held-out photos.
  seen = bank.counts > 0
  scores = metrics.cosine_scores(embeddings, bank.means)
  known = seen[labels]
  if len(np.unique(labels[known])) >= 2:
    result["encoder_eer"] = metrics.equal_error_rate(scores[known][:, seen],
                                                     np.searchsorted(np.flatnonzero(seen),
                                                                     labels[known]))
  result["encoder_centroid_accuracy"] = metrics.classification_accuracy(scores, labels)
  result["encoder_accuracy"] = float(np.mean(np.argmax(fixed(run.classify, real_b), -1)
                                             == labels))
  eval_dir = os.path.join(run.workdir, "eval")
  points, method = metrics.project_2d(embeddings)
  plot = os.path.join(eval_dir, f"embeddings_{run.step}.png")
  metrics.save_projection_plot(points, labels, bank.names, plot,
                               title=f"style embeddings ({split}, step {run.step}, {method})")
  result["projection"] = plot
  result["projection_method"] = method

  if inception_weights:
    result.update(_inception_metrics(run, real_b, fake, inception_weights, inception_size,
                                     split, batch_size))
  os.makedirs(eval_dir, exist_ok=True)
  with open(os.path.join(eval_dir, f"{run.step}.json"), "w") as f:
    json.dump(result, f, indent=2, sort_keys=True)
  return result


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from tp2p_jax.inference.run_loading import RunError
  from tp2p_jax.metrics import InceptionWeightError
  quiet_libraries()
  if not _WORKDIR.value:
    print("error: --workdir is required", file=sys.stderr)
    sys.exit(2)
  try:
    result = evaluate(_WORKDIR.value, split=_SPLIT.value, step=_STEP.value,
                      num_examples=_NUM_EXAMPLES.value, batch_size=_BATCH_SIZE.value,
                      inception_weights=_INCEPTION.value, inception_size=_INCEPTION_SIZE.value,
                      dtype=_DTYPE.value)
  except (RunError, InceptionWeightError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
