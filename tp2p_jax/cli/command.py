"""What every command line shares: flags in a registry of the command's own
(so `main` runs repeatedly in one process, beside other commands' flags of
the same names), `--help`, and a user's mistake reported as one line on
stderr with exit status 2; a failure to read or write a file after the
checks (a full disk) is one line with exit status 1.

  def main(argv):
    return command.run(argv, __doc__, _define_flags, _body, required=("input",))
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from typing import Any, Callable, Iterator, Sequence

from absl import flags
from absl import logging as absl_logging

HELP_FLAGS = frozenset({"-h", "--help", "--helpshort", "--helpfull"})

class UsageError(ValueError):
  """A mistake in how a command was called: one line on stderr, exit status 2."""


def fail(message: str, status: int = 2) -> int:
  """Prints `error: MESSAGE` (its first line) on stderr; returns `status`."""
  print(f"error: {first_line(message)}", file=sys.stderr)
  return status


def fail_file_error(error: OSError, path: str = "") -> int:
  """`fail` for a file that could not be read or written after the checks
  (a full disk, a folder removed mid-run): one line naming the file (else
  `path`) and the reason; returns exit status 1."""
  where = error.filename if error.filename is not None else path
  return fail(f"{where}{': ' if where else ''}{error.strerror or first_line(error)}", 1)


def first_line(error: BaseException | str) -> str:
  """The first line of an error's message (or its type's name if empty)."""
  text = str(error).strip()
  if not text and isinstance(error, BaseException):
    return type(error).__name__
  return text.splitlines()[0] if text else ""


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
  """For the block: the console keeps to our own messages (orbax and jax log
  every save, restore and compile at INFO through absl; the `tp2p_jax`
  logger prints INFO on stderr); the logging state is restored after."""
  ours = logging.getLogger("tp2p_jax")
  saved = (ours.level, list(ours.handlers), ours.propagate, absl_logging.get_verbosity())
  absl_logging.set_verbosity(absl_logging.WARNING)
  ours.setLevel(logging.INFO)
  if not ours.handlers:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    ours.addHandler(handler)
  ours.propagate = False
  try:
    yield
  finally:
    ours.setLevel(saved[0])
    ours.handlers[:] = saved[1]
    ours.propagate = saved[2]
    absl_logging.set_verbosity(saved[3])


def _unknown_field(error: BaseException) -> str:
  """One line for ml_collections' error about an override of a missing
  field (its text quotes the field, perhaps with a suggestion)."""
  text = str(error)
  names = re.findall(r"""['"]([A-Za-z_][\w.]*)\\?['"]""", text)
  suggestion = re.search(r"""[Dd]id you mean \\?"([\w.]+)""", text)
  field = names[0] if names else "?"
  hint = f" (did you mean {suggestion.group(1)!r}?)" if suggestion else ""
  return f"--config: no field {field!r} in the config{hint}"


def define_checkpoint_flags(fv: flags.FlagValues) -> None:
  """--checkpoint and its older spelling --step in `fv`: which checkpoint of
  a run (read with `checkpoint_choice`)."""
  flags.DEFINE_string("checkpoint", None, "Which checkpoint: latest (the default), best "
                      "(the run's best/, kept by training with keep_best) or a step number.",
                      flag_values=fv)
  flags.DEFINE_integer("step", None, "Checkpoint step: --checkpoint=STEP.", flag_values=fv)


def checkpoint_choice(fv: flags.FlagValues) -> int | str | None:
  """--checkpoint (or --step) as the run loader's `step`: a step number,
  "best" or None (the latest); `UsageError` for another value or both."""
  if fv.checkpoint is not None and fv.step is not None:
    raise UsageError(f"--checkpoint={fv.checkpoint} and --step={fv.step}: --step is the older "
                     "spelling of --checkpoint=STEP; give one of them")
  if fv.checkpoint is None:
    return fv.step
  if fv.checkpoint in ("best", "latest"):
    return None if fv.checkpoint == "latest" else "best"
  if fv.checkpoint.isdigit():
    return int(fv.checkpoint)
  raise UsageError(f"--checkpoint={fv.checkpoint}: expected best, latest or a step number")


def define_generator_flags(fv: flags.FlagValues) -> None:
  """--dtype, --checkpoint (--step) and --prepare in `fv`: which checkpoint
  of a run, in which compute dtype, and how drawings are prepared for it
  (the commands that run a trained generator on drawings: predict, serve)."""
  flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"],
                    "Generator compute dtype (default: the run's).", flag_values=fv)
  define_checkpoint_flags(fv)
  flags.DEFINE_enum("prepare", None, ["hand_drawn", "pad"],
                    "hand_drawn: redraw any drawing/scan in the training line style "
                    "(default for sketch models); pad: only resize and pad on white "
                    "(default for CycleGAN).", flag_values=fv)


def define_test_mode_flags(fv: flags.FlagValues, seed: bool = True) -> None:
  """--test_mode and (with `seed`) --seed in `fv`: how the commands that run
  a trained generator (predict, evaluate, serve; export, whose program takes
  the seeds as input, without --seed) run it (`tp2p_jax.methods.test_mode`)."""
  flags.DEFINE_enum("test_mode", None, ["eval", "train"],
                    "eval: running BatchNorm statistics, no dropout; train: each image "
                    "normalised with its own statistics and seeded dropout on, as the "
                    "pix2pix/pix2pixHD test.py without --eval (default: the run's "
                    "config.test_mode: train for pix2pix and pix2pixHD, else eval).",
                    flag_values=fv)
  if seed:
    flags.DEFINE_integer("seed", 0, "--test_mode=train: the dropout seed (the k-th input, "
                         "0-based in input order, gets seed + k).", flag_values=fv)


