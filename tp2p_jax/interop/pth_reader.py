"""PyTorch `.pth`/`.pt` checkpoints read as numpy arrays, without torch and
without executing anything from the file.

`read_state_dict(path)` returns {tensor name: numpy array}, in the file's key
order, from a bare state_dict or from {"state_dict": ..., ...} (the
TransPix2Pix release's {"state_dict": ..., "optimizer": ...}).

The two formats torch.save writes:

  zip (default since torch 1.6): an uncompressed zip whose entries share one
    top folder (its name varies: the file's stem, "archive", ...).
    `<top>/data.pkl` is the object pickle; each tensor storage it references
    through a persistent id `('storage', storage_type, key, location, numel)`
    is the raw record `<top>/data/<key>` (numel elements of the storage's
    dtype, in the byte order named by `<top>/byteorder`, little when absent).
  legacy (`_use_new_zipfile_serialization=False`): consecutive pickles: the
    magic number, the protocol version (1001), a sys_info dict, the object
    pickle (persistent ids `('storage', storage_type, key, location, numel,
    view_metadata)`), the list of storage keys; then, per key in that order,
    an 8-byte little-endian element count followed by the storage's bytes
    (always little-endian).

Tensors are pickled as `torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, requires_grad, hooks[, metadata])`, for dtypes without a legacy
`<Type>Storage` class as `_rebuild_tensor_v3(untyped_storage, ..., dtype)`,
and parameters as `_rebuild_parameter[_with_state](tensor, ...)`; views keep
their offset and strides into a shared storage.

Security model: a pickle can call any importable callable, so the unpickler
here resolves globals from an explicit allow-list only (`ALLOWED_GLOBALS`),
and every entry is a stand-in defined in this module: nothing is imported
from the names in the file, and torch is never imported. The stand-ins build
inert records (storage and tensor descriptions); the arrays are made only
afterwards, for the selected state_dict, after checking that every view lies
inside its storage. The stand-ins and their results refuse pickle's BUILD
(`__setstate__` raises), so a file cannot mutate them. Everything else is
refused, among it whole pickled modules (`torch.save(model)`), tensor
subclasses, quantized/sparse/meta tensors and numpy objects
(`numpy.core.multiarray._reconstruct`, `numpy.dtype`: they would let a file
rebuild object arrays; torch.load(weights_only=True) refuses them too).
Because the whole pickle is read, such an object anywhere in the file (e.g. a
numpy scalar in saved metadata) refuses the file, not just that entry.

Errors are `CheckpointFormatError` (a ValueError) with a one-line message
naming the file and the problem.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import re
import struct
import types
import zipfile
from collections import OrderedDict
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np

__all__ = ["CheckpointFormatError", "read_state_dict", "ALLOWED_GLOBALS"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


class CheckpointFormatError(ValueError):
  """A file is not a readable torch checkpoint; the message is one line naming
  the file and the problem."""


class _Malformed(Exception):
  """Raised where the file name is not at hand; turned into a
  CheckpointFormatError by `read_state_dict`."""


def _one_line(text: str, limit: int = 300) -> str:
  # Names and messages can come from the file: keep the error one bounded line.
  text = re.sub(r"\s+", " ", text).strip()
  return text if len(text) <= limit else text[:limit] + "..."


# --- Inert stand-ins -----------------------------------------------------------


class _Inert:
  """Base of every object the unpickler can hand out. Pickle's BUILD opcode
  would otherwise set attributes on them (and through a shared stand-in
  affect later loads); here it is an error."""
  __slots__ = ()

  def __setstate__(self, state: Any) -> None:
    raise _Malformed(f"the pickle tries to modify a {type(self).__name__.lstrip('_')} object")


class _DType(_Inert):
  """A torch dtype: how its elements are stored and which numpy dtype holds it.

  `code` is the numpy type of one stored element (without byte order), None
  where numpy has no equivalent (float8, quantized, ...); `kind` says how the
  stored elements become the returned array.
  """
  __slots__ = ("name", "itemsize", "code", "kind")

  def __init__(self, name: str, itemsize: int, code: str | None, kind: str = "plain"):
    self.name, self.itemsize, self.code, self.kind = name, itemsize, code, kind

  def __repr__(self) -> str:
    return f"torch.{self.name}"


class _StorageType(_Inert):
  """`torch.FloatStorage` & co.: a storage class, known by its element dtype."""
  __slots__ = ("name", "dtype")

  def __init__(self, name: str, dtype: _DType | None):
    self.name, self.dtype = name, dtype


class _StorageRef(_Inert):
  """A storage referenced by a persistent id: `numel` elements of `dtype`;
  legacy storage views cover `numel` elements from `start` of their root's."""
  __slots__ = ("key", "dtype", "numel", "start")

  def __init__(self, key: str, dtype: _DType, numel: int, start: int = 0):
    self.key, self.dtype, self.numel, self.start = key, dtype, numel, start


