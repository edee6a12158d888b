"""pix2pixHD staged training across runs: a stage-2 run (`init_from`) starts
its G1 from a stage-1 (`:global`) run's checkpoint and keeps it frozen."""
from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest

from tp2p_jax.experiments import pix2pixhd
from tp2p_jax import training
from tp2p_jax.core import mesh as parallel
from tp2p_jax.core.run_dir import RunError
from tp2p_jax.methods import paired_gan, warm_start
from tp2p_jax.core.checkpoints import Checkpointer, abstract_with_shardings


def _flat(tree) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}


def _stage2_config(init_from: str) -> ml_collections.ConfigDict:
  config = pix2pixhd.get_config("tiny")
  with config.unlocked():
    config.batch_size = 8  # one example per simulated device
    config.fix_global_steps = -1  # G1 frozen for the whole run
    config.total_steps = 2
    config.init_from = init_from
  return config


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory):
  """A 2-step tiny `:global` run (G1 alone at half size) whose EMA differs
  from its trained weights (decay 0.5), so the test can tell them apart."""
  config = pix2pixhd.get_config("tiny")
  with config.unlocked():
    config = pix2pixhd.global_stage(config)
    config.batch_size = 8
    config.total_steps = 2
    config.ema_decay = 0.5
  workdir = tmp_path_factory.mktemp("hd_global")
  assert training.train_and_evaluate(config, str(workdir)) == 0
  state, step = warm_start.restore_latest_state(str(workdir), parallel.make_mesh(),
                                             paired_gan.state_shapes)
  assert step == 2
  return workdir, state


@pytest.mark.slow
def test_stage2_starts_from_stage1_g1_and_keeps_it_frozen(stage1_run, tmp_path):
  source_dir, source = stage1_run
  src_params = _flat(source.g_params["global"])
  src_ema = _flat(source.ema["g"]["params"]["global"])
  assert any(np.any(src_ema[k] != v) for k, v in src_params.items())  # EMA != trained
  config = _stage2_config(str(source_dir))
  gan = paired_gan.build(config)
  mesh = parallel.make_mesh(jax.devices()[:1])
  abstract = jax.eval_shape(gan.init, jax.random.PRNGKey(config.seed), {})
  sharding = parallel.replicated_like(mesh, abstract)
  fresh = jax.jit(gan.init, out_shardings=sharding)(jax.random.PRNGKey(config.seed), {})

  # The initial state: trained G1 <- source trained G1, EMA G1 <- source EMA
  # G1; the source's output conv (`head`) is not taken; G2 stays as initialised.
  initial = warm_start.init_from_run(fresh, str(source_dir), mesh, paired_gan.state_shapes)
  init_g1 = _flat(initial.g_params["global"])
  assert set(init_g1) == set(src_params) - {k for k in src_params if k.startswith("['head']")}
  assert any(k.startswith("['head']") for k in src_params)
  for k, v in init_g1.items():
    np.testing.assert_array_equal(v, src_params[k], err_msg=k)
  for k, v in _flat(initial.ema["g"]["params"]["global"]).items():
    np.testing.assert_array_equal(v, src_ema[k], err_msg=k)
  fresh_local = _flat(fresh.g_params["local1"])
  for k, v in _flat(initial.g_params["local1"]).items():
    np.testing.assert_array_equal(v, fresh_local[k], err_msg=k)

  # Two stage-2 steps through the trainer: G1 bit-identical to stage 1's
  # trained G1, the enhancer moved.
  workdir = tmp_path / "hd"
  assert training.train_and_evaluate(config, str(workdir)) == 0
  ckpt = Checkpointer(str(workdir / "checkpoints"), 3)
  after = ckpt.restore(2, abstract_with_shardings(abstract, sharding))[0]
  ckpt.close()
  for k, v in _flat(after.g_params["global"]).items():
    np.testing.assert_array_equal(v, src_params[k], err_msg=k)
  assert any(np.any(v != fresh_local[k]) for k, v in _flat(after.g_params["local1"]).items())

  # Resuming never reloads the source: the finished run reruns without it.
  config = _stage2_config(str(tmp_path / "no_such_run"))
  assert training.train_and_evaluate(config, str(workdir)) == 0


@pytest.mark.slow
def test_init_from_errors_name_the_path(stage1_run, tmp_path):
  source_dir, _ = stage1_run
  config = _stage2_config(str(source_dir))
  mesh = parallel.make_mesh(jax.devices()[:1])
  gan = paired_gan.build(config)
  fresh = jax.jit(gan.init)(jax.random.PRNGKey(0), {})
  missing = tmp_path / "missing"
  with pytest.raises(RunError, match=str(missing)):
    warm_start.init_from_run(fresh, str(missing), mesh, paired_gan.state_shapes)
  with pytest.raises(RunError, match="no 'nope' subtree"):
    warm_start.init_from_run(fresh, str(source_dir), mesh, paired_gan.state_shapes,
                             subtree="nope")
  # A stage-2 G1 of another width: the shapes differ.
  with config.unlocked():
    config.generator_kwargs.ngf_global = 16
  wider = jax.jit(paired_gan.build(config).init)(jax.random.PRNGKey(0), {})
  with pytest.raises(RunError, match=r"checkpoints/2.*has shape"):
    warm_start.init_from_run(wider, str(source_dir), mesh, paired_gan.state_shapes)
  # Through the trainer: a fresh run with a missing source stops before step 1.
  with pytest.raises(RunError, match=str(missing)):
    training.train_and_evaluate(_stage2_config(str(missing)), str(tmp_path / "fresh"))
