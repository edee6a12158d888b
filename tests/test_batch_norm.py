"""BatchNorm with PyTorch's statistics, and the decoder attention layouts."""
from __future__ import annotations

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import example, given, strategies as st

from tp2p_jax.models.layers import BatchNorm
from tp2p_jax.models.transpix2pix import SelfAttentionBlock


def _train_pass(x: np.ndarray) -> tuple[np.ndarray, dict]:
  module = BatchNorm()
  variables = module.init(jax.random.key(0), jnp.asarray(x), train=False)
  y, updates = module.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
  return np.asarray(y), updates["batch_stats"]


@given(hnp.arrays(np.float32, st.tuples(st.integers(2, 4), st.integers(1, 3), st.integers(1, 3),
                                        st.integers(1, 4)),
                  elements=st.floats(-10, 10, width=32)),
       st.floats(-1e3, 1e3, width=32))
# A constant feature far from 0: the batch mean's own float32 rounding shows.
@example(np.zeros((2, 1, 3, 1), np.float32), 64.80187225341797)
def test_running_statistics_are_torchs(x: np.ndarray, offset: float) -> None:
  """Running mean/var move 0.1 of the way to the batch mean and the
  *unbiased* batch variance; the output uses the biased one. A large common
  offset must not cost precision (two-pass variance)."""
  x = x + np.float32(offset)
  y, stats = _train_pass(x)
  flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
  mean, var = flat.mean(0), flat.var(0)
  np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-5, atol=1e-5 * abs(offset) + 1e-6)
  spread = np.abs(flat - mean).max(0) ** 2 + 1e-3
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * flat.var(0, ddof=1),
                             rtol=1e-4, atol=1e-5 * spread.max())
  expected = (flat - mean) / np.sqrt(var + 1e-5)
  # float32 rounds the batch mean by up to (rows * eps * max|x|), which the
  # normalisation divides by sqrt(var + eps_bn): with a large offset and a
  # near-constant feature that is more than the 2e-3 of everything else.
  rounding = flat.shape[0] * np.finfo(np.float32).eps * np.abs(flat).max(0)
  assert np.all(np.abs(y.reshape(flat.shape) - expected)
                <= 2e-3 + rounding / np.sqrt(var + 1e-5)), (y, expected)


def test_one_value_per_channel_keeps_running_variance_finite() -> None:
  _, stats = _train_pass(np.full((1, 1, 1, 3), 5.0, np.float32))
  np.testing.assert_allclose(stats["var"], 0.9)
  np.testing.assert_allclose(stats["mean"], 0.5)


def test_eval_uses_running_statistics() -> None:
  module = BatchNorm()
  x = jnp.arange(24.0).reshape(2, 2, 2, 3)
  variables = module.init(jax.random.key(0), x, train=False)
  variables = {"params": variables["params"],
               "batch_stats": {"mean": jnp.array([1.0, 2.0, 3.0]),
                               "var": jnp.array([4.0, 9.0, 16.0])}}
  y = module.apply(variables, x, train=False)
  expected = (x - jnp.array([1.0, 2.0, 3.0])) / jnp.sqrt(jnp.array([4.0, 9.0, 16.0]) + 1e-5)
  np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_attention_layouts() -> None:
  """"release" reads the (B, HW, C) result as the release's view(B, C, H, W);
  "spatial" puts position t back at (t // W, t % W). With one dominant
  position per row (attention ~ identity) the spatial form returns its input
  map, the release form a scrambled one."""
  b, h, w, c = 2, 2, 4, 3
  x = np.zeros((b, h, w, c), np.float32)
  x[..., 0] = 10.0 * np.arange(h * w).reshape(h, w)  # attention picks the largest position
  x[..., 1] = 1.0
  x = jnp.asarray(x)
  outputs = {}
  for layout in ("release", "spatial"):
    module = SelfAttentionBlock(layout)
    variables = module.init(jax.random.key(0), x, train=False)
    variables = {"params": {"norm": {"bn": {"scale": jnp.ones(c), "bias": jnp.zeros(c)}}},
                 "batch_stats": {"norm": {"bn": {"mean": jnp.zeros(c), "var": jnp.ones(c) - 1e-5}}}}
    outputs[layout] = np.asarray(module.apply(variables, x, train=False))
  seq = np.asarray(jax.nn.dot_product_attention(x.reshape(b, h * w, 1, c), x.reshape(b, h * w, 1, c),
                                                x.reshape(b, h * w, 1, c), scale=1.0))
  np.testing.assert_allclose(outputs["spatial"], seq.reshape(b, h, w, c), rtol=1e-5)
  np.testing.assert_allclose(outputs["release"],
                             seq.reshape(b, c, h, w).transpose(0, 2, 3, 1), rtol=1e-5)
  assert not np.allclose(outputs["release"], outputs["spatial"])
