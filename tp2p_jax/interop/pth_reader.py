"""PyTorch `.pth`/`.pt` checkpoints read as numpy arrays, without torch and
without executing anything from the file.

`read_state_dict(path)` returns {tensor name: numpy array}, in the file's key
order, from a bare state_dict or from {"state_dict": ..., ...} (the
TransPix2Pix release's {"state_dict": ..., "optimizer": ...}); a
`.safetensors` file (by its name, or by its content: a header length, then
JSON) goes to `tp2p_jax.interop.safetensors_reader` instead.

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

Memory: nothing the file claims is allocated before it is checked against
what the file holds. Zip entries are read only when stored (torch.save never
compresses; a deflated entry could inflate without bound) and when the
entries read fit in the file together; a legacy storage must fit in the
bytes left after it. Every view is checked and the arrays' total size is
known before the first array is made: they may exceed the bytes of the
storages they come from (converted to the returned dtype) by at most
`_MAX_EXPANDED_BYTES` (1 GiB) in all, which zero or overlapping strides
and tied weights draw on. Pickle memo indices must follow the opcodes
(CPython's unpickler sizes its memo by the largest index it meets: a
nine-byte pickle could otherwise make it zero gigabytes). So a file of S
bytes costs at most about S for its storages' bytes, 2 S for the arrays
(bfloat16 doubles) and 1 GiB.

Errors are `CheckpointFormatError` (a ValueError) with a one-line message
naming the file and the problem, whatever the file holds: values from the
file are shown through a bounded repr, and any other exception while
reading becomes one too.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import re
import reprlib
import stat
import struct
import types
import zipfile
from collections import OrderedDict
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np

from tp2p_jax.interop import safetensors_reader

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
  text = re.sub(r"\s+", " ", text[:4 * limit]).strip()
  return text if len(text) <= limit else text[:limit] + "..."


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 60, 60, 40


def _shown(value: Any, limit: int = 80) -> str:
  """A bounded one-line repr of a value from the file that never raises
  (plain repr fails on deep nesting, RecursionError, and on integers of
  more than 4300 digits, ValueError)."""
  try:
    return _one_line(_REPR.repr(value), limit)
  except Exception:  # pylint: disable=broad-except
    return f"<{type(value).__name__}>"


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
    raise _Malformed(f"tensor {what} is {_shown(x)}, not a tuple of integers")
  return tuple(x)


def _tensor_ref(storage: Any, offset: Any, size: Any, stride: Any,
                dtype: _DType | None = None) -> _TensorRef:
  """Checks what a rebuild function received (anything a pickle can make)."""
  if not isinstance(storage, _StorageRef):
    raise _Malformed(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
  if not _is_int(offset) or offset < 0:
    raise _Malformed(f"tensor storage offset {_shown(offset)} is not a "
                     "non-negative integer")
  size_t, stride_t = _int_tuple(size, "size"), _int_tuple(stride, "stride")
  if len(size_t) != len(stride_t):
    raise _Malformed(f"tensor size {_shown(size_t)} and stride {_shown(stride_t)} differ "
                     "in length")
  if len(size_t) > 64:  # numpy's limit
    raise _Malformed(f"tensor has {len(size_t)} dimensions")
  if any(v < 0 for v in size_t + stride_t):
    raise _Malformed(f"tensor size {_shown(size_t)} or stride {_shown(stride_t)} is "
                     "negative")
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
  if not isinstance(x, bytes):
    return x
  try:
    return x.decode("ascii")
  except UnicodeDecodeError:
    raise _Malformed(f"name {_shown(x)} is not ASCII") from None


class _Storages:
  """The storages a pickle references, by key, checked for consistency."""

  def __init__(self) -> None:
    self.roots: dict[str, _StorageRef] = {}

  def reference(self, pid: Any, legacy: bool) -> _StorageRef:
    if not isinstance(pid, tuple) or not pid:
      raise _Malformed(f"persistent id {_shown(pid)} is not a tuple")
    typename = _ascii(pid[0])
    if typename == "module":
      raise _Malformed("holds a whole pickled model, as torch.save(model) writes; save "
                       "model.state_dict() instead")
    if typename != "storage" or len(pid) != (6 if legacy else 5):
      raise _Malformed(f"unknown persistent id {_shown(pid)}")
    storage_type, key, _location, numel = pid[1:5]
    key = _ascii(key)
    if not isinstance(storage_type, _StorageType):
      raise _Malformed(f"storage {_shown(key)} has type {type(storage_type).__name__}, not a "
                       "torch storage class")
    if storage_type.dtype is None:
      raise _Malformed(f"storage {_shown(key)} is a {storage_type.name} without a dtype")
    if not isinstance(key, str) or not _is_int(numel) or numel < 0:
      raise _Malformed(f"malformed storage reference {_shown(pid[1:5])}")
    dtype = storage_type.dtype
    root = self.roots.setdefault(key, _StorageRef(key, dtype, numel))
    if root.dtype is not dtype or root.numel != numel:
      raise _Malformed(f"storage {_shown(key)} referenced as {_shown(root.numel)} x "
                       f"{root.dtype!r} and as {_shown(numel)} x {dtype!r}")
    view = pid[5] if legacy else None
    if view is None:
      return root
    # Only torch before 1.0 wrote storage views; (view key, start, numel) in
    # elements of the root's dtype.
    if (not isinstance(view, tuple) or len(view) != 3 or not _is_int(view[1])
        or not _is_int(view[2]) or view[1] < 0 or view[2] < 0
        or view[1] + view[2] > numel):
      raise _Malformed(f"storage {_shown(key)} has malformed view {_shown(view)}")
    return _StorageRef(key, dtype, view[2], view[1])


# --- Arrays -------------------------------------------------------------------------


# Zero or overlapping strides let a few stored bytes describe a huge tensor,
# and tied weights copy one storage twice. The arrays of one file may exceed
# the bytes of the storages they come from by this much in all (real
# state_dicts never come close); a file asking for more is refused before
# any array is made.
_MAX_EXPANDED_BYTES = 1 << 30

# The element of a storage is read as `stored`; the returned array holds
# `out_dtype` (bfloat16 becomes float32, bool bytes become numpy bools).
_OUT_DTYPES = {"bfloat16": np.dtype(np.float32), "bool": np.dtype(bool)}


class _Plan:
  """A tensor checked against its storage, not yet copied: `count`
  elements of `stored` from byte `start` of the storage's bytes."""
  __slots__ = ("ref", "stored", "out_dtype", "start", "count", "out_bytes")

  def __init__(self, ref: _TensorRef, stored: np.dtype, out_dtype: np.dtype, start: int,
               count: int, out_bytes: int):
    self.ref, self.stored, self.out_dtype = ref, stored, out_dtype
    self.start, self.count, self.out_bytes = start, count, out_bytes


