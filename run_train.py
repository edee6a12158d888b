r"""Trains a model of the tp2p_jax family: `python run_train.py [--config=...]`.

See `tp2p_jax/cli/train.py` for the options (`--config`, `--workdir`,
`--dry_run`, `--coordinator_address`, `--num_processes`, `--process_id`,
`--initialization_timeout`, `--jax_distributed`).
"""
import sys

from tp2p_jax.cli import train

if __name__ == "__main__":
  sys.exit(train.main(sys.argv))
