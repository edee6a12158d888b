"""Runs one PyTorch original on recipe weights and stores what it computes.

A `Case` names the original network (a constructor that imports it from a
path given on the command line), the kind and options of our importer, the
inputs, and how to call the original. `record(case, out_dir)` writes
`<case.name>.npz` holding:

  meta            JSON: kind, import options, train-mode field overrides,
                  apply keyword arguments, input names, torch version
  layout          JSON: the original's state_dict names and shapes (the
                  weights themselves are rebuilt from the recipe in
                  tp2p_jax.interop.synthetic)
  input/<name>    the inputs, NHWC (or (B, D) for vectors), float32
  eval/<i>        eval-mode outputs (flattened list, NHWC)
  train/<i>       train-mode outputs with every dropout rate 0
  grad64/<name>   d/d input of sum_i <train/i, output_weights(i)>, float64
                  (cases with `gradients`)
  stats/<tensor>  BatchNorm running statistics after that train-mode pass

Only torch, numpy and tp2p_jax.interop.synthetic are needed; the original is
never copied into this project.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Callable

import numpy as np
import torch

from tp2p_jax.interop.synthetic import output_weights, synthetic_state_dict


@dataclasses.dataclass
class Case:
  """One golden fixture.

  Attributes:
    name: fixture file stem.
    kind: tp2p_jax.interop.torch_weights kind.
    build: () -> the original torch.nn.Module.
    inputs: {name: NHWC (or 2-D) float32 array}, in the order our module takes them.
    call: (net, {name: NCHW torch tensor}) -> tensor or (nested) list of tensors.
    options: import options (JSON).
    train_overrides: fields our module is cloned with for the train-mode
      checks (its dropout rates set to 0, as the original's).
    apply_kwargs: extra keyword arguments of our module's call (JSON).
    gradients: also record the input gradients (off for a case that checks
      outputs only, which keeps its fixture small).
  """
  name: str
  kind: str
  build: Callable[[], torch.nn.Module]
  inputs: dict[str, np.ndarray]
  call: Callable[[torch.nn.Module, dict[str, torch.Tensor]], Any]
  options: dict[str, Any] = dataclasses.field(default_factory=dict)
  train_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  apply_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  checkpoint: bool = False  # also torch.save the weights, as the release does
  gradients: bool = True


def uniform_inputs(seed: int, **shapes: tuple[int, ...]) -> dict[str, np.ndarray]:
  """Inputs uniform in [-1, 1] (images) with a fixed seed, in argument order."""
  rng = np.random.default_rng(seed)
  return {k: rng.uniform(-1.0, 1.0, s).astype(np.float32) for k, s in shapes.items()}


def _to_torch(x: np.ndarray) -> torch.Tensor:
  t = torch.from_numpy(np.ascontiguousarray(x))
  return t.permute(0, 3, 1, 2).contiguous() if t.ndim == 4 else t


def _to_numpy(t: torch.Tensor) -> np.ndarray:
  """NHWC numpy; float64 stays float64 (the stored gradients), the rest float32."""
  a = t.detach().cpu().numpy()
  a = a.astype(np.float64 if a.dtype == np.float64 else np.float32)
  return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1))) if a.ndim == 4 else a


def _flatten(out: Any) -> list[torch.Tensor]:
  if isinstance(out, (list, tuple)):
    return [t for o in out for t in _flatten(o)]
  return [out]


def _zero_dropout(net: torch.nn.Module) -> None:
  for m in net.modules():
    if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout2d, torch.nn.Dropout1d)):
      m.p = 0.0
    if isinstance(m, torch.nn.MultiheadAttention):
      m.dropout = 0.0


def load_recipe_weights(net: torch.nn.Module) -> dict[str, tuple[int, ...]]:
  """Fills `net` with the recipe's weights; returns its layout."""
  layout = {k: tuple(v.shape) for k, v in net.state_dict().items()}
  weights = synthetic_state_dict(layout)
  net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
  return layout


# The original in float32 must agree with itself in float64 to a quarter of
# the tests' 1e-4 (relative to each array's largest magnitude), or comparing
# another float32 implementation with it would test float noise, not the
# function.
SELF_CONSISTENCY = 2.5e-5


def _run(case: Case, dtype: torch.dtype) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, ...]]]:
  torch.manual_seed(0)
  net = case.build().float()
  layout = load_recipe_weights(net)
  net = net.to(dtype)
  arrays: dict[str, np.ndarray] = {}

  net.eval()
  with torch.no_grad():
    outs = _flatten(case.call(net, {k: _to_torch(v).to(dtype) for k, v in case.inputs.items()}))
  for i, o in enumerate(outs):
    arrays[f"eval/{i}"] = _to_numpy(o)

  _zero_dropout(net)
  net.train()
  tin = {k: _to_torch(v).to(dtype).requires_grad_(case.gradients)
         for k, v in case.inputs.items()}
  outs = _flatten(case.call(net, tin))
  if case.gradients:
    scalar = sum((o * _to_torch(output_weights(i, _to_numpy(o).shape)).to(o.dtype)).sum()
                 for i, o in enumerate(outs))
    scalar.backward()
  for i, o in enumerate(outs):
    arrays[f"train/{i}"] = _to_numpy(o)
  for k, t in tin.items():
    if case.gradients:
      arrays[f"grad/{k}"] = _to_numpy(t.grad)
  for k, v in net.state_dict().items():
    if k.endswith(("running_mean", "running_var")):
      arrays[f"stats/{k}"] = v.detach().cpu().numpy().astype(np.float32)
  return arrays, layout


