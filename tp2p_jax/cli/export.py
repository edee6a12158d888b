r"""Serialises a run's EMA generator as a portable StableHLO program.

  python -m tp2p_jax.cli.export --workdir=runs/toycats --output=toycats_generator.jaxexport

(`tp2p export FLAGS` is the same.) The file holds `jax.export` bytes of
`generate(sketches, style) -> photos` (`generate(images)` for generators
without a style input, e.g. pix2pix; CycleGAN runs export the generator of
`--direction`) with the trained weights inside and a symbolic batch
dimension: sketches (B, S, S, 3) float32 in [-1, 1] and style (B, E)
float32 -> (B, S, S, 3) float32 in [-1, 1], for any B. Beside it,
`<output>.styles.npz` holds the class-average style embeddings (`names`,
`means`) of a style-conditioned run, and `<output>.json` the shapes, step
and platforms (also printed as JSON on the last stdout line). Reload with
`tp2p_jax.inference.exporting.load_exported(path)` (or
`jax.export.deserialize`) in any JAX process: no tp2p_jax model code or
checkpoint is needed.

Exit status: 0 written; 2 a usage error (unknown or missing flag, bad run,
a direction the run lacks, an unknown platform, an --output that is a
folder or not writable, or that (or a file beside it) would replace one of
the run's own files (`--output=RUN/config` would put `config.json` over
the run's) or a device behind a link; one line on stderr, checked before
anything is traced or written).

`--format=onnx` writes an ONNX model instead (converted by jax2onnx: the
`onnx` extra, `pip install -e ".[onnx]"`), for onnxruntime, TensorRT,
CoreML and the like, with the same signature: inputs `images` (batch, S, S, 3)
float32 in [-1, 1] and, for style-conditioned generators, `style`
(batch, E) float32; output `output` (batch, S, S, 3) float32 in [-1, 1];
NHWC, `batch` symbolic, stated in the model's metadata (`tp2p.*` keys);
the same `.styles.npz` and `.json` beside it. It is computed in float32
unless `--dtype` says otherwise; `--platforms` does not apply. Without the
converter it is a usage error (exit 2, before the run is loaded); a
generator the converter cannot convert exits 1 with one line naming the
operation.

  python -m tp2p_jax.cli.export --workdir=runs/toycats --output=toycats_generator.onnx --format=onnx

`--test_mode` (default: the run's `config.test_mode`) is baked into either
format. In train mode a generator with dropout (pix2pix's U-Net) takes one
more input, `seed` (B,) int32, each image's dropout seed (`predict
--seed=S` gives its k-th input S + k; the JSON's `seed` says so); BatchNorm
normalises each image with its own statistics.

From Python: `tp2p_jax.inference.exporting.write_export(run, output,
platforms, direction)` (ONNX: `tp2p_jax.inference.onnx_export.write_onnx_export(run,
output, direction)`) on a run loaded with
`tp2p_jax.inference.run_loading.load_trained_run(workdir, step, dtype)`;
`main(argv)` parses the flags into their arguments.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Sequence

from absl import flags

from tp2p_jax.cli import command


def _define_flags() -> flags.FlagValues:
  """The flags, in a registry of their own: `main` can then run repeatedly
  in one process (tests) beside other tools' flags of the same names."""
  fv = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "Run directory written by run_train.py.",
                      flag_values=fv)
  flags.DEFINE_string("output", None, "Output file for the serialised program.",
                      flag_values=fv)
  command.define_checkpoint_flags(fv)
  flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"],
                    "Generator compute dtype baked into the program (default: the run's; "
                    "float32 for --format=onnx).",
                    flag_values=fv)
  flags.DEFINE_enum("direction", "AtoB", ["AtoB", "BtoA"],
                    "Which generator of a two-way (CycleGAN) run.", flag_values=fv)
  flags.DEFINE_enum("format", "jax", ["jax", "onnx"],
                    "jax: a jax.export (StableHLO) program; onnx: an ONNX model (the onnx "
                    "extra).", flag_values=fv)
  flags.DEFINE_list("platforms", None, "Lowering platforms, e.g. cpu,cuda,tpu (default: "
                    "this machine's).", flag_values=fv)
  command.define_test_mode_flags(fv, seed=False)
  return fv


def _export(fv: flags.FlagValues) -> int:
  from tp2p_jax.cli import checks, output_paths
  from tp2p_jax.inference import exporting, onnx_export
  from tp2p_jax.inference.run_loading import load_trained_run, with_test_mode
  # Before the run is loaded and the program traced; nothing is created.
  checkpoint = command.checkpoint_choice(fv)
  checks.run_dir(fv.workdir)
  onnx = fv.format == "onnx"
  if onnx and fv.platforms:
    raise command.UsageError("--platforms applies to --format=jax only (an ONNX model runs "
                             "wherever its runtime does)")
  if onnx and not onnx_export.converter_available():
    raise command.UsageError("--format=onnx needs jax2onnx and onnx: "
                             "pip install 'tp2p_jax[onnx]'")
  try:
    exporting.check_platforms(fv.platforms)
  except ValueError as e:
    raise command.UsageError(str(e)) from None
  output = os.fspath(checks.output_file_writable(fv.output, "output"))
  for sidecar in (".styles.npz", ".json"):
    if os.path.isdir(output + sidecar):
      raise command.UsageError(f"--output={fv.output}: {output + sidecar}, written "
                               "beside it, is a folder")
  # The three files against the run they are made from (--output=RUN/config
  # would put its .json over the run's config.json) and each other.
  output_paths.check_outputs(
      [output_paths.Output("output", fv.output, output)]
      + [output_paths.Output("output", fv.output, output + sidecar,
                             f"{output + sidecar}, written beside it,")
         for sidecar in (".styles.npz", ".json")], run=fv.workdir)
  if not onnx:
    run = load_trained_run(fv.workdir, checkpoint, fv.dtype)
    run = with_test_mode(run, fv.test_mode)
    print(json.dumps(exporting.write_export(run, output, fv.platforms, fv.direction)))
    return 0
  # ONNX runtimes' bfloat16 convolutions are rare: float32 unless asked.
  run = load_trained_run(fv.workdir, checkpoint, fv.dtype or "float32")
  run = with_test_mode(run, fv.test_mode)
  try:
    summary = onnx_export.write_onnx_export(run, output, fv.direction)
  except onnx_export.OnnxExportError as e:
    return command.fail(str(e), 1)
  print(json.dumps(summary))
  return 0


def main(argv: Sequence[str]) -> int:
  """Runs the command line on `argv` (argv[0] is the program name).

  Returns:
    The exit status: 0 written (or help shown; the summary as JSON on the
    last stdout line), 2 usage error, 1 a generator the ONNX converter
    cannot convert (one line on stderr).
  """
  from tp2p_jax.core.run_dir import RunError
  # ValueError: a direction the run lacks.
  return command.run(argv, __doc__, lambda argv: _define_flags(), _export,
                     required=("workdir", "output"),
                     usage_errors=(RunError, ValueError, FileNotFoundError))


if __name__ == "__main__":
  sys.exit(main(sys.argv))
