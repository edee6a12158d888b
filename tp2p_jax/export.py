r"""Serialises a run's EMA generator as a portable StableHLO program.

  python -m tp2p_jax.export --workdir=runs/toycats --output=toycats_generator.jaxexport

The file holds `jax.export` bytes of `generate(sketches, style) -> photos`
with the trained weights inside and a symbolic batch dimension:
sketches (B, S, S, 3) float32 in [-1, 1] and style (B, E) float32 ->
(B, S, S, 3) float32 in [-1, 1], for any B. Beside it,
`<output>.styles.npz` holds the class-average style embeddings (`names`,
`means`) and `<output>.json` the shapes, step and platforms. Reload with
`tp2p_jax.export.load_exported(path)` (or `jax.export.deserialize`) in any
JAX process: no tp2p_jax model code or checkpoint is needed.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Sequence

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from tp2p_jax.console import quiet_libraries

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by run_train.py.")
_OUTPUT = flags.DEFINE_string("output", None, "Output file for the serialised program.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"],
                           "Generator compute dtype baked into the program (default: the "
                           "run's).")
_PLATFORMS = flags.DEFINE_list("platforms", None, "Lowering platforms, e.g. cpu,cuda,tpu "
                               "(default: this machine's).")


def export_generator(run, platforms: Sequence[str] | None = None) -> jax.export.Exported:
  """`jax.export` of the run's EMA generator with a symbolic batch size.

  Args:
    run: a `tp2p_jax.inference.run_loading.TrainedRun`.
    platforms: lowering platforms (default: the current backend).
  """
  variables = jax.tree.map(jnp.asarray, run.generator_variables)

  def generate(sketches: jax.Array, style: jax.Array) -> jax.Array:
    return run.generator.apply(variables, sketches, style, train=False).astype(jnp.float32)

  (batch,) = jax.export.symbolic_shape("b")
  s, e = run.image_size, run.style_dim
  args = (jax.ShapeDtypeStruct((batch, s, s, 3), jnp.float32),
          jax.ShapeDtypeStruct((batch, e), jnp.float32))
  kwargs = {"platforms": tuple(platforms)} if platforms else {}
  return jax.export.export(jax.jit(generate), **kwargs)(*args)


def write_export(run, output: str, platforms: Sequence[str] | None = None) -> dict:
  """Writes `output` (serialised program), `output.styles.npz` and
  `output.json`; returns the JSON summary."""
  from tp2p_jax.atomic_files import write_npz_atomically
  from tp2p_jax.inference import styles
  exported = export_generator(run, platforms)
  data = exported.serialize()
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  tmp = output + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, output)
  bank = styles.class_embeddings(run)
  write_npz_atomically(output + ".styles.npz", {"names": np.asarray(bank.names),
                                                "means": bank.means, "counts": bank.counts})
  summary = {"output": os.path.abspath(output), "bytes": len(data), "step": run.step,
             "workdir": run.workdir, "image_size": run.image_size, "style_dim": run.style_dim,
             "inputs": [str(a) for a in exported.in_avals],
             "outputs": [str(a) for a in exported.out_avals],
             "platforms": list(exported.platforms), "styles": list(bank.names)}
  with open(output + ".json", "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def load_exported(path: str) -> jax.export.Exported:
  """Reads a file written by `write_export`; call `.call(sketches, style)`."""
  with open(path, "rb") as f:
    return jax.export.deserialize(bytearray(f.read()))


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from tp2p_jax.inference.run_loading import RunError, load_trained_run
  quiet_libraries()
  if not _WORKDIR.value or not _OUTPUT.value:
    print("error: --workdir and --output are required", file=sys.stderr)
    sys.exit(2)
  try:
    run = load_trained_run(_WORKDIR.value, _STEP.value, _DTYPE.value)
    summary = write_export(run, _OUTPUT.value, _PLATFORMS.value)
  except (RunError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
