r"""Times single ops of the reference model in float32 and bfloat16 under jit
on this backend, and reports what XLA made of each (optimized HLO).

  python benchmarks/bf16_ops.py                 # all cases
  python benchmarks/bf16_ops.py --cases=matmul,vgg16_loss --repeats=7

For every case and dtype: the median wall time of the forward op and of its
forward + backward (gradients of both operands), and from the compiled
program the result dtypes of its convolutions and dots (float32 where
bfloat16 was asked for: XLA upcast the op), the converts around them,
whether it went to YNNPACK, and whether a YNNPACK fusion swallowed
convolutions. bfloat16 is tried two ways: bfloat16 in and
out (what a network in bfloat16 asks for), and bfloat16 operands with a
float32 result (`preferred_element_type`, float32 accumulation).

Shapes are the reference TransPix2Pix step's (batch 4, 256x256):
benchmarks/PERFORMANCE.md, "bfloat16 on a CPU with AVX512_BF16", has the
results on a 2-core AMD EPYC with AVX512_BF16. The process sets the CPU
flags of `tp2p_jax.core.xla_flags` unless XLA_FLAGS already names them.
The last line of stdout is one JSON object.
"""
from __future__ import annotations

import os
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
  sys.path.insert(0, _REPO_ROOT)

import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

from absl import app, flags  # noqa: E402

_CASES = flags.DEFINE_list("cases", None, "Cases to run (default: all).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per op (median reported).")
_BACKWARD = flags.DEFINE_bool("backward", True, "Also time forward + backward.")

_DN = ("NHWC", "HWIO", "NHWC")


def _cases() -> dict[str, tuple[Callable[..., Any], list[tuple[int, ...]], float]]:
  """name -> (fn(x, w, out_dtype), operand shapes, forward FLOPs)."""
  import jax  # noqa: PLC0415
  from tp2p_jax.models.convolution import conv2d, conv_transpose_x2  # noqa: PLC0415

  def matmul(a, b, out):
    return jax.lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=out)

  def conv(stride: int, padding: str = "VALID") -> Callable[..., Any]:
    def f(x, w, out):
      if out is None and padding == "VALID":
        return conv2d(x, w, stride)  # the project's form (space-to-depth at stride 2)
      return jax.lax.conv_general_dilated(x, w, (stride, stride), padding,
                                          dimension_numbers=_DN, preferred_element_type=out)
    return f

  def convt(x, w, out):
    del out  # conv_transpose_x2 returns its operands' dtype
    return conv_transpose_x2(x, w, ((2, 2), (2, 2)))

  def conv_flops(x, w, stride):
    out_hw = (x[1] - w[0]) // stride + 1
    return 2.0 * x[0] * out_hw * out_hw * w[0] * w[1] * w[2] * w[3]

  n = 2048
  return {
      "matmul": (matmul, [(n, n), (n, n)], 2.0 * n ** 3),
      "transformer_ff": (matmul, [(1024, 512), (512, 1024)], 2.0 * 1024 * 512 * 1024),
      "conv4x4_s1_128_at_64": (conv(1), [(4, 67, 67, 128), (4, 4, 128, 128)],
                               conv_flops((4, 67, 67, 128), (4, 4, 128, 128), 1)),
      "conv4x4_s1_64_at_128": (conv(1), [(4, 131, 131, 64), (4, 4, 64, 64)],
                               conv_flops((4, 131, 131, 64), (4, 4, 64, 64), 1)),
      "conv4x4_s2_64_to_128": (conv(2), [(4, 130, 130, 64), (4, 4, 64, 128)],
                               conv_flops((4, 130, 130, 64), (4, 4, 64, 128), 2)),
      "vgg_conv3x3_64_at_256": (conv(1), [(4, 258, 258, 64), (3, 3, 64, 64)],
                                conv_flops((4, 258, 258, 64), (3, 3, 64, 64), 1)),
      "convT4x4_544_to_128_at_32": (convt, [(4, 32, 32, 544), (4, 4, 544, 128)],
                                    2.0 * 4 * 64 * 64 * 4 * 544 * 128),
  }


def _program_facts(text: str) -> dict[str, Any]:
  """What the optimized HLO of one op says about how it runs."""
  entry = text.split("\nENTRY ", 1)[-1]
  heavy = re.findall(r"= (\w+)\[[^\]]*\][^ ]* (convolution|dot)\(", text)
  fusions = re.split(r"\n(?=%|ENTRY)", text)
  ynn_bodies = [b for b in fusions if b.startswith("%") and "__ynn" not in b]
  ynn_called = set(re.findall(r"calls=%([\w.\-]+)[^\n]*__ynn_fusion", text))
  ynn_convs = sum(1 for b in ynn_bodies
                  if b.split(" ", 1)[0][1:] in ynn_called and " convolution(" in b)
  return {"conv_dot_result_dtypes": sorted({d for d, _ in heavy}),
          "converts_in_entry": entry.count(" convert(") + entry.count("wrapped_convert"),
          "ynnpack": "__ynn_fusion" in text, "ynn_fusions_with_convolutions": ynn_convs}


