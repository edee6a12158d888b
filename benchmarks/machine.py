"""What a timing was measured on: every benchmark records it, because CPU
times from one machine cannot be set against times from another (e.g. an
AVX2-only and an AVX-512 EPYC)."""
from __future__ import annotations

import os
import platform
import re
import subprocess
from typing import Any

# The vector extensions that change what XLA's and PyTorch's CPU kernels do.
_VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                 "avx512_vnni", "avx512_bf16", "amx_tile")


def describe_cpu() -> dict[str, Any]:
  """{"cpu": model name (lscpu, else the platform's), "cores": logical CPUs,
  "vector_extensions": those of `_VECTOR_FLAGS` in /proc/cpuinfo, "avx2",
  "avx512": booleans, "load_avg_1m": the 1-minute load average}."""
  model = platform.processor() or platform.machine()
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    found = re.search(r"Model name:\s*(.+)", out)
    model = found.group(1).strip() if found else model
  except (OSError, subprocess.SubprocessError):
    pass
  words: set[str] = set()
  try:
    with open("/proc/cpuinfo") as f:
      words = set(next((line for line in f if line.startswith("flags")), "").split())
  except OSError:
    pass
  return {"cpu": model, "cores": os.cpu_count(),
          "vector_extensions": [f for f in _VECTOR_FLAGS if f in words],
          "avx2": "avx2" in words, "avx512": any(w.startswith("avx512") for w in words),
          "load_avg_1m": os.getloadavg()[0]}
