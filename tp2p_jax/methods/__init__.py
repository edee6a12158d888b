"""Training methods, looked up by name (`config.method`).

Built in: `paired_gan` (TransPix2Pix, pix2pix, pix2pixHD), `style_encoder`
(the CosFace style encoder alone) and `cyclegan`. Each module registers its
`Method` on import; `get(name)` returns one. See `tp2p_jax.methods.base` for
the contract and README "Adding a method" for a worked example.
"""
from tp2p_jax.methods import cyclegan, paired_gan, style_encoder  # noqa: F401  (registration)
from tp2p_jax.methods.base import Method
from tp2p_jax.methods.registry import get, names, register, unregister

# Registered above, before any other module can register its own.
_BUILT_IN = tuple(get(name) for name in names())


def is_built_in(method: Method) -> bool:
  """True for the methods this package defines (not one registered by
  other code, even under a built-in name)."""
  return any(method is m for m in _BUILT_IN)


__all__ = ["Method", "get", "is_built_in", "names", "register", "unregister"]
