"""`python -m tp2p_jax.serve --workdir=RUN`: the HTTP server of
`tp2p_jax.cli.serve` under a short name (see there for the flags)."""
from __future__ import annotations

import sys

if __name__ == "__main__":
  from tp2p_jax.cli.serve import main
  sys.exit(main(sys.argv))
