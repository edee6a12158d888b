"""Serialising a run's EMA generator with `jax.export` (the library behind
`python -m tp2p_jax.export`; the file format is described there)."""
from __future__ import annotations

import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def export_generator(run, platforms: Sequence[str] | None = None) -> jax.export.Exported:
  """`jax.export` of the run's EMA generator with a symbolic batch size.

  Args:
    run: a `tp2p_jax.inference.run_loading.TrainedRun`.
    platforms: lowering platforms (default: the current backend).
  """
  from tp2p_jax.train.steps import apply_generator
  variables = jax.tree.map(jnp.asarray, run.generator_variables)

  def generate(sketches: jax.Array, *style: jax.Array) -> jax.Array:
    return apply_generator(run.generator, variables, sketches, style[0] if style else None,
                           train=False).astype(jnp.float32)

  (batch,) = jax.export.symbolic_shape("b")
  s = run.image_size
  args = [jax.ShapeDtypeStruct((batch, s, s, 3), jnp.float32)]
  if run.takes_style:
    args.append(jax.ShapeDtypeStruct((batch, run.style_dim), jnp.float32))
  kwargs = {"platforms": tuple(platforms)} if platforms else {}
  return jax.export.export(jax.jit(generate), **kwargs)(*args)


def write_export(run, output: str, platforms: Sequence[str] | None = None) -> dict:
  """Writes `output` (serialised program), `output.styles.npz` and
  `output.json`; returns the JSON summary."""
  from tp2p_jax.atomic_files import write_npz_atomically
  from tp2p_jax.inference import styles
  from tp2p_jax.inference.run_loading import imported_fresh, names_no_dataset
  exported = export_generator(run, platforms)
  data = exported.serialize()
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  tmp = output + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, output)
  summary = {"output": os.path.abspath(output), "bytes": len(data), "model": run.model_name,
             "step": run.step, "workdir": run.workdir, "image_size": run.image_size,
             "style_dim": run.style_dim, "inputs": [str(a) for a in exported.in_avals],
             "outputs": [str(a) for a in exported.out_avals],
             "platforms": list(exported.platforms)}
  if run.takes_style and (names_no_dataset(run.config)
                         or "style_encoder" in imported_fresh(run.config)):
    # An imported run without training data or encoder: no class averages.
    summary["styles"] = []
  elif run.takes_style:
    bank = styles.class_embeddings(run)
    write_npz_atomically(output + ".styles.npz", {"names": np.asarray(bank.names),
                                                  "means": bank.means, "counts": bank.counts})
    summary["styles"] = list(bank.names)
  with open(output + ".json", "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def load_exported(path: str) -> jax.export.Exported:
  """Reads a file written by `write_export`; call `.call(sketches, style)`."""
  with open(path, "rb") as f:
    return jax.export.deserialize(bytearray(f.read()))
