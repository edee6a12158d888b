"""Train state, optimisers, the GAN step, data parallelism and checkpoints."""
from __future__ import annotations

import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tp2p_jax.experiments import toycats
from tp2p_jax.data import pipeline
from tp2p_jax.data.toycats import ToyCatsSource
from tp2p_jax.core import mesh as parallel
from tp2p_jax.core import optim
from tp2p_jax.core.checkpoints import (SKIP, Checkpointer, CheckpointMismatchError,
                                       abstract_with_shardings, host_copy, keep_only)
from tp2p_jax.core.ema import ema_half_life, ema_update
from tp2p_jax.core.loop import NonFiniteLossError, train_loop
from tp2p_jax.core.stage import Stage
from tp2p_jax.methods import networks, paired_gan


# --- EMA, masks, schedules ------------------------------------------------------

def test_ema_decay_zero_tracks_and_one_freezes():
  old = {"w": jnp.arange(4.0), "count": jnp.array(3, jnp.int32)}
  new = {"w": jnp.arange(4.0) * 10 + 1, "count": jnp.array(7, jnp.int32)}
  np.testing.assert_array_equal(ema_update(old, new, 0.0)["w"], new["w"])
  np.testing.assert_array_equal(ema_update(old, new, 1.0)["w"], old["w"])
  np.testing.assert_allclose(ema_update(old, new, 0.98)["w"], 0.98 * old["w"] + 0.02 * new["w"],
                             rtol=1e-6)
  assert int(ema_update(old, new, 0.98)["count"]) == 7  # integers are copied, not averaged


def test_ema_half_life():
  assert ema_half_life(0.98) == pytest.approx(34.31, abs=0.01)
  assert 0.98 ** ema_half_life(0.98) == pytest.approx(0.5)


def _tiny_config():
  return toycats.get_config("tiny")


def test_weight_decay_mask_follows_the_spec():
  c = _tiny_config()
  g = networks.generator_from_config(c)
  s = c.image_size
  params = jax.eval_shape(lambda: g.init({"params": jax.random.key(0)}, jnp.zeros((1, s, s, 3)),
                                         jnp.zeros((1, c.style.embedding_dim)),
                                         train=False))["params"]
  mask = optim.decay_mask(params, optim.GENERATOR_NO_DECAY)
  flat = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(mask)}
  assert flat["['E2']['conv1']['conv']['kernel']"]
  assert flat["['D0']['convt']['kernel']"]
  assert flat["['style_prenet']['dense0']['kernel']"]
  assert flat["['final']['conv']['kernel']"]
  assert not flat["['style_prenet']['dense0']['bias']"]
  assert not flat["['E2']['norm1']['bn']['scale']"]
  assert not flat["['E2']['cse']['squeeze']['kernel']"]
  assert not flat["['E2']['sse']['conv']['kernel']"]
  assert not flat["['T3']['layer0']['ff1']['kernel']"]
  assert not flat["['T3']['pos_embedding']"]
  assert sum(flat.values()) > 10


def test_step_decay_schedule():
  sched = optim.step_decay_schedule(2e-4, (100_000, 200_000, 300_000), 0.5)
  assert float(sched(0)) == pytest.approx(2e-4)
  assert float(sched(99_999)) == pytest.approx(2e-4)
  assert float(sched(100_001)) == pytest.approx(1e-4)
  assert float(sched(250_000)) == pytest.approx(5e-5)
  assert float(sched(399_999)) == pytest.approx(2.5e-5)


def test_generator_gradients_are_clipped_before_adam_and_decay():
  params = {"kernel": jnp.ones((3,)), "bias": jnp.ones((3,))}
  tx = optim.adam_with_l2(optax.constant_schedule(1.0), 0.5, 0.999, 0.1, optim.decay_mask,
                          clip_norm=1.0)
  huge = {"kernel": jnp.full((3,), 1e6), "bias": jnp.zeros((3,))}
  clipped = jax.tree.map(lambda g: g / optax.global_norm(huge), huge)
  ref = optax.chain(optax.add_decayed_weights(0.1, optim.decay_mask),
                    optax.scale_by_adam(0.5, 0.999), optax.scale_by_learning_rate(1.0))
  a, _ = tx.update(huge, tx.init(params), params)
  b, _ = ref.update(clipped, ref.init(params), params)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), a, b)


# --- the GAN train step ------------------------------------------------------------

