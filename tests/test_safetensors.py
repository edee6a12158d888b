"""`.safetensors` weights through `read_state_dict` (and so `import-torch`):
files written by `safetensors.numpy.save_file`, one converted from a
torch-written `.pth` fixture, and malformed or hostile files, each refused
in one line."""
from __future__ import annotations

import json
import pathlib
import struct

import jax
import ml_dtypes
import numpy as np
import pytest

safetensors_numpy = pytest.importorskip("safetensors.numpy")

from tp2p_jax.interop.pth_reader import CheckpointFormatError, read_state_dict  # noqa: E402

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
RESNET_G = GOLDEN / "import" / "resnet_6blocks_ngf2.pth"  # junyanz netG, ngf 2


def _error(path: pathlib.Path) -> str:
  with pytest.raises(CheckpointFormatError) as info:
    read_state_dict(path)
  message = str(info.value)
  assert "\n" not in message and str(path) in message, message
  return message


def _raw(path: pathlib.Path, header: dict | bytes, data: bytes = b"",
         length: int | None = None) -> pathlib.Path:
  """A file laid out as safetensors: length, header, data."""
  text = header if isinstance(header, bytes) else json.dumps(header).encode()
  path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
  return path


def test_reads_numpy_written_files(tmp_path: pathlib.Path) -> None:
  rng = np.random.default_rng(0)
  tensors = {"conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
             "conv.bias": rng.normal(size=(4,)).astype(np.float16),
             "bn.num_batches_tracked": np.asarray(7, np.int64),
             "mask": np.asarray([True, False]), "table": np.arange(6.0).reshape(2, 3),
             "empty": np.zeros((0, 5), np.float32)}
  path = tmp_path / "weights.safetensors"
  safetensors_numpy.save_file(tensors, str(path), metadata={"format": "pt"})
  # By content too: the name does not have to say .safetensors.
  other = tmp_path / "weights.bin"
  other.write_bytes(path.read_bytes())
  for source in (path, str(other)):
    sd = read_state_dict(source)
    assert sorted(sd) == sorted(tensors)
    for key, want in tensors.items():
      assert sd[key].dtype == want.dtype and sd[key].shape == want.shape, key
      np.testing.assert_array_equal(sd[key], want, err_msg=key)
      assert sd[key].flags.owndata and sd[key].flags.writeable, key


def test_bfloat16_becomes_float32(tmp_path: pathlib.Path) -> None:
  values = np.asarray([[1.0, -2.5], [0.15625, 3e38]], np.float32)
  path = tmp_path / "bf16.safetensors"
  safetensors_numpy.save_file({"w": values.astype(ml_dtypes.bfloat16)}, str(path))
  sd = read_state_dict(path)
  assert sd["w"].dtype == np.float32 and sd["w"].flags.owndata
  np.testing.assert_array_equal(sd["w"], values.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_converted_pth_reads_back_equal(tmp_path: pathlib.Path) -> None:
  """A torch-written checkpoint, converted: the same state_dict either way."""
  from_pth = read_state_dict(RESNET_G)
  path = tmp_path / "netG.safetensors"
  safetensors_numpy.save_file(from_pth, str(path))
  from_safetensors = read_state_dict(path)
  assert sorted(from_safetensors) == sorted(from_pth)
  for key, want in from_pth.items():
    assert from_safetensors[key].dtype == want.dtype, key
    np.testing.assert_array_equal(from_safetensors[key], want, err_msg=key)


@pytest.mark.slow
def test_import_torch_reads_safetensors(tmp_path: pathlib.Path, capsys) -> None:
  """`import-torch` makes the same run from a .safetensors generator as
  from the .pth it was converted from."""
  from tp2p_jax.cli import import_torch as import_cli
  from tp2p_jax.inference.run_loading import load_trained_run
  path = tmp_path / "netG.safetensors"
  safetensors_numpy.save_file(read_state_dict(RESNET_G), str(path))
  params = []
  for name, source in (("pth", RESNET_G), ("st", path)):
    status = import_cli.main(["import_torch", "--family=pix2pix", f"--generator={source}",
                              f"--workdir={tmp_path / name}"])
    assert status == 0, capsys.readouterr().err
    params.append(load_trained_run(str(tmp_path / name)).predictor.variables["AtoB"])
  jax.tree.map(np.testing.assert_array_equal, *params)


def test_import_torch_refuses_a_malformed_file_in_one_line(tmp_path: pathlib.Path,
                                                           capsys) -> None:
  from tp2p_jax.cli import import_torch as import_cli
  bad = _raw(tmp_path / "bad.safetensors", {"w": {"dtype": "F32", "shape": [4],
                                                  "data_offsets": [0, 16]}}, b"\0" * 8)
  status = import_cli.main(["import_torch", "--family=pix2pix", f"--generator={bad}",
                            f"--workdir={tmp_path / 'run'}"])
  err = capsys.readouterr().err
  assert status == 2 and err.count("\n") == 1 and "bad.safetensors" in err, err
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, make, fragment", [
    ("empty", lambda p: p.write_bytes(b""), "safetensors"),
    ("short", lambda p: p.write_bytes(b"\x10\0\0"), "safetensors"),
    # A header length far beyond the file: nothing of that size is read.
    ("huge_header", lambda p: _raw(p, b"{}", length=1 << 62), "safetensors"),
    ("not_json", lambda p: _raw(p, b"{not json}   "), "safetensors"),
    ("short_data", lambda p: _raw(p, {"w": {"dtype": "F32", "shape": [4],
                                            "data_offsets": [0, 16]}}, b"\0" * 8),
     "safetensors"),
    # A shape claiming 2**80 elements over 4 bytes: refused, not allocated.
    ("huge_shape", lambda p: _raw(p, {"w": {"dtype": "F32", "shape": [1 << 40, 1 << 40],
                                            "data_offsets": [0, 4]}}, b"\0" * 4),
     "safetensors"),
    ("overlap", lambda p: _raw(p, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                   "b": {"dtype": "F32", "shape": [2],
                                         "data_offsets": [4, 12]}}, b"\0" * 12),
     "safetensors"),
    ("duplicate", lambda p: _raw(p, b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": '
                                    b'[0, 4]}, "a": {"dtype": "F32", "shape": [1], '
                                    b'"data_offsets": [0, 4]}}', b"\0" * 4), "safetensors"),
    ("float8", lambda p: _raw(p, {"w": {"dtype": "F8_E4M3", "shape": [2],
                                        "data_offsets": [0, 2]}}, b"\0\0"), "F8_E4M3"),
    ("deep_json", lambda p: _raw(p, b"{" + b'"a":{' * 5000 + b"}" * 5001), "safetensors"),
])
def test_malformed_files_are_one_line_errors(tmp_path: pathlib.Path, name: str, make,
                                             fragment: str) -> None:
  path = tmp_path / f"{name}.safetensors"
  make(path)
  assert fragment in _error(path)
