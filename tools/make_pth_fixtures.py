"""Writes the small torch.save fixtures of tests/test_pth_reader.py.

Needs torch (CPU) and numpy; the project itself never imports torch, and the
tests read these files without it:

  python tools/make_pth_fixtures.py [--out tests/golden/pth]

Files written:
  state_dict_zip.pth     a state_dict (module tensors with `_metadata`, a
                         Parameter, a Parameter with Python state, views
                         sharing one storage with offsets and non-contiguous
                         or zero strides, 0-d, empty, float16, bfloat16,
                         float64, int64/32/8, uint8, uint16, bool, complex64)
                         in the zip format.
  state_dict_legacy.pth  the same, `_use_new_zipfile_serialization=False`.
  release_like.pth       {"state_dict": model.state_dict(), "optimizer":
                         Adam.state_dict()} after one step, as the
                         TransPix2Pix release saves.
  whole_module.pth       torch.save(model): must be refused.
  non_tensor.pth         a state_dict with a float entry: must be refused.
  expected.npz           what the reader must return: "sd/<name>",
                         "release/<name>" arrays (bfloat16 as float32) and
                         "order/sd", "order/release" (the key order).
"""
from __future__ import annotations

import argparse
import io
import pathlib
import pickletools
import sys
import zipfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _model() -> torch.nn.Module:
  torch.manual_seed(0)
  return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                             torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))


def _state_dict() -> dict[str, torch.Tensor]:
  model = _model()
  model[1].num_batches_tracked.fill_(7)
  model[1].running_mean.uniform_()
  sd = model.state_dict()  # an OrderedDict carrying `_metadata`
  sd["param"] = torch.nn.Parameter(torch.randn(3, 2))
  tagged = torch.nn.Parameter(torch.randn(2))
  tagged.tag = "pickled through _rebuild_parameter_with_state"
  sd["param_with_state"] = tagged
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  sd["shared.base"] = base
  sd["shared.cols"] = base[:, 1:5:2]  # offset 1, stride (6, 2)
  sd["shared.t"] = base.t()  # stride (1, 6)
  sd["shared.row"] = base[2]  # offset 12
  sd["shared.scalar"] = base[3, 5]  # 0-d, offset 23
  sd["expanded"] = torch.tensor([1.0, 2.0, 3.0]).expand(2, 3)  # stride (0, 1)
  sd["half"] = torch.randn(5).half()
  sd["bf16"] = torch.tensor([1.5, -2.25, 3.0e38, -0.0, float("inf"), 1e-3]).bfloat16()
  sd["f64"] = torch.randn(2, 2, dtype=torch.float64)
  sd["i32"] = torch.tensor([-3, 2**31 - 1], dtype=torch.int32)
  sd["i8"] = torch.tensor([-128, 127, 0], dtype=torch.int8)
  sd["u8"] = torch.tensor([0, 255, 7], dtype=torch.uint8)
  sd["u16"] = torch.tensor([1, 65535], dtype=torch.uint16)  # _rebuild_tensor_v3
  sd["c64"] = torch.tensor([1 + 2j, -3j], dtype=torch.complex64)
  sd["mask"] = torch.tensor([[True, False, True]])
  sd["empty"] = torch.zeros(0, 3)
  return sd


def _expected(sd: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
  out = {}
  for name, t in sd.items():
    t = t.detach()
    out[name] = (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()
  return out


def _pickle_of(path: pathlib.Path) -> bytes:
  with zipfile.ZipFile(path) as z:
    return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


def _globals_in(data: bytes) -> set[str]:
  found = set()
  for op, arg, _ in pickletools.genops(io.BytesIO(data)):
    if op.name == "GLOBAL":
      found.add(arg.replace(" ", "."))
  return found


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", type=pathlib.Path,
                      default=pathlib.Path(__file__).resolve().parents[1] / "tests" / "golden"
                      / "pth")
  out = parser.parse_args().out
  out.mkdir(parents=True, exist_ok=True)

  sd = _state_dict()
  torch.save(sd, out / "state_dict_zip.pth")
  torch.save(sd, out / "state_dict_legacy.pth", _use_new_zipfile_serialization=False)

  model = _model()
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  model(torch.randn(2, 3, 6, 6)).square().mean().backward()
  opt.step()
  torch.save({"state_dict": model.state_dict(), "optimizer": opt.state_dict()},
             out / "release_like.pth")
  torch.save(model, out / "whole_module.pth")
  torch.save({"w": torch.ones(2), "lr": 0.1}, out / "non_tensor.pth")

  # The fixtures must exercise the paths the tests claim they do.
  names = _globals_in(_pickle_of(out / "state_dict_zip.pth"))
  for needed in ("torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
                 "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
                 "torch.BFloat16Storage", "torch.storage.UntypedStorage", "torch.uint16"):
    assert needed in names, (needed, sorted(names))
  assert not zipfile.is_zipfile(out / "state_dict_legacy.pth")

  expected = {f"sd/{k}": v for k, v in _expected(sd).items()}
  release_sd = model.state_dict()
  expected.update({f"release/{k}": v for k, v in _expected(release_sd).items()})
  expected["order/sd"] = np.array(list(sd))
  expected["order/release"] = np.array(list(release_sd))
  np.savez(out / "expected.npz", **expected)
  total = sum(p.stat().st_size for p in out.iterdir())
  print(f"wrote {len(list(out.iterdir()))} files, {total} bytes, to {out}")


if __name__ == "__main__":
  main()