class _TensorRef(_Inert):
  """A tensor as pickled: a strided view of a storage, not yet read."""
  __slots__ = ("storage", "offset", "size", "stride", "dtype")

  def __init__(self, storage: _StorageRef, offset: int, size: tuple[int, ...],
               stride: tuple[int, ...], dtype: _DType):
    self.storage, self.offset, self.size, self.stride, self.dtype = (
        storage, offset, size, stride, dtype)


class _Global(_Inert):
  """An allowed global: a named, callable wrapper around a stand-in. Not a
  class, so pickle's NEWOBJ cannot instantiate it either."""
  __slots__ = ("qualname", "fn")

  def __init__(self, qualname: str, fn: Callable[..., Any]):
    self.qualname, self.fn = qualname, fn

  def __call__(self, *args: Any) -> Any:
    return self.fn(*args)

  def __repr__(self) -> str:
    return self.qualname


# --- Dtypes and storage classes --------------------------------------------------

# (torch dtype name, legacy storage class name or None, itemsize, numpy code, kind)
_DTYPE_TABLE: tuple[tuple[str, str | None, int, str | None, str], ...] = (
    ("float32", "FloatStorage", 4, "f4", "plain"),
    ("float64", "DoubleStorage", 8, "f8", "plain"),
    ("float16", "HalfStorage", 2, "f2", "plain"),
    # numpy has no bfloat16: its 16 bits are the top half of a float32.
    ("bfloat16", "BFloat16Storage", 2, "u2", "bfloat16"),
    ("int64", "LongStorage", 8, "i8", "plain"),
    ("int32", "IntStorage", 4, "i4", "plain"),
    ("int16", "ShortStorage", 2, "i2", "plain"),
    ("int8", "CharStorage", 1, "i1", "plain"),
    ("uint8", "ByteStorage", 1, "u1", "plain"),
    # Stored as bytes; any nonzero byte is True (numpy's bool view of other
    # byte values is undefined).
    ("bool", "BoolStorage", 1, "u1", "bool"),
    ("complex64", "ComplexFloatStorage", 8, "c8", "plain"),
    ("complex128", "ComplexDoubleStorage", 16, "c16", "plain"),
    # Pickled through _rebuild_tensor_v3 with an UntypedStorage.
    ("uint16", None, 2, "u2", "plain"),
    ("uint32", None, 4, "u4", "plain"),
    ("uint64", None, 8, "u8", "plain"),
    # Known so that files holding them (say in optimizer state) still load;
    # a state_dict tensor of one of these is an error.
    ("qint8", "QInt8Storage", 1, None, "plain"),
    ("quint8", "QUInt8Storage", 1, None, "plain"),
    ("qint32", "QInt32Storage", 4, None, "plain"),
    ("quint4x2", "QUInt4x2Storage", 1, None, "plain"),
    ("quint2x4", "QUInt2x4Storage", 1, None, "plain"),
    ("complex32", None, 4, None, "plain"),
    ("float8_e5m2", None, 1, None, "plain"),
    ("float8_e4m3fn", None, 1, None, "plain"),
    ("float8_e5m2fnuz", None, 1, None, "plain"),
    ("float8_e4m3fnuz", None, 1, None, "plain"),
    ("float8_e8m0fnu", None, 1, None, "plain"),
    ("float4_e2m1fn_x2", None, 1, None, "plain"),
)

_DTYPES: dict[str, _DType] = {name: _DType(name, size, code, kind)
                              for name, _, size, code, kind in _DTYPE_TABLE}
