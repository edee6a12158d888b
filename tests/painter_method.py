"""The package's template method (`tp2p_jax.methods.template`, `l1_painter`)
for tests of the shared trainer, loader and predictor: it trains in
seconds, so tests of resume, locks and damaged checkpoints run through the
real loop without a big model.

`python -m tests.painter_method WORKDIR [TOTAL_STEPS]` trains it in a
process of its own (exit status as `run_train.py`'s); with
PAINTER_KILL_DURING_SAVE=STEP in its environment the process kills itself
(SIGKILL) in the middle of saving that step.
"""
from __future__ import annotations

import os
import signal
import sys

from tp2p_jax.methods.template import NAME, config, registered

__all__ = ["NAME", "config", "registered"]


def _kill_during_save(step: int) -> None:
  """Makes this process die by SIGKILL while saving checkpoint `step`: its
  files are written to orbax's temporary folder, the rename not yet done."""
  from orbax.checkpoint._src.path import atomicity
  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def killed_before_rename(self):
    if os.path.basename(str(self._final_path)) == str(step):
      os.kill(os.getpid(), signal.SIGKILL)
    return await finalize(self)

  atomicity.AtomicRenameTemporaryPath.finalize = killed_before_rename


if __name__ == "__main__":
  from tp2p_jax.cli import command, train as train_cli
  from tp2p_jax.core.caches import enable_compilation_cache
  from tp2p_jax.core.xla_flags import set_default_xla_flags
  set_default_xla_flags()  # as every command does
  enable_compilation_cache()
  workdir, steps = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4
  if os.environ.get("PAINTER_KILL_DURING_SAVE"):
    _kill_during_save(int(os.environ["PAINTER_KILL_DURING_SAVE"]))
  with registered(), command.quiet_libraries():
    sys.exit(train_cli.train(config(steps), workdir))
