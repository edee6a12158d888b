"""Tests of benchmarks/benchmark.py, run as the command-line script it is."""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
from typing import Any

import pytest

from tests.subprocess_runs import run_script

pytestmark = pytest.mark.slow  # each test runs the benchmark in a subprocess

_SCRIPT = os.path.join("benchmarks", "benchmark.py")
_TINY = os.path.join("experiments", "toycats.py") + ":tiny"
# pix2pix's U-Net and PatchGAN compile in a fraction of TransPix2Pix's time;
# --scaling runs whichever paired GAN the config names.
_PIX2PIX_TINY = os.path.join("experiments", "pix2pix.py") + ":tiny"

_REQUIRED_KEYS = (
    "train_step_s", "train_step_s_all", "compile_s", "init_s", "infer_images_per_s",
    "peak_rss_mb", "flops_per_step", "bytes_per_step", "infer_flops_per_image",
    "device_kind", "platform", "num_devices", "batch_size", "image_size", "dtype", "config",
    "jax_version", "cpu_count", "loader_images_per_s")


def _run(args: list[str], num_cpu_devices: int = 1, timeout: float = 300
         ) -> subprocess.CompletedProcess:
  return run_script(_SCRIPT, args, num_cpu_devices, timeout)


def _last_json(proc: subprocess.CompletedProcess) -> dict[str, Any]:
  assert proc.returncode == 0, proc.stderr[-4000:]
  lines = proc.stdout.strip().splitlines()
  assert lines, proc.stderr[-4000:]
  return json.loads(lines[-1])


def _positive_finite(value: Any) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_tiny_benchmark_reports_timings_and_costs(tmp_path):
  # One run covers every measuring mode; each would otherwise compile anew.
  result = _last_json(_run([f"--config={_TINY}", "--steps=2", "--warmup=1",
                            "--infer_batches=1", "--data", "--breakdown",
                            f"--profile_dir={tmp_path}"]))
  missing = [k for k in _REQUIRED_KEYS if k not in result]
  assert not missing, missing
  assert len(result["train_step_s_all"]) == 2
  for name in ("train_step_s", "compile_s", "init_s", "style_init_s", "init_compile_s",
               "init_run_s", "infer_images_per_s", "peak_rss_mb", "loader_images_per_s"):
    assert _positive_finite(result[name]), (name, result[name])
  assert result["init_compile_s"] + result["init_run_s"] <= result["init_s"]
  assert all(_positive_finite(t) for t in result["train_step_s_all"]), result["train_step_s_all"]
  assert result["train_step_s"] == pytest.approx(statistics.median(result["train_step_s_all"]))
  assert _positive_finite(result["flops_per_step"])
  assert _positive_finite(result["bytes_per_step"])
  assert _positive_finite(result["infer_flops_per_image"])
  assert result["flops_per_step"] > result["infer_flops_per_image"] * result["batch_size"]
  assert result["image_size"] == 32
  assert result["batch_size"] == 4
  assert result["num_devices"] == 1
  assert result["platform"] == "cpu"
  assert result["dtype"] == "float32"
  assert result["config"].endswith("toycats.py:tiny")
  assert result["metrics_finite"] is True
  assert result["xla_optimizations_disabled"] is True
  assert result["remat"] == "none"

  # XLA's memory analysis of both compiled programs, per device.
  for program in ("train_step", "inference"):
    memory = result["compiled_memory"][program]
    assert set(memory) == {"argument_bytes", "output_bytes", "temp_bytes", "alias_bytes",
                           "peak_bytes"}, program
    assert all(isinstance(v, int) and v >= 0 for v in memory.values()), (program, memory)
    assert memory["argument_bytes"] > 0 and memory["output_bytes"] > 0, (program, memory)
    assert memory["peak_bytes"] == (memory["argument_bytes"] + memory["output_bytes"]
                                    + memory["temp_bytes"] - memory["alias_bytes"])
    assert memory["peak_bytes"] >= memory["temp_bytes"] > 0, (program, memory)
  step_memory = result["compiled_memory"]["train_step"]
  # The state is donated: its buffers are reused for the new state, and the
  # inputs hold at least the state (G, D, both EMAs, Adam's two moments).
  assert 0 < step_memory["alias_bytes"] <= min(step_memory["argument_bytes"],
                                               step_memory["output_bytes"])
  params = result["params"]["generator"] + result["params"]["discriminator"]
  assert step_memory["argument_bytes"] >= 4 * 4 * params
  assert result["compiled_memory"]["inference"]["alias_bytes"] == 0

  # --profile_dir: the slowest ops with shapes and layers, slowest first.
  ops = result["profile_top_ops"]
  assert ops and all(_positive_finite(op["s_per_step"]) for op in ops)
  assert [op["s_per_step"] for op in ops] == sorted((op["s_per_step"] for op in ops),
                                                    reverse=True)
  assert any("conv" in op["layer"] for op in ops), ops[:5]
  assert all(op["shape"] for op in ops)

  # --breakdown: the step's parts, each with its FLOPs, bytes and time.
  parts = result["breakdown"]
  assert set(parts) == {"style_embedding", "g_forward", "g_forward_backward",
                        "d_forward_backward_params", "d_forward_backward_input",
                        "vgg_loss_forward_backward", "g_optimizer_and_ema"}
  for name, part in parts.items():
    assert all(_positive_finite(part[k]) for k in ("s", "gflop", "gbytes", "gflop_per_s")), name
  # The backward pass costs about twice the forward: together at least 2x.
  assert parts["g_forward_backward"]["gflop"] > 2 * parts["g_forward"]["gflop"]
  assert sum(p["gflop"] for p in parts.values()) > 0.5 * result["flops_per_step"] / 1e9
  assert "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution" in (
      result["xla_flags"].split())


