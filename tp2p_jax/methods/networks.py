"""Config sections -> network modules, and parameter counting: shared by the
methods, so each network is built from its config in one place."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from tp2p_jax import models
from tp2p_jax.models.style_encoder import StyleEncoder


def module_kwargs(section: ml_collections.ConfigDict) -> dict[str, Any]:
  """A `*_kwargs` config section as keyword arguments (lists -> tuples, so
  modules stay hashable)."""
  kwargs = section.to_dict()
  for key, value in kwargs.items():
    if isinstance(value, list):
      kwargs[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
  return kwargs


def generator_from_config(config: ml_collections.ConfigDict, dtype: str | None = None
                          ) -> nn.Module:
  """netG named by `config.generator` with `config.generator_kwargs`; a
  style-conditioned generator also gets the image size and the style
  dimension. `dtype`: compute dtype (default: `config.dtype`)."""
  kwargs = module_kwargs(config.generator_kwargs)
  if models.takes_style(config.generator):
    kwargs.update(image_size=config.image_size, style_dim=config.style.embedding_dim)
  return models.build_generator(config.generator,
                                dtype=models.resolve_dtype(dtype or config.dtype), **kwargs)


def discriminator_from_config(config: ml_collections.ConfigDict, dtype: str | None = None
                              ) -> nn.Module:
  """netD named by `config.discriminator` with `config.discriminator_kwargs`."""
  kwargs = module_kwargs(config.discriminator_kwargs)
  if config.discriminator == "multiscale_patchgan":
    # The scale count is a top-level field so that switching any config's
    # PatchGAN to the multi-scale one keeps its discriminator_kwargs.
    kwargs.setdefault("num_d", config.get("num_d", 3))
  return models.build_discriminator(config.discriminator,
                                    dtype=models.resolve_dtype(dtype or config.dtype),
                                    **kwargs)


def style_encoder_from_config(config: ml_collections.ConfigDict) -> StyleEncoder:
  """The CosFace style encoder of `config.style`, one class per
  `config.data.style_names`."""
  s = config.style
  return StyleEncoder(image_size=s.image_size, block_features=tuple(s.block_features),
                      hidden=s.hidden, embedding_dim=s.embedding_dim,
                      num_classes=len(config.data.style_names), scale=s.scale)


def count_params(tree: Any) -> int:
  """Number of scalars in a (possibly abstract) pytree."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
