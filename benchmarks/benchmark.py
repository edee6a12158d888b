r"""Times the GAN train step and EMA-generator inference of an experiment config.

  python benchmarks/benchmark.py --config=experiments/transpix2pix.py --batch_size=4 --steps=5
  python benchmarks/benchmark.py --config=experiments/toycats.py:tiny --data
  python benchmarks/benchmark.py --config=experiments/toycats.py --dtype=bfloat16 \
      --config.generator_kwargs.transformer_layers=1
  python benchmarks/benchmark.py --config=experiments/transpix2pix.py --dry_run
  # XLA's memory figures of the train step and inference, compiled, not run:
  python benchmarks/benchmark.py --config=experiments/transpix2pix.py --memory_only \
      --batch_size=32 --dtype=bfloat16_everywhere --config.remat=blocks
  python benchmarks/benchmark.py --config=experiments/transpix2pix.py --breakdown
  # Side by side with the PyTorch release, in the same run (torch installed:
  # pip install -e ".[reference]", or --reference_python=VENV/bin/python)
  python benchmarks/benchmark.py --config=experiments/transpix2pix.py --batch_size=4 \
      --reference=TransPix2Pix/
  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python benchmarks/benchmark.py --config=experiments/toycats.py:tiny --devices=4 --batch_size=8
  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python benchmarks/benchmark.py --config=experiments/toycats.py:tiny --scaling --batch_size=8

The process sets the CPU flags of `tp2p_jax.core.xla_flags` unless XLA_FLAGS
already names them (the JSON records the XLA_FLAGS in effect).

The networks, optimisers, objective, train step and inference function are
the library's own (`tp2p_jax.methods.paired_gan`), jitted over a
data-parallel mesh exactly as the trainer does it (state replicated and
donated, batch sharded over `data`). The train step runs on a synthetic
random batch in [-1, 1] so that input loading is not part of its time;
`--data` measures the config's grain input pipeline separately,
`--breakdown` the step's parts on their own, `--scaling` the same steps on
1, 2, 4, ... devices (a correctness check on simulated CPU devices).
`compiled_memory` gives XLA's memory analysis of the compiled train step and
inference per device (`memory_analysis`); `--memory_only` compiles them from
shapes alone, without initialising or running anything, so that batches too
large to run here can be sized.
`--reference=DIR` then times the PyTorch release's step and inference
(benchmarks/release_step.py, a subprocess importing the release from DIR)
on the same machine with the same batch, and reports the ratios. Results
and their interpretation: benchmarks/PERFORMANCE.md.

Progress goes to stderr; the last line of stdout is one JSON object with the
results (seconds, images/s, XLA cost analysis, peak RSS and the environment).
"""
from __future__ import annotations

import functools
import glob
import gzip
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

# Config files import `experiments.*` and the library; make both importable
# when this file is run as a script from anywhere.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
  sys.path.insert(0, _REPO_ROOT)

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from tp2p_jax import losses  # noqa: E402
from tp2p_jax.data import pipeline  # noqa: E402
from tp2p_jax.data.sources import sources_from_config  # noqa: E402
from tp2p_jax.core import compile_effort, mesh as mesh_lib  # noqa: E402
from tp2p_jax.core.ema import ema_update  # noqa: E402
from tp2p_jax.methods import paired_gan  # noqa: E402
from tp2p_jax.methods import paired_gan_step as train_steps  # noqa: E402
from tp2p_jax.methods.networks import count_params  # noqa: E402
from tp2p_jax.models.layers import compute_dtype  # noqa: E402
from tp2p_jax.core.xla_flags import set_default_xla_flags  # noqa: E402
from benchmarks.machine import describe_cpu  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_REPO_ROOT, "experiments", "transpix2pix.py"),
    "Experiment config file (optionally FILE:VARIANT); fields can be overridden "
    "with --config.FIELD=VALUE.", lock_config=True)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "Global batch size (default: the config's batch_size).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed train steps (the median is reported).")
_WARMUP = flags.DEFINE_integer(
    "warmup", 2, "Untimed train steps (and inference calls) run after compiling.")
_INFER_BATCHES = flags.DEFINE_integer(
    "infer_batches", 5, "Timed EMA-generator inference calls of batch_size images.")
_DTYPE = flags.DEFINE_enum(
    "dtype", None, ["float32", "bfloat16", "bfloat16_everywhere", "float16"],
    "Compute dtype (default: the config's dtype); parameters stay float32. \"bfloat16\" "
    "computes in float32 on a CPU backend; \"bfloat16_everywhere\" compiles the bfloat16 "
    "program on any backend (e.g. to size an accelerator's bfloat16 step with "
    "--memory_only here).")
_DATA = flags.DEFINE_bool(
    "data", False, "Also measure the config's grain input pipeline (images/s).")
_DATA_BATCHES = flags.DEFINE_integer(
    "data_batches", 10, "Timed input-pipeline batches with --data (after 2 untimed ones).")
_DEVICES = flags.DEFINE_integer(
    "devices", 0, "Use the first N devices for the mesh (0: all of them).")