def _plan_tensor(name: str, ref: _TensorRef, byteorder: str) -> _Plan:
  """Checks that the view `ref` stays inside its storage and that numpy can
  hold it; returns what copying it needs. Nothing is allocated."""
  dtype = ref.dtype
  if dtype.code is None:
    raise _Malformed(f"tensor {_shown(name)} has dtype {dtype!r}, which numpy cannot hold")
  stored = np.dtype(dtype.code).newbyteorder(byteorder)
  out_dtype = _OUT_DTYPES.get(dtype.kind, stored.newbyteorder("="))
  storage = ref.storage
  # The storage as seen through the tensor's dtype (they differ only for
  # _rebuild_tensor_v3 over untyped bytes).
  start = storage.start * storage.dtype.itemsize
  count = storage.numel * storage.dtype.itemsize // stored.itemsize
  numel = math.prod(ref.size)
  if numel == 0:
    return _Plan(ref, stored, out_dtype, start, count, 0)
  last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
  if last >= count:
    raise _Malformed(
        f"tensor {_shown(name)} (offset {_shown(ref.offset)}, size {_shown(ref.size)}, stride "
        f"{_shown(ref.stride)}) reaches element {_shown(last)} of a storage of {count}")
  out_bytes = numel * out_dtype.itemsize
  if numel > count and out_bytes > _MAX_EXPANDED_BYTES:
    raise _Malformed(f"tensor {_shown(name)} expands a storage of {count} elements to "
                     f"{_shown(numel)}")
  return _Plan(ref, stored, out_dtype, start, count, out_bytes)


