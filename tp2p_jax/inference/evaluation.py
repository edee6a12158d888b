"""Held-out evaluation of a trained run (the library behind
`python -m tp2p_jax.cli.evaluate`; the metrics are described there)."""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from tp2p_jax.core import storage

import jax

if TYPE_CHECKING:
  from jax.sharding import Mesh

log = logging.getLogger("tp2p_jax.cli.evaluate")


def _file_digest(path: str | os.PathLike[str]) -> str:
  h = hashlib.sha256()
  with storage.path(path).open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()[:16]


def _inception_metrics(run, real: np.ndarray, fake: np.ndarray,
                       weights_path: str | os.PathLike[str], weights: dict[str, Any],
                       input_size: int, split: str, batch_size: int, mesh: Mesh,
                       show_progress: bool = False) -> dict[str, Any]:
  """FID and KID of generated vs real photos (N, S, S, 3) in [-1, 1] with
  the Inception `weights` read from `weights_path` (replicated on `mesh`,
  each batch split over it); the real features are cached in the run, keyed
  by split, count and weights."""
  from tp2p_jax import metrics
  from tp2p_jax.core.atomic_files import write_npz_atomically
  from tp2p_jax.inference import parallel
  from tp2p_jax.inference.run_loading import in_fixed_batches
  variables = parallel.replicate(weights, mesh)

  def features(images: np.ndarray, desc: str) -> np.ndarray:
    fn = lambda x: metrics.inception_features(x, variables, input_size=input_size)  # noqa: E731
    return parallel.across_processes(lambda rows: in_fixed_batches(
        fn, rows, batch_size, desc=desc if show_progress else None, mesh=mesh),
        [images]).astype(np.float64)

  cache = (storage.path(run.workdir) / "eval" / f"inception_real_{split}_{len(real)}_"
           f"{input_size}_{_file_digest(weights_path)}.npz")
  real_features = None
  if cache.exists():
    try:
      with cache.open("rb") as file, np.load(file, allow_pickle=False) as f:
        real_features = np.asarray(f["features"])
    except (OSError, ValueError, KeyError) as e:
      log.warning("ignoring unreadable %s (%s)", cache, e)
  if real_features is None or len(real_features) != len(real):
    real_features = features(real, "inception (real)")
    if jax.process_index() == 0:
      write_npz_atomically(cache, {"features": real_features})
  fake_features = features(fake, "inception (generated)")
  return {**metrics.fid_and_kid(real_features, fake_features),
          "inception_real_cache": os.fspath(cache)}


