"""The history pool of generated images that CycleGAN's discriminators see
(Shrivastava et al. 2017), as a pure pytree.

The pool is part of the train state, so it is checkpointed with it and a
resumed run continues with exactly the images an uninterrupted run would
have had. Its randomness comes from the key the caller passes (the train
step's `fold_in(rng, step)`), so it is deterministic under the run's seed.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ImagePool:
  """Up to `capacity` stored images.

  Attributes:
    images: float32 (capacity, H, W, C), NHWC in [-1, 1]; slots at and past
      `count` are unused zeros.
    count: int32 scalar, number of filled slots (<= capacity).
  """
  images: jax.Array
  count: jax.Array

  @property
  def capacity(self) -> int:
    return self.images.shape[0]


def create_image_pool(capacity: int, image_shape: tuple[int, int, int]) -> ImagePool:
  """An empty pool of `capacity` images of shape (H, W, C); capacity 0
  disables the history (`query_image_pool` returns its input)."""
  if capacity < 0:
    raise ValueError(f"pool capacity must be >= 0, got {capacity}")
  return ImagePool(images=jnp.zeros((capacity, *image_shape), jnp.float32),
                   count=jnp.zeros((), jnp.int32))


def query_image_pool(pool: ImagePool, images: jax.Array, key: jax.Array,
                     swap_probability: float = 0.5) -> tuple[ImagePool, jax.Array]:
  """Stores this batch's images and returns what the discriminator sees.

  Per image, in batch order (the CycleGAN release's semantics): while the
  pool is not full the image is stored and returned; once full, with
  probability `swap_probability` a uniformly chosen stored image is returned
  and replaced by the new one, otherwise the new image is returned and the
  pool is unchanged.

  Args:
    pool: the current pool.
    images: (B, H, W, C) generated images (gradients are stopped).
    key: PRNG key for this query.
    swap_probability: chance of returning a stored image once full.

  Returns:
    (new pool, (B, H, W, C) images for the discriminator).
  """
  images = jax.lax.stop_gradient(images).astype(jnp.float32)
  if pool.capacity == 0:
    return pool, images
  keys = jax.random.split(key, images.shape[0])

  def one(pool: ImagePool, inputs: tuple[jax.Array, jax.Array]
          ) -> tuple[ImagePool, jax.Array]:
    image, k = inputs
    k_swap, k_slot = jax.random.split(k)
    full = pool.count >= pool.capacity
    swap = full & (jax.random.uniform(k_swap) < swap_probability)
    slot = jnp.where(full, jax.random.randint(k_slot, (), 0, pool.capacity), pool.count)
    stored = pool.images[slot]
    out = jnp.where(swap, stored, image)
    # Not full: store into the next free slot; full: replace only on a swap.
    write = jnp.logical_or(~full, swap)
    new_images = pool.images.at[slot].set(jnp.where(write, image, stored))
    new_count = jnp.minimum(pool.count + 1, pool.capacity)
    return ImagePool(new_images, new_count.astype(jnp.int32)), out

  pool, out = jax.lax.scan(one, pool, (images, keys))
  return pool, out
