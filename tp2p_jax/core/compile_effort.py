"""How much work XLA spends optimising a run's programs.

A run's config chooses with `fast_compile`. Off (the default), XLA
optimises fully, as a long run wants. On, each program the trainer builds
(init, train step, sample and finishing programs) is compiled with most
optimisations off, which is what a smoke run or a test wants: on a 2-core
CPU such runs spend most of their wall clock compiling. Measured on the
tiny TransPix2Pix smoke run (benchmarks/PERFORMANCE.md, "Fast compile"):
the first run's wall clock about halves, each step runs slower.

The options are per program (`jax.jit(..., compiler_options=...)`), not
process flags, so one process can hold both kinds, and they are part of
the key of JAX's persistent compilation cache: a program compiled one way
is never served for the other.
"""
from __future__ import annotations

from typing import Any, Mapping

# What `jax_disable_most_optimizations` sets (jax._src.compiler), per
# program instead of per process.
_LOW_EFFORT: dict[str, Any] = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}
# XLA's CPU backend compiles a step's thousands of small kernels about a
# third faster with its earlier emitter than with its MLIR fusion emitters
# when optimisations are off (benchmarks/PERFORMANCE.md); a CPU-only option.
_CPU_LOW_EFFORT: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False}


def compiler_options(fast_compile: bool, platform: str) -> dict[str, Any] | None:
  """The `compiler_options` of a run's programs.

  Args:
    fast_compile: the run config's `fast_compile`.
    platform: the backend the programs run on ("cpu", "gpu", "tpu").

  Returns:
    None (XLA's defaults) when `fast_compile` is False, else XLA debug
    options that turn most optimisations off on `platform`.
  """
  if not fast_compile:
    return None
  return {**_LOW_EFFORT, **(_CPU_LOW_EFFORT if platform == "cpu" else {})}


def jit_options(compiler_options: Mapping[str, Any] | None) -> dict[str, Any]:
  """`jax.jit` keyword arguments that compile with `compiler_options`
  ({} for XLA's defaults)."""
  return {} if compiler_options is None else {"compiler_options": dict(compiler_options)}