class TinyGan:
  """The tiny TransPix2Pix config's networks, step function and one fixed batch."""

  def __init__(self):
    c = self.config = _tiny_config()
    c.lr = 3e-3  # Overfitting a batch within a test's budget of steps.
    gan = paired_gan.build(c)
    self.generator, self.frozen, self.step_fn = gan.generator, gan.frozen, gan.train_step
    e = c.style.image_size
    style_vars = jax.jit(lambda k: gan.style_encoder.init(k, jnp.zeros((1, e, e, 3)),
                                                          train=False))(jax.random.key(0))
    self.init_fn = lambda key: gan.init(key, style_vars)
    # 8 toy cats: divisible by the 8 simulated devices.
    self.batch = next(pipeline.make_eval_batches(ToyCatsSource(8, c.image_size), batch_size=8,
                                                 image_size=c.image_size))
    self._compiled = {}

  def on_mesh(self, mesh):
    """(initial state, jitted step) laid out on `mesh` as the trainer does."""
    n = mesh.devices.size
    if n not in self._compiled:
      abstract = jax.eval_shape(self.init_fn, jax.random.PRNGKey(0))
      sharding = parallel.replicated_like(mesh, abstract)
      init = jax.jit(self.init_fn, out_shardings=sharding)
      jitted = parallel.jit_train_step(self.step_fn, mesh, sharding, self.frozen)
      frozen = jax.device_put(self.frozen, parallel.replicated_like(mesh, self.frozen))
      step = lambda state, batch: jitted(state, batch, frozen)  # noqa: E731
      self._compiled[n] = (init, step, sharding, abstract)
    init, step, sharding, abstract = self._compiled[n]
    return init(jax.random.PRNGKey(0)), step, sharding, abstract


@pytest.fixture(scope="module")
def tiny_gan() -> TinyGan:
  return TinyGan()


@pytest.mark.slow
def test_overfits_one_fixed_batch(tiny_gan):
  mesh = parallel.make_mesh(jax.devices()[:1])
  state, step, _, _ = tiny_gan.on_mesh(mesh)
  batch = parallel.to_global_batch(tiny_gan.batch, mesh)
  steps = 48
  history = []
  for _ in range(steps):
    state, metrics = step(state, batch)
    history.append(jax.device_get(metrics))
  first = history[0]
  expected = {"d_loss", "g_loss", "g_gan", "g_l1", "g_perceptual", "d_real", "d_fake",
              "g_grad_norm", "d_grad_norm", "g_param_norm", "d_param_norm", "lr"}
  assert expected <= set(first)
  assert all(np.isfinite(v) for m in history for v in m.values())
  # Dropout stays on (train mode), so single steps jitter: the last ten
  # steps' mean is compared (about 0.6 of the first step's L1 after 48
  # steps and 0.55 after 80, on AVX-512 and AVX2 machines; a generator that
  # does not learn stays near 1.0).
  late = {k: float(np.mean([m[k] for m in history[-10:]])) for k in ("g_l1", "g_perceptual")}
  assert late["g_l1"] < 0.7 * first["g_l1"], (first["g_l1"], late["g_l1"])
  assert late["g_perceptual"] < first["g_perceptual"], (first["g_perceptual"], late)
  assert int(state.step) == steps
  # The EMA generator moved towards, but lags, the trained one.
  g0, _, _, _ = tiny_gan.on_mesh(mesh)
  drift = lambda a, b: float(optax.global_norm(jax.tree.map(jnp.subtract, a, b)))  # noqa: E731
  assert 0 < drift(state.ema["g"]["params"], g0.g_params) < drift(state.g_params, g0.g_params)


@pytest.mark.slow
def test_state_is_donated(tiny_gan):
  mesh = parallel.make_mesh(jax.devices()[:1])
  state, step, _, _ = tiny_gan.on_mesh(mesh)
  leaf = jax.tree.leaves(state.g_params)[0]
  new_state, _ = step(state, parallel.to_global_batch(tiny_gan.batch, mesh))
  assert leaf.is_deleted()
  assert int(new_state.step) == 1


