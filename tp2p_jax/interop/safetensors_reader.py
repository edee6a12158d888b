"""`.safetensors` weight files read as numpy arrays, through the `safetensors`
package; `tp2p_jax.interop.pth_reader.read_state_dict` hands such files here
(recognised by their content), so `import-torch` reads them beside `.pth`.

The format: an 8-byte little-endian header length N, N bytes of JSON
({name: {"dtype", "shape", "data_offsets": [begin, end]}, optional
"__metadata__": {str: str}}), then the tensors' bytes (little-endian,
C order), offsets relative to the end of the header.

The package parses and checks the file first (header size at most 100 MB,
every tensor's byte range matching its dtype and shape, the ranges covering
the data exactly, without overlaps), so a tensor is never larger than the
bytes the file holds for it: a file of S bytes costs at most about S for
float16/float32/int arrays and 2 S where bfloat16 becomes float32 (the
data are memory-mapped, one tensor copied at a time). Errors are
`SafetensorsFormatError` with one line; `read_state_dict` names the file
and raises them as its `CheckpointFormatError`.
"""
from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO

import numpy as np

# safetensors dtype -> numpy dtype (bool, ints, floats: what the .pth
# reader returns too); BF16 is widened to float32 here, as there.
_NUMPY_DTYPES = {"BOOL": np.dtype(bool), "U8": np.dtype(np.uint8), "I8": np.dtype(np.int8),
                 "I16": np.dtype("<i2"), "U16": np.dtype("<u2"), "I32": np.dtype("<i4"),
                 "U32": np.dtype("<u4"), "I64": np.dtype("<i8"), "U64": np.dtype("<u8"),
                 "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
_BF16 = "BF16"


class SafetensorsFormatError(ValueError):
  """The file cannot be read as `.safetensors` weights (one line)."""
# The package's own bound on the JSON header.
MAX_HEADER_BYTES = 100_000_000


def looks_like_safetensors(head: bytes, file_size: int) -> bool:
  """Whether a file of `file_size` bytes starting with `head` (its first 9
  bytes or more) is laid out as a `.safetensors` file: a header length that
  fits in the file, then a JSON object."""
  if len(head) < 9:
    return False
  (n,) = struct.unpack("<Q", head[:8])
  return 2 <= n <= file_size - 8 and head[8:9] == b"{"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
  keys = [k for k, _ in pairs]
  if len(set(keys)) != len(keys):
    raise ValueError("the header names a tensor twice")
  return dict(pairs)


def _header(f: BinaryIO) -> tuple[dict[str, Any], int]:
  """The parsed JSON header (tensors only) and the offset of the data."""
  f.seek(0)
  (n,) = struct.unpack("<Q", f.read(8))
  header = json.loads(f.read(n), object_pairs_hook=_no_duplicates)
  header.pop("__metadata__", None)
  return header, 8 + n


def read_safetensors(source: str, f: BinaryIO) -> dict[str, np.ndarray]:
  """Reads every tensor of the `.safetensors` file `source` (open as `f`).

  Args:
    source: the file's path.
    f: the file, open for binary reading (BF16 tensors are read from it).

  Returns:
    Tensor name -> array, in the order of the tensors' data in the file;
    each array owns its memory. bool/uint/int/float16/32/64 keep their
    dtype; bfloat16 becomes float32.

  Raises:
    SafetensorsFormatError: safetensors is not installed, or the file is
      malformed (a header the package refuses, a duplicate name, a byte
      range that does not match the tensor) or holds a dtype other than
      those above (e.g. float8): one line.
  """
  try:
    from safetensors import safe_open
  except ImportError:
    raise SafetensorsFormatError("reading .safetensors files needs the safetensors package: "
                                 "pip install safetensors") from None
  try:
    with safe_open(source, framework="numpy") as tensors:
      # The package has checked the header; its entries, in file order.
      header, data_start = _header(f)
      names = sorted(header, key=lambda k: (header[k]["data_offsets"][0],
                                            header[k]["data_offsets"][1]))
      out: dict[str, np.ndarray] = {}
      for name in names:
        entry = header[name]
        dtype, shape = entry["dtype"], tuple(int(d) for d in entry["shape"])
        if dtype == _BF16:
          begin, end = (int(x) for x in entry["data_offsets"])
          f.seek(data_start + begin)
          raw = f.read(end - begin)
          if len(raw) != end - begin:
            raise ValueError(f"tensor {name!r}: file truncated")
          widened = np.empty(shape, np.float32)
          bits = widened.view(np.uint32)
          bits[...] = np.frombuffer(raw, "<u2").reshape(shape)
          bits <<= 16
          out[name] = widened
        elif dtype in _NUMPY_DTYPES:
          array = tensors.get_tensor(name)
          out[name] = np.array(np.reshape(array, shape), copy=True,
                               dtype=_NUMPY_DTYPES[dtype].newbyteorder("="))
        else:
          raise ValueError(f"tensor {name[:80]!r} has dtype {str(dtype)[:20]}, which is not "
                           "supported (bool, int, uint, float16/32/64, bfloat16 are)")
      return out
  except Exception as e:  # the package's SafetensorError, JSON errors, ...
    text = " ".join(str(e).split())[:200] or type(e).__name__
    raise SafetensorsFormatError(f"not a readable .safetensors file ({text})") from None
