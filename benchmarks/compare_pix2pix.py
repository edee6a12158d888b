r"""pix2pix vs TransPix2Pix with equal step budgets on the same data.

  python benchmarks/compare_pix2pix.py --output_dir=runs/compare
  python benchmarks/compare_pix2pix.py --output_dir=runs/compare-cats --data_dir=DATASET_DIR
  python benchmarks/compare_pix2pix.py --output_dir=runs/compare \
      --transpix2pix_workdir=runs/toycats --pix2pix_workdir=runs/pix2pix-cpu

Trains both models through `tp2p_jax.training.train_and_evaluate` (by
default pix2pix `experiments/pix2pix.py:cpu` and TransPix2Pix
`experiments/toycats.py`: toy cats, 64x64, batch 4, 2,500 steps each) into
`<output_dir>/pix2pix` and `<output_dir>/transpix2pix` (or the given
workdirs). Training resumes where a run stopped, and a finished run (its
latest checkpoint at its own `total_steps`) is reused as it is, with the
config in its `config.json`. Then it

- scores both EMA generators on the same held-out pairs with the evaluation
  library (`tp2p_jax.inference.evaluation.evaluate`: L1, PSNR, SSIM, LPIPS,
  the untrained floor, and style accuracy for the style-conditioned model),
- times each train step with `benchmarks/benchmark.py`'s `run_benchmark`
  (synthetic batch at the run's batch, size and dtype; median of
  `--timing_steps` steps on one device),
- writes `<output_dir>/comparison.md` (the table), `comparison.json` (all
  numbers) and `comparison.png` (held-out rows: sketch | pix2pix |
  TransPix2Pix | target; TransPix2Pix styled by the target photo's
  embedding, as the evaluation does).

The two runs must see the same data (source, data_dir, image size, seed)
and the same budget (steps and batch); `--pix2pix_config.FIELD=VALUE` and
`--transpix2pix_config.FIELD=VALUE` override fields of either config, and
`--total_steps` both budgets. Progress goes to stderr; the last stdout line
is one JSON object with the paths and metrics.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping, Sequence

# Config files import `experiments.*` and the library; make both importable
# when this file is run as a script from anywhere.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
  sys.path.insert(0, _REPO_ROOT)

from absl import app, flags  # noqa: E402
import ml_collections  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import benchmark  # noqa: E402  (its flags are unused here)
from tp2p_jax.core.xla_flags import set_default_xla_flags  # noqa: E402

_P2P_CONFIG = config_flags.DEFINE_config_file(
    "pix2pix_config", os.path.join(_REPO_ROOT, "experiments", "pix2pix.py") + ":cpu",
    "pix2pix experiment config (FILE[:VARIANT]); --pix2pix_config.FIELD=VALUE overrides.",
    lock_config=True)
_TP2P_CONFIG = config_flags.DEFINE_config_file(
    "transpix2pix_config", os.path.join(_REPO_ROOT, "experiments", "toycats.py"),
    "TransPix2Pix experiment config (FILE[:VARIANT]); --transpix2pix_config.FIELD=VALUE "
    "overrides.", lock_config=True)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", "runs/compare", "Where the table, figure and JSON go (and the runs, unless "
    "--pix2pix_workdir / --transpix2pix_workdir name others).")
_P2P_WORKDIR = flags.DEFINE_string(
    "pix2pix_workdir", None, "pix2pix run directory (default <output_dir>/pix2pix); a "
    "finished run there is reused.")
_TP2P_WORKDIR = flags.DEFINE_string(
    "transpix2pix_workdir", None, "TransPix2Pix run directory (default "
    "<output_dir>/transpix2pix); a finished run there is reused.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", "", "A dataset prepared by `python -m tp2p_jax.cli.prepare` for both runs "
    "(default: the configs' own data, procedural toy cats).")
_TOTAL_STEPS = flags.DEFINE_integer(
    "total_steps", None, "Training steps of both runs (default: the configs' own, which "
    "must agree).")
_NUM_EXAMPLES = flags.DEFINE_integer(
    "num_examples", None, "Held-out pairs evaluated (default: all those both runs hold "
    "out).")
_NUM_ROWS = flags.DEFINE_integer("num_rows", 6, "Held-out rows in the sample figure.")
_TIMING_STEPS = flags.DEFINE_integer(
    "timing_steps", 10, "Timed train steps per model (the median is reported).")
_TIMING_WARMUP = flags.DEFINE_integer(
    "timing_warmup", 2, "Untimed train steps per model after compiling.")

# The two models, in table order: (key, display name).
MODELS: tuple[tuple[str, str], ...] = (("pix2pix", "pix2pix"), ("transpix2pix", "TransPix2Pix"))
# Fields that decide which examples a run trains and is evaluated on.
_DATA_FIELDS: tuple[str, ...] = ("image_size", "seed", "data.source", "data.data_dir")


def _log(message: str) -> None:
  print(f"[compare] {message}", file=sys.stderr, flush=True)


# Defaults of data fields added after some runs were made (their config.json
# lacks them), as `sources_from_config` reads them.
_FIELD_DEFAULTS: dict[str, Any] = {"data.background": "varied"}


def _field(config: Mapping[str, Any], dotted: str) -> Any:
  value: Any = config
  for part in dotted.split("."):
    if part not in value:
      return _FIELD_DEFAULTS[dotted]
    value = value[part]
  return value


def check_comparable(configs: Mapping[str, Mapping[str, Any]]) -> None:
  """`ValueError` unless the runs share their data and budget: the fields
  of `_DATA_FIELDS` (toy cats also `data.body_probability`,
  `data.num_train` and `data.background`) and `total_steps` and
  `batch_size`.

  Args:
    configs: model key -> resolved config (ConfigDict or the dict of a
      run's config.json).
  """
  first = next(iter(configs.values()))
  fields = list(_DATA_FIELDS) + ["total_steps", "batch_size"]
  if _field(first, "data.source") == "toycats":
    fields += ["data.body_probability", "data.num_train", "data.background"]
  for name in fields:
    values = {k: _field(c, name) for k, c in configs.items()}
    if len(set(map(str, values.values()))) > 1:
      raise ValueError(f"the runs differ in {name}: {values}; a comparison needs the same "
                       f"data and the same step budget (override with "
                       f"--<model>_config.{name}=... or --total_steps)")


def run_is_finished(workdir: str) -> bool:
  """Whether `workdir` holds a run whose latest GAN checkpoint is at (or
  past) the `total_steps` of its own config.json."""
  path = os.path.join(workdir, "config.json")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not (os.path.exists(path) and os.path.isdir(ckpt_dir)):
    return False
  with open(path) as f:
    total = int(json.load(f)["total_steps"])
  steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()]
  return bool(steps) and max(steps) >= total


def read_config(workdir: str) -> ml_collections.ConfigDict:
  from tp2p_jax.methods import read_run_config
  return read_run_config(workdir)


def format_table(rows: Sequence[Mapping[str, Any]], timing: Mapping[str, Any]) -> str:
  """The comparison as markdown.

  Args:
    rows: one per model: `model` (display name), `config`, `params`
      ({"generator", "discriminator"}), `eval` (the evaluation library's
      result: l1, psnr, ssim, lpips, l1_untrained, optional
      style_accuracy, num_examples, step) and `train_step_s`.
    timing: how the step times were taken: `machine`, `batch_size`,
      `image_size`, `dtype`, `timing_steps`, optional `load_avg_1m`.

  Returns:
    A markdown table followed by one line stating the conditions.
  """
  def num(value: Any, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)

  header = ("| model | config | parameters (G / D) | L1 | PSNR (dB) | SSIM | LPIPS | "
            "style accuracy | L1 untrained | train step (median) |")
  lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
  for r in rows:
    e = r["eval"]
    style = e.get("style_accuracy")
    lines.append(
        f"| {r['model']} | `{r['config']}` | {r['params']['generator']:,} / "
        f"{r['params']['discriminator']:,} | {num(e.get('l1'), '.4f')} | "
        f"{num(e.get('psnr'), '.2f')} | {num(e.get('ssim'), '.4f')} | "
        f"{num(e.get('lpips'), '.4f')} | {'n/a (no style input)' if style is None else format(style, '.3f')} | "
        f"{num(e.get('l1_untrained'), '.4f')} | {num(r.get('train_step_s'), '.3f')} s |")
  e0 = rows[0]["eval"]
  load = timing.get("load_avg_1m")
  lines.append("")
  lines.append(
      f"Held-out pairs: {e0['num_examples']} ({e0.get('split', 'validation')}), EMA generators "
      f"at step {', '.join(str(r['eval']['step']) for r in rows)}. L1 on [-1, 1], PSNR/SSIM "
      f"on [0, 1], LPIPS-VGG; style accuracy: every sketch generated in every class's "
      f"average style, classified by the frozen style encoder. Train step: median of "
      f"{timing['timing_steps']} steps on {timing['machine']}, batch {timing['batch_size']}, "
      f"{timing['image_size']}x{timing['image_size']}, {timing['dtype']}"
      + (f" (1-minute load average {load:.1f} while timing)" if load is not None else "")
      + ".")
  return "\n".join(lines) + "\n"


def _title_strip(titles: Sequence[str], width: int, column: int, pad: int) -> np.ndarray:
  """A white uint8 strip with each title centred over its column."""
  from PIL import Image, ImageDraw, ImageFont
  font = ImageFont.load_default()
  height = 14
  strip = Image.new("RGB", (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(strip)
  for j, title in enumerate(titles):
    left, _, right, _ = draw.textbbox((0, 0), title, font=font)
    x = pad + j * (column + pad) + max((column - (right - left)) // 2, 0)
    draw.text((x, 1), title, fill=(0, 0, 0), font=font)
  return np.asarray(strip)


def comparison_figure(columns: Sequence[np.ndarray], titles: Sequence[str],
                      min_width: int = 96) -> np.ndarray:
  """Row i holds `columns[j][i]` side by side under a title row.

  Args:
    columns: equal-shape (N, S, S, 3) float arrays in [-1, 1] (e.g. sketch,
      pix2pix, TransPix2Pix, target).
    titles: one per column.
    min_width: small images are enlarged by an integer factor (nearest
      neighbour, so pixels stay as generated) to at least this width, so
      that the titles fit over their columns.

  Returns:
    uint8 (H, W, 3).
  """
  from tp2p_jax.core.run_log import image_grid
  if len(columns) != len(titles):
    raise ValueError(f"{len(columns)} columns but {len(titles)} titles")
  factor = max(1, -(-min_width // columns[0].shape[2]))
  columns = [np.repeat(np.repeat(np.asarray(c), factor, axis=1), factor, axis=2)
             for c in columns]
  pad = 2
  grid = image_grid(columns, pad=pad)
  column_width = columns[0].shape[2]
  return np.concatenate([_title_strip(titles, grid.shape[1], column_width, pad), grid])


def _train(key: str, config: ml_collections.ConfigDict, workdir: str) -> None:
  from tp2p_jax import training
  if run_is_finished(workdir):
    _log(f"{key}: finished run in {workdir}, reused")
    return
  _log(f"{key}: training in {workdir} (resumes if a checkpoint is there)")
  status = training.train_and_evaluate(config, workdir)
  if status != 0 or not run_is_finished(workdir):
    raise SystemExit(f"{key}: training in {workdir} stopped before its last step; rerun "
                     f"the same command to resume")


# Both networks are compared as they are trained, in eval mode (running
# statistics, no dropout): the recorded comparison predates the test modes,
# and pix2pix's default, train mode, would add its dropout's noise to one
# side only.
COMPARED_TEST_MODE = "eval"


def _figure_columns(workdirs: Mapping[str, str], num_rows: int) -> list[np.ndarray]:
  """sketch, each model's EMA output, target on the first `num_rows`
  held-out pairs of the first run's data."""
  from tp2p_jax.data import pipeline
  from tp2p_jax.data.sources import sources_from_config
  from tp2p_jax.inference import run_loading
  runs = {k: run_loading.with_test_mode(run_loading.load_trained_run(w), COMPARED_TEST_MODE)
          for k, w in workdirs.items()}
  c = next(iter(runs.values())).config
  _, held_out = sources_from_config(c.data, image_size=c.image_size, seed=c.seed)
  batch = next(pipeline.make_eval_batches(held_out, batch_size=num_rows,
                                          image_size=c.image_size, num_examples=num_rows))
  outputs = []
  for key, _ in MODELS:
    run = runs[key]
    style = run.embed(batch["real_b"]) if run.predictor.style_dim is not None else None
    outputs.append(np.asarray(run.predictor.generate(batch["real_a"], style)))
  return [batch["real_a"], *outputs, batch["real_b"]]


def compare(configs: Mapping[str, ml_collections.ConfigDict], workdirs: Mapping[str, str],
            output_dir: str, *, config_names: Mapping[str, str],
            num_examples: int | None = None, num_rows: int = 6, timing_steps: int = 10,
            timing_warmup: int = 2) -> dict[str, Any]:
  """Trains (or reuses), evaluates and times both runs; writes the table,
  JSON and figure into `output_dir`. Returns the JSON-able summary.

  Args:
    configs: model key ("pix2pix", "transpix2pix") -> config for training.
    workdirs: model key -> run directory.
    output_dir: where comparison.md/.json/.png go.
    config_names: model key -> the config's name for the table.
    num_examples: held-out pairs evaluated (None: all both runs hold out).
    num_rows: rows of the sample figure.
    timing_steps, timing_warmup: timed and untimed train steps per model.
  """
  from tp2p_jax.inference import evaluation
  from tp2p_jax.core.run_dir import config_to_dict
  from tp2p_jax.data.image_files import save_png
  os.makedirs(output_dir, exist_ok=True)
  for key, _ in MODELS:
    if not run_is_finished(workdirs[key]):
      check_comparable({k: config_to_dict(c) for k, c in configs.items()})
      break
  for key, _ in MODELS:
    _train(key, configs[key], workdirs[key])
  run_configs = {key: read_config(workdirs[key]) for key, _ in MODELS}
  check_comparable(run_configs)  # also for reused runs: what they were trained with

  if num_examples is None and run_configs["pix2pix"].data.source == "toycats":
    # Held-out toy cats are rendered from (seed, index): the first n are the
    # same pairs in both runs.
    num_examples = min(int(c.data.num_eval) for c in run_configs.values())
  rows = []
  timing: dict[str, Any] = {}
  for key, name in MODELS:
    _log(f"{key}: evaluating {workdirs[key]}")
    result = evaluation.evaluate(workdirs[key], num_examples=num_examples,
                                 test_mode=COMPARED_TEST_MODE)
    _log(f"{key}: timing the train step")
    bench = benchmark.run_benchmark(run_configs[key], steps=timing_steps, warmup=timing_warmup,
                                    infer_batches=1, devices=1)
    rows.append({"model": name, "key": key, "config": config_names[key],
                 "workdir": os.path.abspath(workdirs[key]), "params": bench["params"],
                 "eval": result, "train_step_s": bench["train_step_s"],
                 "train_step_s_all": bench["train_step_s_all"]})
    timing = {"machine": f"{bench['cpu_count']}-core {bench['platform'].upper()} "
                         f"({bench['device_kind']}), 1 device",
              "batch_size": bench["batch_size"], "image_size": bench["image_size"],
              "dtype": bench["dtype"], "timing_steps": timing_steps,
              "load_avg_1m": max(bench["load_avg_1m"], timing.get("load_avg_1m", 0.0))}
  table = format_table(rows, timing)
  paths = {name: os.path.join(output_dir, f"comparison.{name}") for name in ("md", "json", "png")}
  with open(paths["md"], "w") as f:
    f.write(table)
  titles = ["sketch", *[name for _, name in MODELS], "target"]
  save_png(paths["png"], comparison_figure(_figure_columns(workdirs, num_rows), titles))
  summary = {"table": paths["md"], "figure": paths["png"], "timing": timing,
             "models": {r["key"]: {k: v for k, v in r.items() if k != "key"} for r in rows}}
  with open(paths["json"], "w") as f:
    json.dump(benchmark._json_safe(summary), f, indent=2, sort_keys=True)
  summary["json"] = paths["json"]
  return summary


def _config_name(flag_name: str) -> str:
  """experiments/<file>[:variant] as given on the command line."""
  argument = flags.FLAGS[flag_name].serialize().split("=", 1)[-1]
  path, _, variant = argument.partition(":")
  name = os.path.relpath(os.path.abspath(path), _REPO_ROOT)
  return f"{name}:{variant}" if variant else name


def main(argv: list[str]) -> None:
  set_default_xla_flags()  # before JAX starts its backends
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for name, value in (("num_rows", _NUM_ROWS.value), ("timing_steps", _TIMING_STEPS.value)):
    if value < 1:
      raise app.UsageError(f"--{name} must be >= 1, got {value}")
  configs = {"pix2pix": _P2P_CONFIG.value, "transpix2pix": _TP2P_CONFIG.value}
  for config in configs.values():
    if _DATA_DIR.value:
      config.data.source = "prepared"
      config.data.data_dir = os.path.abspath(os.path.expanduser(_DATA_DIR.value))
    if _TOTAL_STEPS.value is not None:
      config.total_steps = _TOTAL_STEPS.value
  output_dir = _OUTPUT_DIR.value
  workdirs = {"pix2pix": _P2P_WORKDIR.value or os.path.join(output_dir, "pix2pix"),
              "transpix2pix": _TP2P_WORKDIR.value or os.path.join(output_dir, "transpix2pix")}
  names = {"pix2pix": _config_name("pix2pix_config"),
           "transpix2pix": _config_name("transpix2pix_config")}
  from tp2p_jax.cli.command import quiet_libraries
  try:
    with quiet_libraries():
      summary = compare(configs, workdirs, output_dir, config_names=names,
                        num_examples=_NUM_EXAMPLES.value, num_rows=_NUM_ROWS.value,
                        timing_steps=_TIMING_STEPS.value, timing_warmup=_TIMING_WARMUP.value)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  with open(summary["table"]) as f:
    print(f.read(), file=sys.stderr)
  sys.stdout.flush()
  print(json.dumps(benchmark._json_safe(summary), sort_keys=True), flush=True)


if __name__ == "__main__":
  from tp2p_jax.core import config_files
  sys.argv = config_files.resolve_argv(config_files.resolve_argv(sys.argv, "pix2pix_config"),
                                       "transpix2pix_config")
  app.run(main)
