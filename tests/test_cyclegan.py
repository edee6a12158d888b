"""CycleGAN: generator and discriminator sizes, the history pool, the cycle
loss inside the train step, translation, unpaired data, and short runs
through the shared trainer with an exact resume."""
from __future__ import annotations

import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from tp2p_jax.experiments import cyclegan as cyclegan_config
from tests.host_variables import host_drawn_variables
from tp2p_jax import models
from tp2p_jax.data.image_files import ImageReadError
from tp2p_jax.data.sources import unpaired_sources_from_config
from tp2p_jax.data.unpaired import UnpairedSource
from tp2p_jax.core.checkpoints import Checkpointer, abstract_with_shardings
from tp2p_jax.core.run_dir import restore_run_state
from tp2p_jax.inference.run_loading import load_trained_run
from tp2p_jax.methods.cyclegan import build as build_cyclegan
from tp2p_jax.methods.cyclegan import linear_decay_schedule, translate
from tp2p_jax.methods.cyclegan_step import (CycleGANObjective, create_cyclegan_state,
                                            cycle_loss, make_cyclegan_train_step)
from tp2p_jax.methods.image_pool import create_image_pool, query_image_pool
from tp2p_jax.training import param_counts, train_and_evaluate



# --- sizes ------------------------------------------------------------------------------

def test_reference_parameter_counts_from_shapes_only():
  counts = param_counts(cyclegan_config.get_config())
  assert counts == {"generator_ab": 11_378_179, "generator_ba": 11_378_179,
                    "discriminator_a": 2_764_737, "discriminator_b": 2_764_737}


def test_resnet_6blocks_is_9blocks_minus_three_residual_blocks():
  def count(name):
    g = models.build_generator(name)
    shapes = jax.eval_shape(lambda: g.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3))))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
  assert count("resnet_9blocks") - count("resnet_6blocks") == 3 * 2 * (3 * 3 * 256 * 256 + 256)


@settings(max_examples=4)
@given(side=st.sampled_from([4, 8, 12, 20]), batch=st.integers(1, 2),
       scale=st.floats(0.1, 50.0))
def test_resnet_generator_keeps_the_size_and_stays_in_range(side, batch, scale):
  g = models.ResnetGenerator(base_features=2, n_blocks=1)
  x = scale * jax.random.normal(jax.random.key(side), (batch, side, side, 3))
  variables = host_drawn_variables(lambda: g.init(jax.random.key(0), x[:1]))
  y = np.asarray(jax.jit(g.apply)(variables, x))
  assert y.shape == (batch, side, side, 3)
  assert np.all(np.abs(y) <= 1.0)


def test_resnet_generator_rejects_sizes_not_divisible_by_four():
  g = models.ResnetGenerator(base_features=2, n_blocks=1)
  with pytest.raises(ValueError, match="divisible by 4"):
    g.init(jax.random.key(0), jnp.zeros((1, 10, 12, 3)))


# --- image pool ---------------------------------------------------------------------------

def _distinct_images(start: int, n: int) -> jnp.ndarray:
  """(n, 2, 2, 1) images whose every pixel holds its id start..start+n-1."""
  ids = jnp.arange(start, start + n, dtype=jnp.float32)
  return jnp.broadcast_to(ids[:, None, None, None], (n, 2, 2, 1))


def _ids(images) -> list[int]:
  return [int(v) for v in np.asarray(images)[:, 0, 0, 0]]


_query = jax.jit(query_image_pool)


def _run_pool(key, capacity=5, batches=60, batch=2):
  pool = create_image_pool(capacity, (2, 2, 1))
  returned = []
  for i in range(batches):
    pool, out = _query(pool, _distinct_images(i * batch, batch), jax.random.fold_in(key, i))
    returned.append(_ids(out))
  return pool, returned


def test_pool_fills_first_then_returns_stored_images_about_half_the_time():
  pool, returned = _run_pool(jax.random.key(0), capacity=6, batches=200, batch=3)
  flat = [i for row in returned for i in row]
  assert flat[:6] == list(range(6))  # while filling: the new images themselves
  stored = [r != i for i, r in enumerate(flat)][6:]
  assert 0.4 < np.mean(stored) < 0.6
  assert all(r < i for i, r in enumerate(flat) if r != i)  # only older images come back
  assert int(pool.count) == 6
  assert len(set(_ids(pool.images))) == 6


def test_pool_is_deterministic_under_its_key():
  _, a = _run_pool(jax.random.key(1))
  _, b = _run_pool(jax.random.key(1))
  _, c = _run_pool(jax.random.key(2))
  assert a == b
  assert a != c


def test_pool_of_size_zero_passes_images_through():
  pool = create_image_pool(0, (2, 2, 1))
  _, out = query_image_pool(pool, _distinct_images(7, 3), jax.random.key(0))
  assert _ids(out) == [7, 8, 9]