def evaluate(workdir: str | os.PathLike[str], *, split: str = "validation",
             step: int | str | None = None, num_examples: int | None = None,
             batch_size: int = 16,
             inception_weights: str | os.PathLike[str] | None = None,
             inception_size: int = 299, dtype: str | None = None,
             show_progress: bool = False, devices: Sequence[jax.Device] | None = None,
             test_mode: str | None = None, seed: int = 0) -> dict[str, Any]:
  """All metrics of a run (see `tp2p_jax.cli.evaluate`); writes
  `RUN/eval/<step>.json` and the embedding plot, returns the metrics.

  Every network call takes `batch_size` images (rounded up to a multiple
  of the device count) split over `devices` (default: all of this
  process's), the weights replicated on each. Besides the metrics the
  result holds `devices` (their number), `generated_images` (the
  reconstructions, the untrained baseline's and every class style's
  images), `seconds` (the whole evaluation's wall time: loading the run and
  the pairs, every network and metric, compilation included; not the
  writing of the result) and `images_per_s` (generated_images / seconds).
  `show_progress`: a line per phase and a progress bar over its batches on
  stderr. `workdir` may be a local path or a URL such as gs://.
  `test_mode` ("eval" | "train"; None: the run's `config.test_mode`) and
  `seed` say how the generator runs (`run_loading.with_test_mode`); in
  train mode held-out pair k gets the dropout seed `image_seeds(seed, k)`.

  Raises:
    RunError: the run cannot be loaded or has no held-out pairs.
    FileNotFoundError, InceptionWeightError: `inception_weights` is missing
      or not Inception-v3 weights; checked before the run is loaded.
  """
  from tp2p_jax import metrics
  from tp2p_jax.data import pipeline
  from tp2p_jax.data.sources import sources_from_config
  from tp2p_jax.core.atomic_files import write_json_atomically
  from tp2p_jax.core.run_dir import RunError
  from tp2p_jax.inference import parallel, run_loading
  from tp2p_jax.methods.test_mode import image_seeds

  start = time.perf_counter()
  # Read and checked in full first: a wrong file would otherwise be found
  # only after every image has been generated.
  inception = metrics.load_inception_weights(inception_weights) if inception_weights else None
  mesh = parallel.local_mesh(devices)
  batch_size = parallel.global_batch_size(batch_size, mesh)
  run = run_loading.load_trained_run(workdir, step, dtype, mesh=mesh)
  run = run_loading.with_test_mode(run, test_mode, seed)
  predictor = run.predictor
  c = run.config
  if run_loading.names_no_dataset(c):
    raise RunError(
        f"{run.workdir}: its config names no dataset (a run imported from PyTorch "
        "checkpoints), so there are no held-out pairs: import it with "
        "--config.data.data_dir=DATASET")
  try:
    train_source, held_out = sources_from_config(c.data, image_size=c.image_size, seed=c.seed)
  except ValueError as e:  # e.g. unpaired image folders: nothing to score against
    raise RunError(f"{run.workdir}/config.json: no paired held-out data ({e})") from None
  source = held_out if split == "validation" else train_source
  if num_examples is None and split == "train":
    num_examples = 256
  batches = list(pipeline.make_eval_batches(source, batch_size=batch_size,
                                            image_size=predictor.image_size,
                                            num_examples=num_examples))
  if not batches:
    raise RunError(f"{workdir}: the {split} split is empty")
  real_a = np.concatenate([b["real_a"] for b in batches])
  real_b = np.concatenate([b["real_b"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  n = len(real_a)
  phase = _phase_reporter(show_progress, n)

  def fixed(fn: Callable[..., Any], *arrays: np.ndarray, desc: str | None = None
            ) -> np.ndarray:
    # With several processes each computes its share of the rows and all
    # get every row back, so the metrics below are the one-process ones.
    return parallel.across_processes(
        lambda rows: run_loading.in_fixed_batches(
            fn, rows, batch_size, desc=desc if show_progress else None, mesh=mesh), arrays)

  # Train mode's dropout seeds follow each pair's place in the split, so the
  # metrics do not depend on the batch size, the device or process count.
  seeds = image_seeds(predictor.seed, np.arange(n))

  def generate(x: jax.Array, row_seeds: jax.Array, *style: jax.Array,
               variables: Any = None) -> jax.Array:
    return predictor.generate(x, *style, variables=variables, seeds=row_seeds)

  # Reconstruction: each sketch in the style of its own target photo (if
  # the generator takes a style).
  inputs = [real_a, seeds]
  if predictor.style_dim is not None:
    phase("embedding the target photos")
    embeddings = fixed(run.embed, real_b, desc="embed")
    inputs.append(embeddings)
  phase("generating")
  fake = fixed(generate, *inputs, desc="generate")
  phase("generating with the untrained generator (the baseline)")
  untrained = predictor.initial_variables()["AtoB"]
  fake_untrained = fixed(lambda *x: generate(*x, variables=untrained), *inputs, desc="baseline")
  phase("image metrics (L1, PSNR, SSIM, LPIPS)")
  result: dict[str, Any] = {"model": predictor.model_name, "step": run.step, "split": split,
                            "num_examples": n, "image_size": predictor.image_size,
                            "test_mode": predictor.test_mode}
  # The same metrics and summaries as training's validation
  # (`tp2p_jax.methods.validation`).
  result.update(metrics.summarize_reconstruction({
      name: fixed(functools.partial(metrics.reconstruction_metric, name), fake, real_b)
      for name in metrics.reconstruction_metric_names(predictor.image_size)}))
  result["l1_untrained"] = float(np.mean(fixed(metrics.l1, fake_untrained, real_b)))

  generated = 2 * n
  if predictor.style_dim is not None:
    result.update(_style_metrics(run, real_a, real_b, labels, embeddings, split, fixed, phase,
                                 generate, seeds))
    generated += n * len(result["style_accuracy_per_class"])
  if inception is not None:
    phase("FID and KID (Inception-v3 features)")
    result.update(_inception_metrics(run, real_b, fake, inception_weights, inception,
                                     inception_size, split, batch_size, mesh, show_progress))
  seconds = time.perf_counter() - start
  result.update(devices=int(mesh.devices.size), processes=jax.process_count(),
                batch_size=batch_size,
                generated_images=generated, seconds=round(seconds, 3),
                images_per_s=round(generated / seconds, 3))
  if jax.process_index() == 0:  # one writer of the run's files
    eval_dir = storage.path(run.workdir) / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomically(eval_dir / f"{run.step}.json", result)
  return result


def _phase_reporter(enabled: bool, num_examples: int) -> Callable[[str], None]:
  """`phase(name)` logs "evaluate: NAME (N pairs)" when `enabled`: evaluation
  runs for minutes on a CPU, and a line per phase says where it is."""
  def phase(name: str) -> None:
    if enabled:
      log.info("evaluate: %s (%d pairs)", name, num_examples)
  return phase


def _style_metrics(run, real_a: np.ndarray, real_b: np.ndarray, labels: np.ndarray,
                   embeddings: np.ndarray, split: str, fixed: Callable[..., np.ndarray],
                   phase: Callable[[str], None], generate: Callable[..., jax.Array],
                   seeds: np.ndarray) -> dict[str, Any]:
  """Style adaptation accuracy, the style encoder's EER and accuracies, and
  the embedding map of a style-conditioned run; `generate(sketches, seeds,
  style)` is the run's generator, `seeds` the pairs' dropout seeds."""
  from tp2p_jax import metrics
  from tp2p_jax.inference import styles
  n = len(real_a)
  result: dict[str, Any] = {}
  # Style adaptation: every sketch in every class's average style.
  phase("class-average styles")
  bank = styles.class_embeddings(run)
  per_class = {}
  seen_names = [name for k, name in enumerate(bank.names) if bank.counts[k] > 0]
  phase(f"style accuracy: every sketch in each of {len(seen_names)} class styles")
  for k, name in enumerate(bank.names):
    if bank.counts[k] == 0:
      continue
    styled = fixed(generate, real_a, seeds, np.repeat(bank.means[k][None], n, axis=0),
                   desc=f"style {name}")
    predicted = np.argmax(fixed(run.classify, styled), axis=-1)
    per_class[name] = float(np.mean(predicted == k))
  result["style_accuracy"] = float(np.mean(list(per_class.values())))
  result["style_accuracy_per_class"] = per_class

  # The style encoder itself, on the real held-out photos.
  phase("style encoder metrics and embedding map")
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
  eval_dir = storage.path(run.workdir) / "eval"
  points, method = metrics.project_2d(embeddings)
  plot = os.fspath(eval_dir / f"embeddings_{run.step}.png")
  if jax.process_index() == 0:  # one writer of the run's files
    eval_dir.mkdir(parents=True, exist_ok=True)
    metrics.save_projection_plot(points, labels, bank.names, plot,
                                 title=f"style embeddings ({split}, step {run.step}, {method})")
  result["projection"] = plot
  result["projection_method"] = method
  return result
