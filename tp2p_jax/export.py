r"""Serialises a run's EMA generator as a portable StableHLO program.

  python -m tp2p_jax.export --workdir=runs/toycats --output=toycats_generator.jaxexport

The file holds `jax.export` bytes of `generate(sketches, style) -> photos`
(`generate(sketches)` for generators without a style input, e.g. pix2pix)
with the trained weights inside and a symbolic batch dimension:
sketches (B, S, S, 3) float32 in [-1, 1] and style (B, E) float32 ->
(B, S, S, 3) float32 in [-1, 1], for any B. Beside it,
`<output>.styles.npz` holds the class-average style embeddings (`names`,
`means`) of a style-conditioned run, and `<output>.json` the shapes, step
and platforms. Reload with
`tp2p_jax.inference.exporting.load_exported(path)` (or `jax.export.deserialize`) in any
JAX process: no tp2p_jax model code or checkpoint is needed.
"""
from __future__ import annotations

import json
import sys

from absl import app, flags

from tp2p_jax.console import quiet_libraries
from tp2p_jax.xla_flags import set_default_xla_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by run_train.py.")
_OUTPUT = flags.DEFINE_string("output", None, "Output file for the serialised program.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"],
                           "Generator compute dtype baked into the program (default: the "
                           "run's).")
_PLATFORMS = flags.DEFINE_list("platforms", None, "Lowering platforms, e.g. cpu,cuda,tpu "
                               "(default: this machine's).")


def main(argv: list[str]) -> None:
  set_default_xla_flags()  # before JAX starts its backends
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from tp2p_jax.inference import exporting
  from tp2p_jax.inference.run_loading import RunError, load_trained_run
  quiet_libraries()
  if not _WORKDIR.value or not _OUTPUT.value:
    print("error: --workdir and --output are required", file=sys.stderr)
    sys.exit(2)
  try:
    run = load_trained_run(_WORKDIR.value, _STEP.value, _DTYPE.value)
    summary = exporting.write_export(run, _OUTPUT.value, _PLATFORMS.value)
  except (RunError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