def self_consistency(single: dict[str, np.ndarray], double: dict[str, np.ndarray]
                     ) -> dict[str, float]:
  """Relative float32-vs-float64 gap of the original, per array."""
  gaps = {}
  for k, a in single.items():
    b = double[k].astype(np.float64)
    gaps[k] = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12)) if b.size else 0.0
  return gaps


def record(case: Case, out_dir: pathlib.Path) -> pathlib.Path:
  arrays, layout = _run(case, torch.float32)
  double, _ = _run(case, torch.float64)
  gaps = self_consistency(arrays, double)
  # Input gradients are stored from the float64 run and compared in float64:
  # through ReLUs over millions of activations, float32 rounding moves a few
  # pre-activations across zero, which the original's own float32 gradient
  # shows (0.7% off its float64 value for the TransPix2Pix generator).
  for k in [k for k in arrays if k.startswith("grad/")]:
    arrays[k.replace("grad/", "grad64/")] = double[k].astype(np.float64)
    del arrays[k]
  grad_gaps = {k: v for k, v in gaps.items() if k.startswith("grad/")}
  gaps = {k: v for k, v in gaps.items() if not k.startswith("grad/")}
  worst = max(gaps, key=gaps.get)
  if gaps[worst] > SELF_CONSISTENCY:
    raise RuntimeError(f"{case.name}: the original's float32 {worst} is {gaps[worst]:.2g} off its "
                       "float64 value; choose better-conditioned inputs or weights ("
                       + ", ".join(f"{k} {v:.2g}" for k, v in sorted(gaps.items(),
                                                                     key=lambda kv: -kv[1])[:6])
                       + ")")
  arrays.update({f"input/{k}": v for k, v in case.inputs.items()})

  meta = {"kind": case.kind, "options": case.options, "train_overrides": case.train_overrides,
          "apply_kwargs": case.apply_kwargs, "inputs": list(case.inputs),
          "torch_version": torch.__version__, "float64_gap": gaps[worst],
          "float32_grad_gap": max(grad_gaps.values(), default=0.0)}
  out_dir.mkdir(parents=True, exist_ok=True)
  if case.checkpoint:
    net = case.build().float()
    load_recipe_weights(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    torch.save({"state_dict": net.state_dict(), "optimizer": optimizer.state_dict()},
               out_dir / f"{case.name}.pth")
  path = out_dir / f"{case.name}.npz"
  np.savez_compressed(path, meta=np.array(json.dumps(meta)),
                      layout=np.array(json.dumps({k: list(s) for k, s in layout.items()})),
                      **arrays)
  return path
