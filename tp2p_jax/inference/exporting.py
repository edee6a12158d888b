"""Serialising a run's EMA generator with `jax.export` (the library behind
`python -m tp2p_jax.cli.export`; the file format is described there)."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tp2p_jax.core import storage
from tp2p_jax.core.atomic_files import replacing, write_npz_atomically
from tp2p_jax.inference import styles
from tp2p_jax.inference.run_loading import TrainedRun, names_no_dataset
from tp2p_jax.methods import test_mode


# The platforms `jax.export` lowers for; it takes any other name too and
# writes a program that no backend can run.
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def check_platforms(platforms: Sequence[str] | None) -> None:
  """ValueError naming the first of `platforms` that is not in `PLATFORMS`."""
  for platform in platforms or ():
    if platform not in PLATFORMS:
      raise ValueError(f"unknown platform {platform!r} in --platforms; choose from "
                       f"{', '.join(PLATFORMS)}")


# What the `seed` input of a train-mode export is (JSON summary, ONNX metadata).
SEED_INPUT = ("(batch,) int32, each image's dropout seed: predict --seed=S gives its k-th "
              "input S + k")


@dataclasses.dataclass(frozen=True)
class TestTimeGenerator:
  """netG at test time as a function of arrays alone, what both export
  formats trace: `call(images[, style][, seed])`.

  Attributes:
    call: images (B, S, S, 3) float32 in [-1, 1], style (B, E) for a
      style-conditioned generator, seed (B,) int32 where `seeded`;
      returns (B, S, S, 3) float32 in [-1, 1].
    inputs: the arguments' shapes and dtypes, with the batch given.
    seeded: whether it takes `seed`: in train mode, for a generator that
      draws dropout (`test_mode.draws_dropout`).
  """
  call: Callable[..., jax.Array]
  inputs: tuple[jax.ShapeDtypeStruct, ...]
  seeded: bool


def test_time_generator(generator: nn.Module, variables: Mapping[str, Any], image_size: int,
                        style_dim: int | None, mode: str, batch: Any) -> TestTimeGenerator:
  """`generator` with `variables` (baked in) in test mode `mode`
  (`test_mode.apply_generator`) as a `TestTimeGenerator` for a batch of
  `batch` (a symbolic dimension or an int)."""
  seeded = mode == "train" and test_mode.draws_dropout(generator, variables, image_size,
                                                       style_dim)

  def call(images: jax.Array, *rest: jax.Array) -> jax.Array:
    style = rest[0] if style_dim is not None else None
    seeds = rest[-1] if seeded else jnp.zeros(images.shape[:1], jnp.int32)
    return test_mode.apply_generator(generator, variables, images, style, mode, seeds)

  inputs = [jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32)]
  if style_dim is not None:
    inputs.append(jax.ShapeDtypeStruct((batch, style_dim), jnp.float32))
  if seeded:
    inputs.append(jax.ShapeDtypeStruct((batch,), jnp.int32))
  return TestTimeGenerator(call, tuple(inputs), seeded)


def export_generator(run: TrainedRun, platforms: Sequence[str] | None = None,
                     direction: str = "AtoB") -> jax.export.Exported:
  """`jax.export` of the run's EMA generator in its predictor's test mode
  with a symbolic batch size: `generate(images[, style][, seed])`, images
  (B, S, S, 3) float32 in [-1, 1], style (B, E) for style-conditioned
  generators and seed (B,) int32, each image's dropout seed, in train mode
  for generators with dropout (`TestTimeGenerator.seeded`).

  Args:
    run: a loaded run.
    platforms: lowering platforms, among `PLATFORMS` (default: the current
      backend).
    direction: which generator, one of `run.predictor.directions`.

  Raises:
    ValueError: an unknown platform, or a direction the run lacks.
  """
  check_platforms(platforms)
  predictor = run.predictor
  if direction not in predictor.directions:
    raise ValueError(f"this run's generator translates {'/'.join(predictor.directions)}, "
                     f"not {direction}")
  (batch,) = jax.export.symbolic_shape("b")
  generator = test_time_generator(
      predictor.generator, jax.tree.map(jnp.asarray, predictor.variables[direction]),
      predictor.image_size, predictor.style_dim, predictor.test_mode, batch)
  kwargs = {"platforms": tuple(platforms)} if platforms else {}
  return jax.export.export(jax.jit(generator.call), **kwargs)(*generator.inputs)


def write_export(run: TrainedRun, output: str, platforms: Sequence[str] | None = None,
                 direction: str = "AtoB") -> dict:
  """Writes `output` (serialised program), `output.styles.npz` (class-average
  styles of a style-conditioned run) and `output.json`, each atomically (a
  failed write leaves no temporary file); returns the JSON summary.

  Raises:
    ValueError: an unknown platform, or a direction the run lacks.
    IsADirectoryError: one of the three paths is a folder (checked before
      the program is traced).
    OSError: a file cannot be written.
  """
  predictor = run.predictor
  check_artifact_paths(output)
  exported = export_generator(run, platforms, direction)
  summary = {"model": predictor.model_name, "direction": direction, "step": run.step,
             "workdir": run.workdir, "image_size": predictor.image_size,
             "style_dim": predictor.style_dim,
             # The seed input is the one int32 argument (`test_time_generator`).
             **test_mode_summary(predictor.test_mode,
                                 any(a.dtype == jnp.int32 for a in exported.in_avals)),
             "inputs": [str(a) for a in exported.in_avals],
             "outputs": [str(a) for a in exported.out_avals],
             "platforms": list(exported.platforms)}
  return write_artifact(run, output, exported.serialize(), summary)


def test_mode_summary(mode: str, seeded: bool) -> dict:
  """The JSON summary's account of the test mode: `test_mode`, and `seed`
  (what the seed input is, `SEED_INPUT`; None where there is none)."""
  return {"test_mode": mode, "seed": SEED_INPUT if seeded else None}


def check_artifact_paths(output: str) -> None:
  """`IsADirectoryError` if `output` or one of its side files
  (`.styles.npz`, `.json`) is a local folder: checked before the (slow)
  export, so a mistake costs nothing."""
  for path in (output, output + ".styles.npz", output + ".json"):
    if not storage.is_url(path) and os.path.isdir(path):
      raise IsADirectoryError(f"{path}: is a folder; give a file name")


def write_artifact(run: TrainedRun, output: str, data: bytes, summary: dict) -> dict:
  """Writes an exported model's files, each atomically: `output` (`data`),
  `output.styles.npz` (the class-average styles of a style-conditioned run
  with training data and an encoder) and `output.json` (`summary` with the
  output's name, its size and the style names first). Returns the JSON."""
  predictor = run.predictor
  summary = {"output": storage.text(output), **summary, "bytes": len(data)}
  with replacing(output, "wb") as f:
    f.write(data)
  if predictor.style_dim is not None:
    if names_no_dataset(run.config) or predictor.style_encoder is None:
      # An imported run without training data or encoder: no class averages.
      summary["styles"] = []
    else:
      bank = styles.class_embeddings(run)
      write_npz_atomically(output + ".styles.npz", {"names": np.asarray(bank.names),
                                                    "means": bank.means,
                                                    "counts": bank.counts})
      summary["styles"] = list(bank.names)
  with replacing(output + ".json", "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def load_exported(path: str) -> jax.export.Exported:
  """Reads a file written by `write_export` (a local path or a gs:// URL);
  call `.call(images[, style][, seed])`."""
  with storage.path(path).open("rb") as f:
    return jax.export.deserialize(bytearray(f.read()))
