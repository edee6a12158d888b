"""Sketch/photo pair datasets as TFDS `array_record` files (no TensorFlow).

`SketchPhotoPairs` is a TFDS `GeneratorBasedBuilder` (name
``sketch_photo_pairs``) with one `BuilderConfig` per source:

* ``folder``: a directory of photos, one subfolder per style class (a flat
  folder is one class named after it). Photos of any size and mode (RGB, L,
  LA, RGBA, P, I;16, CMYK, ...) become RGB, are centre-cropped to a square and
  resized; the sketch is made from the photo by `sketch.sketch_from_photo`.
* ``pix2pix``: either files holding A|B side by side (``direction`` AtoB: A,
  the left half, is the sketch; BtoA: B is), or pix2pixHD-style folder pairs
  (``train_A/`` + ``train_B/``, or ``A/`` + ``B/``) matched by relative path
  without extension. Sketch and photo get the same crop and resize.
* ``tfds``: any TFDS image dataset (``image`` feature) already prepared in a
  TFDS data_dir, read with ``builder.as_data_source``. ``oxford_iiit_pet`` is
  restricted to its 12 cat breeds (the labels) and its ``segmentation_mask``
  trimaps are used as cat masks, so background lines vanish;
  ``cats_vs_dogs`` keeps its cats (one class).

Features of every record:

  photo:    uint8 (S, S, 3) RGB, zlib-compressed Tensor
  sketch:   uint8 (S, S, 3), dark lines on white, zlib-compressed Tensor
  label:    ClassLabel (class names in the features and in metadata.json)
  filename: Text, the source file (relative to the input) or TFDS key

Splits are ``train`` and ``validation``: an example goes to validation when a
hash of its key (relative path) and the seed falls below ``val_fraction``, so
the split is deterministic and does not depend on file order or on the other
files. Unreadable, truncated or non-image files, and unmatched or mismatched
pix2pix pairs, are skipped and recorded with the reason (`SkippedFile`; in
``metadata.json`` under ``skipped_files``).

Folder class subfolders that are all coat style names of the toy cats
(`toycats.STYLE_NAMES`) get the toy cats' labels (all nine names, in their
order), so a real dataset and the toy cats share one label space. Top-level
folders named like splits (train/val/test) are looked through: their
subfolders are the classes.

`PairedSource` reads a prepared dataset as a grain random-access source of
the input pipeline's records; `build` prepares one (the CLI is
`tp2p_jax.cli.prepare`).

Modules: `config` (builder configs, split names and the split rule),
`discovery` (scanning input folders into work items; skipped files),
`pairs` (photo/sketch pairs from images and work items), `tfds_photos`
(reading TFDS image datasets), `builder` (`SketchPhotoPairs`, `build`) and
`reader` (`PairedSource`, `class_names`).
"""
from __future__ import annotations

from tp2p_jax.data.prepared.builder import BuildResult, SketchPhotoPairs, build
from tp2p_jax.data.prepared.config import (DATASET_NAME, DIRECTIONS, SOURCES, TRAIN, VALIDATION,
                                           PairsConfig, is_validation, make_config)
from tp2p_jax.data.prepared.discovery import InputError, SkippedFile
from tp2p_jax.data.prepared.pairs import pair_from_photo, pair_from_sketch_and_photo, split_ab
from tp2p_jax.data.prepared.reader import PairedSource, class_names, resolve_dataset_dir
from tp2p_jax.data.prepared.tfds_photos import OXFORD_PET_CAT_BREEDS

__all__ = [
    "BuildResult", "DATASET_NAME", "DIRECTIONS", "InputError", "OXFORD_PET_CAT_BREEDS",
    "PairedSource", "PairsConfig", "SOURCES", "SketchPhotoPairs", "SkippedFile", "TRAIN",
    "VALIDATION", "build", "class_names", "is_validation", "make_config", "pair_from_photo",
    "pair_from_sketch_and_photo", "resolve_dataset_dir", "split_ab",
]
