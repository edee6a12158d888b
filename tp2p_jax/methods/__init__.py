"""Training methods, looked up by name (`config.method`).

Built in: `paired_gan` (TransPix2Pix, pix2pix, pix2pixHD), `style_encoder`
(the CosFace style encoder alone) and `cyclegan`. Each module registers its
`Method` on import; `get(name)` returns one. See `tp2p_jax.methods.base` for
the contract and README "Adding a method" for a worked example.
"""
from tp2p_jax.methods import cyclegan, paired_gan, style_encoder  # noqa: F401  (registration)
from tp2p_jax.methods.registry import get, names, register, unregister

__all__ = ["get", "names", "register", "unregister"]
