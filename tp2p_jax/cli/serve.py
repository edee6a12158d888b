r"""Serves a trained run over HTTP: a drawing page, a generation API with
dynamic batching, health and metrics.

  python -m tp2p_jax.serve --workdir=runs/toycats
  python -m tp2p_jax.serve --workdir=RUN --host=0.0.0.0 --port=8080 --max_batch_size=16
  python -m tp2p_jax.serve --workdir=RUN --max_batch_size=1    # batching off

(`tp2p serve FLAGS` and `python -m tp2p_jax.cli.serve FLAGS` are the same.)
Open http://127.0.0.1:8000/ to draw a sketch and render it in a style;
the API is described at /docs (OpenAPI at /openapi.json):

  curl -F sketch=@cat.png -F style=ginger http://127.0.0.1:8000/v1/generate -o out.png

The run's EMA generator (any family: TransPix2Pix with its style classes,
reference photos and mixes; pix2pix and pix2pixHD; CycleGAN with
`direction`) is compiled once at start-up for `--max_batch_size` images;
/healthz answers 200 once that is done. Requests arriving within
`--batch_timeout_ms` of each other share one generator call. Sketches are
prepared and outputs restored to the upload's size as `predict` does.
The server listens on 127.0.0.1 unless --host says otherwise.

Exit status: 0 after a clean shutdown (Ctrl-C); 2 for a usage error (unknown
or missing flag, bad run, a port in use; one line on stderr, checked before
the run is loaded where possible).
"""
from __future__ import annotations

import errno
import logging
import socket
import sys
import time
from typing import Sequence

from absl import flags

from tp2p_jax.cli import command
from tp2p_jax.cli.command import UsageError

log = logging.getLogger("tp2p_jax.serving")


def _define_flags() -> flags.FlagValues:
  """The flags, in a registry of their own: `main` can then run repeatedly
  in one process (tests) beside other tools' flags of the same names."""
  fv = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "Run directory written by run_train.py.",
                      flag_values=fv)
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every "
                      "interface).", flag_values=fv)
  flags.DEFINE_integer("port", 8000, "Port to listen on.", lower_bound=1, upper_bound=65535,
                       flag_values=fv)
  flags.DEFINE_integer("max_batch_size", 8, "Most requests per generator call (the "
                       "compiled batch size; 1 turns batching off).", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_float("batch_timeout_ms", 5.0, "How long a batch that is not full waits "
                     "for more requests.", lower_bound=0.0, flag_values=fv)
  flags.DEFINE_integer("max_upload_bytes", 8 * 1024 * 1024, "Largest request body "
                       "accepted.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("max_pixels", 4096 * 4096, "Largest uploaded image (width x "
                       "height).", lower_bound=1, flag_values=fv)
  command.define_generator_flags(fv)
  return fv


def _check_port(host: str, port: int) -> None:
  """A port that cannot be bound is a usage error, found before the run loads."""
  family = socket.AF_INET6 if ":" in host else socket.AF_INET
  with socket.socket(family, socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      s.bind((host, port))
    except OSError as e:
      reason = "already in use" if e.errno == errno.EADDRINUSE else e.strerror
      raise UsageError(f"--host={host} --port={port}: cannot listen there ({reason})"
                       ) from None


def _serve(fv: flags.FlagValues) -> int:
  import uvicorn

  from tp2p_jax.cli import checks
  from tp2p_jax.core.run_dir import read_run_config
  from tp2p_jax.inference.run_loading import load_trained_run
  from tp2p_jax.serving.app import Limits, create_app
  from tp2p_jax.serving.model import ServedModel
  checks.run_dir(fv.workdir)
  read_run_config(fv.workdir)  # a missing or broken run is named before the port
  _check_port(fv.host, fv.port)
  start = time.perf_counter()
  run = load_trained_run(fv.workdir, fv.step, fv.dtype)
  model = ServedModel(run, fv.max_batch_size, fv.prepare)
  log.info("loaded %s step %d in %.1f s", run.workdir, run.step, time.perf_counter() - start)
  app = create_app(model, batch_timeout_ms=fv.batch_timeout_ms,
                   limits=Limits(fv.max_upload_bytes, fv.max_pixels))
  print(f"serving {run.workdir} (step {run.step}, {run.predictor.model_name}) on "
        f"http://{fv.host}:{fv.port}/ ; /healthz is 200 once compiled", flush=True)
  uvicorn.run(app, host=fv.host, port=fv.port, log_level="warning", access_log=False)
  return 0


def main(argv: Sequence[str]) -> int:
  """Runs the command line on `argv` (argv[0] is the program name).

  Returns:
    The exit status: 0 after shutdown (or help shown), 2 usage error.
  """
  from tp2p_jax.core.run_dir import RunError
  return command.run(argv, __doc__, lambda argv: _define_flags(), _serve,
                     required=("workdir",), usage_errors=(RunError,))


if __name__ == "__main__":
  sys.exit(main(sys.argv))
