"""Networks, looked up by name.

`build_generator("transpix2pix", ...)`, `build_discriminator("patchgan", ...)`
return Flax linen modules; keyword arguments are the module's fields.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from tp2p_jax.models.patchgan import PatchGANDiscriminator
from tp2p_jax.models.resnet_generator import (ResnetGenerator, ResnetGenerator6Blocks,
                                              ResnetGenerator9Blocks)
from tp2p_jax.models.style_encoder import StyleEncoder
from tp2p_jax.models.transpix2pix import TransPix2PixGenerator

GENERATORS: dict[str, Callable[..., nn.Module]] = {
    "transpix2pix": TransPix2PixGenerator,
    "resnet_9blocks": ResnetGenerator9Blocks,  # CycleGAN at 256x256
    "resnet_6blocks": ResnetGenerator6Blocks,  # CycleGAN at 128x128
}
DISCRIMINATORS: dict[str, Callable[..., nn.Module]] = {
    "patchgan": PatchGANDiscriminator,
}

DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
                          "float16": jnp.float16}


def resolve_dtype(name: str) -> Any:
  """'float32' | 'bfloat16' | 'float16' -> jnp dtype, with a clear error."""
  try:
    return DTYPES[name]
  except KeyError:
    raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}") from None


def _lookup(registry: dict[str, Callable[..., nn.Module]], kind: str, name: str):
  try:
    return registry[name]
  except KeyError:
    raise ValueError(f"unknown {kind} {name!r}; available: {sorted(registry)}") from None


def build_generator(name: str, **kwargs: Any) -> nn.Module:
  """Generator module by registry name; kwargs are its fields."""
  return _lookup(GENERATORS, "generator", name)(**kwargs)


def build_discriminator(name: str, **kwargs: Any) -> nn.Module:
  """Discriminator module by registry name; kwargs are its fields."""
  return _lookup(DISCRIMINATORS, "discriminator", name)(**kwargs)


__all__ = ["GENERATORS", "DISCRIMINATORS", "build_generator", "build_discriminator",
           "resolve_dtype", "PatchGANDiscriminator", "ResnetGenerator", "StyleEncoder",
           "TransPix2PixGenerator"]
