"""Inception-v3 pool3 features (2048-d) for FID and KID.

A Flax linen port of the Inception-v3 trunk used by ``pytorch-fid``
(``FIDInceptionA/C/E_1/E_2``, i.e. the TensorFlow FID graph re-expressed in
torchvision's layout) up to the global average pool after ``Mixed_7c``.
Setting ``fid_blocks=False`` selects plain torchvision blocks instead; both
variants share the same parameter names and shapes.

Images enter as NHWC RGB in [-1, 1], are resized bilinearly (half-pixel
centres, no antialiasing, as ``F.interpolate(..., align_corners=False)``) to
``input_size`` (299 by default) and fed to the network unchanged: the FID
weights expect exactly that [-1, 1] normalisation (pytorch-fid maps [0, 1]
inputs to ``2 x - 1``).

Nothing is downloaded. Weights come from a local file, pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` as it is or an ``.npz``, see
`load_inception_weights`. tests/test_fid_golden.py checks the pool3
features and the resize against pytorch-fid 0.3.0's own code (fixtures from
tools/make_fid_fixtures.py).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
import functools
import os
import zipfile
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PrecisionLike = Any
Padding = tuple[tuple[int, int], tuple[int, int]]

FEATURE_DIM = 2048
DEFAULT_INPUT_SIZE = 299
# Smallest input the stride-2 stages reduce to a non-empty map.
MIN_INPUT_SIZE = 75
BATCH_NORM_EPS = 1e-3

# Torch state_dict entries that carry no pool3 parameters: the classifier,
# the auxiliary head and BatchNorm's step counters.
_IGNORED_PREFIXES: tuple[str, ...] = ("fc.", "AuxLogits.")
_IGNORED_SUFFIXES: tuple[str, ...] = (".num_batches_tracked",)

# Flax leaf (collection, leaf name) -> torch parameter suffix in BasicConv2d.
_LEAF_TO_TORCH: dict[tuple[str, str], str] = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


class InceptionWeightError(ValueError):
  """A weight file or state dict does not match the Inception-v3 layout."""


def _pad(ph: int, pw: int) -> Padding:
  return ((ph, ph), (pw, pw))


class BasicConv2d(nn.Module):
  """Conv (no bias) -> BatchNorm (inference, eps 1e-3) -> ReLU on NHWC."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: Padding = ((0, 0), (0, 0))
  precision: PrecisionLike = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=self.padding, use_bias=False, precision=self.precision,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BATCH_NORM_EPS,
                     name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x: jax.Array, fid_blocks: bool) -> jax.Array:
  # The TF graph behind the FID weights excludes padding from the average
  # (count_include_pad=False); torchvision includes it.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=_pad(1, 1),
                     count_include_pad=not fid_blocks)