@pytest.mark.slow
def test_eight_devices_equal_one(tiny_gan):
  """Each step's losses on an 8-device mesh equal the 1-device ones, along a
  3-step trajectory. Both meshes start each step from the same state: across
  steps, Adam turns last-bit differences of near-zero gradients (from the
  different all-reduce order) into +-lr updates, which is chaos, not a
  sharding bug."""
  assert jax.device_count() == 8, "tests/conftest.py simulates 8 CPU devices"
  mesh1, mesh8 = parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh(jax.devices())
  state, step1, _, _ = tiny_gan.on_mesh(mesh1)
  _, step8, sharding8, _ = tiny_gan.on_mesh(mesh8)
  batch1 = parallel.to_global_batch(tiny_gan.batch, mesh1)
  batch8 = parallel.to_global_batch(tiny_gan.batch, mesh8)
  assert len(batch8["real_a"].sharding.device_set) == 8
  for i in range(3):
    # Via the host: a real copy, since both steps donate their input.
    state8 = jax.device_put(jax.device_get(state), sharding8)
    state8, m8 = step8(state8, batch8)
    state, m1 = step1(state, batch1)
    m1, m8 = jax.device_get(m1), jax.device_get(m8)
    for k in ("d_loss", "g_loss", "g_gan", "g_l1", "g_perceptual", "d_real", "d_fake",
              "d_grad_norm"):
      np.testing.assert_allclose(m1[k], m8[k], rtol=1e-4, atol=1e-6, err_msg=f"step {i}: {k}")
    # L1's derivative, sign(fake - real), jumps where a generated pixel meets
    # its target, and the all-reduce order moves `fake` by ~1e-7: a few such
    # pixels flip (measured on this batch: 1.6e-3 relative on one step, under
    # 1e-4 with lambda_l1 = 0).
    np.testing.assert_allclose(m1["g_grad_norm"], m8["g_grad_norm"], rtol=5e-3,
                               err_msg=f"step {i}: g_grad_norm")
    assert len(jax.tree.leaves(state8)[0].sharding.device_set) == 8


def test_a_step_on_eight_devices_equals_one_device():
  """The data-parallel step (the batch split over the mesh's `data` axis,
  gradients all-reduced, state replicated) on the template method: its
  first step's loss and gradient norm on 8 simulated devices equal the
  1-device ones. (Its parameters are not compared: Adam's first update is
  about lr * sign(gradient), which last-bit differences of near-zero
  gradients flip.) The tiny GAN's own 8-vs-1 trajectory is in the slow tier."""
  from tp2p_jax.methods import template
  with template.registered() as method:
    stage, = method.stages(template.config())
  host_batch = next(stage.make_iterator())
  metrics = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.make_mesh(devices)
    state, sharding = parallel.jit_init(stage.init, mesh, jax.random.PRNGKey(0), {})
    step = parallel.jit_train_step(stage.train_step, mesh, sharding, stage.frozen)
    frozen = jax.device_put(stage.frozen, parallel.replicated_like(mesh, stage.frozen))
    batch = parallel.to_global_batch(host_batch, mesh)
    assert len(batch["real_a"].sharding.device_set) == len(devices)
    _, m = step(state, batch, frozen)
    metrics.append(jax.device_get(m))
  one, eight = metrics
  assert len(jax.devices()) == 8
  for key in ("l1", "grad_norm"):
    assert eight[key] == pytest.approx(one[key], rel=1e-5), key


@pytest.mark.slow
def test_checkpoint_round_trip_is_exact(tiny_gan, tmp_path):
  mesh = parallel.make_mesh(jax.devices()[:1])
  state, step, sharding, abstract = tiny_gan.on_mesh(mesh)
  state, _ = step(state, parallel.to_global_batch(tiny_gan.batch, mesh))
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=2)
  ckpt.save(1, state, '{"position": 8}', {"seed": 0})
  restored, data_state = ckpt.restore(1, abstract_with_shardings(abstract, sharding))
  ckpt.close()
  assert data_state == '{"position": 8}'
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))
  assert os.path.isdir(tmp_path / "checkpoints" / "1")