def test_scaling_runs_the_same_steps_on_every_mesh_size():
  # Two meshes at the tiny config's batch of 4 keep this quick; tests/test_train.py
  # compares 1 and 8 devices on TransPix2Pix.
  # One step: from there on the trajectories may part for a reason that is
  # not sharding (Adam's first update is lr * sign(g), so gradient entries
  # at rounding level move parameters by +-lr; 3.8e-3 relative in the losses
  # of step 2 was seen). tests/test_train.py compares later steps from a
  # common state instead.
  result = _last_json(_run([f"--config={_PIX2PIX_TINY}", "--scaling", "--steps=1"],
                           num_cpu_devices=2, timeout=900))
  runs = result["scaling"]
  assert [r["devices"] for r in runs] == [1, 2]
  assert runs[0]["first_step_max_rel_diff"] == runs[0]["loss_max_rel_diff"] == 0.0
  for run in runs:
    assert len(run["step_s_all"]) == 1 and _positive_finite(run["step_s"])
    # Same state, same batch: sharding only reorders float sums, which moves
    # losses and D's gradient by rounding. G's gradient norm also moves by
    # whole subgradient jumps: |fake - real| (L1) and ReLU inputs within
    # rounding of 0 flip sides (3.2e-3 for the tiny TransPix2Pix on an AVX2
    # machine, 1 vs 2 devices; tests/test_train.py bounds it at 5e-3 for 8).
    for metric, diff in run["first_step_rel_diff"].items():
      assert diff < (1e-2 if metric == "g_grad_norm" else 1e-3), (metric, run)
    assert run["loss_max_rel_diff"] < 1e-3, run
  assert any("simulated" in note for note in result["notes"])


def test_memory_only_compiles_without_running():
  # pix2pix's tiny model compiles quickly; nothing is initialised or run.
  result = _last_json(_run([f"--config={_PIX2PIX_TINY}", "--memory_only", "--batch_size=2"]))
  assert result["memory_only"] is True
  assert "train_step_s" not in result and "init_s" not in result
  assert _positive_finite(result["compile_s"]) and _positive_finite(result["infer_compile_s"])
  for program in ("train_step", "inference"):
    memory = result["compiled_memory"][program]
    assert memory["peak_bytes"] >= memory["temp_bytes"] > 0, (program, memory)
  assert any("allocator" in note for note in result["notes"])
  both = _run([f"--config={_PIX2PIX_TINY}", "--memory_only", "--dry_run"])
  assert both.returncode != 0 and "drop --scaling/--dry_run" in both.stderr


