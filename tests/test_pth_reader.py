"""tp2p_jax.interop.pth_reader: torch.save files read without torch.

The torch-written fixtures come from tools/make_pth_fixtures.py
(tests/golden/pth). Hostile and damaged files are made here: malicious
payloads with the standard pickle module, torch-shaped pickles (tensors,
storages, views) with the small protocol-2 writer `_dumps`, so each can
target one check of the reader.
"""
from __future__ import annotations

import builtins
import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import threading
import zipfile
import zlib
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest

from tp2p_jax.interop import pth_reader
from tp2p_jax.interop.pth_reader import CheckpointFormatError, read_state_dict

FIXTURES = pathlib.Path(__file__).resolve().parent / "golden" / "pth"


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
  with np.load(FIXTURES / "expected.npz", allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


def _error(path: os.PathLike | str) -> str:
  """The reader's message for `path`, checked to be one line naming the file."""
  with pytest.raises(CheckpointFormatError) as info:
    read_state_dict(path)
  message = str(info.value)
  assert "\n" not in message
  assert message.startswith(f"{os.fspath(path)}: "), message
  return message


# --- A protocol-2 pickle writer for torch-shaped pickles -------------------------


class G:
  """A global reference (GLOBAL opcode), not resolved here."""

  def __init__(self, module: str, name: str):
    self.module, self.name = module, name


class Call:
  """func(*args) (REDUCE)."""

  def __init__(self, func: Any, *args: Any):
    self.func, self.args = func, args


class Pid:
  """A persistent id (BINPERSID)."""

  def __init__(self, *fields: Any):
    self.fields = fields


class Build:
  """`target` followed by BUILD with `state`."""

  def __init__(self, target: Any, state: Any):
    self.target, self.state = target, state


def _write(obj: Any, out: bytearray) -> None:
  if obj is None:
    out += b"N"
  elif obj is True or obj is False:
    out += b"\x88" if obj else b"\x89"
  elif isinstance(obj, int):
    if -2**31 <= obj < 2**31:
      out += b"J" + struct.pack("<i", obj)
    else:
      n = (obj.bit_length() + 8) // 8
      out += b"\x8a" + bytes([n]) + obj.to_bytes(n, "little", signed=True)
  elif isinstance(obj, float):
    out += b"G" + struct.pack(">d", obj)
  elif isinstance(obj, str):
    data = obj.encode()
    out += b"X" + struct.pack("<I", len(data)) + data
  elif isinstance(obj, tuple):
    out += b"("
    for v in obj:
      _write(v, out)
    out += b"t"
  elif isinstance(obj, list):
    out += b"]("
    for v in obj:
      _write(v, out)
    out += b"e"
  elif isinstance(obj, dict):
    out += b"}("
    for k, v in obj.items():
      _write(k, out)
      _write(v, out)
    out += b"u"
  elif isinstance(obj, G):
    out += f"c{obj.module}\n{obj.name}\n".encode()
  elif isinstance(obj, Call):
    _write(obj.func, out)
    _write(obj.args, out)
    out += b"R"
  elif isinstance(obj, Pid):
    _write(obj.fields, out)
    out += b"Q"
  elif isinstance(obj, Build):
    _write(obj.target, out)
    _write(obj.state, out)
    out += b"b"
  else:
    raise TypeError(type(obj))


def _dumps(obj: Any) -> bytes:
  out = bytearray(b"\x80\x02")
  _write(obj, out)
  return bytes(out + b".")


def _tensor(key: str, numel: int, offset: int, size: tuple, stride: tuple,
            storage: str = "FloatStorage", legacy: bool = False, view: Any = None) -> Call:
  """What torch pickles for a tensor on storage `key` (numel elements)."""
  pid = ("storage", G("torch", storage), key, "cpu", numel) + ((view,) if legacy else ())
  return Call(G("torch._utils", "_rebuild_tensor_v2"), Pid(*pid), offset, size, stride,
              False, Call(G("collections", "OrderedDict")))


def _torch_zip(path: pathlib.Path, data_pkl: bytes, records: dict[str, bytes] | None = None,
               top: str = "archive", byteorder: str | None = "little") -> pathlib.Path:
  """A zip laid out as torch.save writes it."""
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr(f"{top}/data.pkl", data_pkl)
    if byteorder is not None:
      z.writestr(f"{top}/byteorder", byteorder)
    for key, data in (records or {}).items():
      z.writestr(f"{top}/data/{key}", data)
    z.writestr(f"{top}/version", "3\n")
  return path


def _legacy(path: pathlib.Path, main_pkl: bytes,
            storages: list[tuple[str, int, bytes]] = ()) -> pathlib.Path:
  """A legacy torch.save file: header pickles, main pickle, keys, storages
  (key, element count, bytes)."""
  sys_info = {"protocol_version": 1001, "little_endian": True,
              "type_sizes": {"short": 2, "int": 4, "long": 4}}
  parts = [pickle.dumps(pth_reader.LEGACY_MAGIC_NUMBER, protocol=2),
           pickle.dumps(1001, protocol=2), pickle.dumps(sys_info, protocol=2), main_pkl,
           pickle.dumps([k for k, _, _ in storages], protocol=2)]
  parts += [struct.pack("<q", n) + data for _, n, data in storages]
  path.write_bytes(b"".join(parts))
  return path


def _f32(*values: float, order: str = "<") -> bytes:
  return np.asarray(values, dtype=f"{order}f4").tobytes()


# --- torch-written files ------------------------------------------------------------


@pytest.mark.parametrize("name, prefix", [("state_dict_zip", "sd"), ("state_dict_legacy", "sd"),
                                          ("release_like", "release")])
def test_reads_torch_files(name: str, prefix: str, expected: dict[str, np.ndarray]) -> None:
  sd = read_state_dict(FIXTURES / f"{name}.pth")
  assert list(sd) == list(expected[f"order/{prefix}"])
  for key, value in sd.items():
    want = expected[f"{prefix}/{key}"]
    assert isinstance(value, np.ndarray), key
    assert value.dtype == want.dtype and value.shape == want.shape, (key, value.dtype, want.dtype)
    np.testing.assert_array_equal(value, want, err_msg=key)
    # Copies, not views of a buffer the reader has closed.
    assert value.flags.owndata and value.flags.writeable, key


def test_views_dtypes_and_parameters(expected: dict[str, np.ndarray]) -> None:
  sd = read_state_dict(FIXTURES / "state_dict_zip.pth")
  base = np.arange(24, dtype=np.float32).reshape(4, 6)
  np.testing.assert_array_equal(sd["shared.cols"], base[:, 1:5:2])
  np.testing.assert_array_equal(sd["shared.t"], base.T)
  np.testing.assert_array_equal(sd["shared.row"], base[2])
  assert sd["shared.scalar"].shape == () and sd["shared.scalar"] == 23.0
  np.testing.assert_array_equal(sd["expanded"], [[1, 2, 3], [1, 2, 3]])
  # Views of one storage come back as independent arrays.
  sd["shared.base"][0, 1] = -1.0
  assert sd["shared.cols"][0, 0] == 1.0
  assert sd["1.num_batches_tracked"].dtype == np.int64
  assert sd["1.num_batches_tracked"].shape == () and sd["1.num_batches_tracked"] == 7
  assert sd["bf16"].dtype == np.float32
  np.testing.assert_array_equal(sd["bf16"][:2], [1.5, -2.25])
  assert np.isinf(sd["bf16"][4]) and np.signbit(sd["bf16"][3])
  assert sd["half"].dtype == np.float16 and sd["mask"].dtype == np.bool_
  assert sd["u16"].dtype == np.uint16 and sd["u16"][1] == 65535
  assert sd["empty"].shape == (0, 3)
  assert sd["param"].shape == (3, 2) and sd["param_with_state"].shape == (2,)


def test_release_file_takes_state_dict_and_skips_optimizer() -> None:
  sd = read_state_dict(FIXTURES / "release_like.pth")
  assert "state" not in sd and "param_groups" not in sd
  assert sd["0.weight"].shape == (4, 3, 3, 3) and sd["3.weight"].shape == (2, 4, 1, 1)


def test_accepts_path_like_and_str() -> None:
  a = read_state_dict(str(FIXTURES / "state_dict_legacy.pth"))
  b = read_state_dict(FIXTURES / "state_dict_legacy.pth")
  assert list(a) == list(b)


# --- Hand-made files exercising single paths --------------------------------------------


def test_big_endian_zip_and_untyped_v3(tmp_path: pathlib.Path) -> None:
  sd = {"w": _tensor("0", 3, 1, (2,), (1,)),
        "u": Call(G("torch._utils", "_rebuild_tensor_v3"),
                  Pid("storage", G("torch.storage", "UntypedStorage"), "1", "cpu", 4),
                  0, (2,), (1,), False, Call(G("collections", "OrderedDict")), G("torch", "int16"))}
  path = _torch_zip(tmp_path / "be.pth", _dumps(sd),
                    {"0": _f32(1.0, 2.5, -3.0, order=">"),
                     "1": np.asarray([258, -2], dtype=">i2").tobytes()}, byteorder="big")
  out = read_state_dict(path)
  np.testing.assert_array_equal(out["w"], [2.5, -3.0])
  assert out["w"].dtype == np.float32 and out["w"].dtype.isnative
  np.testing.assert_array_equal(out["u"], [258, -2])
  assert out["u"].dtype == np.int16


def test_zip_top_folder_name_varies_and_allowed_metadata(tmp_path: pathlib.Path) -> None:
  tree = {"epoch": 3, "note": Call(G("builtins", "set"), ["a", "b"]),
          "shape": Call(G("torch", "Size"), (3,)), "z": Call(G("builtins", "complex"), 1.0, 2.0),
          "state_dict": Build(Call(G("collections", "OrderedDict")),
                              {"_metadata": {"": {"version": 1}}})}
  path = _torch_zip(tmp_path / "m.pth", _dumps(tree), top="my_model-v2")
  assert read_state_dict(path) == {}


def test_legacy_storage_view(tmp_path: pathlib.Path) -> None:
  # torch < 1.0 pickled views of storages: elements 2..5 of root storage "r".
  sd = {"v": _tensor("r", 6, 1, (2,), (2,), legacy=True, view=("v0", 2, 4)),
        "root": _tensor("r", 6, 0, (6,), (1,), legacy=True)}
  path = _legacy(tmp_path / "view.pth", _dumps(sd), [("r", 6, _f32(0, 1, 2, 3, 4, 5))])
  out = read_state_dict(path)
  np.testing.assert_array_equal(out["v"], [3.0, 5.0])
  np.testing.assert_array_equal(out["root"], np.arange(6))


def test_old_rebuild_tensor_and_cuda_storage_names(tmp_path: pathlib.Path) -> None:
  # Legacy files saved from GPU by old torch: torch.cuda.<Type>Storage and the
  # 4-argument _rebuild_tensor.
  pid = Pid("storage", G("torch.cuda", "HalfStorage"), "k", "cuda:0", 3, None)
  sd = {"w": Call(G("torch._utils", "_rebuild_tensor"), pid, 1, (2,), (1,))}
  path = _legacy(tmp_path / "gpu.pth", _dumps(sd),
                 [("k", 3, np.asarray([1, 2, 3], "<f2").tobytes())])
  out = read_state_dict(path)["w"]
  assert out.dtype == np.float16 and out.tolist() == [2.0, 3.0]


def test_legacy_skips_storages_the_state_dict_does_not_use(tmp_path: pathlib.Path) -> None:
  tree = {"state_dict": {"w": _tensor("b", 2, 0, (2,), (1,), "DoubleStorage", legacy=True)},
          "optimizer": {"m": _tensor("a", 3, 0, (3,), (1,), legacy=True)}}
  path = _legacy(tmp_path / "skip.pth", _dumps(tree),
                 [("a", 3, _f32(9, 9, 9)), ("b", 2, np.asarray([0.5, 7.0]).tobytes())])
  out = read_state_dict(path)
  assert list(out) == ["w"] and out["w"].dtype == np.float64
  np.testing.assert_array_equal(out["w"], [0.5, 7.0])


# --- Refused globals: nothing from the file runs -------------------------------------


class _SystemPayload:
  def __init__(self, sentinel: pathlib.Path):
    self.sentinel = sentinel

  def __reduce__(self):
    return (os.system, (f"touch '{self.sentinel}'",))


class _EvalPayload:
  def __init__(self, sentinel: pathlib.Path):
    self.sentinel = sentinel

  def __reduce__(self):
    return (builtins.eval, (f"open({str(self.sentinel)!r}, 'w').close()",))


# The global each names in a protocol-2 pickle (which writes Python 2 module
# names, as torch.save's default protocol does).
PAYLOADS = {"os.system": (_SystemPayload, f"{os.system.__module__}.system"),
            "builtins.eval": (_EvalPayload, "__builtin__.eval")}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_payloads_are_live(payload: str, tmp_path: pathlib.Path) -> None:
  # The control for the next test: plain pickle does run them.
  cls, _ = PAYLOADS[payload]
  sentinel = tmp_path / "SENTINEL"
  pickle.loads(pickle.dumps({"state_dict": {}, "x": cls(sentinel)}, protocol=2))
  assert sentinel.exists()


@pytest.mark.parametrize("container", ["zip", "legacy"])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_malicious_globals_are_refused(payload: str, container: str,
                                       tmp_path: pathlib.Path) -> None:
  cls, qualname = PAYLOADS[payload]
  sentinel = tmp_path / "SENTINEL"
  data = pickle.dumps({"state_dict": {}, "optimizer": cls(sentinel)}, protocol=2)
  path = tmp_path / "model.pth"
  if container == "zip":
    _torch_zip(path, data)
  else:
    _legacy(path, data)
  message = _error(path)
  assert f"refuses to load global '{qualname}'" in message
  assert "only tensors, storages, OrderedDict and plain containers" in message
  assert not sentinel.exists()


@pytest.mark.parametrize("module, name", [
    ("subprocess", "Popen"), ("builtins", "getattr"), ("numpy.core.multiarray", "_reconstruct"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"), ("torch", "load"),
    ("torch.serialization", "_get_layout")])
def test_globals_outside_the_allow_list(module: str, name: str, tmp_path: pathlib.Path) -> None:
  path = _torch_zip(tmp_path / "g.pth", _dumps({"w": Call(G(module, name), "x")}))
  assert f"refuses to load global '{module}.{name}'" in _error(path)


def test_numpy_arrays_are_refused(tmp_path: pathlib.Path) -> None:
  # A real numpy pickle (documented decision: numpy objects are not read).
  path = _torch_zip(tmp_path / "np.pth", pickle.dumps({"w": np.ones(2)}, protocol=2))
  assert "refuses to load global 'numpy." in _error(path)


def test_whole_pickled_module_is_refused() -> None:
  message = _error(FIXTURES / "whole_module.pth")
  assert "refuses to load global 'torch.nn.modules." in message
  assert "model.state_dict()" in message


def test_build_on_allowed_objects_is_refused(tmp_path: pathlib.Path) -> None:
  # BUILD on a shared stand-in would change it for later loads.
  target = G("torch._utils", "_rebuild_tensor_v2")
  path = _torch_zip(tmp_path / "b.pth", _dumps({"w": Build(target, {"__defaults__": (1,)})}))
  assert "tries to modify" in _error(path)
  path = _torch_zip(tmp_path / "d.pth", _dumps({"w": Build(G("torch", "float32"),
                                                             ({}, {"code": "O"}))}))
  assert "tries to modify" in _error(path)
  assert pth_reader.ALLOWED_GLOBALS[("torch", "float32")].code == "f4"
  assert read_state_dict(FIXTURES / "state_dict_zip.pth")["shared.row"].dtype == np.float32


# --- Views that leave their storage ----------------------------------------------------


@pytest.mark.parametrize("offset, size, stride, problem", [
    (0, (1000,), (1,), "reaches element 999 of a storage of 4"),
    (3, (2,), (1,), "reaches element 4"),
    (0, (2, 2), (3, 1), "reaches element 4"),
    (-1, (1,), (1,), "offset -1 is not a non-negative integer"),
    (0, (2,), (-1,), "negative"),
    (0, (2, 2), (1,), "differ in length"),
    (0, (2**20, 2**20), (0, 0), "expands a storage of 4 elements to 1099511627776"),
    (0, (0, 2**62, 2**62), (1, 1, 1), "cannot be made"),
])
def test_out_of_bounds_views_are_refused(offset: int, size: tuple, stride: tuple, problem: str,
                                         tmp_path: pathlib.Path) -> None:
  path = _torch_zip(tmp_path / "oob.pth", _dumps({"w": _tensor("0", 4, offset, size, stride)}),
                    {"0": _f32(1, 2, 3, 4)})
  assert problem in _error(path)


def test_bool_storage_bytes_other_than_one_are_true(tmp_path: pathlib.Path) -> None:
  pkl = _dumps({"m": _tensor("0", 3, 0, (3,), (1,), "BoolStorage")})
  path = _torch_zip(tmp_path / "b.pth", pkl, {"0": bytes([0, 2, 1])})
  out = read_state_dict(path)["m"]
  assert out.dtype == np.bool_ and out.tolist() == [False, True, True]


def test_unsupported_dtype_in_state_dict(tmp_path: pathlib.Path) -> None:
  w = Call(G("torch._utils", "_rebuild_tensor_v3"),
           Pid("storage", G("torch", "UntypedStorage"), "0", "cpu", 2), 0, (2,), (1,), False,
           Call(G("collections", "OrderedDict")), G("torch", "float8_e4m3fn"))
  path = _torch_zip(tmp_path / "f8.pth", _dumps({"w": w}), {"0": b"\x01\x02"})
  assert "'w' has dtype torch.float8_e4m3fn, which numpy cannot hold" in _error(path)


# --- Structure ---------------------------------------------------------------------------


def test_non_tensor_value_in_state_dict() -> None:
  assert "state_dict entry 'lr' is a float, not a tensor" in _error(FIXTURES / "non_tensor.pth")


def test_non_tensor_value_in_nested_state_dict(tmp_path: pathlib.Path) -> None:
  tree = {"state_dict": {"w": _tensor("0", 1, 0, (), ()), "epoch": 3}, "optimizer": {}}
  path = _torch_zip(tmp_path / "n.pth", _dumps(tree), {"0": _f32(1)})
  assert "state_dict entry 'epoch' is a int, not a tensor" in _error(path)


def test_no_state_dict_names_the_keys(tmp_path: pathlib.Path) -> None:
  path = _torch_zip(tmp_path / "k.pth", pickle.dumps({"epoch": 3, "optimizer": {}}, protocol=2))
  assert "keys: 'epoch', 'optimizer'" in _error(path)
  path = _torch_zip(tmp_path / "l.pth", pickle.dumps([1, 2], protocol=2))
  assert "holds a list, not a state_dict" in _error(path)


def test_key_order_is_the_files(tmp_path: pathlib.Path) -> None:
  names = ["z", "a", "m"]
  sd = OrderedDict((n, _tensor("0", 3, i, (), ())) for i, n in enumerate(names))
  path = _torch_zip(tmp_path / "o.pth", _dumps(dict(sd)), {"0": _f32(0, 1, 2)})
  out = read_state_dict(path)
  assert list(out) == names and [float(out[n]) for n in names] == [0.0, 1.0, 2.0]


# --- Damaged and foreign files ---------------------------------------------------------------


def test_missing_file(tmp_path: pathlib.Path) -> None:
  assert _error(tmp_path / "nope.pth").endswith("nope.pth: file not found")


def test_directory(tmp_path: pathlib.Path) -> None:
  assert "cannot read" in _error(tmp_path)


def test_random_bytes(tmp_path: pathlib.Path) -> None:
  path = tmp_path / "random.pth"
  path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
  assert "is not a torch checkpoint" in _error(path)
  (tmp_path / "empty.pth").write_bytes(b"")
  assert "is not a torch checkpoint" in _error(tmp_path / "empty.pth")


def test_truncated_zip(tmp_path: pathlib.Path) -> None:
  data = (FIXTURES / "state_dict_zip.pth").read_bytes()
  path = tmp_path / "cut.pth"
  path.write_bytes(data[: len(data) // 2])
  assert "truncated or corrupt zip archive" in _error(path)


def test_zip_crc_error(tmp_path: pathlib.Path) -> None:
  source = FIXTURES / "state_dict_zip.pth"
  with zipfile.ZipFile(source) as z:
    info = next(i for i in z.infolist() if i.filename.endswith("/data/0"))
  data = bytearray(source.read_bytes())
  # The record's data follows its local header (30 bytes + name + extra field).
  name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
  data[info.header_offset + 30 + name_len + extra_len] ^= 0xFF
  path = tmp_path / "crc.pth"
  path.write_bytes(bytes(data))
  assert "corrupt zip archive" in _error(path) and "CRC" in _error(path)


def test_missing_and_short_storage_records(tmp_path: pathlib.Path) -> None:
  pkl = _dumps({"w": _tensor("0", 4, 0, (4,), (1,))})
  assert "storage record 'archive/data/0' of tensor 'w' is missing" in _error(
      _torch_zip(tmp_path / "m.pth", pkl))
  assert "has 8 bytes, expected 16" in _error(
      _torch_zip(tmp_path / "s.pth", pkl, {"0": _f32(1, 2)}))


def test_truncated_legacy(tmp_path: pathlib.Path) -> None:
  data = (FIXTURES / "state_dict_legacy.pth").read_bytes()
  for cut, problem in [(len(data) - 3, "file ends "), (len(data) // 3, "corrupt pickle")]:
    path = tmp_path / f"cut{cut}.pth"
    path.write_bytes(data[:cut])
    assert problem in _error(path)
  pkl = _dumps({"w": _tensor("k", 4, 0, (4,), (1,), legacy=True)})
  assert "file ends inside storage 'k'" in _error(
      _legacy(tmp_path / "short.pth", pkl, [("k", 4, _f32(1, 2))]))


def test_legacy_storage_count_mismatch(tmp_path: pathlib.Path) -> None:
  pkl = _dumps({"w": _tensor("k", 2, 0, (2,), (1,), legacy=True)})
  assert "storage 'k' holds 3 elements, expected 2" in _error(
      _legacy(tmp_path / "c.pth", pkl, [("k", 3, _f32(1, 2, 3))]))


def test_foreign_zips(tmp_path: pathlib.Path) -> None:
  path = tmp_path / "script.pt"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("m/data.pkl", _dumps({"w": Call(G("__torch__.M", "M"))}))
    z.writestr("m/constants.pkl", b"")
    z.writestr("m/code/m.py", "")
  assert "TorchScript archive" in _error(path)
  path = tmp_path / "other.zip"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("readme.txt", "hi")
  assert "zip archive but not a torch checkpoint" in _error(path)


def test_error_is_a_value_error() -> None:
  assert issubclass(CheckpointFormatError, ValueError)
  with pytest.raises(ValueError):
    read_state_dict("/nonexistent/x.pth")


# --- Hostile sizes: memory stays bounded, every failure is one line -----------------------


GIB = 1 << 30


def _stride0_bomb(path: pathlib.Path, tensors: int = 3, legacy: bool = False) -> pathlib.Path:
  """`tensors` stride-0 views of 2**28 float32 (1 GiB each) over one 4-byte
  storage: each within the per-tensor allowance, together far beyond it."""
  sd = {f"w{i}": _tensor("0", 1, 0, (2**14, 2**14), (0, 0), legacy=legacy)
        for i in range(tensors)}
  if legacy:
    return _legacy(path, _dumps(sd), [("0", 1, _f32(1.0))])
  return _torch_zip(path, _dumps(sd), {"0": _f32(1.0)})


def _zip_entries(path: pathlib.Path, entries: list[tuple[str, bytes, int, int, int]]
                 ) -> pathlib.Path:
  """A zip written by hand: (name, data as stored in the file, compression
  method, uncompressed size, CRC-32) per entry, so that an entry can be a
  prepared deflate stream whose CRC the reader should never get to check."""
  body, central = bytearray(), bytearray()
  for name, data, method, size, crc in entries:
    encoded = name.encode()
    central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc,
                           len(data), size, len(encoded), 0, 0, 0, 0, 0, len(body)) + encoded
    body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(data), size,
                        len(encoded), 0) + encoded + data
  eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central),
                     len(body), 0)
  path.write_bytes(bytes(body + central + eocd))
  return path


def _zeros_deflated(size: int) -> bytes:
  """A raw deflate stream of `size` zero bytes (a multiple of 16 MiB),
  made in a fraction of a second: after a full flush the compressor starts
  afresh, so each 16 MiB block compresses to the same bytes."""
  block_size = 1 << 24
  assert size % block_size == 0
  compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
  block = compressor.compress(bytes(block_size)) + compressor.flush(zlib.Z_FULL_FLUSH)
  return block * (size // block_size) + compressor.flush(zlib.Z_FINISH)


def _deflate_bomb(path: pathlib.Path, size: int = 140 << 24) -> pathlib.Path:
  """A torch-shaped zip whose storage record is deflated: 2.3 MB on disk,
  `size` (2.35 GB) once inflated."""
  numel = size // 4
  pkl = _dumps({"w": _tensor("0", numel, 0, (numel,), (1,))})
  return _zip_entries(path, [
      ("archive/data.pkl", pkl, zipfile.ZIP_STORED, len(pkl), zlib.crc32(pkl)),
      ("archive/byteorder", b"little", zipfile.ZIP_STORED, 6, zlib.crc32(b"little")),
      ("archive/data/0", _zeros_deflated(size), zipfile.ZIP_DEFLATED, size, 0)])


def _memo_bomb(path: pathlib.Path, index: int) -> pathlib.Path:
  """data.pkl of ten bytes whose one LONG_BINPUT makes CPython's unpickler
  zero a memo of 2 * index pointers (16 * index bytes)."""
  return _torch_zip(path, b"\x80\x02N" + b"r" + struct.pack("<I", index) + b".")


def test_stride0_views_are_bounded_in_total(tmp_path: pathlib.Path) -> None:
  # Before: each view passed the per-tensor cap, 3 GiB were made, then the
  # fourth was refused; now the total is refused before any array exists.
  for legacy in (False, True):
    path = _stride0_bomb(tmp_path / f"s{legacy}.pth", legacy=legacy)
    assert path.stat().st_size < 1000
    message = _error(path)
    assert f"its 3 tensors would take {3 * GIB} bytes from storages of 4 bytes" in message
    assert "1024 MiB" in message


def test_views_within_the_allowance_are_read(tmp_path: pathlib.Path) -> None:
  # Tied weights (two tensors over one storage) and a small expansion.
  sd = {"a": _tensor("0", 4, 0, (4,), (1,)), "tied": _tensor("0", 4, 0, (2, 2), (2, 1)),
        "rows": _tensor("0", 4, 0, (1000, 4), (0, 1))}
  out = read_state_dict(_torch_zip(tmp_path / "t.pth", _dumps(sd), {"0": _f32(1, 2, 3, 4)}))
  np.testing.assert_array_equal(out["tied"], [[1, 2], [3, 4]])
  assert out["rows"].shape == (1000, 4) and (out["rows"] == [1, 2, 3, 4]).all()


def test_compressed_entries_are_refused(tmp_path: pathlib.Path) -> None:
  message = _error(_deflate_bomb(tmp_path / "bomb.pth", size=1 << 24))
  assert "zip entry 'archive/data/0' is compressed (deflated)" in message
  # A re-zipped checkpoint: its pickle deflated too.
  source = FIXTURES / "state_dict_zip.pth"
  rezipped = tmp_path / "rezipped.pth"
  with zipfile.ZipFile(source) as z, zipfile.ZipFile(rezipped, "w", zipfile.ZIP_DEFLATED) as out:
    for info in z.infolist():
      out.writestr(info.filename, z.read(info))
  assert "/byteorder' is compressed (deflated)" in _error(rezipped)


def test_zip_entries_claiming_more_than_the_file_are_refused(tmp_path: pathlib.Path) -> None:
  # A stored record whose sizes say 2 GiB, in a file of 400 bytes.
  pkl = _dumps({"w": _tensor("0", 2**29, 0, (4,), (1,))})
  path = _zip_entries(tmp_path / "claims.pth", [
      ("archive/data.pkl", pkl, zipfile.ZIP_STORED, len(pkl), zlib.crc32(pkl)),
      ("archive/data/0", _f32(1, 2, 3, 4), zipfile.ZIP_STORED, 2 * GIB, 0)])
  assert f"claims {2 * GIB} bytes, more than the file" in _error(path)


def test_memo_indices_out_of_order_are_refused(tmp_path: pathlib.Path) -> None:
  # Before: these ten bytes made the unpickler zero 256 MiB (2**30: 16 GiB).
  assert "pickle memo index 16777216 at opcode 2 is out of order" in _error(
      _memo_bomb(tmp_path / "memo.pth", 2**24))
  # Real pickles number their memo in order; all fixtures still load.
  for name in ("state_dict_zip", "state_dict_legacy", "release_like"):
    read_state_dict(FIXTURES / f"{name}.pth")


def _nested_lists(depth: int) -> bytes:
  """A pickle of `depth` nested lists, built without recursion."""
  return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def _legacy_parts(version: bytes | None = None, keys: bytes | None = None,
                  storages: list[tuple[str, int, bytes]] | None = None,
                  tree: bytes | None = None) -> bytes:
  sys_info = {"protocol_version": 1001, "little_endian": True,
              "type_sizes": {"short": 2, "int": 4, "long": 4}}
  if tree is None:
    tree = _dumps({"w": _tensor("k", 2, 0, (2,), (1,), "DoubleStorage", legacy=True)})
  storages = [("k", 2, np.asarray([1.0, 2.0]).tobytes())] if storages is None else storages
  parts = [pickle.dumps(pth_reader.LEGACY_MAGIC_NUMBER, protocol=2),
           version if version is not None else pickle.dumps(1001, protocol=2),
           pickle.dumps(sys_info, protocol=2), tree,
           keys if keys is not None else pickle.dumps([k for k, _, _ in storages], protocol=2)]
  return b"".join(parts + [struct.pack("<q", n) + data for _, n, data in storages])


# Each of these escaped the legacy reader as a traceback (the type named).
LEGACY_ESCAPES = {
    # repr() of a value from the file in the message.
    "ValueError": (dict(version=pickle.dumps(10**5000, protocol=2)), "legacy protocol version"),
    "RecursionError": (dict(version=_nested_lists(200_000)), "legacy protocol version [[[["),
    # The element count of a storage read with f.read(count * itemsize).
    "OverflowError": (dict(tree=_dumps({"w": _tensor("k", 2**62, 0, (2,), (1,),
                                                      "DoubleStorage", legacy=True)}),
                           storages=[("k", 2**62, b"")]), "file ends inside storage 'k'"),
    "MemoryError": (dict(tree=_dumps({"w": _tensor("k", 2**50, 0, (2,), (1,),
                                                    "DoubleStorage", legacy=True)}),
                         storages=[("k", 2**50, b"")]), "file ends inside storage 'k'"),
    # A storage skipped with f.seek(count * itemsize).
    "OverflowError-seek": (dict(tree=_dumps({"state_dict": {}, "o": _tensor(
        "k", 2**62, 0, (2,), (1,), "DoubleStorage", legacy=True)}),
        storages=[("k", 2**62, b"")]), "file ends inside storage 'k'"),
    # A Python 2 byte-string key that is not ASCII.
    "UnicodeDecodeError": (dict(keys=b"\x80\x02]q\x00C\x02\xff\xfeq\x01a."),
                           "name b'\\xff\\xfe' is not ASCII"),
}


@pytest.mark.parametrize("kind", sorted(LEGACY_ESCAPES))
def test_legacy_failures_are_one_line(kind: str, tmp_path: pathlib.Path) -> None:
  parts, fragment = LEGACY_ESCAPES[kind]
  path = tmp_path / "legacy.pth"
  path.write_bytes(_legacy_parts(**parts))
  assert fragment in _error(path)


@pytest.mark.parametrize("fixture", ["state_dict_zip", "state_dict_legacy", "release_like"])
def test_every_truncation_and_bit_flip_is_one_line(fixture: str, tmp_path: pathlib.Path) -> None:
  data = (FIXTURES / f"{fixture}.pth").read_bytes()
  path = tmp_path / "damaged.pth"
  for cut in range(0, len(data), 61):
    path.write_bytes(data[:cut])
    _error(path)
  rng = np.random.default_rng(0)
  for position in rng.integers(0, len(data), 150):
    damaged = bytearray(data)
    damaged[position] ^= 1 << int(rng.integers(0, 8))
    path.write_bytes(bytes(damaged))
    try:
      read_state_dict(path)  # some flips land in tensor data and read fine
    except CheckpointFormatError as e:
      assert "\n" not in str(e) and str(e).startswith(f"{path}: ")


def test_fifo_is_refused_without_opening_it(tmp_path: pathlib.Path) -> None:
  fifo = tmp_path / "weights.pth"
  os.mkfifo(fifo)
  # Opening a FIFO to read blocks until a writer comes: the reader must not.
  result: list[str] = []
  thread = threading.Thread(target=lambda: result.append(_error(fifo)), daemon=True)
  thread.start()
  thread.join(10)
  if thread.is_alive():
    with open(fifo, "wb"):  # releases the blocked reader
      pass
    pytest.fail("read_state_dict blocked on a FIFO")
  assert result[0].endswith("is a FIFO (named pipe), not a regular file")


MEMORY_PROBE = r"""
import json, sys
import numpy as np
from tp2p_jax.interop.pth_reader import CheckpointFormatError, read_state_dict

def peak_mib():
  for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) / 1024

report = {"baseline": peak_mib()}
for path in sys.argv[1:]:
  try:
    read_state_dict(path)
    report[path] = "read"
  except CheckpointFormatError as e:
    report[path] = str(e)
  report[path + ":peak"] = peak_mib()
# The control: memory that is touched shows in the figure.
np.ones(256 << 20, np.uint8)
report["control"] = peak_mib()
print(json.dumps(report))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
def test_hostile_files_are_refused_within_a_memory_bound(tmp_path: pathlib.Path) -> None:
  """Peak RSS of a fresh process reading each hostile file: each is refused
  before its claim is allocated (28 MiB, the interpreter's own peak, on
  the machine of docs/robustness.md). Before these checks the stride-0
  files were read whole (3.0 GiB of arrays from 4 stored bytes), the
  deflated record peaked at 4.0 GiB, the memo index at 2.0 GiB, and the
  legacy element count ended in a MemoryError traceback."""
  files = {"stride0 zip": _stride0_bomb(tmp_path / "s.pth"),
           "stride0 legacy": _stride0_bomb(tmp_path / "l.pth", legacy=True),
           "deflated": _deflate_bomb(tmp_path / "d.pth"),
           "memo": _memo_bomb(tmp_path / "m.pth", 2**27),
           "legacy count": tmp_path / "c.pth"}
  files["legacy count"].write_bytes(_legacy_parts(**LEGACY_ESCAPES["MemoryError"][0]))
  assert max(p.stat().st_size for p in files.values()) < 3 << 20
  env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
  done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, *map(str, files.values())],
                        capture_output=True, text=True, env=env, timeout=120)
  assert done.returncode == 0, done.stderr
  report = json.loads(done.stdout.strip().splitlines()[-1])
  for label, path in files.items():
    assert report[str(path)].startswith(f"{path}: "), (label, report[str(path)])
    # Within 64 MiB of the interpreter's own peak (numpy imported).
    assert report[f"{path}:peak"] - report["baseline"] < 64, (label, report)
  assert report["control"] - report["baseline"] > 200, report
