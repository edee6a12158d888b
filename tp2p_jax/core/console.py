"""Console logging shared by the command-line entry points."""
from __future__ import annotations

import logging
import sys

from absl import logging as absl_logging


def quiet_libraries() -> None:
  """Keeps the console to our own messages: orbax and jax log every save,
  restore and compile at INFO through absl; the `tp2p_jax` logger still
  prints INFO."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  ours = logging.getLogger("tp2p_jax")
  ours.setLevel(logging.INFO)
  if not ours.handlers:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    ours.addHandler(handler)
  ours.propagate = False