_PROFILE_DIR = flags.DEFINE_string(
    "profile_dir", None, "Trace 3 extra train steps into this directory with "
    "jax.profiler.trace (view with TensorBoard/XProf); their times are reported "
    "separately as profile_step_s.")
_BREAKDOWN = flags.DEFINE_bool(
    "breakdown", False, "Also compile and time the train step's parts on their own (style "
    "embedding, G forward, G forward+backward, D passes, VGG16 loss, optimiser+EMA) with "
    "their XLA FLOP and byte counts; the parts overlap and fuse inside the full step, so "
    "their sum only approximates it.")
_SCALING = flags.DEFINE_bool(
    "scaling", False, "Instead of the benchmark, run --steps train steps from the same "
    "initial state and batch on meshes of 1, 2, 4, ... devices (up to all), and report "
    "each mesh's step time and its largest metric difference from the one-device run. On "
    "CPU the devices are simulated (XLA_FLAGS=--xla_force_host_platform_device_count=N) "
    "and share the host's cores: a correctness check of the sharded step, not a "
    "measurement of parallel speed-up.")
_MEMORY_ONLY = flags.DEFINE_bool(
    "memory_only", False, "Compile the train step and inference from the state's shapes "
    "(nothing initialised or run) and report XLA's per-device memory analysis of each "
    "(compiled_memory), their compile times and cost analysis.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Build and trace (jax.eval_shape) the train state, train step and "
    "inference without compiling or running anything; report parameter counts.")

_REFERENCE = flags.DEFINE_string(
    "reference", None, "A checkout of the PyTorch TransPix2Pix release: after our "
    "benchmark, time its train step and inference with the same batch on this machine "
    "(benchmarks/release_step.py) and report both and their ratios. Needs the reference "
    "config at 256x256 on CPU.")
_REFERENCE_PYTHON = flags.DEFINE_string(
    "reference_python", sys.executable, "Python interpreter with torch for --reference.")

_PROFILED_STEPS = 3
_MEMORY_NOTE = ("compiled_memory is XLA's buffer assignment for this backend, per device "
                "(peak_bytes = argument + output + temp - alias); an accelerator's allocator "
                "adds fragmentation and workspace, so its measured peak differs and is to be "
                "measured by a run on that device")
_RELEASE_STEP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "release_step.py")


