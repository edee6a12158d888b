"""Training methods, looked up by name (`config.method`).

Built in: `paired_gan` (TransPix2Pix, pix2pix, pix2pixHD), `style_encoder`
(the CosFace style encoder alone) and `cyclegan`. Each module registers its
`Method` on import; `get(name)` returns one. See `tp2p_jax.methods.base` for
the contract and README "Adding a method" for a worked example.
"""
import ml_collections

from tp2p_jax.core import run_dir
from tp2p_jax.methods import cyclegan, paired_gan, style_encoder  # noqa: F401  (registration)
from tp2p_jax.methods.base import Method
from tp2p_jax.methods.registry import METHODS, get, names, register, registered, unregister


def with_method_field(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A saved config with its `method` field. Runs written before methods
  were named carry none: theirs is "cyclegan" where the config said
  `model="cyclegan"`, else "paired_gan" (the only other family then); the
  checkpoints themselves are unchanged, so such runs restore as they are."""
  if "method" in config:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  config.method = "cyclegan" if config.get("model") == "cyclegan" else "paired_gan"
  return config


def with_test_mode_field(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A saved config (with its `method`) with its `test_mode` field. Runs
  written before the field have the default their experiment config now
  gives: "eval" for CycleGAN and TransPix2Pix, "train" for the other paired
  GANs (pix2pix's U-Net and ResNet generators, pix2pixHD), whose originals'
  test.py never calls eval() (`tp2p_jax.methods.test_mode`)."""
  if "test_mode" in config:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  pix2pix_family = config.method == "paired_gan" and config.get("generator") != "transpix2pix"
  config.test_mode = "train" if pix2pix_family else "eval"
  return config


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's saved config with its `method` (`with_method_field`) and
  `test_mode` (`with_test_mode_field`); `RunError` naming the file if it is
  missing or not JSON."""
  return with_test_mode_field(with_method_field(run_dir.read_run_config(workdir)))


__all__ = ["METHODS", "Method", "get", "names", "read_run_config", "register", "registered",
           "unregister", "with_method_field", "with_test_mode_field"]