def test_checkpoints_write_replicated_leaves_from_the_host_and_keep_sharded_ones(tmp_path):
  mesh = parallel.make_mesh(jax.devices())
  assert mesh.devices.size == 8
  tree = {"replicated": jax.device_put(jnp.arange(6.0).reshape(2, 3), parallel.replicated(mesh)),
          "sharded": jax.device_put(jnp.arange(16.0).reshape(8, 2),
                                    parallel.batch_sharding(mesh)),
          "step": jax.device_put(jnp.array(3, jnp.int32), parallel.replicated(mesh)),
          "host": np.ones(2, np.float32)}
  host = host_copy(tree)
  assert isinstance(host["replicated"], np.ndarray) and isinstance(host["step"], np.ndarray)
  assert isinstance(host["sharded"], jax.Array) and host["host"] is tree["host"]
  assert isinstance(tree["replicated"], jax.Array)  # the caller's tree is left as it was

  ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=1, writer=True)
  ckpt.save(3, tree, "{}", {"seed": 0})
  shardings = jax.tree.map(lambda x: x.sharding if isinstance(x, jax.Array)
                           else parallel.replicated(mesh), tree)
  restored, _ = ckpt.restore(3, abstract_with_shardings(jax.eval_shape(lambda: tree), shardings))
  ckpt.close()
  for name, want in tree.items():
    got = restored[name]
    assert isinstance(got, jax.Array) and got.dtype == want.dtype, name
    assert got.sharding.is_equivalent_to(shardings[name], got.ndim), name
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)


def test_a_restore_reads_only_the_subtrees_kept(tmp_path):
  mesh = parallel.make_mesh(jax.devices()[:1])
  tree = {"ema": {"g": jnp.arange(4.0), "d": jnp.ones(3)}, "opt": [jnp.zeros((2, 2)), jnp.ones(5)],
          "step": jnp.array(7, jnp.int32)}
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=1, writer=True)
  ckpt.save(7, tree, '{"position": 3}', {"seed": 0})
  abstract = abstract_with_shardings(jax.eval_shape(lambda: tree),
                                     parallel.replicated_like(mesh, tree))
  part = keep_only(abstract, ("ema", "g"), ("step",))
  assert part["ema"]["d"] is SKIP and all(x is SKIP for x in part["opt"])
  restored = ckpt.restore_newest(part)
  assert restored.step == 7 and restored.data_state == '{"position": 3}'
  np.testing.assert_array_equal(restored.state["ema"]["g"], np.arange(4.0))
  assert int(restored.state["step"]) == 7
  assert restored.state["ema"]["d"] is SKIP and all(x is SKIP for x in restored.state["opt"])
  # Skipped leaves are not read, but the tree must still be the stored one:
  # another config's state is refused as a whole.
  other = dict(part, opt=[part["opt"][0]])
  with pytest.raises(CheckpointMismatchError, match="only in the checkpoint: opt/1"):
    ckpt.restore_newest(other)
  resized = dict(part, step=jax.ShapeDtypeStruct((2,), jnp.int32, sharding=part["step"].sharding))
  with pytest.raises(CheckpointMismatchError, match="step has shape"):
    ckpt.restore_newest(resized)
  ckpt.close()


# --- the generic loop: SIGTERM, non-finite losses -------------------------------------

class CountingIterator:
  """Yields {'x': [[i]]}; checkpointable; optionally raises SIGTERM on a batch."""

  def __init__(self, sigterm_at: int | None = None, values=None):
    self.position = 0
    self.sigterm_at = sigterm_at
    self.values = values

  def __next__(self):
    if self.sigterm_at is not None and self.position == self.sigterm_at:
      os.kill(os.getpid(), signal.SIGTERM)
    v = self.values[self.position] if self.values is not None else float(self.position)
    self.position += 1
    return {"x": np.full((1, 1), v, np.float32)}

  def get_state(self):
    return json.dumps({"position": self.position}).encode()

  def set_state(self, state):
    self.position = json.loads(state)["position"]


def _loop(tmp_path, iterator, total=10, ownership_lost=None, **stage_fields):
  mesh = parallel.make_mesh(jax.devices()[:1])
  init = lambda key, handoff: {"w": jnp.zeros(()), "step": jnp.zeros((), jnp.int32)}  # noqa: E731

  def step(state, batch, frozen):
    w = state["w"] + jnp.sum(batch["x"]) * frozen["scale"]
    return {"w": w, "step": state["step"] + 1}, {"w": w}

  stage = Stage(name="test", directory="", init=init, train_step=step,
                make_iterator=lambda: iterator, batch_size=1, seed=0, total_steps=total,
                log_every=2, checkpoint_every=4, keep_checkpoints=3,
                frozen={"scale": np.float32(1.0)}, **stage_fields)
  return train_loop(stage, str(tmp_path), mesh, {}, config_dict={"test": True},
                    ownership_lost=ownership_lost)


