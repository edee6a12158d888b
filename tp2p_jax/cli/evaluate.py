r"""Evaluates a trained run on held-out sketch/photo pairs.

  python -m tp2p_jax.cli.evaluate --workdir=runs/toycats
  python -m tp2p_jax.cli.evaluate --workdir=RUN --split=validation \
      --inception_weights=pt_inception-2015-12-05-6726825d.pth  # adds FID and KID

(`tp2p evaluate FLAGS` is the same.) Metrics (the last stdout line is one
JSON object with all of them, also written to `RUN/eval/<step>.json`):

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
  file: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` as it is, read
  without torch, or an `.npz`; nothing is downloaded): generated vs real
  photos, resized to 299x299 as pytorch-fid does; the real photos' features
  are cached in `RUN/eval/`.

Every network call takes `--batch_size` images (rounded up to a multiple
of the device count) split over all of this process's devices, the
weights replicated on each. The JSON also holds `devices` (their number),
`batch_size` (per call, over all devices), `generated_images` (the
reconstructions, the untrained baseline's and every class style's
images), `seconds` (the whole evaluation, loading and compilation
included) and `images_per_s` (generated_images / seconds). The run
directory may be a local path or a gs:// URL.

Several hosts share one evaluation with `run_train.py`'s multi-process
flags (`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`,
or `--jax_distributed`): process I computes the I-th contiguous slice of
each network call's rows on its own devices, every process gets all rows
back (one all-gather per call) and computes the same metrics; process 0
writes `RUN/eval/`. The JSON then holds `processes` too.

`--test_mode` and `--seed` run the generator as `predict` does (the JSON
says which: `test_mode`); in train mode held-out pair k gets the dropout
seed `--seed` + k. Generators without a style input get the reconstruction
metrics only.
Exit status: 0 evaluated; 2 a usage error (unknown or missing flag, bad
run, a run whose eval/ folder is not writable, missing or unreadable
Inception weights, weights that are a FIFO or device or lie in the run's
eval/ folder; one line on stderr, checked before anything is generated).

`tp2p_jax.inference.evaluation.evaluate` is the same from Python;
`main(argv)` parses the flags into its arguments.
"""
from __future__ import annotations

import json
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
  flags.DEFINE_enum("split", "validation", ["validation", "train"],
                    "Which pairs: the held-out ones, or the training ones.", flag_values=fv)
  command.define_checkpoint_flags(fv)
  flags.DEFINE_integer("num_examples", None, "Pairs evaluated (default: the whole "
                       "validation split; train: 256).", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("batch_size", 16, "Images per network call over all of this "
                       "process's devices, rounded up to a multiple of their number (each "
                       "device takes an equal share).", lower_bound=1, flag_values=fv)
  flags.DEFINE_string("inception_weights", None, "Local Inception-v3 weights: pytorch-fid's "
                      "pt_inception-2015-12-05-6726825d.pth, or an .npz (see "
                      "tp2p_jax.metrics.load_inception_weights); enables FID and KID.",
                      flag_values=fv)
  flags.DEFINE_integer("inception_size", 299, "Inception input side (>= 75; keep 299 for "
                       "FIDs comparable with other work).",
                       lower_bound=75,  # tp2p_jax.models.inception.MIN_INPUT_SIZE
                       flag_values=fv)
  flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"],
                    "Generator compute dtype (default: the run's).", flag_values=fv)
  command.define_test_mode_flags(fv)
  command.define_job_flags(fv, "the held-out pairs (process i scores the i-th slice)")
  return fv


def _evaluate(fv: flags.FlagValues) -> int:
  from tp2p_jax.cli import checks, output_paths
  from tp2p_jax.core import storage
  from tp2p_jax.inference import evaluation
  checkpoint = command.checkpoint_choice(fv)
  workdir = checks.run_dir(fv.workdir)
  # A missing one is for the run loader to name; a URL's writability shows
  # when the result is written.
  if not storage.is_url(workdir) and workdir.is_dir():
    try:
      checks.output_dir_writable(workdir / "eval", "workdir")
    except command.UsageError as e:
      reason = str(e).split(": ", 1)[-1]
      raise command.UsageError(f"--workdir={fv.workdir}: cannot write the results into "
                               f"its eval/ folder: {reason}") from None
  if fv.inception_weights:
    checks.input_file(fv.inception_weights, "inception_weights")
    # evaluate writes RUN/eval/ (results, plots, feature caches): weights
    # kept there could be replaced by its next write.
    weights = output_paths.identity(fv.inception_weights)
    if weights.startswith(output_paths.identity(workdir / "eval") + "/"):
      raise command.UsageError(f"--inception_weights={fv.inception_weights}: lies in the run's "
                               "eval/ folder, which evaluate writes; keep the weights elsewhere")
  command.join_job(fv)
  result = evaluation.evaluate(
      fv.workdir, split=fv.split, step=checkpoint, num_examples=fv.num_examples,
      batch_size=fv.batch_size, inception_weights=fv.inception_weights,
      inception_size=fv.inception_size, dtype=fv.dtype, show_progress=True,
      test_mode=fv.test_mode, seed=fv.seed)
  print(json.dumps(result, sort_keys=True))
  return 0


def main(argv: Sequence[str]) -> int:
  """Runs the command line on `argv` (argv[0] is the program name).

  Returns:
    The exit status: 0 evaluated (or help shown; the metrics as JSON on the
    last stdout line), 2 usage error (one line on stderr).
  """
  from tp2p_jax.core.run_dir import RunError
  from tp2p_jax.metrics import InceptionWeightError
  return command.run(argv, __doc__, lambda argv: _define_flags(), _evaluate,
                     required=("workdir",),
                     usage_errors=(RunError, InceptionWeightError, FileNotFoundError))


if __name__ == "__main__":
  sys.exit(main(sys.argv))
