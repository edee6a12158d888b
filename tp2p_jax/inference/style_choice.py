"""The style a user asks for, checked and turned into the generator's (E,)
embedding: a class name, a reference photo, or a mix of two classes.

Shared by `predict` (flags) and the HTTP server (form fields): `check_choice`
refuses what the run cannot honour using the run's config alone (no model
work), then `class_vector` or `photo_vector` computes the embedding.
"""
from __future__ import annotations

import numpy as np

from tp2p_jax.inference import run_loading, styles
from tp2p_jax.inference.run_loading import TrainedRun


def _mix_error(error: ValueError, prefix: str) -> str:
  """`parse_style_mix`'s message with the option spelt as the caller's users
  spell it (flags or form fields)."""
  return str(error).replace("--style_mix", f"{prefix}style_mix")


def check_choice(run: TrainedRun, *, style: str | None, has_style_image: bool,
                 style_mix: str | None, prefix: str = "--", alternative: str = "") -> None:
  """Refuses a style choice the run cannot honour, before anything is computed.

  Args:
    run: a style-conditioned run (`run.predictor.style_dim` set).
    style: a class name, or None.
    has_style_image: whether a reference photo was given.
    style_mix: "CLASS_A:CLASS_B:T", or None.
    prefix: how the options are spelt in messages ("--" for flags, "" for
      form fields).
    alternative: words naming a further option, shown after the three
      (e.g. " (or --grid)").

  Raises:
    ValueError: not exactly one of the three given, a malformed mix, or an
      unknown class (the message lists the run's classes).
    RunError: (a ValueError) the run lacks what the choice needs: a trained
      style encoder for a photo, class averages for a class or a mix.
  """
  if sum((style is not None, has_style_image, style_mix is not None)) != 1:
    if run_loading.names_no_dataset(run.config):
      # An imported run: no classes to name, only reference photos.
      run.require_style_encoder()
      raise ValueError(f"give {prefix}style_image=PHOTO (this run has no class-average "
                       "style embeddings)")
    raise ValueError(f"give exactly one of {prefix}style=CLASS, {prefix}style_image=PHOTO, "
                     f"{prefix}style_mix=A:B:T{alternative}; this run's classes: "
                     f"{', '.join(run.class_names)}")
  if has_style_image:
    run.require_style_encoder()
    return
  run.require_class_styles()
  if style is not None:
    names = [style]
  else:
    try:
      names = list(styles.parse_style_mix(style_mix)[:2])
    except ValueError as e:
      raise ValueError(_mix_error(e, prefix)) from None
  for name in names:
    # Before the class averages are computed (a pass over the training data).
    if name not in run.class_names:
      raise ValueError(f"unknown style class {name!r}; this run's classes: "
                       f"{', '.join(run.class_names)}")


def class_vector(bank: styles.ClassEmbeddings, style: str | None,
                 style_mix: str | None) -> np.ndarray:
  """The (E,) float32 embedding of a class (`style`) or of a mix
  ("A:B:T", (1 - T) * A + T * B); exactly one is given.

  Raises:
    ValueError: a class without training photos (no average).
  """
  if style is not None:
    return bank.of(style).astype(np.float32)
  return styles.mix(bank, *styles.parse_style_mix(style_mix))


def photo_vector(run: TrainedRun, photo: np.ndarray) -> np.ndarray:
  """The (E,) float32 embedding of a reference photo, uint8 (H, W, 3) RGB of
  any size, through the run's style encoder (jitted per photo size)."""
  return np.asarray(run.embed(photo[None].astype(np.float32) / 127.5 - 1.0),
                    np.float32)[0]