_UINT8 = _DTYPES["uint8"]


# --- Stand-ins for the allowed callables ------------------------------------------


def _is_int(x: Any) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _int_tuple(x: Any, what: str) -> tuple[int, ...]:
  if not isinstance(x, (tuple, list)) or not all(_is_int(v) for v in x):
    raise _Malformed(f"tensor {what} is {_one_line(repr(x), 80)}, not a tuple of integers")
  return tuple(x)


def _tensor_ref(storage: Any, offset: Any, size: Any, stride: Any,
                dtype: _DType | None = None) -> _TensorRef:
  """Checks what a rebuild function received (anything a pickle can make)."""
  if not isinstance(storage, _StorageRef):
    raise _Malformed(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
  if not _is_int(offset) or offset < 0:
    raise _Malformed(f"tensor storage offset {_one_line(repr(offset), 80)} is not a "
                     "non-negative integer")
  size_t, stride_t = _int_tuple(size, "size"), _int_tuple(stride, "stride")
  if len(size_t) != len(stride_t):
    raise _Malformed(f"tensor size {size_t} and stride {stride_t} differ in length")
  if len(size_t) > 64:  # numpy's limit
    raise _Malformed(f"tensor has {len(size_t)} dimensions")
  if any(v < 0 for v in size_t + stride_t):
    raise _Malformed(f"tensor size {size_t} or stride {stride_t} is negative")
  return _TensorRef(storage, offset, size_t, stride_t, dtype or storage.dtype)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> _TensorRef:
  return _tensor_ref(storage, offset, size, stride)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, hooks: Any = None,
                       metadata: Any = None) -> _TensorRef:
  return _tensor_ref(storage, offset, size, stride)


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any,
                       requires_grad: Any, hooks: Any, dtype: Any,
                       metadata: Any = None) -> _TensorRef:
  if not isinstance(dtype, _DType):
    raise _Malformed(f"tensor dtype is a {type(dtype).__name__}, not a torch dtype")
  return _tensor_ref(storage, offset, size, stride, dtype)


def _rebuild_parameter(data: Any, requires_grad: Any = False, hooks: Any = None,
                       state: Any = None) -> _TensorRef:
  # A Parameter is its tensor; requires_grad, hooks and Python attributes
  # (the _with_state variant) do not matter for weights.
  if not isinstance(data, _TensorRef):
    raise _Malformed(f"parameter wraps a {type(data).__name__}, not a tensor")
  return data


def _ordered_dict(*args: Any) -> OrderedDict:
  # OrderedDict(iterable) only stores pairs; BUILD on the instance sets plain
  # attributes (the state_dict's `_metadata`), which is harmless.
  return OrderedDict(*args)


def _size(*args: Any) -> tuple:
  return tuple(*args)


