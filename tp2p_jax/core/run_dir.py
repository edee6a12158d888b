"""A run directory's files other than metrics: `config.json` (the options
saved with every run) and restoring a state from `checkpoints/<step>/`.

Layout of a run directory (stages other than the last live in
subdirectories, e.g. `style_encoder/`, with the same layout):

  config.json            the resolved config, `method` naming its method
  checkpoints/<step>/    whole train state, input position, config
  metrics.jsonl          one JSON object per logged step
  tensorboard/           the same scalars
  samples/step_*.png     sample grids
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections

from tp2p_jax.core import mesh as mesh_lib
from tp2p_jax.core.checkpoints import Checkpointer, abstract_with_shardings

CONFIG_FILE = "config.json"


class RunError(ValueError):
  """A run directory that cannot be used; the message names the path."""


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """A JSON-safe dict of an ml_collections config."""
  return json.loads(config.to_json_best_effort())


def save_run_config(workdir: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Writes `<workdir>/config.json` (main process only) and returns the dict
  that checkpoints carry too."""
  config_dict = config_to_dict(config)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
      json.dump(config_dict, f, indent=2, sort_keys=True)
  return config_dict


def with_method_field(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A saved config with its `method` field. Runs written before methods
  were named carry none: theirs is "cyclegan" where the config said
  `model="cyclegan"`, else "paired_gan" (the only other family then); the
  checkpoints themselves are unchanged, so such runs restore as they are."""
  if "method" in config:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  config.method = "cyclegan" if config.get("model") == "cyclegan" else "paired_gan"
  return config


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's saved config (with its `method`); `RunError` naming the file if
  it is missing or not JSON."""
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    with open(path) as f:
      return with_method_field(ml_collections.ConfigDict(json.load(f)))
  except FileNotFoundError:
    raise RunError(f"{path}: not found; is {workdir!r} a run directory made by "
                   f"run_train.py?") from None
  except (OSError, json.JSONDecodeError) as e:
    raise RunError(f"{path}: unreadable config ({e})") from None


def imported_fresh(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Networks of a run imported from PyTorch checkpoints that were
  initialised from its config instead ("discriminator", "style_encoder",
  "generator_b", ...); () for runs trained here."""
  imported = config.get("imported")
  return tuple(imported.get("fresh", ())) if imported else ()


def checkpoint_step(ckpt: Checkpointer, step: int | None) -> int:
  """`step`, or the latest one, if `ckpt` holds it; `RunError` otherwise."""
  steps = ckpt.all_steps()
  if not steps:
    raise RunError(f"{ckpt.directory}: no checkpoints yet")
  if step is None:
    return max(steps)
  if step not in steps:
    raise RunError(f"{ckpt.directory}: no checkpoint at step {step}; available: "
                   f"{sorted(steps)}")
  return step


def restore_run_state(workdir: str, abstract: Any, step: int | None = None,
                      mesh: jax.sharding.Mesh | None = None) -> tuple[Any, int]:
  """Restores `<workdir>/checkpoints/<step>` (default: the latest) into the
  shapes and dtypes of `abstract` (e.g. `jax.eval_shape` of the run's init),
  replicated on `mesh` (default: the first device).

  Returns:
    (state, step).

  Raises:
    RunError: naming the path, if there is no (such) checkpoint or it does
      not fit `abstract`.
  """
  mesh = mesh or mesh_lib.make_mesh(jax.devices()[:1])
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=10**9)
  try:
    step = checkpoint_step(ckpt, step)
    try:
      state, _ = ckpt.restore(step, abstract_with_shardings(
          abstract, mesh_lib.replicated_like(mesh, abstract)))
    except (ValueError, KeyError, TypeError) as e:
      raise RunError(f"{ckpt.directory}/{step}: does not match {workdir}/{CONFIG_FILE} "
                     f"({type(e).__name__}: {str(e)[:300]})") from None
  finally:
    ckpt.close()
  return state, step