def _plan_all(tensors: Mapping[str, _TensorRef], roots: Mapping[str, _StorageRef],
              byteorder: str) -> dict[str, _Plan]:
  """`_plan_tensor` of each tensor, then the total against the storages:
  the arrays may hold each storage's bytes (in the returned dtype) once,
  and `_MAX_EXPANDED_BYTES` beyond that in all."""
  plans = {name: _plan_tensor(name, ref, byteorder) for name, ref in tensors.items()}
  covered: dict[str, int] = {}
  for plan in plans.values():
    root = roots[plan.ref.storage.key]
    as_out = root.numel * root.dtype.itemsize * plan.out_dtype.itemsize // plan.stored.itemsize
    covered[root.key] = max(covered.get(root.key, 0), as_out)
  total = sum(plan.out_bytes for plan in plans.values())
  allowed = sum(covered.values()) + _MAX_EXPANDED_BYTES
  if total > allowed:
    raise _Malformed(
        f"its {len(plans)} tensors would take {total} bytes from storages of "
        f"{sum(covered.values())} bytes, more than the {_MAX_EXPANDED_BYTES >> 20} MiB that "
        "zero or overlapping strides may add")
  return plans


def _tensor_array(name: str, plan: _Plan, raw: bytes | memoryview) -> np.ndarray:
  """Copies the planned tensor out of its storage's bytes `raw`."""
  try:
    return _copy_tensor(plan, raw)
  except (ValueError, OverflowError, MemoryError) as e:  # sizes numpy cannot allocate
    raise _Malformed(f"tensor {_shown(name)} of size {_shown(plan.ref.size)} cannot be "
                     f"made ({type(e).__name__}: {_one_line(str(e), 80)})") from e


def _copy_tensor(plan: _Plan, raw: bytes | memoryview) -> np.ndarray:
  ref, stored, out_dtype = plan.ref, plan.stored, plan.out_dtype
  if plan.out_bytes == 0:
    return np.zeros(ref.size, out_dtype)
  flat = np.frombuffer(raw, dtype=stored, count=plan.count, offset=plan.start)
  # Strides of length-1 dimensions are never followed; zeroing them keeps
  # huge unused values from overflowing numpy's byte strides.
  strides = tuple(0 if n == 1 else s * stored.itemsize for n, s in zip(ref.size, ref.stride))
  view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=ref.size, strides=strides,
                                         writeable=False)
  out = np.empty(ref.size, out_dtype)
  if ref.dtype.kind == "bool":
    np.not_equal(view, 0, out=out)
  elif ref.dtype.kind == "bfloat16":
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
  keys = _one_line(", ".join(_shown(k, 40) for k in list(tree)[:12])
                   + (", ..." if len(tree) > 12 else ""), 200)
  raise _Malformed(f"holds neither a state_dict nor a 'state_dict' entry (keys: {keys})")


def _check_entries(state_dict: Mapping[Any, Any]) -> dict[str, _TensorRef]:
  out: dict[str, _TensorRef] = {}
  for key, value in state_dict.items():
    if not isinstance(key, str):
      raise _Malformed(f"state_dict key {_shown(key)} is not a string")
    if not isinstance(value, _TensorRef):
      raise _Malformed(f"state_dict entry {_shown(key)} is a {type(value).__name__}, not a "
                       "tensor")
    out[key] = value
  return out


# --- The two formats ----------------------------------------------------------------


def _check_memo_indices(data: BinaryIO) -> None:
  """Reads one pickle's opcodes from `data` (up to its STOP) and refuses
  memo indices beyond the opcodes read: CPython's unpickler grows its memo
  to twice the largest index and zeroes it, so one LONG_BINPUT of 2**30
  would touch 16 GiB. Picklers number the memo from 0 in order."""
  for count, (op, arg, _) in enumerate(pickletools.genops(data)):
    if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and (not _is_int(arg) or arg > count):
      raise _Malformed(f"pickle memo index {_shown(arg)} at opcode {count} is out of order")


def _unpickle(data: BinaryIO, source: str,
              on_persistent_id: Callable[[Any], Any] | None = None) -> Any:
  """One pickle from `data` (an in-memory stream: reads are bounded by what
  it holds), its memo indices checked before it is loaded."""
  start = data.tell()
  try:
    _check_memo_indices(data)
    data.seek(start)
    return _RestrictedUnpickler(data, source, on_persistent_id).load()
  except (CheckpointFormatError, _Malformed):
    raise
  except Exception as e:  # Malformed opcodes raise nearly anything.
    raise _Malformed(f"corrupt pickle ({type(e).__name__}: {_one_line(str(e), 160)})") from e


