r"""Serves a trained run over HTTP: a drawing page, a generation API with
dynamic batching, health and metrics.

  python -m tp2p_jax.serve --workdir=runs/toycats
  python -m tp2p_jax.serve --workdir=RUN --host=0.0.0.0 --port=8080 --max_batch_size=16
  python -m tp2p_jax.serve --workdir=RUN --max_batch_size=1    # batching off
  TP2P_SERVE_AUTH_TOKEN=secret python -m tp2p_jax.serve --workdir=RUN --host=0.0.0.0

(`tp2p serve FLAGS` and `python -m tp2p_jax.cli.serve FLAGS` are the same.)
Open http://127.0.0.1:8000/ to draw a sketch and render it in a style;
the API is described at /docs (OpenAPI at /openapi.json):

  curl -F sketch=@cat.png -F style=ginger http://127.0.0.1:8000/v1/generate -o out.png

The run's EMA generator (any family: TransPix2Pix with its style classes,
reference photos and mixes; pix2pix and pix2pixHD; CycleGAN with
`direction`) is compiled once at start-up for `--max_batch_size` images;
/healthz answers 200 once that is done. The generator runs in the run's
test mode (`--test_mode`, `--seed` as for predict; in train mode each
request's sketch is the first image of its own input, dropout seed
`--seed`, whatever it is batched with). Requests arriving within
`--batch_timeout_ms` of each other share one generator call. Sketches are
prepared and outputs restored to the upload's size as `predict` does.
The server listens on 127.0.0.1 unless --host says otherwise (and then
answers only to loopback Host names, against DNS rebinding; --allowed_hosts
widens that); on any other address without --auth_token (or the
TP2P_SERVE_AUTH_TOKEN environment variable, which the process list does not
show) it warns that anyone who reaches the port may use it. With a token,
every endpoint but /healthz and the drawing page needs `Authorization:
Bearer TOKEN` (the page sends the one in its URL: /#token=TOKEN). Pages of
other web origins may call the API only if --allowed_origins lists them.

What a request may cost is bounded by the flags, not by the upload: images
are checked from their header (--max_pixels, --max_side, --max_aspect),
decoded into a bounded size, at most --max_decodes large ones at a time (and
as many small ones on threads of their own); outputs are
at most --max_output_pixels; at most --max_queued requests are worked on
(then 503 with Retry-After); work for a client that has gone away is
dropped before the model; headers must arrive within --header_timeout_s and
bodies within --body_timeout_s, and at most --max_connections are open (the
one waiting longest for its headers makes way). docs/serving.md adds up the
worst-case memory.

Exit status: 0 after a clean shutdown (Ctrl-C); 2 for a usage error (unknown
or missing flag, bad run, a port in use; one line on stderr, checked before
the run is loaded where possible).
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, Sequence

from absl import flags

from tp2p_jax.cli import command
from tp2p_jax.cli.command import UsageError

if TYPE_CHECKING:
  from tp2p_jax.serving.access import Access

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
  flags.DEFINE_integer("max_side", 8192, "Largest width or height of an uploaded image.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_float("max_aspect", 16.0, "Largest longer / shorter side of an uploaded "
                     "image.", lower_bound=1.0, flag_values=fv)
  flags.DEFINE_integer("max_output_pixels", 2048 * 2048, "Largest output (width x height); "
                       "the output of a larger sketch is scaled down to it, aspect kept.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("max_decodes", 2, "Images above the decode side decoded, prepared "
                       "or PNG-encoded at a time; as many threads again take the smaller "
                       "images and outputs.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("max_queued", 32, "Generation requests worked on at once (decoding, "
                       "waiting for or in the model, encoding); more are answered 503 with "
                       "Retry-After.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("max_connections", 512, "Most open client connections (lowered to "
                       "fit the open-file limit).", lower_bound=1, flag_values=fv)
  flags.DEFINE_float("header_timeout_s", 10.0, "Longest time to receive a request's "
                     "headers.", lower_bound=0.1, flag_values=fv)
  flags.DEFINE_float("body_timeout_s", 60.0, "Longest time to receive a request's body.",
                     lower_bound=0.1, flag_values=fv)
  flags.DEFINE_float("keep_alive_timeout_s", 5.0, "How long an idle keep-alive connection "
                     "stays open.", lower_bound=0.1, flag_values=fv)
  flags.DEFINE_string("auth_token", None, "If set, requests need 'Authorization: Bearer "
                      "TOKEN' (default: the TP2P_SERVE_AUTH_TOKEN environment variable).",
                      flag_values=fv)
  flags.DEFINE_list("allowed_hosts", [], "Host header names the server answers to ('*': "
                    "any; default: loopback names on a loopback --host, else any).",
                    flag_values=fv)
  flags.DEFINE_list("allowed_origins", [], "Web origins (https://example.org) whose pages "
                    "may call the API besides the server's own ('*': any).", flag_values=fv)
  command.define_generator_flags(fv)
  command.define_test_mode_flags(fv)
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


def _access(fv: flags.FlagValues) -> "Access":
  """The token, Host and Origin rules; warns about an open server."""
  from tp2p_jax.serving.access import TOKEN_ENV, Access, is_loopback
  token = fv.auth_token or os.environ.get(TOKEN_ENV) or None
  if token is not None and not token.strip():
    raise UsageError(f"--auth_token (or {TOKEN_ENV}) is empty")
  if token is None and not is_loopback(fv.host):
    log.warning("warning: listening on %s without --auth_token (or %s): anyone who can "
                "reach this port can use the server", fv.host, TOKEN_ENV)
  return Access.for_listen_address(fv.host, token, fv.allowed_hosts, fv.allowed_origins)


def _serve(fv: flags.FlagValues) -> int:
  import uvicorn

  from tp2p_jax.cli import checks
  from tp2p_jax.core.run_dir import read_run_config
  from tp2p_jax.inference.run_loading import load_trained_run, with_test_mode
  from tp2p_jax.serving.app import Limits, create_app
  from tp2p_jax.serving.connections import (ConnectionLimits, fit_to_file_limit,
                                            uvicorn_config)
  from tp2p_jax.serving.model import ServedModel
  checkpoint = command.checkpoint_choice(fv)
  checks.run_dir(fv.workdir)
  read_run_config(fv.workdir)  # a missing or broken run is named before the port
  _check_port(fv.host, fv.port)
  access = _access(fv)
  limits = Limits(max_upload_bytes=fv.max_upload_bytes, max_pixels=fv.max_pixels,
                  max_side=fv.max_side, max_aspect=fv.max_aspect,
                  max_output_pixels=fv.max_output_pixels, max_decodes=fv.max_decodes,
                  max_queued=fv.max_queued, body_timeout_s=fv.body_timeout_s)
  connections = ConnectionLimits(fit_to_file_limit(fv.max_connections), fv.header_timeout_s,
                                 fv.keep_alive_timeout_s)
  start = time.perf_counter()
  run = load_trained_run(fv.workdir, checkpoint, fv.dtype)
  run = with_test_mode(run, fv.test_mode, fv.seed)
  model = ServedModel(run, fv.max_batch_size, fv.prepare)
  log.info("loaded %s step %d in %.1f s", run.workdir, run.step, time.perf_counter() - start)
  app = create_app(model, batch_timeout_ms=fv.batch_timeout_ms, limits=limits, access=access)
  print(f"serving {run.workdir} (step {run.step}, {run.predictor.model_name}) on "
        f"http://{fv.host}:{fv.port}/ ; /healthz is 200 once compiled", flush=True)
  uvicorn.Server(uvicorn_config(app, connections, host=fv.host, port=fv.port)).run()
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
