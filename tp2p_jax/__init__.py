"""TransPix2Pix and its family of image-to-image GANs in JAX/Flax."""
import os as _os

_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if (not _os.path.isdir(_os.path.join(__path__[0], "experiments"))
    and _os.path.isfile(_os.path.join(_ROOT, "experiments", "__init__.py"))):
  # A source tree used without installing it (PYTHONPATH=., a copied tree):
  # its experiments/ folder is the `tp2p_jax.experiments` that an install
  # maps there (setup.cfg), so configs by name work the same.
  __path__.append(_ROOT)
