"""Held-out validation while training (`config.eval_every`): a stage's
`validate(state, mesh, jit)` for methods that translate sketches (A) to
photos (B).

It scores the EMA generator on the first `eval_examples` pairs of the data
source's held-out split (`evaluate --split=validation`'s pairs; the same
examples at every validation) with `evaluate`'s metrics and summaries
(`tp2p_jax.metrics.reconstruction_metric`, `summarize_reconstruction`,
`fid_and_kid`): l1, psnr, ssim, lpips; style_accuracy for a
style-conditioned generator (the frozen style encoder's class of each
output, styled by its target photo's embedding, against the target's
label); fid and kid with an Inception-v3 weights file.

Data parallel and multi-host: the examples go through the mesh in fixed
batches of the training batch size, each process reading and feeding only
the rows of its own devices, in one program compiled once per run (the
stage's `jit`); the per-image values come back replicated, so every process
computes the same summaries. The held-out data are read apart from the
training iterator, and nothing here draws from the training RNG: a resumed
run stays exact.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np

from tp2p_jax import metrics
from tp2p_jax.core import mesh as mesh_lib
from tp2p_jax.core import storage
from tp2p_jax.core.run_dir import RunError
from tp2p_jax.core.stage import Jit
from tp2p_jax.data import pipeline
from tp2p_jax.methods import test_mode
from tp2p_jax.metrics import lpips_vgg

# `generate(state, real_a, real_b, seeds) -> fake_b`: the EMA generator on
# sketches (B, S, S, 3) in [-1, 1], styled by the target photos `real_b` if
# it takes a style, run in the run's test mode (`tp2p_jax.methods.test_mode`;
# `seeds` (B,) int32: held-out pair k's dropout seed, `image_seeds(0, k)`, as
# `evaluate --seed=0` gives it, so that a train-mode run's eval/ scores are
# evaluate's); (B, S, S, 3) in [-1, 1].
Generate = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]
# `classify(state, images) -> (B, C)` style-class scores of images in [-1, 1].
Classify = Callable[[Any, jax.Array], jax.Array]

Validate = Callable[[Any, Mesh, Jit], dict[str, float]]


def load_inception(path: str) -> dict[str, Any]:
  """Inception-v3 variables from `path` (`metrics.load_inception_weights`);
  `RunError` naming the config field if the file is missing or wrong."""
  if not storage.path(path).is_file():
    raise RunError(f"--config.eval_inception_weights={path}: no such file")
  try:
    return metrics.load_inception_weights(path)
  except (OSError, ValueError) as e:  # InceptionWeightError is a ValueError
    raise RunError(f"--config.eval_inception_weights={path}: {e}") from None


def process_rows(num_examples: int, batch_size: int, num_devices: int,
                 local_positions: list[int]) -> list[np.ndarray]:
  """The example indices one process feeds, per batch: batch b covers rows
  b * batch_size ... of the examples, device d of the mesh its
  batch_size / num_devices rows from d's position on; the process takes
  those of its devices (`local_positions`, their places in the mesh).
  Indices >= `num_examples` are padding, scored with weight 0. Over all
  processes, every example comes once."""
  per_device = batch_size // num_devices
  return [np.concatenate([b * batch_size + p * per_device + np.arange(per_device)
                          for p in sorted(local_positions)])
          for b in range(-(-num_examples // batch_size))]


def held_out_validation(source: Any, *, num_examples: int, image_size: int,
                        batch_size: int, generate: Generate,
                        classify: Classify | None = None,
                        inception_weights: str = "", keep_best: str = "") -> Validate:
  """`validate(state, mesh, jit) -> {metric: value}` over the first
  `num_examples` records of the held-out `source` (all if fewer).

  Args:
    source: random-access held-out pairs (`tp2p_jax.data.sources`).
    num_examples: how many of its first records are scored.
    image_size: side S the records are resized to.
    batch_size: images per program call over the whole mesh (the
      training batch: a multiple of the device count).
    generate: the EMA generator (see `Generate`).
    classify: the style classifier of a style-conditioned generator, or
      None (no style_accuracy).
    inception_weights: a local Inception-v3 weights file for fid and kid
      ("" for none); read and checked here, at once.
    keep_best: the run's `keep_best` ("" for none), checked against the
      metrics these arguments give.

  Raises:
    RunError: an empty held-out split, unusable Inception weights, or a
      `keep_best` metric this validation does not give.
  """
  n = min(int(num_examples), len(source))
  if n < 1:
    raise RunError("--config.eval_every: the data source's held-out split is empty, so there "
                   "is nothing to validate on; set --config.eval_every=0")
  names = metrics.reconstruction_metric_names(image_size)
  given = [*names, *(["style_accuracy"] if classify is not None else []),
           *(["fid", "kid"] if inception_weights else [])]
  if keep_best and keep_best.removeprefix("eval/") not in given:
    raise RunError(f"--config.keep_best={keep_best!r}: this run's validation gives "
                   f"{', '.join('eval/' + g for g in given)}"
                   + (" (eval/fid and eval/kid need --config.eval_inception_weights)"
                      if keep_best in ("eval/fid", "eval/kid") else ""))
  inception = load_inception(inception_weights) if inception_weights else None
  # One process's view, made at the first validation: its rows of every
  # batch, the networks' weights on the mesh, the programs.
  made: dict[str, Any] = {}

  def scores(state: Any, batch: dict[str, jax.Array], frozen: dict[str, Any],
             mesh: Mesh) -> dict[str, jax.Array]:
    fake = generate(state, batch["real_a"], batch["real_b"], batch["seed"])
    out = {name: metrics.reconstruction_metric(name, fake, batch["real_b"],
                                               frozen.get("lpips"))
           for name in names}
    if classify is not None:
      out["style_accuracy"] = (jnp.argmax(classify(state, fake), axis=-1)
                               == batch["label"]).astype(jnp.float32)
    if inception is not None:
      out["fake_features"] = metrics.inception_features(fake, frozen["inception"])
    out["weight"] = batch["weight"]
    # Every process gets every row's values (an all-gather over the mesh).
    return jax.lax.with_sharding_constraint(out, mesh_lib.replicated(mesh))

  def real_features(batch: dict[str, jax.Array], frozen: dict[str, Any], mesh: Mesh
                    ) -> jax.Array:
    return jax.lax.with_sharding_constraint(
        metrics.inception_features(batch["real_b"], frozen["inception"]),
        mesh_lib.replicated(mesh))

  def setup(mesh: Mesh) -> None:
    position = {d.id: i for i, d in enumerate(mesh.devices.flat)}
    batches = []
    for rows in process_rows(n, batch_size, mesh.devices.size,
                             [position[d.id] for d in mesh.local_devices]):
      # Padding rows repeat the last example, with weight 0.
      batch = dict(pipeline.examples_at(source, np.minimum(rows, n - 1),
                                        image_size=image_size))
      batch["weight"] = (rows < n).astype(np.float32)
      batch["seed"] = test_mode.image_seeds(0, np.minimum(rows, n - 1))
      batches.append(batch)
    made["batches"] = batches
    frozen: dict[str, Any] = {}
    if "lpips" in names:
      frozen["lpips"] = lpips_vgg.load_lpips_variables()
    if inception is not None:
      frozen["inception"] = inception
    made["frozen"] = jax.device_put(frozen, mesh_lib.replicated(mesh))

  def validate(state: Any, mesh: Mesh, jit: Jit) -> dict[str, float]:
    if not made:
      setup(mesh)
    program = jit("validate", functools.partial(scores, mesh=mesh))
    rows: dict[str, list[np.ndarray]] = {}
    for local in made["batches"]:
      batch = mesh_lib.to_global_batch(local, mesh)
      for name, values in jax.device_get(program(state, batch, made["frozen"])).items():
        rows.setdefault(name, []).append(np.asarray(values))
    values = {name: np.concatenate(v) for name, v in rows.items()}
    kept = values.pop("weight") > 0
    values = {name: v[kept] for name, v in values.items()}
    fake_features = values.pop("fake_features", None)
    result = metrics.summarize_reconstruction({name: values[name] for name in names})
    if "style_accuracy" in values:
      result["style_accuracy"] = float(np.mean(values["style_accuracy"]))
    if fake_features is not None:
      if "real_features" not in made:  # the targets do not change: once per run
        program_real = jit("validate_real_features", functools.partial(real_features,
                                                                        mesh=mesh))
        made["real_features"] = np.concatenate([
            np.asarray(jax.device_get(program_real(mesh_lib.to_global_batch(b, mesh),
                                                   made["frozen"])))
            for b in made["batches"]])[kept]
      fid_kid = metrics.fid_and_kid(made["real_features"].astype(np.float64),
                                    fake_features.astype(np.float64))
      result.update(fid=fid_kid["fid"], kid=fid_kid["kid"])
    return result

  return validate
