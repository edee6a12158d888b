"""benchmarks/compare_pix2pix.py: the comparability checks, the finished-run
test, the markdown table and the side-by-side figure (on fake results)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import compare_pix2pix
from tp2p_jax.experiments import pix2pix, toycats
from tp2p_jax.core.run_dir import config_to_dict


def _fake_rows() -> list[dict]:
  base = {"num_examples": 64, "split": "validation", "step": 2500, "psnr": 17.123,
          "ssim": 0.61234, "lpips": 0.2345, "l1_untrained": 0.9876}
  return [
      {"model": "pix2pix", "config": "experiments/pix2pix.py:cpu",
       "params": {"generator": 13_000_000, "discriminator": 700_000},
       "eval": {**base, "l1": 0.2}, "train_step_s": 0.1234},
      {"model": "TransPix2Pix", "config": "experiments/toycats.py",
       "params": {"generator": 20_000_000, "discriminator": 700_000},
       "eval": {**base, "l1": 0.15, "style_accuracy": 0.9}, "train_step_s": 0.45},
  ]


def test_table_has_every_column_and_states_the_timing_conditions():
  timing = {"machine": "2-core CPU (cpu), 1 device", "batch_size": 4, "image_size": 64,
            "dtype": "float32", "timing_steps": 10, "load_avg_1m": 3.2}
  table = compare_pix2pix.format_table(_fake_rows(), timing)
  lines = table.splitlines()
  header = [c.strip() for c in lines[0].strip("|").split("|")]
  assert header == ["model", "config", "parameters (G / D)", "L1", "PSNR (dB)", "SSIM",
                    "LPIPS", "style accuracy", "L1 untrained", "train step (median)"]
  assert lines[1].count("---") == len(header)
  p2p = [c.strip() for c in lines[2].strip("|").split("|")]
  tp2p = [c.strip() for c in lines[3].strip("|").split("|")]
  assert p2p[2] == "13,000,000 / 700,000" and p2p[3] == "0.2000" and p2p[4] == "17.12"
  assert p2p[7].startswith("n/a") and tp2p[7] == "0.900"
  assert p2p[9] == "0.123 s" and tp2p[9] == "0.450 s"
  note = lines[-1]
  for words in ("Held-out pairs: 64", "2-core CPU", "batch 4",
                "64x64", "float32", "load average 3.2"):
    assert words in note


def test_figure_has_a_title_row_over_the_columns():
  n, s = 3, 16
  columns = [np.full((n, s, s, 3), v, np.float32) for v in (-1.0, 0.0, 0.5, 1.0)]
  fig = compare_pix2pix.comparison_figure(columns, ["sketch", "pix2pix", "TransPix2Pix",
                                                    "target"], min_width=s)
  pad = 2
  assert fig.dtype == np.uint8
  assert fig.shape[1] == 4 * (s + pad) + pad
  grid_height = n * (s + pad) + pad
  title_height = fig.shape[0] - grid_height
  assert title_height > 0 and np.any(fig[:title_height] < 128)  # some dark text
  # First row, second column: the 0.0 image -> mid grey.
  y, x = title_height + pad, 2 * pad + s
  assert np.all(np.abs(fig[y:y + s, x:x + s].astype(int) - 128) <= 1)
  # Small images are enlarged (nearest neighbour) to the minimum width.
  big = compare_pix2pix.comparison_figure(columns, ["a", "b", "c", "d"], min_width=40)
  assert big.shape[1] == 4 * (3 * s + pad) + pad
  with pytest.raises(ValueError):
    compare_pix2pix.comparison_figure(columns, ["only one"])


def test_default_configs_are_comparable_and_differences_are_named():
  configs = {"pix2pix": pix2pix.get_config("cpu"), "transpix2pix": toycats.get_config()}
  dicts = {k: config_to_dict(c) for k, c in configs.items()}
  compare_pix2pix.check_comparable(dicts)  # 64x64, batch 4, 2,500 steps, toy cats, seed 0
  dicts["pix2pix"]["total_steps"] = 100
  with pytest.raises(ValueError, match="total_steps"):
    compare_pix2pix.check_comparable(dicts)
  dicts["pix2pix"]["total_steps"] = dicts["transpix2pix"]["total_steps"]
  del dicts["pix2pix"]["data"]["background"]  # a run made before the field: "varied"
  with pytest.raises(ValueError, match="data.background"):
    compare_pix2pix.check_comparable(dicts)
  dicts["pix2pix"]["data"]["background"] = dicts["transpix2pix"]["data"]["background"]
  dicts["transpix2pix"]["data"]["data_dir"] = "/elsewhere"
  with pytest.raises(ValueError, match="data.data_dir"):
    compare_pix2pix.check_comparable(dicts)


def test_run_is_finished_reads_the_runs_own_budget(tmp_path):
  assert not compare_pix2pix.run_is_finished(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"total_steps": 10}))
  (tmp_path / "checkpoints" / "5").mkdir(parents=True)
  assert not compare_pix2pix.run_is_finished(str(tmp_path))
  (tmp_path / "checkpoints" / "10").mkdir()
  assert compare_pix2pix.run_is_finished(str(tmp_path))
