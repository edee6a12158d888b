"""The `tp2p` console script: each subcommand is its module's `main`, and
every command answers --help and misuse the same way."""
from __future__ import annotations

import json

import pytest

from tp2p_jax.cli import command
from tp2p_jax.cli import main as tp2p


def _tp2p(capsys, *args: str) -> tuple[int, str, str]:
  with pytest.raises(SystemExit) as exit_info:
    tp2p.main(["tp2p", *args])
  out = capsys.readouterr()
  return exit_info.value.code, out.out, out.err


def test_subcommand_runs_its_module(capsys, tmp_path):
  status, out, _ = _tp2p(capsys, "train", "--config=experiments/cyclegan.py:tiny",
                         f"--workdir={tmp_path}", "--dry_run")
  assert status == 0
  assert json.loads(out.strip().splitlines()[-1])["method"] == "cyclegan"


@pytest.mark.parametrize("config, printed, params", [
    ("transpix2pix", "lambda_l1: 100.0", {"generator": 129_034_960, "discriminator": 2_768_705,
                                          "style_encoder": None}),
    ("pix2pix", "lambda_l1: 100.0", {"generator": 54_413_955, "discriminator": 2_768_705}),
    ("cyclegan", "lambda_cycle: 10.0", {"generator_ab": 11_378_179, "generator_ba": 11_378_179,
                                        "discriminator_a": 2_764_737,
                                        "discriminator_b": 2_764_737}),
])
def test_dry_run_prints_the_config_and_each_networks_count(config, printed, params, capsys,
                                                           tmp_path):
  """The reference configs' counts (the originals' where they have one), from
  shapes alone: nothing is written."""
  status, out, _ = _tp2p(capsys, "train", f"--config={config}", f"--workdir={tmp_path}",
                         "--dry_run")
  assert status == 0
  assert printed in out  # the resolved config comes first
  counts = json.loads(out.strip().splitlines()[-1])["params"]
  assert counts.keys() == params.keys()
  for network, count in params.items():
    assert counts[network] == count if count is not None else counts[network] > 0
  assert not any(tmp_path.iterdir())


def test_unknown_and_missing_commands(capsys):
  status, _, err = _tp2p(capsys, "trian")
  assert status == 2 and err.strip() == (
      "error: unknown command 'trian'; commands: " + ", ".join(tp2p.COMMANDS))
  status, out, _ = _tp2p(capsys)
  assert status == 2 and "tp2p COMMAND" in out


@pytest.mark.parametrize("name", sorted(tp2p.COMMANDS))
def test_every_command_has_help_and_one_line_usage_errors(capsys, name):
  status, out, _ = _tp2p(capsys, name, "--help")
  assert status == 0 and "--" in out
  status, out, err = _tp2p(capsys, name, "--no_such_flag=1")
  assert status == 2 and out == ""
  assert err.startswith("error: ") and err.count("\n") == 1 and "no_such_flag" in err


def test_first_line_and_fail(capsys):
  assert command.first_line(ValueError("a\nb")) == "a"
  assert command.first_line(KeyError()) == "KeyError"
  assert command.fail("bad\nmore", 1) == 1
  assert capsys.readouterr().err == "error: bad\n"