def test_dry_run_on_a_multi_device_mesh_with_overrides():
  # Shapes only: nothing is compiled, so this checks the flag plumbing and the
  # mesh set-up quickly.
  result = _last_json(_run([f"--config={_TINY}", "--devices=2", "--batch_size=8",
                            "--dtype=bfloat16", "--config.lambda_perceptual=0", "--dry_run"],
                           num_cpu_devices=4))
  assert result["dry_run"] is True
  assert result["num_devices"] == 2
  assert result["batch_size"] == 8
  assert result["dtype"] == "bfloat16"
  assert result["infer_output_shape"] == [8, 32, 32, 3]
  assert result["params"]["generator"] > 0 and result["params"]["discriminator"] > 0
  assert result["config_overrides"] == {"lambda_perceptual": 0.0}
  assert "vgg_load_s" not in result
  machine = result["machine"]  # what every figure is measured on
  assert machine["cpu"] and machine["cores"] >= 1
  assert machine["avx2"] == ("avx2" in machine["vector_extensions"])
  assert any("simulated" in note for note in result["notes"])


def test_batch_not_divisible_by_devices_fails_clearly():
  proc = _run([f"--config={_TINY}", "--devices=3", "--dry_run"], num_cpu_devices=4)
  assert proc.returncode != 0
  assert "not divisible" in proc.stderr


# --- --reference: the release timed beside ours -----------------------------------------

def _benchmark_module():
  import importlib
  return importlib.import_module("benchmarks.benchmark")


def test_reference_refuses_what_it_cannot_compare(tmp_path):
  from absl import app
  from experiments import toycats, transpix2pix
  benchmark = _benchmark_module()
  with pytest.raises(app.UsageError, match="no model_generator.py there"):
    benchmark.check_reference_comparable(transpix2pix.get_config(), str(tmp_path))
  (tmp_path / "model_generator.py").write_text("")
  with pytest.raises(app.UsageError, match="TransPix2Pix at 256x256"):
    benchmark.check_reference_comparable(toycats.get_config("tiny"), str(tmp_path))
  benchmark.check_reference_comparable(transpix2pix.get_config(), str(tmp_path))
  # The flags are checked by the script before anything is built.
  scaling = _run([f"--config={_TINY}", f"--reference={tmp_path}", "--scaling"])
  assert scaling.returncode != 0 and "drop --scaling" in scaling.stderr


def test_release_timing_runs_in_its_own_interpreter_and_gives_ratios(tmp_path):
  benchmark = _benchmark_module()
  # An interpreter stand-in that records its arguments and answers like
  # benchmarks/release_step.py.
  args_file = tmp_path / "args"
  python = tmp_path / "python"
  python.write_text("#!/bin/sh\n"
                    f"echo \"$@\" > {args_file}\n"
                    "echo 'torch says hello'\n"
                    "echo '{\"train_step_s\": 8.0, \"infer_images_per_s\": 2.0}'\n")
  python.chmod(0o755)
  release = benchmark.time_release(str(tmp_path), str(python), batch_size=4, steps=3,
                                   warmup=1, infer_batches=2)
  assert release == {"train_step_s": 8.0, "infer_images_per_s": 2.0}
  passed = args_file.read_text().split()
  assert passed[0].endswith("release_step.py")
  assert f"--release_dir={tmp_path}" in passed and "--batch_size=4" in passed
  assert "--steps=3" in passed and "--warmup=1" in passed and "--infer_batches=2" in passed
  compared = benchmark.compare_with_release({"train_step_s": 4.0, "infer_images_per_s": 6.0},
                                            release)
  assert compared["train_step_ratio"] == 0.5 and compared["train_speedup"] == 2.0
  assert compared["infer_ratio"] == 3.0 and compared["release"] == release
  failing = tmp_path / "failing"
  failing.write_text("#!/bin/sh\necho 'ModuleNotFoundError: torch' >&2\nexit 1\n")
  failing.chmod(0o755)
  with pytest.raises(RuntimeError, match="the release's timing failed.*ModuleNotFoundError"):
    benchmark.time_release(str(tmp_path), str(failing), batch_size=4, steps=1, warmup=0,
                           infer_batches=1)

