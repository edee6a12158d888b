"""The persistent compilation cache: where it lives, how it is moved or
turned off, and that a second identical run compiles nothing new."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from tests.subprocess_runs import REPO, cli_env
from tp2p_jax.core import caches


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
  for name in ("JAX_COMPILATION_CACHE_DIR", "TP2P_JAX_COMPILATION_CACHE", "TP2P_JAX_CACHE",
               "XDG_CACHE_HOME"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  return monkeypatch


def test_the_cache_lives_under_the_users_cache_folder(clean_env, tmp_path):
  assert caches.compilation_cache_dir() == tmp_path / "home" / ".cache" / "tp2p_jax" / "xla"
  clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert caches.compilation_cache_dir() == tmp_path / "xdg" / "tp2p_jax" / "xla"
  clean_env.setenv("TP2P_JAX_CACHE", str(tmp_path / "ours"))
  assert caches.compilation_cache_dir() == tmp_path / "ours" / "xla"
  assert caches.cache_dir() == tmp_path / "ours"


def test_the_cache_can_be_moved_or_turned_off(clean_env, tmp_path):
  clean_env.setenv("TP2P_JAX_COMPILATION_CACHE", str(tmp_path / "elsewhere"))
  assert caches.compilation_cache_dir() == tmp_path / "elsewhere"
  for off in ("off", "0", "false", "OFF"):
    clean_env.setenv("TP2P_JAX_COMPILATION_CACHE", off)
    assert caches.compilation_cache_dir() is None
    assert caches.enable_compilation_cache() is None
  clean_env.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax_own"))
  assert caches.compilation_cache_dir() == tmp_path / "jax_own"  # JAX's own setting wins


def test_an_uncreatable_cache_folder_turns_the_cache_off_with_a_warning(clean_env, tmp_path,
                                                                      caplog):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  clean_env.setenv("TP2P_JAX_COMPILATION_CACHE", str(blocker / "xla"))
  with caplog.at_level("WARNING", logger="tp2p_jax"):
    assert caches.enable_compilation_cache() is None
  assert "compilation cache off" in caplog.text


def _entries(folder: pathlib.Path) -> set[str]:
  return {p.name for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_rerun_loads_its_programs_from_the_cache(tmp_path):
  """Two identical runs in fresh processes: the first fills the default
  cache folder, the second finds every program there (adds no entry)."""
  env = cli_env()
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the suite's own cache; users have none
  # Every program is stored: with the default threshold (1 s), a program
  # whose compile time straddles it on a loaded machine would be stored by
  # one run and not the other, which says nothing about the cache.
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  env["TP2P_JAX_CACHE"] = str(tmp_path / "cache")
  env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "false"  # compile times as users see them

  def train(workdir: str) -> None:
    out = subprocess.run([sys.executable, "-m", "tests.painter_method",
                          str(tmp_path / workdir), "2"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]

  train("first")
  cached = _entries(tmp_path / "cache" / "xla")
  assert any(n.startswith("jit_init-") for n in cached)
  assert any(n.startswith("jit_train_step-") for n in cached)
  train("second")
  assert _entries(tmp_path / "cache" / "xla") == cached
  assert os.listdir(tmp_path / "second" / "checkpoints") == ["2"]