def _stored_entry(archive: zipfile.ZipFile, name: str, file_size: int) -> zipfile.ZipInfo:
  """The zip entry `name`, refused unless stored (uncompressed) with sizes
  that fit in the file."""
  info = archive.getinfo(name)
  if info.compress_type != zipfile.ZIP_STORED:
    method = {zipfile.ZIP_DEFLATED: "deflated", zipfile.ZIP_BZIP2: "bzip2",
              zipfile.ZIP_LZMA: "lzma"}.get(info.compress_type, f"method {info.compress_type}")
    raise _Malformed(f"zip entry {_shown(name)} is compressed ({method}); torch.save writes "
                     "stored (uncompressed) entries only, and a compressed one could inflate "
                     "without bound")
  if info.file_size != info.compress_size or info.header_offset + info.file_size > file_size:
    raise _Malformed(f"zip entry {_shown(name)} claims {info.file_size} bytes, more than the "
                     f"file of {file_size} bytes holds")
  return info


def _read_zip(path: str, source: str, file_size: int) -> dict[str, np.ndarray]:
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
        info = _stored_entry(archive, top + "byteorder", file_size)
        if info.file_size > 16:
          raise _Malformed(f"byteorder entry has {info.file_size} bytes")
        order = archive.read(info).decode("ascii", "replace").strip()
        if order not in ("little", "big"):
          raise _Malformed(f"unknown byte order {_shown(order, 40)}")
        byteorder = "<" if order == "little" else ">"
      pickle_info = _stored_entry(archive, pickles[0], file_size)
      storages = _Storages()
      tree = _unpickle(io.BytesIO(archive.read(pickle_info)), source,
                       lambda pid: storages.reference(pid, legacy=False))
      tensors = _check_entries(_select_state_dict(tree))
      # Every record the state_dict needs, checked before any is read: stored,
      # of its storage's size, and all of them together inside the file
      # (entries of a hostile zip may overlap).
      records: dict[str, zipfile.ZipInfo] = {}
      for name, ref in tensors.items():
        key = ref.storage.key
        if key in records:
          continue
        root = storages.roots[key]
        nbytes = root.numel * root.dtype.itemsize
        record = f"{top}data/{key}"
        if record not in names:
          raise _Malformed(f"storage record {_shown(record)} of tensor {_shown(name)} is "
                           "missing")
        info = _stored_entry(archive, record, file_size)
        if info.file_size != nbytes:
          raise _Malformed(f"storage record {_shown(record)} has {info.file_size} bytes, "
                           f"expected {_shown(nbytes)}")
        records[key] = info
      read = pickle_info.file_size + sum(info.file_size for info in records.values())
      if read > file_size:
        raise _Malformed(f"its zip entries claim {read} bytes in all, more than the file of "
                         f"{file_size} bytes holds")
      plans = _plan_all(tensors, storages.roots, byteorder)
      raw = {key: archive.read(info) for key, info in records.items()}
      return {name: _tensor_array(name, plan, raw[plan.ref.storage.key])
              for name, plan in plans.items()}
    except (_Malformed, CheckpointFormatError):
      raise
    except Exception as e:
      # CRC mismatch, a record cut short, encryption: zipfile raises
      # assorted types.
      raise _Malformed(f"corrupt zip archive ({type(e).__name__}: "
                       f"{_one_line(str(e), 160)})") from e


def _not_legacy(head: bytes) -> _Malformed:
  tar_hint = ("; old tar-format checkpoints (torch < 0.4) are not supported"
              if head[257:262] == b"ustar" else "")
  return _Malformed("is not a torch checkpoint (neither a zip archive with data.pkl nor a "
                    f"legacy torch.save file){tar_hint}")