def loaded_config(fv: flags.FlagValues, name: str = "config") -> Any:
  """The value of an ml_collections config-file flag, which loads lazily;
  a file that is missing or fails to load is a `UsageError` naming it."""
  try:
    config = fv[name].value
    config.keys()  # a failed load raises on first use
    return config
  except (OSError, SyntaxError, ImportError, AttributeError, NameError, TypeError) as e:
    detail = [line.strip() for line in str(e).splitlines() if line.strip()]
    raise UsageError(f"--{name}={fv[name].serialize().split('=', 1)[-1]}: cannot load "
                     f"({detail[-1] if detail else type(e).__name__})") from None


def run(argv: Sequence[str], doc: str | None,
        define_flags: Callable[[Sequence[str]], flags.FlagValues],
        body: Callable[[flags.FlagValues], int], *, required: Sequence[str] = (),
        usage_errors: tuple[type[BaseException], ...] = ()) -> int:
  """Parses `argv` (argv[0] is the program name) and runs `body(flags)`.

  Args:
    argv: the command line.
    doc: printed with the flags' help for -h / --help (exit 0).
    define_flags: `define_flags(argv) -> FlagValues`, a fresh registry (argv
      for flags that read it early, e.g. an ml_collections config file).
    body: the command; returns the exit status.
    required: flags that must be given.
    usage_errors: exceptions from `body` that are a user's mistake: one line,
      exit status 2 (`UsageError` always is).

  Returns:
    The exit status.
  """
  from tp2p_jax.core import config_files
  from tp2p_jax.core.caches import enable_compilation_cache
  from tp2p_jax.core.xla_flags import set_default_xla_flags
  set_default_xla_flags()  # before JAX starts its backends
  enable_compilation_cache()  # a rerun loads its programs instead of compiling
  argv = list(argv)
  if any(a in HELP_FLAGS for a in argv[1:]):
    print(doc)
    print(define_flags(argv[:1]).get_help())
    return 0
  try:
    with warnings.catch_warnings():
      # ml_collections loads config files through the deprecated load_module().
      warnings.filterwarnings("ignore", message=".*load_module", category=DeprecationWarning)
      # --config=NAME[:VARIANT] names a file of the installed experiments.
      argv = config_files.resolve_argv(argv)
      fv = define_flags(argv)
      rest = fv(argv)
  except (AttributeError, KeyError) as e:
    # ml_collections names only the field of a bad --config.FIELD override.
    return fail(_unknown_field(e))
  except (flags.Error, TypeError, ValueError, OSError) as e:
    return fail(first_line(e))
  if len(rest) > 1:
    return fail(f"unexpected arguments: {rest[1:]}")
  missing = [f"--{name}" for name in required if fv[name].value in (None, "")]
  if missing:
    return fail(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
  with quiet_libraries():
    try:
      return body(fv)
    except (UsageError, *usage_errors) as e:
      return fail(str(e))
    except OSError as e:  # after the checks: a full disk, a folder removed mid-run
      return fail_file_error(e)


def define_job_flags(fv: flags.FlagValues, shares: str) -> None:
  """The multi-process flags (train, predict): `--jax_distributed`,
  `--coordinator_address`, `--num_processes`, `--process_id`,
  `--initialization_timeout`, each also read from JAX's environment
  variables (`join_job`). `shares`: what the processes share, for --help
  (e.g. "one run", "the inputs")."""
  flags.DEFINE_bool("jax_distributed", False, "Join a multi-process job that JAX detects (TPU "
                    "pod, SLURM, Kubernetes); explicit values below take precedence.",
                    flag_values=fv)
  flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0's coordinator "
                      "(default: $JAX_COORDINATOR_ADDRESS).", flag_values=fv)
  flags.DEFINE_integer("num_processes", None, f"Number of processes sharing {shares} "
                       "(default: $JAX_NUM_PROCESSES).", flag_values=fv)
  flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes) "
                       "(default: $JAX_PROCESS_ID).", flag_values=fv)
  flags.DEFINE_integer("initialization_timeout", 300, "Seconds to wait for the coordinator "
                       "and for every process to join.", flag_values=fv)


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if not value:
    return None
  try:
    return int(value)
  except ValueError:
    raise UsageError(f"${name}={value!r}: expected an integer") from None


def join_job(fv: flags.FlagValues) -> None:
  """Joins the multi-process job that the `define_job_flags` flags (or
  JAX's environment variables) describe, if any; `UsageError` (one line)
  when it cannot."""
  from tp2p_jax.core import multihost
  num_processes = fv.num_processes if fv.num_processes is not None else _env_int(
      "JAX_NUM_PROCESSES")
  process_id = fv.process_id if fv.process_id is not None else _env_int("JAX_PROCESS_ID")
  coordinator = fv.coordinator_address
  if coordinator is None and (num_processes is not None or process_id is not None
                              or fv.jax_distributed):
    # Alone, the variable starts nothing: a one-process run ignores it.
    coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  try:
    multihost.initialize_distributed(
        auto_detect=fv.jax_distributed, coordinator_address=coordinator,
        num_processes=num_processes, process_id=process_id,
        initialization_timeout=fv.initialization_timeout)
  except multihost.DistributedStartError as e:
    raise UsageError(str(e)) from None
