"""Test-wide JAX setup.

Eight simulated CPU devices let the data-parallel tests compare a one-device
mesh with an eight-device one inside the same process. The flags must be set
before jax is imported anywhere, which is why they live here.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402

# Tests run tiny models where compile time dominates; skipping most XLA
# optimisation passes keeps the suite fast without changing numerics beyond
# float tolerance.
jax.config.update("jax_disable_most_optimizations", True)

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=8, deadline=None, derandomize=True)
settings.load_profile("ci")
