"""Network variables drawn on the host, for tests of shapes and ranges."""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np


def host_drawn_variables(init: Callable[[], Any], seed: int = 0) -> Any:
  """The variables `init()` makes, drawn host-side: parameters from
  N(0, 0.02) (the networks' initialiser scale), BatchNorm statistics as
  initialised (mean 0, variance 1). Shapes and output ranges do not depend on
  the initialiser, and this skips running the network op by op (random draws
  included) just to initialise it; `init` is only traced for its shapes."""
  rng = np.random.default_rng(seed)

  def leaf(path: Any, a: jax.ShapeDtypeStruct) -> np.ndarray:
    name = jax.tree_util.keystr(path)
    if name.startswith("['batch_stats']"):
      return (np.ones if name.endswith("['var']") else np.zeros)(a.shape, a.dtype)
    return rng.normal(0, 0.02, a.shape).astype(a.dtype)

  return jax.tree_util.tree_map_with_path(leaf, jax.eval_shape(init))