def _read_legacy(f: BinaryIO, source: str) -> dict[str, np.ndarray]:
  # The magic number from the first bytes only, so that a large file that is
  # not a checkpoint is not read whole.
  head = f.read(512)
  try:
    magic = _RestrictedUnpickler(io.BytesIO(head[:64]), source).load()
  except Exception:  # pylint: disable=broad-except
    magic = None
  if not _is_int(magic) or magic != LEGACY_MAGIC_NUMBER:
    raise _not_legacy(head)
  # Then the whole file in memory: every read of a length from the file is
  # bounded by what it holds, and storages are sliced out without copies.
  f.seek(0)
  data = f.read()
  stream = io.BytesIO(data)
  _unpickle(stream, source)  # the magic number again, its end found by the unpickler
  version = _unpickle(stream, source)
  if not _is_int(version) or version != LEGACY_PROTOCOL_VERSION:
    raise _Malformed(f"legacy protocol version {_shown(version, 40)}, expected "
                     f"{LEGACY_PROTOCOL_VERSION}")
  sys_info = _unpickle(stream, source)
  if not isinstance(sys_info, dict):
    raise _Malformed("legacy header has no sys_info dict")
  storages = _Storages()
  tree = _unpickle(stream, source, lambda pid: storages.reference(pid, legacy=True))
  keys = _unpickle(stream, source)
  if not isinstance(keys, list):
    raise _Malformed("legacy storage key list is malformed")
  keys = [_ascii(k) for k in keys]
  if not all(isinstance(k, str) for k in keys):
    raise _Malformed("legacy storage key list is malformed")
  tensors = _check_entries(_select_state_dict(tree))
  # Where each storage's bytes lie: an 8-byte little-endian element count,
  # then the bytes, for each key in order.
  spans: dict[str, tuple[int, int]] = {}
  pos = stream.tell()
  for key in keys:
    root = storages.roots.get(key)
    if root is None:
      raise _Malformed(f"storage {_shown(key)} in the key list is referenced nowhere in the "
                       "pickle")
    if pos + 8 > len(data):
      raise _Malformed(f"file ends before storage {_shown(key)}")
    (numel,) = struct.unpack_from("<q", data, pos)
    if numel != root.numel:
      raise _Malformed(f"storage {_shown(key)} holds {numel} elements, expected "
                       f"{_shown(root.numel)}")
    nbytes = numel * root.dtype.itemsize
    if pos + 8 + nbytes > len(data):
      raise _Malformed(f"file ends inside storage {_shown(key)} ({nbytes} bytes from byte "
                       f"{pos + 8} of {len(data)})")
    spans[key] = (pos + 8, nbytes)
    pos += 8 + nbytes
  for name, ref in tensors.items():
    if ref.storage.key not in spans:
      raise _Malformed(f"storage {_shown(ref.storage.key)} of tensor {_shown(name)} has no data")
  plans = _plan_all(tensors, storages.roots, "<")
  view = memoryview(data)
  out: dict[str, np.ndarray] = {}
  for name, plan in plans.items():
    start, nbytes = spans[plan.ref.storage.key]
    out[name] = _tensor_array(name, plan, view[start:start + nbytes])
  return out


_SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads the state_dict of a torch.save checkpoint (or the tensors of a
  `.safetensors` file) as numpy arrays.

  Args:
    path: a `.pth`/`.pt` file in zip or legacy format holding a state_dict,
      or a mapping with a "state_dict" entry (other entries, e.g. the
      optimizer's, are parsed through the same restricted unpickler but not
      returned); or a `.safetensors` file (by its name or its content,
      read by `tp2p_jax.interop.safetensors_reader`: every tensor).

  Returns:
    Tensor name -> array, in the file's order; each array owns its memory.
    float32/float64/float16/int*/uint8/bool/complex keep their dtype;
    bfloat16 becomes float32; parameters are plain arrays.

  Raises:
    CheckpointFormatError: the file is missing, not a regular file (a FIFO
      would block the read), not a torch checkpoint, truncated or corrupt,
      compressed, asks for more memory than its storages justify (see the
      module's docstring), references a global outside the allow-list, or
      its state_dict holds something other than tensors.
  """
  source = os.fspath(path)
  if isinstance(source, bytes):
    source = os.fsdecode(source)
  if "://" in source:  # an object store (gs://): via a local copy
    return _read_remote(source)
  try:
    # Before opening: opening a FIFO for reading blocks until a writer comes.
    mode = os.stat(source).st_mode
    for is_kind, kind in _SPECIAL_FILES:
      if is_kind(mode):
        raise _Malformed(f"is {kind}, not a regular file")
    with open(source, "rb") as f:
      head = f.read(9)
      size = os.fstat(f.fileno()).st_size
      if head[:4] == b"PK\x03\x04":
        return _read_zip(source, source, size)
      if (source.lower().endswith(".safetensors")
          or safetensors_reader.looks_like_safetensors(head, size)):
        return safetensors_reader.read_safetensors(source, f)
      f.seek(0)
      return _read_legacy(f, source)
  except (_Malformed, safetensors_reader.SafetensorsFormatError) as e:
    raise CheckpointFormatError(f"{source}: {e}") from None
  except CheckpointFormatError:
    raise
  except FileNotFoundError:
    raise CheckpointFormatError(f"{source}: file not found") from None
  except OSError as e:
    raise CheckpointFormatError(
        f"{source}: cannot read ({_one_line(e.strerror or str(e), 120)})") from None
  except Exception as e:  # pylint: disable=broad-except
    # A path the checks above missed: still one line, never a traceback.
    raise CheckpointFormatError(f"{source}: cannot be read as a torch checkpoint "
                                f"({type(e).__name__}: {_one_line(str(e), 120)})") from None


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