def _time(compiled: Callable[..., Any], args: tuple, repeats: int) -> float:
  import jax  # noqa: PLC0415
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def run_case(name: str, repeats: int, backward: bool) -> dict[str, Any]:
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  fn, shapes, flops = _cases()[name]
  rng = np.random.default_rng(0)
  host = [rng.standard_normal(s).astype(np.float32) * (0.05 if i else 1.0)
          for i, s in enumerate(shapes)]
  variants = {"float32": (jnp.float32, None), "bfloat16": (jnp.bfloat16, None),
              "bfloat16_in_float32_out": (jnp.bfloat16, jnp.float32)}
  out: dict[str, Any] = {"shapes": [list(s) for s in shapes], "gflop": flops / 1e9}
  for label, (dtype, result_dtype) in variants.items():
    args = tuple(jnp.asarray(h, dtype) for h in host)
    forward = lambda x, w, r=result_dtype: fn(x, w, r)  # noqa: E731
    compiled = jax.jit(forward).lower(*args).compile()
    entry = {"forward_s": _time(compiled, args, repeats), **_program_facts(compiled.as_text())}
    entry["forward_gflop_per_s"] = flops / 1e9 / entry["forward_s"]
    if backward:
      grad = jax.grad(lambda x, w, f=forward: jnp.sum(f(x, w).astype(jnp.float32)),
                      argnums=(0, 1))
      compiled = jax.jit(grad).lower(*args).compile()
      entry["forward_backward_s"] = _time(compiled, args, repeats)
    out[label] = entry
  for key in ("forward_s", "forward_backward_s"):
    if key in out["float32"]:
      out[f"bfloat16_over_float32_{key}"] = out["bfloat16"][key] / out["float32"][key]
      out[f"bfloat16_f32_out_over_float32_{key}"] = (
          out["bfloat16_in_float32_out"][key] / out["float32"][key])
  return out


def run_vgg16_loss(repeats: int) -> dict[str, Any]:
  """The step's VGG16 relu2_2 feature loss (target forward, fake forward and
  backward), batch 4, 256x256, random weights, in float32 and bfloat16."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  from tp2p_jax import losses  # noqa: PLC0415
  from tp2p_jax.models import vgg  # noqa: PLC0415

  shapes = {name: (k, b) for name, k, b in vgg._conv_shapes()}  # noqa: SLF001
  rng = np.random.default_rng(0)
  variables = {"params": {name: {"kernel": rng.standard_normal(k).astype(np.float32) * 0.05,
                                 "bias": np.zeros(b, np.float32)}
                          for name, (k, b) in shapes.items()}}
  variables = vgg.variables_up_to(variables, "relu2_2")
  fake = jnp.asarray(rng.uniform(-1, 1, (4, 256, 256, 3)), jnp.float32)
  real = jnp.asarray(rng.uniform(-1, 1, (4, 256, 256, 3)), jnp.float32)
  out: dict[str, Any] = {}
  for label, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
    grad = jax.grad(lambda f, r, d=dtype: losses.perceptual_loss(f, r, variables, "relu2_2",
                                                                 dtype=d))
    compiled = jax.jit(grad).lower(fake, real).compile()
    out[label] = {"forward_backward_s": _time(compiled, (fake, real), repeats),
                  **_program_facts(compiled.as_text())}
  out["bfloat16_over_float32_forward_backward_s"] = (
      out["bfloat16"]["forward_backward_s"] / out["float32"]["forward_backward_s"])
  return out


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from tp2p_jax.core.xla_flags import set_default_xla_flags  # noqa: PLC0415
  set_default_xla_flags()  # before JAX starts its backends
  import jax  # noqa: PLC0415
  from benchmarks.machine import describe_cpu  # noqa: PLC0415

  names = list(_cases()) + ["vgg16_loss"]
  wanted = _CASES.value or names
  unknown = sorted(set(wanted) - set(names))
  if unknown:
    raise app.UsageError(f"unknown cases {unknown}; expected some of {names}")
  results: dict[str, Any] = {}
  for name in wanted:
    if name == "vgg16_loss":
      results[name] = run_vgg16_loss(_REPEATS.value)
    else:
      results[name] = run_case(name, _REPEATS.value, _BACKWARD.value)
    print(f"[bf16_ops] {name}: " + ", ".join(
        f"{k} {v:.2f}" for k, v in results[name].items() if k.startswith("bfloat16_") and k.endswith("_s")),
        file=sys.stderr, flush=True)
  print(json.dumps({"cases": results, "machine": describe_cpu(),
                    "platform": jax.default_backend(), "jax_version": jax.__version__,
                    "xla_flags": os.environ.get("XLA_FLAGS", ""),
                    "load_avg_1m": os.getloadavg()[0]}, sort_keys=True), flush=True)


if __name__ == "__main__":
  app.run(main)
