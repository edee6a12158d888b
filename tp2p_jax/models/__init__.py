"""Networks, looked up by name (`config.generator`, `config.discriminator`).

`GENERATORS` and `DISCRIMINATORS` are `tp2p_jax.registry.Registry`s of
Flax linen module classes; `build_generator(name, **fields)` and
`build_discriminator(name, **fields)` make one. A generator class says
whether it takes a style embedding with its `takes_style` class attribute.
A new network registers the same way (README, "Adding a model"):
`models.GENERATORS.register("my_unet", MyUnet)`.
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
from tp2p_jax.registry import Registry

GENERATORS: Registry[Callable[..., nn.Module]] = Registry("generator")
DISCRIMINATORS: Registry[Callable[..., nn.Module]] = Registry("discriminator")
GENERATORS.register("transpix2pix", TransPix2PixGenerator)
GENERATORS.register("unet", UnetGenerator)  # num_downs from the kwargs (e.g. 6 for 64x64)
GENERATORS.register("unet_256", UnetGenerator256)
GENERATORS.register("unet_128", UnetGenerator128)
GENERATORS.register("pix2pixhd", Pix2PixHDGenerator)
GENERATORS.register("resnet_9blocks", ResnetGenerator9Blocks)  # CycleGAN at 256x256
GENERATORS.register("resnet_6blocks", ResnetGenerator6Blocks)  # CycleGAN at 128x128
DISCRIMINATORS.register("patchgan", PatchGANDiscriminator)
DISCRIMINATORS.register("multiscale_patchgan", MultiScaleDiscriminator)

DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
                          "bfloat16_everywhere": jnp.bfloat16, "float16": jnp.float16}


def resolve_dtype(name: str | Any, platform: str | None = None) -> Any:
  """A config's dtype name -> the jnp dtype networks compute in on
  `platform` (default: JAX's default backend), with a clear error.
  "bfloat16" is float32 on a CPU backend (`layers.compute_dtype`); a dtype
  object is returned as given."""
  return compute_dtype(name, platform)


def build_generator(name: str, **kwargs: Any) -> nn.Module:
  """Generator module by registry name; kwargs are its fields."""
  return GENERATORS.get(name)(**kwargs)


def takes_style(generator_name: str) -> bool:
  """Whether the named generator is conditioned on a style embedding (its
  class's `takes_style`; absent means no), and so needs a style encoder."""
  return bool(getattr(GENERATORS.get(generator_name), "takes_style", False))


def build_discriminator(name: str, **kwargs: Any) -> nn.Module:
  """Discriminator module by registry name; kwargs are its fields."""
  return DISCRIMINATORS.get(name)(**kwargs)


__all__ = ["GENERATORS", "DISCRIMINATORS", "build_generator",
           "build_discriminator", "takes_style", "resolve_dtype", "MultiScaleDiscriminator",
           "PatchGANDiscriminator", "Pix2PixHDGenerator", "ResnetGenerator", "StyleEncoder",
           "TransPix2PixGenerator", "UnetGenerator"]
