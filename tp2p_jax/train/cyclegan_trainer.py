"""`train_cyclegan(config, workdir)`: one resumable CycleGAN stage through
the shared `train_loop` (checkpoints of the whole state, pools included, and
the input position; SIGTERM; NaN checks; metrics.jsonl / TensorBoard).

Sample grids (`samples/step_*.png`) hold held-out rows
real_a | fake_b | real_b | fake_a (EMA generators).
"""
from __future__ import annotations

import logging
import os
import time

import jax
import ml_collections
import numpy as np

from tp2p_jax.data import pipeline
from tp2p_jax.data.unpaired import make_unpaired_sources
from tp2p_jax.train import parallel, run_log
from tp2p_jax.train.checkpoints import save_run_config
from tp2p_jax.train.cyclegan_builders import build_cyclegan
from tp2p_jax.train.trainer import LoopResult, train_loop

log = logging.getLogger("tp2p_jax.train")


def train_cyclegan(config: ml_collections.ConfigDict, workdir: str) -> LoopResult:
  """Runs (or resumes) CycleGAN training in `workdir`."""
  os.makedirs(workdir, exist_ok=True)
  config_dict = save_run_config(workdir, config)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  d = config.data
  train_source, eval_source = make_unpaired_sources(
      d.source, image_size=config.image_size, seed=config.seed, num_train=d.num_train,
      num_eval=d.num_eval, body_probability=d.body_probability,
      background=d.get("background", "varied"), data_dir=d.data_dir)
  parts = build_cyclegan(config)
  sample_batch = next(pipeline.make_eval_batches(
      eval_source, batch_size=config.num_samples, image_size=config.image_size,
      num_examples=config.num_samples))
  translate = jax.jit(parts.translate, static_argnames=("direction", "use_ema"))
  writer_enabled = jax.process_index() == 0

  def on_sample(step: int, state) -> None:
    fake_b = np.asarray(translate(state, sample_batch["real_a"], direction="AtoB"))
    fake_a = np.asarray(translate(state, sample_batch["real_b"], direction="BtoA"))
    if writer_enabled:
      grid = run_log.image_grid([sample_batch["real_a"], fake_b, sample_batch["real_b"], fake_a])
      run_log.save_png(os.path.join(workdir, "samples", f"step_{step:07d}.png"), grid)

  log.info("workdir %s; %d device(s); config in config.json", workdir, mesh.devices.size)
  t0 = time.time()
  result = train_loop(
      stage="cyclegan", workdir=workdir, mesh=mesh, init_fn=parts.init,
      init_args=(jax.random.PRNGKey(config.seed),), step_fn=parts.train_step,
      make_iterator=lambda: pipeline.make_dataset_iterator(
          train_source, global_batch_size=config.batch_size, image_size=config.image_size,
          seed=config.seed, augment=d.augment, worker_count=d.worker_count),
      total_steps=config.total_steps, log_every=config.log_every,
      checkpoint_every=config.checkpoint_every, keep=config.keep_checkpoints,
      config_dict=config_dict, on_sample=on_sample, sample_every=config.sample_every)
  log.info("finished at step %d in %.0f s%s", result.step, time.time() - t0,
           " (stopped by SIGTERM)" if result.interrupted else "")
  return result