@settings(max_examples=5)
@given(capacity=st.integers(1, 4), batch=st.integers(1, 3), seed=st.integers(0, 100))
def test_pool_returns_only_new_or_stored_images(capacity, batch, seed):
  pool = create_image_pool(capacity, (2, 2, 1))
  seen: set[int] = set()
  for i in range(4):
    new = _distinct_images(100 * i, batch)
    before = set(_ids(pool.images[:int(pool.count)]))
    pool, out = _query(pool, new, jax.random.key(seed + i))
    assert set(_ids(out)) <= before | set(_ids(new))
    seen |= set(_ids(new))
    assert int(pool.count) == min(capacity, (i + 1) * batch)
    assert set(_ids(pool.images[:int(pool.count)])) <= seen


def test_pool_survives_checkpoint_and_restore(tmp_path):
  pool, _ = _run_pool(jax.random.key(3), capacity=4, batches=5)
  ckpt = Checkpointer(str(tmp_path / "ckpt"), keep=1)
  ckpt.save(5, pool, "{}", {})
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = abstract_with_shardings(jax.eval_shape(lambda: pool),
                                     jax.tree.map(lambda _: sharding, pool))
  restored, _ = ckpt.restore(5, abstract)
  ckpt.close()
  np.testing.assert_array_equal(restored.images, pool.images)
  assert int(restored.count) == int(pool.count)
  key, new = jax.random.key(9), _distinct_images(1000, 3)
  _, out_original = query_image_pool(pool, new, key)
  _, out_restored = query_image_pool(restored, new, key)
  assert _ids(out_original) == _ids(out_restored)


# --- losses inside the train step ---------------------------------------------------------