def test_a_run_whose_lock_was_taken_over_stops_before_saving(tmp_path):
  from tp2p_jax.core.workdir_lock import WorkdirBusyError
  lost = iter([False, True])  # asked at the saves of steps 4 and 8
  with pytest.raises(WorkdirBusyError, match="took over this run's lock; stopped at step 8 "
                     "without saving"):
    _loop(tmp_path, CountingIterator(), ownership_lost=lambda: next(lost))
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["4"]


def test_sigterm_saves_and_resume_continues(tmp_path):
  result = _loop(tmp_path, CountingIterator(sigterm_at=5))
  assert result.interrupted and result.step == 6
  assert Checkpointer(str(tmp_path / "checkpoints"), 3).latest_step() == 6
  resumed = _loop(tmp_path, CountingIterator())
  assert not resumed.interrupted and resumed.step == 10
  assert float(resumed.state["w"]) == sum(range(10))  # every batch seen exactly once
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [2, 4, 6, 8, 10]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  values = [1.0] * 5 + [np.nan] * 5
  with pytest.raises(NonFiniteLossError, match="step 6.*last good checkpoint is step 4"):
    _loop(tmp_path, CountingIterator(values=values))
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), 3)
  assert ckpt.all_steps() == [4]


def test_validation_keeps_the_best_step_through_resumes(tmp_path):
  """eval/ rows at every eval_every-th step and the last; best/ holds the
  best step's state (beside the rolling checkpoints/), and a resumed run
  replaces it only with a strictly better one."""
  from tp2p_jax.core.run_dir import restore_run_state
  scores = {3: 0.5, 6: 0.2, 9: 0.4, 10: 0.3, 12: 0.25, 15: 0.1}  # eval/l1 by step
  best = dict(validate=lambda state, mesh, jit: {"l1": scores[int(state["step"])]},
              eval_every=3, keep_best="eval/l1")
  _loop(tmp_path, CountingIterator(), **best)
  rows = {r["step"]: r for r in map(json.loads, open(tmp_path / "metrics.jsonl"))}
  assert sorted(rows) == [2, 3, 4, 6, 8, 9, 10]
  assert {s: r["eval/l1"] for s, r in rows.items() if "eval/l1" in r} == {
      3: 0.5, 6: 0.2, 9: 0.4, 10: 0.3}
  assert "w" in rows[3]  # the step's training metrics share its row
  assert Checkpointer(str(tmp_path / "checkpoints"), 3).all_steps() == [4, 8, 10]
  assert Checkpointer(str(tmp_path / "best"), 1).all_steps() == [6]
  # A resume knows the best so far: 0.25 at step 12 does not replace 0.2.
  _loop(tmp_path, CountingIterator(), total=12, **best)
  assert Checkpointer(str(tmp_path / "best"), 1).all_steps() == [6]
  _loop(tmp_path, CountingIterator(), total=15, **best)
  kept = Checkpointer(str(tmp_path / "best"), 1)
  assert kept.all_steps() == [15] and kept.metrics(15) == {"eval/l1": 0.1}
  abstract = {"w": jax.ShapeDtypeStruct((), jnp.float32),
              "step": jax.ShapeDtypeStruct((), jnp.int32)}
  state, step = restore_run_state(str(tmp_path), abstract, "best")
  assert step == 15 and float(state["w"]) == sum(range(15))


def test_keep_best_without_validation_is_one_line(tmp_path):
  from tp2p_jax.core.run_dir import RunError, restore_run_state
  with pytest.raises(RunError, match="keep_best='eval/l1' needs validation, which this "
                     "method does not provide"):
    _loop(tmp_path, CountingIterator(), keep_best="eval/l1")
  with pytest.raises(RunError, match="keep_best='eval/psnr', and its validation gives eval/l1; "
                     "choose one of those"):
    _loop(tmp_path / "other", CountingIterator(), keep_best="eval/psnr", eval_every=2,
          validate=lambda state, mesh, jit: {"l1": 1.0})
  _loop(tmp_path, CountingIterator(), total=4)
  with pytest.raises(RunError, match="no best checkpoint .*keep_best.*--checkpoint=latest"):
    restore_run_state(str(tmp_path), {"w": jax.ShapeDtypeStruct((), jnp.float32),
                                      "step": jax.ShapeDtypeStruct((), jnp.int32)}, "best")