def _log(message: str) -> None:
  """Human-readable progress, on stderr so stdout stays machine-readable."""
  print(f"[benchmark {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _median(values: list[float]) -> float:
  return float(statistics.median(values)) if values else float("nan")


def cost_analysis(compiled: Any) -> dict[str, float]:
  """FLOPs and bytes accessed of a compiled executable, from XLA's cost
  analysis. jax returns a dict (a list of one dict per HLO module in older
  versions, summed here); missing entries are reported as NaN."""
  analysis = compiled.cost_analysis()
  if analysis is None:
    analysis = []
  if isinstance(analysis, dict):
    analysis = [analysis]
  flops = [float(a["flops"]) for a in analysis if a and "flops" in a]
  nbytes = [float(a["bytes accessed"]) for a in analysis if a and "bytes accessed" in a]
  return {"flops": math.fsum(flops) if flops else float("nan"),
          "bytes": math.fsum(nbytes) if nbytes else float("nan")}


def memory_analysis(compiled: Any) -> dict[str, int] | None:
  """XLA's memory analysis of a compiled executable, per device, in bytes.

  argument_bytes: the inputs (for the train step: state, batch and frozen
  VGG16 weights; batch-independent but for the batch); output_bytes: the
  outputs; alias_bytes: outputs that reuse donated input buffers (the train
  step donates the state); temp_bytes: XLA's scratch buffers (activations
  kept for the backward pass among them). peak_bytes = argument_bytes +
  output_bytes + temp_bytes - alias_bytes: what the device holds at once
  while the program runs, counting an aliased output once. These are the
  compiler's figures for its buffer assignment; an accelerator's allocator
  adds its own fragmentation and workspace, so a device's measured peak
  differs. None where the backend gives no analysis.
  """
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  result = {"argument_bytes": int(stats.argument_size_in_bytes),
            "output_bytes": int(stats.output_size_in_bytes),
            "temp_bytes": int(stats.temp_size_in_bytes),
            "alias_bytes": int(stats.alias_size_in_bytes)}
  result["peak_bytes"] = (result["argument_bytes"] + result["output_bytes"]
                          + result["temp_bytes"] - result["alias_bytes"])
  return result


def synthetic_batch(batch_size: int, image_size: int, num_classes: int,
                    seed: int = 0) -> dict[str, Any]:
  """A random host batch in the pipeline's format: `real_a`, `real_b` float32
  (B, S, S, 3) uniform in [-1, 1] and int32 `label` (B,)."""
  rng = np.random.default_rng(seed)
  shape = (batch_size, image_size, image_size, 3)
  return {"real_a": rng.uniform(-1.0, 1.0, shape).astype(np.float32),
          "real_b": rng.uniform(-1.0, 1.0, shape).astype(np.float32),
          "label": rng.integers(0, num_classes, (batch_size,)).astype(np.int32)}


def style_variables(config: Any, abstract: bool = False) -> Any:
  """Freshly initialised style-encoder variables (host arrays; shapes only
  with `abstract`; `paired_gan.fresh_style_variables`), or {} for a
  generator without style input (pix2pix, pix2pixHD)."""
  init = functools.partial(paired_gan.fresh_style_variables, config)
  if abstract:
    return jax.eval_shape(init, jax.random.PRNGKey(0))
  return jax.device_get(jax.jit(init)(jax.random.PRNGKey(0)))


def _time_calls(fn: Callable[[], Any], count: int) -> list[float]:
  """Wall time of `count` calls of `fn`, each waited for with
  `jax.block_until_ready`."""
  times = []
  for _ in range(count):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return times


def training_source(config: Any) -> Any:
  """The config's training source; a config that cannot provide one (e.g. a
  prepared-data config without data.data_dir) is a usage error, raised
  before anything is compiled."""
  try:
    train_source, _ = sources_from_config(config.data, image_size=config.image_size,
                                          seed=config.seed)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(f"--data: {e}") from e
  return train_source


def measure_loader(config: Any, batch_size: int, batches: int, warmup: int = 2,
                   train_source: Any = None) -> dict[str, float]:
  """Throughput of the config's grain training pipeline (examples read or
  rendered, resized, augmented, batched and converted on the host):
  batches/s * batch over `batches` batches after `warmup` untimed ones."""
  if train_source is None:
    train_source = training_source(config)
  t0 = time.perf_counter()
  iterator = pipeline.make_dataset_iterator(
      train_source, global_batch_size=batch_size, image_size=config.image_size,
      seed=config.seed, augment=config.data.augment, worker_count=config.data.worker_count)
  next(iterator)
  first = time.perf_counter() - t0
  for _ in range(max(warmup - 1, 0)):
    next(iterator)
  t0 = time.perf_counter()
  local = 0
  for _ in range(batches):
    local = len(next(iterator)["label"])
  elapsed = time.perf_counter() - t0
  return {"loader_images_per_s": batches * local / elapsed,
          "loader_batch_s": elapsed / batches,
          "loader_first_batch_s": first,
          "loader_worker_count": int(config.data.worker_count)}


def jax_config_value(name: str) -> Any:
  """The current value of a jax config option (set by flag, env or code)."""
  try:
    return getattr(jax.config, name)  # options that have a context manager
  except AttributeError:
    return jax.config.read(name)


def _notes(platform: str, num_devices: int, optimizations_disabled: bool,
           fast_compile: bool = False) -> list[str]:
  notes = []
  if fast_compile:
    notes.append("the config sets fast_compile: its programs are compiled with most XLA "
                 "optimisations off, as its runs are (compile_s short, steps slower)")
  if platform == "cpu" and num_devices > 1:
    notes.append(
        "multiple CPU devices are simulated (--xla_force_host_platform_device_count) and "
        "share the host's cores: these numbers check that the sharded step compiles and "
        "runs, they do not measure data-parallel scaling")
  if optimizations_disabled:
    notes.append("jax_disable_most_optimizations is set: timings are not representative")
  if jax_config_value("jax_compilation_cache_dir"):
    notes.append("the persistent compilation cache is on: compile_s and init_s may be "
                 "cache loads rather than compilations")
  if num_devices > 1:
    notes.append("XLA's cost analysis covers one device's (SPMD-partitioned) program: "
                 "flops_per_step, bytes_per_step and infer_flops_per_image are that times "
                 "num_devices, the *_per_device fields are as analysed")
  return notes


def top_ops(profile_dir: str, hlo_text: str, steps: int, count: int = 25
            ) -> list[dict[str, Any]]:
  """The `count` HLO ops with the most traced time per step, from the
  Perfetto trace `jax.profiler.trace(..., create_perfetto_trace=True)` wrote
  under `profile_dir`, each with its output shape and the layer (`op_name`
  metadata) it came from. Backends whose traces carry no per-op events
  (or no trace file) give an empty list."""
  files = sorted(glob.glob(os.path.join(profile_dir, "**", "*perfetto_trace.json.gz"),
                           recursive=True), key=os.path.getmtime)
  if not files:
    return []
  with gzip.open(files[-1], "rt") as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  ops = {}
  for m in re.finditer(r"^\s*%(\S+) = (\S+) (.*)$", hlo_text, re.M):
    layer = re.search(r'op_name="([^"]*)"', m.group(3))
    ops[m.group(1)] = (m.group(2), layer.group(1) if layer else "")
  seconds: dict[str, float] = {}
  for e in events:
    if e.get("ph") == "X" and e.get("name") in ops:
      seconds[e["name"]] = seconds.get(e["name"], 0.0) + e.get("dur", 0) / 1e6
  slowest = sorted(seconds.items(), key=lambda kv: -kv[1])[:count]
  return [{"hlo": name, "s_per_step": total / steps, "shape": ops[name][0].split("{")[0],
           "layer": ops[name][1]} for name, total in slowest]


def _compiler_options(config: Any, platform: str) -> dict[str, Any] | None:
  """The XLA compile options every program of a run of `config` gets."""
  return compile_effort.compiler_options(bool(config.get("fast_compile", False)), platform)


def _log_memory(compiled_memory: dict[str, dict[str, int] | None]) -> None:
  for name, stats in compiled_memory.items():
    if stats:
      _log(f"{name} memory per device (XLA): peak {stats['peak_bytes'] / 1e9:.3f} GB = "
           f"arguments {stats['argument_bytes'] / 1e9:.3f} + outputs "
           f"{stats['output_bytes'] / 1e9:.3f} + temporaries {stats['temp_bytes'] / 1e9:.3f} "
           f"- aliased {stats['alias_bytes'] / 1e9:.3f}")


def _time_compiled(fn: Callable, args: tuple, repeats: int,
                   jit_options: dict[str, Any]) -> dict[str, float]:
  """Compiles `fn(*args)` and returns its XLA cost analysis and the median
  wall time of `repeats` calls (after one untimed call)."""
  compiled = jax.jit(fn, **jit_options).lower(*args).compile()
  cost = cost_analysis(compiled)
  jax.block_until_ready(compiled(*args))
  seconds = _median(_time_calls(lambda: compiled(*args), repeats))
  return {"s": seconds, "gflop": cost["flops"] / 1e9, "gbytes": cost["bytes"] / 1e9,
          "gflop_per_s": cost["flops"] / 1e9 / seconds}


def step_breakdown(config: Any, gan: paired_gan.GanParts, state: Any, batch: dict[str, Any],
                   repeats: int = 3) -> dict[str, dict[str, float]]:
  """Times the parts the paired GAN train step is made of, each jitted on its
  own at the step's shapes (one device), with the benchmark's already built
  networks: where the step's FLOPs, bytes and seconds go. The step runs the D passes three times (real and fake for the
  D update, fake again for the G update), the VGG16 loss once.

  Returns {part: {"s", "gflop", "gbytes", "gflop_per_s"}}.
  """
  generator, discriminator, encoder = gan.generator, gan.discriminator, gan.style_encoder
  g_tx, _, _ = paired_gan.gan_optimizers(config)
  objective = paired_gan.objective_from_config(config)
  real_a, real_b = batch["real_a"], batch["real_b"]
  key = jax.random.PRNGKey(0)
  style = None
  parts: dict[str, dict[str, float]] = {}
  options = compile_effort.jit_options(
      _compiler_options(config, real_a.devices().pop().platform))
  if encoder is not None:
    embed = lambda v, photos: train_steps.style_embedding(encoder, v, photos)  # noqa: E731
    parts["style_embedding"] = _time_compiled(embed, (state.style_variables, real_b), repeats,
                                              options)
    style = jax.jit(embed, **options)(state.style_variables, real_b)

  def g_forward(params, sketches, style):
    return train_steps.apply_generator(
        generator, {"params": params, "batch_stats": state.g_batch_stats}, sketches, style,
        train=True, rngs={"dropout": key}, mutable=["batch_stats"])[0]

  def g_forward_backward(params, sketches, style):
    fake, pullback = jax.vjp(lambda p: g_forward(p, sketches, style), params)
    return pullback(fake)

  parts["g_forward"] = _time_compiled(g_forward, (state.g_params, real_a, style), repeats,
                                      options)
  parts["g_forward_backward"] = _time_compiled(g_forward_backward,
                                               (state.g_params, real_a, style), repeats, options)

  def d_sum(params, pair):
    out = discriminator.apply({"params": params, "batch_stats": state.d_batch_stats}, pair,
                              train=True, mutable=["batch_stats"])[0]
    return sum(jnp.sum(o) for o in jax.tree.leaves(out))

  pair = jnp.concatenate([real_a, real_b], axis=-1)
  parts["d_forward_backward_params"] = _time_compiled(jax.grad(d_sum), (state.d_params, pair),
                                                      repeats, options)
  parts["d_forward_backward_input"] = _time_compiled(jax.grad(d_sum, argnums=1),
                                                     (state.d_params, pair), repeats, options)
  if gan.frozen is not None:
    vgg_vars = gan.frozen["vgg"]
    perceptual = jax.grad(lambda fake, real: losses.perceptual_loss(
        fake, real, vgg_vars, objective.perceptual_layer,
        dtype=compute_dtype(objective.perceptual_dtype), remat=objective.perceptual_remat))
    parts["vgg_loss_forward_backward"] = _time_compiled(perceptual, (real_a, real_b), repeats,
                                                        options)

  def g_update(params, opt_state, grads, ema):
    updates, opt_state = g_tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, ema_update(ema, params, objective.ema_decay)

  parts["g_optimizer_and_ema"] = _time_compiled(
      g_update, (state.g_params, state.g_opt_state, state.g_params, state.ema["g"]["params"]),
      repeats, options)
  return parts


def run_benchmark(config: Any, *, steps: int, warmup: int, infer_batches: int,
                  devices: int = 0, data: bool = False, data_batches: int = 10,
                  profile_dir: str | None = None, dry_run: bool = False,
                  breakdown: bool = False, memory_only: bool = False) -> dict[str, Any]:
  """Builds the config's GAN from the library, compiles and times it.

  Args:
    config: an experiment config (batch_size and dtype already final).
    steps: timed train steps; `train_step_s` is their median.
    warmup: untimed train steps (and inference calls) after compiling.
    infer_batches: timed calls of the jitted EMA-generator inference.
    devices: mesh over the first `devices` devices (0: all).
    data: also measure the grain input pipeline.
    data_batches: timed input-pipeline batches.
    profile_dir: trace `_PROFILED_STEPS` extra steps into this directory.
    dry_run: only trace shapes (jax.eval_shape); compile and run nothing.
    memory_only: compile the train step and inference from shapes and
      report their `compiled_memory`; initialise and run nothing.
    breakdown: also time the step's parts on their own (`step_breakdown`).

  Returns:
    The JSON-able results.
  """
  available = jax.devices()
  if devices < 0 or devices > len(available):
    raise app.UsageError(f"--devices={devices}: {len(available)} device(s) available")
  mesh = mesh_lib.make_mesh(available[:devices] if devices else available)
  num_devices = int(mesh.devices.size)
  batch_size = int(config.batch_size)
  mesh_lib.check_batch_size(batch_size, mesh)
  size = int(config.image_size)
  first = mesh.devices.flat[0]
  optimizations_disabled = bool(jax_config_value("jax_disable_most_optimizations"))
  compiler_options = _compiler_options(config, first.platform)
  fast_compile = compiler_options is not None
  result: dict[str, Any] = {
      "batch_size": batch_size, "image_size": size, "dtype": str(config.dtype),
      "remat": str(config.get("remat", "none")),
      "num_devices": num_devices, "device_kind": first.device_kind,
      "platform": first.platform, "jax_version": jax.__version__,
      "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
      "xla_optimizations_disabled": optimizations_disabled, "fast_compile": fast_compile,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  _log(f"{num_devices} {first.platform} device(s) ({first.device_kind}); batch {batch_size}, "
       f"{size}x{size}, {config.dtype}")

  train_source = training_source(config) if data and not dry_run else None
  t0 = time.perf_counter()
  gan = paired_gan.build(config)  # includes loading the VGG16 weights
  result["build_s"] = time.perf_counter() - t0
  encoder, init, step_fn, generate_fn = gan.style_encoder, gan.init, gan.train_step, gan.generate

  key = jax.random.PRNGKey(config.seed)
  t0 = time.perf_counter()
  style_vars = style_variables(config, abstract=dry_run or memory_only)
  if encoder is not None and not (dry_run or memory_only):
    # A stand-in for the style stage's output, which the trainer restores
    # rather than initialises: timed apart from the GAN state's init.
    result["style_init_s"] = time.perf_counter() - t0
  t_init = time.perf_counter()
  abstract = jax.eval_shape(init, key, style_vars)
  result["params"] = {"generator": count_params(abstract.g_params),
                      "discriminator": count_params(abstract.d_params)}
  _log(f"generator {result['params']['generator']:,} params, discriminator "
       f"{result['params']['discriminator']:,}")
  state_sharding = mesh_lib.replicated_like(mesh, abstract)
  data_sharding = mesh_lib.batch_sharding(mesh)
  host_batch = synthetic_batch(batch_size, size, len(config.data.style_names), config.seed)

  if dry_run:
    abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), host_batch)
    new_state, metrics = jax.eval_shape(step_fn, abstract, abstract_batch, gan.frozen)
    fake = jax.eval_shape(generate_fn, abstract, abstract_batch["real_a"],
                          abstract_batch["real_b"])
    if jax.tree.structure(new_state) != jax.tree.structure(abstract):
      raise AssertionError("the train step changes the state's structure")
    result.update(dry_run=True, metrics=sorted(metrics), infer_output_shape=list(fake.shape),
                  trace_s=time.perf_counter() - t_init,
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["notes"] = _notes(first.platform, num_devices, optimizations_disabled, fast_compile)
    return result

  if memory_only:
    abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), host_batch)
    step_jit = mesh_lib.jit_train_step(step_fn, mesh, state_sharding, gan.frozen,
                                       compiler_options=compiler_options)
    t0 = time.perf_counter()
    step = step_jit.lower(abstract, abstract_batch, gan.frozen).compile()
    result["compile_s"] = time.perf_counter() - t0
    cost = cost_analysis(step)
    result["flops_per_step_per_device"] = cost["flops"]
    result["bytes_per_step_per_device"] = cost["bytes"]
    generate_jit = jax.jit(generate_fn,
                           in_shardings=(state_sharding, data_sharding, data_sharding),
                           out_shardings=data_sharding,
                           **compile_effort.jit_options(compiler_options))
    t0 = time.perf_counter()
    generate = generate_jit.lower(abstract, abstract_batch["real_a"],
                                  abstract_batch["real_b"]).compile()
    result["infer_compile_s"] = time.perf_counter() - t0
    result["compiled_memory"] = {"train_step": memory_analysis(step),
                                 "inference": memory_analysis(generate)}
    _log_memory(result["compiled_memory"])
    result.update(memory_only=True,
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["notes"] = _notes(first.platform, num_devices, optimizations_disabled, fast_compile)
    result["notes"].append(_MEMORY_NOTE)
    return result

  # What jit_init does, in two timed parts: init is compile-bound on a CPU
  # (a kernel per random leaf), which the split shows.
  t0 = time.perf_counter()
  init_program = mesh_lib.compile_init(init, mesh, key, style_vars,
                                       compiler_options=compiler_options)
  result["init_compile_s"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  state = jax.block_until_ready(init_program(key, style_vars))
  result["init_run_s"] = time.perf_counter() - t0
  state_sharding = mesh_lib.replicated_like(mesh, state)
  result["init_s"] = time.perf_counter() - t_init
  _log(f"train state initialised in {result['init_s']:.2f} s (trace, lower and compile "
       f"{result['init_compile_s']:.2f} s, run {result['init_run_s']:.2f} s)")

  batch = mesh_lib.to_global_batch(host_batch, mesh)
  frozen = gan.frozen
  step_jit = mesh_lib.jit_train_step(step_fn, mesh, state_sharding, frozen,
                                     compiler_options=compiler_options)
  t0 = time.perf_counter()
  lowered = step_jit.lower(state, batch, frozen)
  result["lower_s"] = time.perf_counter() - t0
  step = lowered.compile()
  result["compile_s"] = time.perf_counter() - t0
  # XLA analyses the SPMD-partitioned program of one device; scale to the
  # whole step so that the numbers compare across mesh sizes.
  cost = cost_analysis(step)
  result["flops_per_step_per_device"] = cost["flops"]
  result["bytes_per_step_per_device"] = cost["bytes"]
  cost = {k: v * num_devices for k, v in cost.items()}
  result["flops_per_step"], result["bytes_per_step"] = cost["flops"], cost["bytes"]
  _log(f"train step lowered+compiled in {result['compile_s']:.2f} s "
       f"({cost['flops'] / 1e9:.3g} GFLOP, {cost['bytes'] / 1e9:.3g} GB per step)")

  metrics: dict[str, Any] = {}

  def one_step() -> Any:
    nonlocal state, metrics
    state, metrics = step(state, batch, frozen)
    return state, metrics

  warm = _time_calls(one_step, warmup)
  result["warmup_step_s_all"] = warm
  if warm:
    _log(f"{warmup} warm-up step(s): " + ", ".join(f"{t:.3f}" for t in warm) + " s")
  times = _time_calls(one_step, steps)
  result["train_step_s_all"] = times
  result["train_step_s"] = _median(times)
  result["train_step_s_min"] = min(times) if times else float("nan")
  result["train_images_per_s"] = batch_size / result["train_step_s"]
  host_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  result["metrics_finite"] = bool(all(np.isfinite(v) for v in host_metrics.values()))
  result["last_metrics"] = {k: host_metrics[k] for k in ("d_loss", "g_loss") if k in host_metrics}
  _log(f"train step: median {result['train_step_s']:.4f} s over {steps} step(s) "
       f"({result['train_images_per_s']:.3g} images/s)")

  if profile_dir:
    profiled = []
    with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
      for i in range(_PROFILED_STEPS):
        with jax.profiler.StepTraceAnnotation("train", step_num=int(i)):
          profiled += _time_calls(one_step, 1)
    result["profile_dir"] = os.path.abspath(profile_dir)
    result["profile_step_s"] = profiled
    result["profile_top_ops"] = top_ops(profile_dir, step.as_text(), _PROFILED_STEPS)
    _log(f"traced {_PROFILED_STEPS} steps into {result['profile_dir']}; slowest ops:")
    for op in result["profile_top_ops"][:10]:
      _log(f"  {op['s_per_step']:.3f} s  {op['hlo']}  {op['shape']}  {op['layer']}")

  generate_jit = jax.jit(generate_fn, in_shardings=(state_sharding, data_sharding, data_sharding),
                         out_shardings=data_sharding,
                         **compile_effort.jit_options(compiler_options))
  t0 = time.perf_counter()
  generate = generate_jit.lower(state, batch["real_a"], batch["real_b"]).compile()
  result["infer_compile_s"] = time.perf_counter() - t0
  result["compiled_memory"] = {"train_step": memory_analysis(step),
                               "inference": memory_analysis(generate)}
  _log_memory(result["compiled_memory"])
  infer_cost = cost_analysis(generate)
  result["infer_flops_per_image"] = infer_cost["flops"] * num_devices / batch_size
  call = lambda: generate(state, batch["real_a"], batch["real_b"])  # noqa: E731
  _time_calls(call, max(warmup, 1))
  infer_times = _time_calls(call, infer_batches)
  result["infer_batch_s_all"] = infer_times
  result["infer_images_per_s"] = batch_size / _median(infer_times)
  _log(f"inference: {result['infer_images_per_s']:.3g} images/s "
       f"(compiled in {result['infer_compile_s']:.2f} s)")

  if breakdown:
    if num_devices > 1:
      raise app.UsageError("--breakdown times the parts on one device: add --devices=1")
    _log("timing the train step's parts")
    result["breakdown"] = step_breakdown(config, gan, state, batch)
    for name, part in result["breakdown"].items():
      _log(f"  {name}: {part['s']:.3f} s, {part['gflop']:.3g} GFLOP, "
           f"{part['gbytes']:.3g} GB, {part['gflop_per_s']:.3g} GFLOP/s")

  if data:
    result.update(measure_loader(config, batch_size, data_batches,
                                 train_source=train_source))
    _log(f"input pipeline: {result['loader_images_per_s']:.3g} images/s "
         f"({config.data.worker_count} grain worker(s))")

  result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  result["notes"] = _notes(first.platform, num_devices, optimizations_disabled, fast_compile)
  result["notes"].append(_MEMORY_NOTE)
  return result


_LOSS_METRICS = ("d_loss", "g_loss", "g_gan", "g_l1", "g_perceptual", "g_feat")


def scaling(config: Any, *, steps: int) -> dict[str, Any]:
  """The same `steps` train steps on meshes of 1, 2, 4, ... devices.

  Every mesh starts from the same initial state (same seed) and sees the same
  global batch (sharded over `data`), so the metrics must agree up to float
  summation order. Returns the per-mesh step times and, for each mesh, the
  largest relative differences from the one-device run.
  """
  available = jax.devices()
  batch_size = int(config.batch_size)
  counts = [n for n in (2 ** i for i in range(12)) if n <= len(available)
            and batch_size % n == 0]
  gan = paired_gan.build(config)
  host_batch = synthetic_batch(batch_size, int(config.image_size),
                               len(config.data.style_names), config.seed)
  style_vars = style_variables(config)
  compiler_options = _compiler_options(config, available[0].platform)
  runs = []
  reference: list[dict[str, float]] | None = None
  for n in counts:
    mesh = mesh_lib.make_mesh(available[:n])
    state, state_sharding = mesh_lib.jit_init(gan.init, mesh, jax.random.PRNGKey(config.seed),
                                              style_vars, compiler_options=compiler_options)
    step = mesh_lib.jit_train_step(gan.train_step, mesh, state_sharding, gan.frozen,
                                   compiler_options=compiler_options)
    batch = mesh_lib.to_global_batch(host_batch, mesh)
    history, times = [], []
    for _ in range(steps):
      t0 = time.perf_counter()
      state, metrics = step(state, batch, gan.frozen)
      history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
      times.append(time.perf_counter() - t0)
    if reference is None:
      reference = history
    # Relative differences from one device; metrics near zero (mean logits)
    # get an absolute floor of 1e-3.
    rel = lambda a, b: abs(a - b) / max(abs(b), 1e-3)  # noqa: E731
    first_step_diffs = {k: rel(history[0][k], reference[0][k]) for k in reference[0]}
    first_step, worst_metric = max((d, k) for k, d in first_step_diffs.items())
    loss_diff = max(rel(m[k], r[k]) for m, r in zip(history, reference)
                    for k in r if k in _LOSS_METRICS)
    runs.append({"devices": n, "step_s_all": times,
                 "step_s": _median(times[1:]) if steps > 1 else times[0],
                 "first_step_max_rel_diff": first_step, "first_step_worst_metric": worst_metric,
                 "first_step_rel_diff": first_step_diffs,
                 "loss_max_rel_diff": loss_diff})
    _log(f"{n} device(s): step {runs[-1]['step_s']:.3f} s; largest difference from 1 device: "
         f"{first_step:.1e} (first step, all metrics; {worst_metric}), {loss_diff:.1e} "
         "(losses, all steps)")
  platform = available[0].platform
  notes = ["every mesh runs the same steps from the same state and batch: "
           "first_step_max_rel_diff compares every metric of the first step (gradient norms "
           "included), loss_max_rel_diff the losses of all steps. Gradient norms of later "
           "steps are not compared: Adam's first update is lr * sign(g), so gradient entries "
           "at rounding level move parameters by a full +-lr either way"]
  if platform == "cpu":
    notes.append("CPU devices are simulated and share the host's cores: the step times "
                 "check that the sharded step runs, they do not measure parallel speed-up")
  return {"scaling": runs, "batch_size": batch_size, "image_size": int(config.image_size),
          "dtype": str(config.dtype), "platform": platform,
          "device_kind": available[0].device_kind, "steps": steps, "notes": notes,
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "jax_version": jax.__version__}


def check_reference_comparable(config: Any, release_dir: str) -> None:
  """`app.UsageError` unless `--reference` can compare like with like: the
  release is at `release_dir`, and the config is TransPix2Pix at the
  release's 256x256 on CPU."""
  if not os.path.isfile(os.path.join(release_dir, "model_generator.py")):
    raise app.UsageError(f"--reference={release_dir}: no model_generator.py there (not a "
                         "checkout of the TransPix2Pix release)")
  if config.generator != "transpix2pix" or int(config.image_size) != 256:
    raise app.UsageError("--reference compares the release's step with ours: use "
                         "--config=experiments/transpix2pix.py (TransPix2Pix at 256x256)")
  if jax.devices()[0].platform != "cpu":
    raise app.UsageError("--reference times the release on the CPU: run ours there too "
                         "(JAX_PLATFORMS=cpu)")


def time_release(release_dir: str, python: str, *, batch_size: int, steps: int, warmup: int,
                 infer_batches: int) -> dict[str, Any]:
  """The release's step and inference timed by benchmarks/release_step.py
  in a subprocess (its own interpreter, so torch and JAX do not share one
  process); its JSON result."""
  _log(f"timing the PyTorch release ({release_dir}) with {python}")
  command = [python, _RELEASE_STEP, f"--release_dir={release_dir}",
             f"--batch_size={batch_size}", f"--steps={steps}", f"--warmup={warmup}",
             f"--infer_batches={infer_batches}"]
  done = subprocess.run(command, capture_output=True, text=True)
  if done.returncode != 0:
    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise RuntimeError(f"the release's timing failed ({' '.join(command)}): {tail}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def compare_with_release(ours: dict[str, Any], release: dict[str, Any]) -> dict[str, Any]:
  """Ratios of one run's figures: train step seconds ours / release (below 1:
  ours is faster) and inference images/s ours / release (above 1: ours is
  faster)."""
  return {
      "release": release,
      "train_step_ratio": ours["train_step_s"] / release["train_step_s"],
      "train_speedup": release["train_step_s"] / ours["train_step_s"],
      "infer_ratio": ours["infer_images_per_s"] / release["infer_images_per_s"],
      "notes": ["measured one after the other in this run on this machine, same batch, "
                f"256x256; ours {ours.get('dtype', 'float32')}, the release "
                f"{release.get('dtype', 'float32')}; the release's VGG16 feature loss runs "
                "under no_grad "
                "(it sends G no gradient, a defect), ours backpropagates through VGG16, so "
                "our step does more work"],
  }


def _json_safe(value: Any) -> Any:
  """NaN/inf -> None, so the output is strict JSON."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  return value


def main(argv: list[str]) -> None:
  set_default_xla_flags()  # before JAX starts its backends
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  absl_logging.set_verbosity(absl_logging.WARNING)
  for name, value in (("steps", _STEPS.value), ("infer_batches", _INFER_BATCHES.value),
                      ("data_batches", _DATA_BATCHES.value)):
    if value < 1:
      raise app.UsageError(f"--{name} must be >= 1, got {value}")
  if _WARMUP.value < 0:
    raise app.UsageError(f"--warmup must be >= 0, got {_WARMUP.value}")
  config = _CONFIG.value
  # The config is locked (no new fields) but existing fields can be assigned.
  if _BATCH_SIZE.value is not None:
    config.batch_size = _BATCH_SIZE.value
  if _DTYPE.value is not None:
    config.dtype = _DTYPE.value
  if _REFERENCE.value:
    if _SCALING.value or _DRY_RUN.value or _MEMORY_ONLY.value:
      raise app.UsageError("--reference times full steps: drop --scaling/--dry_run/"
                           "--memory_only")
    check_reference_comparable(config, _REFERENCE.value)
  if _MEMORY_ONLY.value and (_SCALING.value or _DRY_RUN.value):
    raise app.UsageError("--memory_only compiles the step and runs nothing: drop "
                         "--scaling/--dry_run")
  if _SCALING.value:
    result = scaling(config, steps=_STEPS.value)
  else:
    result = run_benchmark(config, steps=_STEPS.value, warmup=_WARMUP.value,
                           infer_batches=_INFER_BATCHES.value, devices=_DEVICES.value,
                           data=_DATA.value, data_batches=_DATA_BATCHES.value,
                           profile_dir=_PROFILE_DIR.value, dry_run=_DRY_RUN.value,
                           breakdown=_BREAKDOWN.value, memory_only=_MEMORY_ONLY.value)
  result["machine"] = describe_cpu()
  if _REFERENCE.value:
    release = time_release(_REFERENCE.value, _REFERENCE_PYTHON.value,
                           batch_size=int(config.batch_size), steps=_STEPS.value,
                           warmup=_WARMUP.value, infer_batches=_INFER_BATCHES.value)
    result["reference"] = compare_with_release(result, release)
    _log(f"release: step {release['train_step_s']:.3f} s, "
         f"{release['infer_images_per_s']:.3g} images/s; ours/release step time "
         f"{result['reference']['train_step_ratio']:.2f}, inference speed "
         f"{result['reference']['infer_ratio']:.2f}")
  config_flag = flags.FLAGS["config"]
  result["config"] = config_flags.get_config_filename(config_flag)
  overrides = config_flags.get_override_values(config_flag)
  if overrides:
    result["config_overrides"] = {k: v if isinstance(v, (int, float, str, bool)) else repr(v)
                                  for k, v in overrides.items()}
  sys.stdout.flush()
  print(json.dumps(_json_safe(result), sort_keys=True), flush=True)


if __name__ == "__main__":
  from tp2p_jax.core import config_files
  sys.argv = config_files.resolve_argv(sys.argv)  # --config=NAME[:VARIANT]
  app.run(main)