class _Scale(nn.Module):
  """y = s * x with one learnable scalar s: two of them invert each other
  exactly when their scales multiply to one."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    return self.param("s", nn.initializers.ones, ()) * x


_DISC = models.PatchGANDiscriminator(base_features=2, n_layers=1, norm="instance",
                                     padding_mode="zeros")
_SGD0 = optax.sgd(0.0)
_scale_step = jax.jit(make_cyclegan_train_step(_Scale(), _DISC, _SGD0, _SGD0,
                                               CycleGANObjective()))


def _scale_step_metrics(s_ab: float, s_ba: float) -> dict[str, float]:
  state = create_cyclegan_state(jax.random.PRNGKey(0), _Scale(), _DISC, _SGD0, _SGD0, 8, 2)
  state = state.replace(g_params={"ab": {"s": jnp.float32(s_ab)}, "ba": {"s": jnp.float32(s_ba)}})
  rng = np.random.default_rng(0)
  batch = {"real_a": jnp.asarray(rng.uniform(-0.5, 0.5, (2, 8, 8, 3)), jnp.float32),
           "real_b": jnp.asarray(rng.uniform(-0.5, 0.5, (2, 8, 8, 3)), jnp.float32)}
  _, metrics = _scale_step(state, batch)
  return {k: float(v) for k, v in metrics.items()}


def test_cycle_loss_is_zero_for_inverse_mappings_and_positive_otherwise():
  exact = _scale_step_metrics(2.0, 0.5)  # G_BA = G_AB^-1
  assert exact["cycle_a"] == 0.0 and exact["cycle_b"] == 0.0
  off = _scale_step_metrics(2.0, 0.4)
  assert off["cycle_a"] > 0.01 and off["cycle_b"] > 0.01
  # Identity terms measure |G(y) - y| and are independent of the cycle.
  assert exact["idt_a"] > 0 and exact["idt_b"] > 0
  x = jnp.linspace(-1, 1, 12).reshape(1, 2, 2, 3)
  assert float(cycle_loss(x, x)) == 0.0
  assert float(cycle_loss(x, -x)) == pytest.approx(float(jnp.mean(2 * jnp.abs(x))))


def test_lr_is_constant_then_decays_linearly_to_zero():
  sched = linear_decay_schedule(2e-4, 100, 100)
  assert float(sched(0)) == pytest.approx(2e-4)
  assert float(sched(100)) == pytest.approx(2e-4)
  assert float(sched(150)) == pytest.approx(1e-4)
  assert float(sched(200)) == pytest.approx(0.0)


# --- data ---------------------------------------------------------------------------------

def test_toycats_are_unpaired_by_an_independent_permutation():
  data = ml_collections.ConfigDict({"source": "toycats", "num_train": 12, "num_eval": 2})
  train, _ = unpaired_sources_from_config(data, image_size=32, seed=0)
  from tp2p_jax.data.toycats import render_example
  same = [np.array_equal(train[i]["photo"], render_example(i, 32, seed=0)["photo"])
          for i in range(12)]
  assert not all(same)  # photos no longer follow their own sketches
  for i in range(12):  # but domain A keeps the order of the sketches
    np.testing.assert_array_equal(train[i]["sketch"], render_example(i, 32, seed=0)["sketch"])


def test_unpaired_source_wraps_the_shorter_domain():
  a = [{"image": np.full((2, 2, 3), i, np.uint8)} for i in range(3)]
  b = [{"image": np.full((2, 2, 3), 10 + i, np.uint8)} for i in range(7)]
  src = UnpairedSource(a, b, seed=0)
  assert len(src) == 7
  assert sorted(int(src[i]["photo"][0, 0, 0]) for i in range(7)) == list(range(10, 17))
  assert [int(src[i]["sketch"][0, 0, 0]) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_folder_sources_read_trainA_and_trainB(tmp_path):
  from PIL import Image
  for domain, n, colour in (("trainA", 2, (255, 0, 0)), ("trainB", 3, (0, 0, 255))):
    (tmp_path / domain).mkdir()
    for i in range(n):
      Image.new("RGB", (10 + i, 8), colour).save(tmp_path / domain / f"{i}.png")
  (tmp_path / "trainB" / "notes.txt").write_text("not an image")
  data = ml_collections.ConfigDict({"source": "folders", "data_dir": str(tmp_path)})
  train, held_out = unpaired_sources_from_config(data, image_size=8, seed=0)
  assert held_out is train  # no testA/testB: samples come from train
  assert len(train) == 3
  for i in range(3):
    assert tuple(train[i]["sketch"][0, 0]) == (255, 0, 0)
    assert tuple(train[i]["photo"][0, 0]) == (0, 0, 255)
  (tmp_path / "trainA" / "1.png").write_bytes(b"broken")
  with pytest.raises(ImageReadError, match="1.png"):
    train[1]
  with pytest.raises(ValueError, match="data_dir"):
    unpaired_sources_from_config(ml_collections.ConfigDict({"source": "folders"}),
                                 image_size=8, seed=0)


# --- translation and training through the trainer -----------------------------------------

def _tiny(total_steps: int):
  c = cyclegan_config.get_config("tiny")
  c.batch_size = len(jax.devices())  # the tests' simulated devices
  c.total_steps = total_steps
  return c


def test_translate_in_both_directions_uses_the_right_generator():
  parts = build_cyclegan(_tiny(4))
  state = jax.jit(parts.init)(jax.random.PRNGKey(0))
  x = jnp.zeros((1, 32, 32, 3)).at[:, 8:24, 8:24].set(0.5)
  ab = translate(parts.generator, state, x, "AtoB")
  ba = translate(parts.generator, state, x, "BtoA")
  assert ab.shape == ba.shape == x.shape
  assert not np.allclose(ab, ba)
  np.testing.assert_allclose(
      ab, parts.generator.apply({"params": state.ema["ab"]}, x, train=False), atol=1e-6)
  np.testing.assert_allclose(
      translate(parts.generator, {"ab": state.g_params["ab"], "ba": state.g_params["ba"]}, x,
                "BtoA"),
      ba, atol=1e-6)
  with pytest.raises(ValueError, match="direction"):
    translate(parts.generator, state, x, "AtoC")


def _rows(workdir: pathlib.Path) -> dict[int, dict]:
  rows = [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r for r in rows}


@pytest.mark.slow
def test_few_step_run_checkpoints_samples_and_predicts_both_ways(tmp_path):
  straight = tmp_path / "straight"
  assert train_and_evaluate(_tiny(4), str(straight)) == 0
  rows = _rows(straight)
  assert sorted(rows) == [2, 4]
  assert all(np.isfinite(v) for r in rows.values() for v in r.values())
  assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["2", "4"]
  assert (straight / "samples" / "step_0000004.png").exists()
  assert rows[4]["lr"] == pytest.approx(5e-4)  # 2 steps constant, then halfway down

  run = load_trained_run(str(straight))
  assert run.step == 4 and run.predictor.directions == ("AtoB", "BtoA")
  assert run.predictor.style_dim is None and run.predictor.prepare == "pad"
  parts = build_cyclegan(_tiny(4))
  final, _ = restore_run_state(str(straight),
                               jax.eval_shape(parts.init, jax.random.PRNGKey(0)))
  x = jnp.linspace(-1, 1, 2 * 32 * 32 * 3).reshape(2, 32, 32, 3)
  for direction in ("AtoB", "BtoA"):
    np.testing.assert_allclose(run.predictor.generate(x, direction=direction),
                               translate(parts.generator, final, x, direction), atol=1e-5)

  # The commands take either direction; the one loader exports either
  # generator. A style is refused in one line: CycleGAN takes none.
  from PIL import Image

  from tp2p_jax.cli import predict as predict_cli
  from tp2p_jax.inference import exporting
  sketches = tmp_path / "sketches"
  sketches.mkdir()
  Image.fromarray(np.full((40, 56, 3), 230, np.uint8)).save(sketches / "cat.png")
  out_dir = tmp_path / "BtoA"
  assert predict_cli.main(["predict", f"--workdir={straight}", f"--input={sketches}",
                           f"--output={out_dir}", "--direction=BtoA"]) == 0
  assert Image.open(out_dir / "cat.png").size == (56, 40)
  assert predict_cli.main(["predict", f"--workdir={straight}", f"--input={sketches}",
                           f"--output={tmp_path}", "--style=black"]) == 2
  for direction in ("AtoB", "BtoA"):
    path = str(tmp_path / f"{direction}.jaxexport")
    assert exporting.write_export(run, path, direction=direction)["direction"] == direction
    np.testing.assert_allclose(np.asarray(exporting.load_exported(path).call(x)),
                               np.asarray(run.predictor.generate(x, direction=direction)),
                               rtol=1e-5, atol=1e-5)