class InceptionA(nn.Module):
  """Mixed_5b/5c/5d: 35x35 grid, 224 + pool_features output channels."""
  pool_features: int
  fid_blocks: bool = True
  precision: PrecisionLike = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b1 = conv(64, (1, 1), name="branch1x1")(x)
    b5 = conv(48, (1, 1), name="branch5x5_1")(x)
    b5 = conv(64, (5, 5), padding=_pad(2, 2), name="branch5x5_2")(b5)
    b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = conv(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(b3)
    b3 = conv(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_3")(b3)
    bp = _avg_pool_3x3(x, self.fid_blocks)
    bp = conv(self.pool_features, (1, 1), name="branch_pool")(bp)
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a: 35x35 -> 17x17 reduction, 768 output channels."""
  precision: PrecisionLike = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
    bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = conv(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(bd)
    bd = conv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
    bp = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    return jnp.concatenate([b3, bd, bp], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b..6e: 17x17 grid with factorised 7x7 convs, 768 channels."""
  channels_7x7: int
  fid_blocks: bool = True
  precision: PrecisionLike = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(BasicConv2d, precision=self.precision)
    c7 = self.channels_7x7
    b1 = conv(192, (1, 1), name="branch1x1")(x)
    b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
    b7 = conv(c7, (1, 7), padding=_pad(0, 3), name="branch7x7_2")(b7)
    b7 = conv(192, (7, 1), padding=_pad(3, 0), name="branch7x7_3")(b7)
    bd = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = conv(c7, (7, 1), padding=_pad(3, 0), name="branch7x7dbl_2")(bd)
    bd = conv(c7, (1, 7), padding=_pad(0, 3), name="branch7x7dbl_3")(bd)
    bd = conv(c7, (7, 1), padding=_pad(3, 0), name="branch7x7dbl_4")(bd)
    bd = conv(192, (1, 7), padding=_pad(0, 3), name="branch7x7dbl_5")(bd)
    bp = _avg_pool_3x3(x, self.fid_blocks)
    bp = conv(192, (1, 1), name="branch_pool")(bp)
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a: 17x17 -> 8x8 reduction, 1280 output channels."""
  precision: PrecisionLike = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(192, (1, 1), name="branch3x3_1")(x)
    b3 = conv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
    b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = conv(192, (1, 7), padding=_pad(0, 3), name="branch7x7x3_2")(b7)
    b7 = conv(192, (7, 1), padding=_pad(3, 0), name="branch7x7x3_3")(b7)
    b7 = conv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
    bp = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    return jnp.concatenate([b3, b7, bp], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b/7c: 8x8 grid with expanded filter banks, 2048 channels.

  Attributes:
    pool: "avg" (torchvision, and FID's Mixed_7b with padding excluded from
      the average) or "max" (FID's Mixed_7c, a quirk of the TF graph).
  """
  pool: str = "avg"
  fid_blocks: bool = True
  precision: PrecisionLike = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b1 = conv(320, (1, 1), name="branch1x1")(x)
    b3 = conv(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([
        conv(384, (1, 3), padding=_pad(0, 1), name="branch3x3_2a")(b3),
        conv(384, (3, 1), padding=_pad(1, 0), name="branch3x3_2b")(b3),
    ], axis=-1)
    bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = conv(384, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([
        conv(384, (1, 3), padding=_pad(0, 1), name="branch3x3dbl_3a")(bd),
        conv(384, (3, 1), padding=_pad(1, 0), name="branch3x3dbl_3b")(bd),
    ], axis=-1)
    if self.pool == "max":
      bp = nn.max_pool(x, (3, 3), strides=(1, 1), padding=_pad(1, 1))
    elif self.pool == "avg":
      bp = _avg_pool_3x3(x, self.fid_blocks)
    else:
      raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
    bp = conv(192, (1, 1), name="branch_pool")(bp)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """Inception-v3 trunk up to the pool3 features.

  Submodule names follow torchvision's ``Inception3`` (``Conv2d_1a_3x3`` ...
  ``Mixed_7c``, each conv block with ``conv`` and ``bn``), so torch state_dict
  keys map one-to-one onto the variable tree (see `convert_torch_state_dict`).
  Variables: ``params`` (conv ``kernel`` HWIO, bn ``scale``/``bias``) and
  ``batch_stats`` (bn ``mean``/``var``); BatchNorm always uses the running
  statistics.

  Attributes:
    fid_blocks: pytorch-fid's FID blocks (True) or torchvision's (False).
    precision: Passed to every convolution.
  """
  fid_blocks: bool = True
  precision: PrecisionLike = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Computes pool3 features.

    Args:
      x: (B, S, S, 3) network input (already resized and normalised to
        [-1, 1]), S >= 75; 299 for the reference network.

    Returns:
      (B, 2048) float32 features, the spatial mean of Mixed_7c's output
      (non-negative, as it follows a ReLU).
    """
    if min(x.shape[1], x.shape[2]) < MIN_INPUT_SIZE:
      raise ValueError(f"Inception-v3 needs inputs >= {MIN_INPUT_SIZE}px, got {x.shape}")
    conv = functools.partial(BasicConv2d, precision=self.precision)
    kw = dict(fid_blocks=self.fid_blocks, precision=self.precision)
    x = conv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
    x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = conv(64, (3, 3), padding=_pad(1, 1), name="Conv2d_2b_3x3")(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
    x = InceptionA(32, name="Mixed_5b", **kw)(x)
    x = InceptionA(64, name="Mixed_5c", **kw)(x)
    x = InceptionA(64, name="Mixed_5d", **kw)(x)
    x = InceptionB(precision=self.precision, name="Mixed_6a")(x)
    x = InceptionC(128, name="Mixed_6b", **kw)(x)
    x = InceptionC(160, name="Mixed_6c", **kw)(x)
    x = InceptionC(160, name="Mixed_6d", **kw)(x)
    x = InceptionC(192, name="Mixed_6e", **kw)(x)
    x = InceptionD(precision=self.precision, name="Mixed_7a")(x)
    x = InceptionE(pool="avg", name="Mixed_7b", **kw)(x)
    x = InceptionE(pool="max" if self.fid_blocks else "avg", name="Mixed_7c", **kw)(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def preprocess(images: jax.Array, input_size: int = DEFAULT_INPUT_SIZE) -> jax.Array:
  """Resizes [-1, 1] NHWC images to the network input.

  Args:
    images: (B, H, W, 3) RGB in [-1, 1].
    input_size: Output side length.

  Returns:
    (B, input_size, input_size, 3) float32 in [-1, 1]. Bilinear with
    half-pixel centres and no antialiasing, matching pytorch-fid's
    ``F.interpolate(mode="bilinear", align_corners=False)``; since the
    resize is linear it commutes with pytorch-fid's ``2 x - 1`` step.
  """
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"Expected (B, H, W, 3) images, got {images.shape}")
  x = images.astype(jnp.float32)
  if x.shape[1:3] == (input_size, input_size):
    return x
  return jax.image.resize(x, (x.shape[0], input_size, input_size, 3),
                          method="bilinear", antialias=False)


@functools.partial(jax.jit, static_argnames=("input_size", "fid_blocks", "precision"))
def inception_features(
    images: jax.Array,
    variables: Mapping[str, Any],
    input_size: int = DEFAULT_INPUT_SIZE,
    fid_blocks: bool = True,
    precision: PrecisionLike = jax.lax.Precision.HIGHEST,
) -> jax.Array:
  """Pool3 features of a batch of images.

  Args:
    images: (B, H, W, 3) RGB images in [-1, 1], any H, W.
    variables: `InceptionV3` variables, e.g. from `load_inception_weights`.
    input_size: Side length images are resized to; keep the default 299 for
      FID numbers comparable with other work (>= 75; smaller is only useful
      to keep tests fast).
    fid_blocks: See `InceptionV3`.
    precision: Convolution precision. HIGHEST by default so features (and
      hence FID) do not depend on the accelerator's reduced-precision matmul
      mode (e.g. TF32).

  Returns:
    (B, 2048) float32 features.
  """
  model = InceptionV3(fid_blocks=fid_blocks, precision=precision)
  return model.apply(variables, preprocess(images, input_size))


def init_inception_variables(seed: int = 0) -> dict[str, Any]:
  """Randomly initialised `InceptionV3` variables (for tests and shapes).

  Built from the variable shapes on the host rather than by running
  ``InceptionV3.init``, which would compile the whole network just to draw
  random numbers.

  Args:
    seed: Seed of the numpy generator.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` of float32 numpy arrays: conv
    kernels HWIO ~ N(0, 1 / fan_in) (LeCun normal, variance preserving), bn
    scale 1, bias 0, mean 0, var 1.
  """
  rng = np.random.default_rng(seed)
  variables: dict[str, Any] = {}
  for collection, tree in sorted(_variable_shapes().items()):
    for path, shape in _leaves(tree):
      leaf = path[-1]
      if leaf == "kernel":
        fan_in = shape[0] * shape[1] * shape[2]
        value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), size=shape)
      elif leaf in ("scale", "var"):
        value = np.ones(shape)
      else:
        value = np.zeros(shape)
      _set(variables, (collection,) + path, value.astype(np.float32))
  return variables


@functools.lru_cache(maxsize=1)
def _variable_shapes() -> dict[str, Any]:
  """The variable tree of `InceptionV3` as shapes, without computing it."""
  x = jax.ShapeDtypeStruct((1, MIN_INPUT_SIZE, MIN_INPUT_SIZE, 3), jnp.float32)
  tree = jax.eval_shape(InceptionV3().init, jax.random.key(0), x)
  return jax.tree.map(lambda s: tuple(s.shape), dict(tree))


def _leaves(
    tree: Mapping[str, Any], path: tuple[str, ...] = (),
) -> Iterator[tuple[tuple[str, ...], Any]]:
  """Yields (key path, leaf) of a nested mapping in sorted key order."""
  for key in sorted(tree):
    value = tree[key]
    if isinstance(value, Mapping):
      yield from _leaves(value, path + (key,))
    else:
      yield path + (key,), value


def _torch_name(collection: str, path: tuple[str, ...]) -> str:
  """Flax (collection, module path..., leaf) -> torch state_dict key."""
  *modules, leaf = path
  return ".".join(modules + [_LEAF_TO_TORCH[(collection, leaf)]])


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _is_ignored(key: str) -> bool:
  return key.startswith(_IGNORED_PREFIXES) or key.endswith(_IGNORED_SUFFIXES)


def convert_torch_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Maps a torch Inception-v3 state dict onto `InceptionV3` variables.

  Args:
    state_dict: Torch parameter names -> arrays (numpy, or anything
      ``np.asarray`` accepts), as in torchvision's ``Inception3`` / pytorch-fid's
      ``FIDInceptionA..E``: ``<block>[.<branch>].conv.weight`` (OIHW),
      ``.bn.weight``, ``.bn.bias``, ``.bn.running_mean``, ``.bn.running_var``.
      ``fc.*``, ``AuxLogits.*`` and ``*.num_batches_tracked`` are ignored.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` of float32 numpy arrays, conv
    kernels transposed OIHW -> HWIO.

  Raises:
    InceptionWeightError: naming the first (sorted) missing key, the first
      key whose shape does not match, or the first unexpected key.
  """
  variables: dict[str, Any] = {}
  expected: set[str] = set()
  for collection, tree in sorted(_variable_shapes().items()):
    for path, shape in _leaves(tree):
      name = _torch_name(collection, path)
      expected.add(name)
      if name not in state_dict:
        raise InceptionWeightError(f"missing key {name!r}")
      array = np.asarray(state_dict[name])
      if path[-1] == "kernel":
        if array.ndim != 4:
          raise InceptionWeightError(
              f"key {name!r}: expected a 4-d OIHW conv weight, got shape {array.shape}")
        array = array.transpose(2, 3, 1, 0)
      if array.shape != shape:
        raise InceptionWeightError(
            f"key {name!r}: shape {array.shape} (after OIHW->HWIO for conv weights) "
            f"does not match the expected {shape}")
      if not np.issubdtype(array.dtype, np.floating):
        raise InceptionWeightError(f"key {name!r}: expected floats, got {array.dtype}")
      _set(variables, (collection,) + path, np.ascontiguousarray(array, dtype=np.float32))
  unexpected = sorted(k for k in state_dict if k not in expected and not _is_ignored(k))
  if unexpected:
    raise InceptionWeightError(f"unexpected key {unexpected[0]!r} ({len(unexpected)} in all)")
  return variables


def to_torch_state_dict(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Inverse of `convert_torch_state_dict`: flax variables -> torch names.

  Args:
    variables: ``{"params": ..., "batch_stats": ...}`` of `InceptionV3`.

  Returns:
    Torch key -> float32 numpy array, conv weights OIHW. Suitable for
    ``np.savez`` and `load_inception_weights`.
  """
  out: dict[str, np.ndarray] = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in _leaves(variables[collection]):
      array = np.asarray(leaf, dtype=np.float32)
      if path[-1] == "kernel":
        array = array.transpose(3, 2, 0, 1)
      out[_torch_name(collection, path)] = array
  return out


def _is_torch_zip(path: str) -> bool:
  """Whether a zip archive is a torch.save checkpoint (``<top>/data.pkl``)."""
  try:
    with zipfile.ZipFile(path) as archive:
      return any(n.count("/") == 1 and n.endswith("/data.pkl") for n in archive.namelist())
  except (OSError, zipfile.BadZipFile):
    return False


def load_inception_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
  """Loads Inception-v3 weights from a local ``.npz`` or ``.pth`` file.

  Formats:

  * pytorch-fid's weight file, ``pt_inception-2015-12-05-6726825d.pth``
    (what ``pytorch_fid.inception.FID_WEIGHTS_URL`` downloads), or any
    ``torch.save``'d Inception-v3 state_dict in torchvision's names (zip or
    legacy format): read with `tp2p_jax.interop.pth_reader.read_state_dict`,
    which needs no torch and executes nothing from the file. With it the
    features, and so FID, are pytorch-fid's (see docs/inference.md).
  * an uncompressed or compressed ``.npz`` (read with ``allow_pickle=False``)
    holding one float array per torch state_dict entry, keyed by the torch
    name, e.g. ``Conv2d_1a_3x3.conv.weight`` (shape (32, 3, 3, 3), OIHW),
    ``Conv2d_1a_3x3.bn.weight``, ``...bn.bias``, ``...bn.running_mean``,
    ``...bn.running_var``, ``Mixed_5b.branch1x1.conv.weight`` and so on
    through ``Mixed_7c`` (e.g. ``np.savez(f, **to_torch_state_dict(v))``).

  Either way, extra ``fc.*``, ``AuxLogits.*`` and ``*.num_batches_tracked``
  entries are allowed and ignored.

  Args:
    path: The ``.pth`` or ``.npz`` file (told apart by content, not name).

  Returns:
    `InceptionV3` variables as host numpy arrays, see
    `convert_torch_state_dict`. Pass them through ``jax.device_put`` once
    before calling `inception_features` repeatedly, or every call copies
    the ~87 MB of weights to the device again.

  Raises:
    FileNotFoundError: `path` does not exist.
    InceptionWeightError: The file is not a readable ``.npz`` or torch
      checkpoint or does not match the layout; the message names the file
      and the first offending key.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"Inception weight file {path!r} not found")
  if os.path.isdir(path):
    raise InceptionWeightError(f"{path}: is a folder, not Inception weights (.npz or .pth)")
  try:
    with open(path, "rb") as f:
      magic = f.read(4)
  except OSError as e:
    raise InceptionWeightError(f"{path}: cannot read Inception weights: {e}") from e
  if not magic.startswith(b"PK") or _is_torch_zip(path):
    # A torch checkpoint: zip with <top>/data.pkl, or the legacy pickle
    # stream (which np.load would refuse as a pickle, misleadingly).
    from tp2p_jax.interop.pth_reader import CheckpointFormatError, read_state_dict
    try:
      state_dict = read_state_dict(path)
    except CheckpointFormatError as e:
      raise InceptionWeightError(
          f"not Inception weights (.npz or torch .pth): {e}") from e
  else:
    try:
      data = np.load(path, allow_pickle=False)
      if not isinstance(data, np.lib.npyio.NpzFile):
        raise InceptionWeightError("not an .npz archive")
      with data:
        state_dict = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
      raise InceptionWeightError(f"{path}: cannot read Inception weights: {e}") from e
  try:
    return convert_torch_state_dict(state_dict)
  except InceptionWeightError as e:
    raise InceptionWeightError(f"{path}: {e}") from e