def _build_allow_list() -> dict[tuple[str, str], Any]:
  allowed: dict[tuple[str, str], Any] = {}

  def add(module: str, name: str, fn: Callable[..., Any]) -> None:
    allowed[(module, name)] = _Global(f"{module}.{name}", fn)

  add("collections", "OrderedDict", _ordered_dict)
  add("torch._utils", "_rebuild_tensor", _rebuild_tensor)
  add("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2)
  add("torch._utils", "_rebuild_tensor_v3", _rebuild_tensor_v3)
  add("torch._utils", "_rebuild_parameter", _rebuild_parameter)
  add("torch._utils", "_rebuild_parameter_with_state", _rebuild_parameter)
  # Inert value types that small metadata next to a state_dict may use
  # (protocol 2 pickles sets and complex numbers through these).
  add("torch", "Size", _size)
  for builtins in ("builtins", "__builtin__"):
    add(builtins, "set", set)
    add(builtins, "frozenset", frozenset)
    add(builtins, "complex", complex)
    add(builtins, "slice", slice)
  for name, storage_name, *_ in _DTYPE_TABLE:
    allowed[("torch", name)] = _DTYPES[name]
    if storage_name is not None:
      # Checkpoints saved from GPU by old torch name torch.cuda.<Type>Storage;
      # the bytes on disk are the same.
      for module in ("torch", "torch.cuda"):
        allowed[(module, storage_name)] = _StorageType(storage_name, _DTYPES[name])
  for module in ("torch", "torch.storage"):
    allowed[(module, "UntypedStorage")] = _StorageType("UntypedStorage", _UINT8)
    # Carries no dtype of its own; torch.save never puts it in a persistent
    # id, so meeting it there is reported as malformed.
    allowed[(module, "TypedStorage")] = _StorageType("TypedStorage", None)
  return allowed


# Read-only: the allow-list is the security boundary.
ALLOWED_GLOBALS: Mapping[tuple[str, str], Any] = types.MappingProxyType(_build_allow_list())


def _refusal(source: str, module: str, name: str) -> str:
  qualname = _one_line(f"{module}.{name}", 120)
  if module.startswith("torch.nn.") or module == "torch.nn":
    hint = ("a whole pickled model, as torch.save(model) writes; save "
            "model.state_dict() instead")
  else:
    hint = "only tensors, storages, OrderedDict and plain containers are read"
  return f"{source}: refuses to load global '{qualname}' ({hint})"


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves globals from ALLOWED_GLOBALS only; persistent ids go to
  `on_persistent_id` (refused when None)."""

  def __init__(self, file: BinaryIO, source: str,
               on_persistent_id: Callable[[Any], Any] | None = None):
    super().__init__(file)
    self._source = source
    self._on_persistent_id = on_persistent_id

  def find_class(self, module: str, name: str) -> Any:
    try:
      return ALLOWED_GLOBALS[(module, name)]
    except (KeyError, TypeError):
      raise CheckpointFormatError(_refusal(self._source, str(module), str(name))) from None

  def persistent_load(self, pid: Any) -> Any:
    if self._on_persistent_id is None:
      raise _Malformed("unexpected persistent id in a header pickle")
    return self._on_persistent_id(pid)


def _ascii(x: Any) -> Any:
  # Python 2 era files may hold bytes where Python 3 ones hold str.
  return x.decode("ascii") if isinstance(x, bytes) else x


class _Storages:
  """The storages a pickle references, by key, checked for consistency."""

  def __init__(self) -> None:
    self.roots: dict[str, _StorageRef] = {}

  def reference(self, pid: Any, legacy: bool) -> _StorageRef:
    if not isinstance(pid, tuple) or not pid:
      raise _Malformed(f"persistent id {_one_line(repr(pid), 80)} is not a tuple")
    typename = _ascii(pid[0])
    if typename == "module":
      raise _Malformed("holds a whole pickled model, as torch.save(model) writes; save "
                       "model.state_dict() instead")
    if typename != "storage" or len(pid) != (6 if legacy else 5):
      raise _Malformed(f"unknown persistent id {_one_line(repr(pid), 80)}")
    storage_type, key, _location, numel = pid[1:5]
    key = _ascii(key)
    if not isinstance(storage_type, _StorageType):
      raise _Malformed(f"storage {key!r} has type {type(storage_type).__name__}, not a "
                       "torch storage class")
    if storage_type.dtype is None:
      raise _Malformed(f"storage {key!r} is a {storage_type.name} without a dtype")
    if not isinstance(key, str) or not _is_int(numel) or numel < 0:
      raise _Malformed(f"malformed storage reference {_one_line(repr(pid[1:5]), 80)}")
    dtype = storage_type.dtype
    root = self.roots.setdefault(key, _StorageRef(key, dtype, numel))
    if root.dtype is not dtype or root.numel != numel:
      raise _Malformed(f"storage {key!r} referenced as {root.numel} x {root.dtype!r} and as "
                       f"{numel} x {dtype!r}")
    view = pid[5] if legacy else None
    if view is None:
      return root
    # Only torch before 1.0 wrote storage views; (view key, start, numel) in
    # elements of the root's dtype.
    if (not isinstance(view, tuple) or len(view) != 3 or not _is_int(view[1])
        or not _is_int(view[2]) or view[1] < 0 or view[2] < 0
        or view[1] + view[2] > numel):
      raise _Malformed(f"storage {key!r} has malformed view {_one_line(repr(view), 80)}")
    return _StorageRef(key, dtype, view[2], view[1])


# --- Arrays -------------------------------------------------------------------------


# Zero or overlapping strides let a few stored bytes describe a huge tensor;
# copying one larger than this from a smaller storage is refused rather than
# risking memory exhaustion (real state_dicts never come close).
_MAX_EXPANDED_BYTES = 1 << 30


def _tensor_array(name: str, ref: _TensorRef, raw: bytes, byteorder: str) -> np.ndarray:
  """Copies the tensor `ref` out of its storage's bytes `raw` (`byteorder`
  '<' or '>'), checking that the view stays inside the storage."""
  try:
    return _copy_tensor(name, ref, raw, byteorder)
  except (ValueError, OverflowError, MemoryError) as e:  # sizes numpy cannot allocate
    raise _Malformed(f"tensor {name!r} of size {_one_line(str(ref.size), 80)} cannot be "
                     f"made ({type(e).__name__}: {_one_line(str(e), 80)})") from e


def _copy_tensor(name: str, ref: _TensorRef, raw: bytes, byteorder: str) -> np.ndarray:
  dtype = ref.dtype
  if dtype.code is None:
    raise _Malformed(f"tensor {name!r} has dtype {dtype!r}, which numpy cannot hold")
  stored = np.dtype(dtype.code).newbyteorder(byteorder)
  out_dtype = {"bfloat16": np.dtype(np.float32), "bool": np.dtype(bool)}.get(
      dtype.kind, stored.newbyteorder("="))
  storage = ref.storage
  # The storage as seen through the tensor's dtype (they differ only for
  # _rebuild_tensor_v3 over untyped bytes).
  start = storage.start * storage.dtype.itemsize
  nbytes = storage.numel * storage.dtype.itemsize
  count = nbytes // stored.itemsize
  if 0 in ref.size:
    return np.zeros(ref.size, out_dtype)
  last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
  if last >= count:
    raise _Malformed(
        f"tensor {name!r} (offset {ref.offset}, size {ref.size}, stride {ref.stride}) "
        f"reaches element {last} of a storage of {count}")
  numel = math.prod(ref.size)
  if numel > count and numel * out_dtype.itemsize > _MAX_EXPANDED_BYTES:
    raise _Malformed(f"tensor {name!r} expands a storage of {count} elements to {numel}")
  flat = np.frombuffer(raw, dtype=stored, count=count, offset=start)
  # Strides of length-1 dimensions are never followed; zeroing them keeps
  # huge unused values from overflowing numpy's byte strides.
  strides = tuple(0 if n == 1 else s * stored.itemsize for n, s in zip(ref.size, ref.stride))
  view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=ref.size, strides=strides,
                                         writeable=False)
  out = np.empty(ref.size, out_dtype)
  if dtype.kind == "bool":
    np.not_equal(view, 0, out=out)
  elif dtype.kind == "bfloat16":
    np.left_shift(view.astype(np.uint32), 16, out=out.view(np.uint32))
  else:
    out[...] = view
  return out


# --- Containers -----------------------------------------------------------------------


def _select_state_dict(tree: Any) -> Mapping[Any, Any]:
  def is_state_dict(x: Any) -> bool:
    return isinstance(x, Mapping) and all(isinstance(v, _TensorRef) for v in x.values())

  if not isinstance(tree, Mapping):
    raise _Malformed(f"holds a {type(tree).__name__}, not a state_dict (a mapping of "
                     "names to tensors)")
  if is_state_dict(tree):
    return tree
  if isinstance(tree.get("state_dict"), Mapping):
    return tree["state_dict"]
  if any(isinstance(v, _TensorRef) for v in tree.values()):
    # A state_dict with a stray entry: _check_entries names it.
    return tree
  keys = _one_line(", ".join(repr(k) for k in list(tree)[:12])
                   + (", ..." if len(tree) > 12 else ""), 200)
  raise _Malformed(f"holds neither a state_dict nor a 'state_dict' entry (keys: {keys})")


def _check_entries(state_dict: Mapping[Any, Any]) -> dict[str, _TensorRef]:
  out: dict[str, _TensorRef] = {}
  for key, value in state_dict.items():
    if not isinstance(key, str):
      raise _Malformed(f"state_dict key {_one_line(repr(key), 80)} is not a string")
    if not isinstance(value, _TensorRef):
      raise _Malformed(f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
    out[key] = value
  return out


# --- The two formats ----------------------------------------------------------------


def _unpickle(data: BinaryIO, source: str,
              on_persistent_id: Callable[[Any], Any] | None = None) -> Any:
  try:
    return _RestrictedUnpickler(data, source, on_persistent_id).load()
  except (CheckpointFormatError, _Malformed):
    raise
  except Exception as e:  # Malformed opcodes raise nearly anything.
    raise _Malformed(f"corrupt pickle ({type(e).__name__}: {_one_line(str(e), 160)})") from e


def _read_zip(path: str, source: str) -> dict[str, np.ndarray]:
  try:
    archive = zipfile.ZipFile(path)
  except Exception as e:  # zipfile raises several types for a damaged directory.
    raise _Malformed(f"truncated or corrupt zip archive ({type(e).__name__}: "
                     f"{_one_line(str(e), 120)})") from e
  with archive:
    try:
      names = archive.namelist()
      # TorchScript archives also hold a data.pkl, whose globals would be
      # refused with a less helpful message.
      if any(re.fullmatch(r"[^/]+/constants\.pkl", n) for n in names):
        raise _Malformed("is a TorchScript archive (torch.jit.save), not a torch.save "
                         "checkpoint")
      pickles = [n for n in names if re.fullmatch(r"[^/]+/data\.pkl", n)]
      if len(pickles) != 1:
        raise _Malformed("is a zip archive but not a torch checkpoint (expected one "
                         f"<folder>/data.pkl, found {len(pickles)})")
      top = pickles[0][:-len("data.pkl")]
      byteorder = "<"
      if top + "byteorder" in names:
        order = archive.read(top + "byteorder").decode("ascii", "replace").strip()
        if order not in ("little", "big"):
          raise _Malformed(f"unknown byte order {_one_line(order, 40)!r}")
        byteorder = "<" if order == "little" else ">"
      storages = _Storages()
      tree = _unpickle(io.BytesIO(archive.read(pickles[0])), source,
                       lambda pid: storages.reference(pid, legacy=False))
      tensors = _check_entries(_select_state_dict(tree))
      raw: dict[str, bytes] = {}
      out: dict[str, np.ndarray] = {}
      for name, ref in tensors.items():
        key = ref.storage.key
        if key not in raw:
          root = storages.roots[key]
          nbytes = root.numel * root.dtype.itemsize
          record = f"{top}data/{key}"
          try:
            info = archive.getinfo(record)
          except KeyError:
            raise _Malformed(f"storage record {record!r} of tensor {name!r} is missing") from None
          if info.file_size != nbytes:
            raise _Malformed(f"storage record {record!r} has {info.file_size} bytes, "
                             f"expected {nbytes}")
          raw[key] = archive.read(record)
        out[name] = _tensor_array(name, ref, raw[key], byteorder)
      return out
    except (_Malformed, CheckpointFormatError):
      raise
    except Exception as e:
      # CRC mismatch, a record cut short, damaged deflate data, unsupported
      # compression or encryption: zipfile and zlib raise assorted types.
      raise _Malformed(f"corrupt zip archive ({type(e).__name__}: "
                       f"{_one_line(str(e), 160)})") from e


def _read_legacy(f: BinaryIO, source: str) -> dict[str, np.ndarray]:
  # Each header pickle is read from a bounded in-memory copy, so garbage in a
  # non-checkpoint cannot make the unpickler ask the file for huge reads.
  head = io.BytesIO(f.read(64))
  try:
    magic = _RestrictedUnpickler(head, source).load()
  except Exception:
    magic = None
  if not _is_int(magic) or magic != LEGACY_MAGIC_NUMBER:
    f.seek(257)
    tar_hint = ("; old tar-format checkpoints (torch < 0.4) are not supported"
                if f.read(5) == b"ustar" else "")
    raise _Malformed("is not a torch checkpoint (neither a zip archive with data.pkl "
                     f"nor a legacy torch.save file){tar_hint}")
  f.seek(head.tell())
  version = _unpickle(f, source)
  if version != LEGACY_PROTOCOL_VERSION:
    raise _Malformed(f"legacy protocol version {_one_line(repr(version), 40)}, expected "
                     f"{LEGACY_PROTOCOL_VERSION}")
  sys_info = _unpickle(f, source)
  if not isinstance(sys_info, dict):
    raise _Malformed("legacy header has no sys_info dict")
  storages = _Storages()
  tree = _unpickle(f, source, lambda pid: storages.reference(pid, legacy=True))
  keys = _unpickle(f, source)
  if not isinstance(keys, list) or not all(isinstance(_ascii(k), str) for k in keys):
    raise _Malformed("legacy storage key list is malformed")
  tensors = _check_entries(_select_state_dict(tree))
  needed = {ref.storage.key for ref in tensors.values()}
  raw: dict[str, bytes] = {}
  for key in map(_ascii, keys):
    root = storages.roots.get(key)
    if root is None:
      raise _Malformed(f"storage {key!r} in the key list is referenced nowhere in the pickle")
    header = f.read(8)
    if len(header) != 8:
      raise _Malformed(f"file ends before storage {key!r}")
    (numel,) = struct.unpack("<q", header)
    if numel != root.numel:
      raise _Malformed(f"storage {key!r} holds {numel} elements, expected {root.numel}")
    nbytes = numel * root.dtype.itemsize
    if key in needed:
      raw[key] = f.read(nbytes)
      if len(raw[key]) != nbytes:
        raise _Malformed(f"file ends inside storage {key!r}")
    else:
      f.seek(nbytes, os.SEEK_CUR)
  out: dict[str, np.ndarray] = {}
  for name, ref in tensors.items():
    if ref.storage.key not in raw:
      raise _Malformed(f"storage {ref.storage.key!r} of tensor {name!r} has no data")
    out[name] = _tensor_array(name, ref, raw[ref.storage.key], "<")
  return out


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads the state_dict of a torch.save checkpoint as numpy arrays.

  Args:
    path: a `.pth`/`.pt` file in zip or legacy format holding a state_dict,
      or a mapping with a "state_dict" entry (other entries, e.g. the
      optimizer's, are parsed through the same restricted unpickler but not
      returned).

  Returns:
    Tensor name -> array, in the file's order; each array owns its memory.
    float32/float64/float16/int*/uint8/bool/complex keep their dtype;
    bfloat16 becomes float32; parameters are plain arrays.

  Raises:
    CheckpointFormatError: the file is missing, not a torch checkpoint,
      truncated or corrupt, references a global outside the allow-list, or
      its state_dict holds something other than tensors.
  """
  source = os.fspath(path)
  if isinstance(source, bytes):
    source = os.fsdecode(source)
  if "://" in source:  # an object store (gs://): via a local copy
    return _read_remote(source)
  try:
    with open(source, "rb") as f:
      if f.read(4) == b"PK\x03\x04":
        return _read_zip(source, source)
      f.seek(0)
      return _read_legacy(f, source)
  except _Malformed as e:
    raise CheckpointFormatError(f"{source}: {e}") from None
  except FileNotFoundError:
    raise CheckpointFormatError(f"{source}: file not found") from None
  except OSError as e:
    raise CheckpointFormatError(
        f"{source}: cannot read ({_one_line(e.strerror or str(e), 120)})") from None


def _read_remote(url: str) -> dict[str, np.ndarray]:
  """`read_state_dict` of a file on an object store (gs://): copied to a
  local temporary file first (the zip reader seeks), errors naming `url`."""
  import tempfile
  from tp2p_jax.core import storage
  with tempfile.TemporaryDirectory(prefix="tp2p-import-") as tmp:
    local = os.path.join(tmp, url.rstrip("/").rsplit("/", 1)[-1] or "weights")
    try:
      storage.copy_file(url, local)
    except FileNotFoundError:
      raise CheckpointFormatError(f"{url}: file not found") from None
    except OSError as e:
      raise CheckpointFormatError(f"{url}: cannot read ({_one_line(str(e), 120)})") from None
    try:
      return read_state_dict(local)
    except CheckpointFormatError as e:
      raise CheckpointFormatError(str(e).replace(local, url, 1)) from None

