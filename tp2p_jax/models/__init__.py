"""Networks, looked up by name.

`build_generator("transpix2pix" | "unet_256" | "unet_128" | "pix2pixhd" |
"resnet_9blocks" | "resnet_6blocks", ...)`,
`build_discriminator("patchgan" | "multiscale_patchgan", ...)`
return Flax linen modules; keyword arguments are the module's fields.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from tp2p_jax.models.layers import compute_dtype
from tp2p_jax.models.multiscale import MultiScaleDiscriminator
from tp2p_jax.models.patchgan import PatchGANDiscriminator
from tp2p_jax.models.pix2pixhd import Pix2PixHDGenerator
from tp2p_jax.models.resnet_generator import (ResnetGenerator, ResnetGenerator6Blocks,
                                              ResnetGenerator9Blocks)
from tp2p_jax.models.style_encoder import StyleEncoder
from tp2p_jax.models.transpix2pix import TransPix2PixGenerator
from tp2p_jax.models.unet import UnetGenerator, UnetGenerator128, UnetGenerator256

GENERATORS: dict[str, Callable[..., nn.Module]] = {
    "transpix2pix": TransPix2PixGenerator,
    "unet": UnetGenerator,  # num_downs from the kwargs (e.g. 6 for 64x64)
    "unet_256": UnetGenerator256,
    "unet_128": UnetGenerator128,
    "pix2pixhd": Pix2PixHDGenerator,
    "resnet_9blocks": ResnetGenerator9Blocks,  # CycleGAN at 256x256
    "resnet_6blocks": ResnetGenerator6Blocks,  # CycleGAN at 128x128
}
# Generators called as G(real_a, style, train); all others as G(real_a, train).
STYLE_CONDITIONED_GENERATORS: frozenset[str] = frozenset({"transpix2pix"})
DISCRIMINATORS: dict[str, Callable[..., nn.Module]] = {
    "patchgan": PatchGANDiscriminator,
    "multiscale_patchgan": MultiScaleDiscriminator,
}

DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
                          "bfloat16_everywhere": jnp.bfloat16, "float16": jnp.float16}


def resolve_dtype(name: str | Any, platform: str | None = None) -> Any:
  """A config's dtype name -> the jnp dtype networks compute in on
  `platform` (default: JAX's default backend), with a clear error.
  "bfloat16" is float32 on a CPU backend (`layers.compute_dtype`); a dtype
  object is returned as given."""
  return compute_dtype(name, platform)


def _lookup(registry: dict[str, Callable[..., nn.Module]], kind: str, name: str):
  try:
    return registry[name]
  except KeyError:
    raise ValueError(f"unknown {kind} {name!r}; available: {sorted(registry)}") from None


def build_generator(name: str, **kwargs: Any) -> nn.Module:
  """Generator module by registry name; kwargs are its fields."""
  return _lookup(GENERATORS, "generator", name)(**kwargs)


def takes_style(generator_name: str) -> bool:
  """Whether the named generator is conditioned on a style embedding (and
  so needs the style encoder)."""
  _lookup(GENERATORS, "generator", generator_name)
  return generator_name in STYLE_CONDITIONED_GENERATORS


def build_discriminator(name: str, **kwargs: Any) -> nn.Module:
  """Discriminator module by registry name; kwargs are its fields."""
  return _lookup(DISCRIMINATORS, "discriminator", name)(**kwargs)


__all__ = ["GENERATORS", "DISCRIMINATORS", "STYLE_CONDITIONED_GENERATORS", "build_generator",
           "build_discriminator", "takes_style", "resolve_dtype", "MultiScaleDiscriminator",
           "PatchGANDiscriminator", "Pix2PixHDGenerator", "ResnetGenerator", "StyleEncoder",
           "TransPix2PixGenerator", "UnetGenerator"]
