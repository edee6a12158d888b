"""Finding the inputs of a folder or pix2pix dataset and pairing them.

Scanning turns an input folder into work items (`Item`: one future example
each) and records every file that cannot become one (`SkippedFile`, with the
reason). Keys are paths relative to the input, in POSIX form, so they do not
depend on where the input lies.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
from typing import Any

from tp2p_jax.data.toycats import STYLE_NAMES

# Top-level folder names taken as an existing split rather than as a class.
_SPLIT_DIR_NAMES = frozenset(
    {"train", "training", "val", "valid", "validation", "test", "testing"})


class InputError(ValueError):
  """The input cannot become a dataset: missing, empty, nothing readable, or
  the output already exists."""


@dataclasses.dataclass(frozen=True)
class SkippedFile:
  """An input that did not become a pair. `file` is relative to the input
  (or a TFDS key); `reason` says why."""
  file: str
  reason: str


@dataclasses.dataclass(frozen=True)
class Item:
  """One future example. `key` is unique, hashed for the split and stored
  as `filename`; `data` is what the worker needs.

  Kinds: "photo" (data: (path,)), "ab" (one A|B file: (path,)), "a_b" (A and
  B files: (path_a, path_b)) and "tfds" ((source split, record index)).
  """
  kind: str
  key: str
  label: int
  data: tuple[Any, ...]


_NOT_UTF8 = "file name is not valid UTF-8 (the dataset stores names as text); rename it"


def display_name(text: str) -> str:
  """`text` (a name from the file system) with the bytes that are not UTF-8
  shown as \\xNN escapes: printable and JSON-safe."""
  return os.fsencode(text).decode("utf-8", "backslashreplace")


def _is_utf8(text: str) -> bool:
  try:
    text.encode("utf-8")
  except UnicodeEncodeError:  # os.fsdecode's surrogate escapes of raw bytes
    return False
  return True


def _is_file_or_broken_link(path: pathlib.Path) -> bool:
  return path.is_file() or (path.is_symlink() and not path.exists())


def _files_under(directory: pathlib.Path, root: pathlib.Path
                 ) -> tuple[list[pathlib.Path], list[SkippedFile]]:
  """Every file under `directory` (recursively), sorted by relative path,
  and the entries that cannot be one: broken symbolic links and names that
  are not UTF-8 (keys are relative to `root`, the input)."""
  files, skipped = [], []
  for p in directory.rglob("*"):
    if p.is_symlink() and not p.exists():
      skipped.append(SkippedFile(_relative(p, root), "broken symbolic link (to "
                                 f"{display_name(os.readlink(p))}, which does not exist)"))
    elif p.is_file():
      if _is_utf8(p.relative_to(root).as_posix()):
        files.append(p)
      else:
        skipped.append(SkippedFile(_relative(p, root), _NOT_UTF8))
  return sorted(files, key=lambda p: p.relative_to(directory).as_posix()), skipped


def _subdirs(root: pathlib.Path) -> list[pathlib.Path]:
  return sorted((p for p in root.iterdir() if p.is_dir()),
                key=lambda p: p.name)


def require_dir(path: str | None) -> pathlib.Path:
  if not path:
    raise InputError("no input directory given")
  root = pathlib.Path(path)
  if not root.exists():
    raise InputError(f"input directory {root} does not exist")
  if not root.is_dir():
    raise InputError(f"input {root} is not a directory")
  if not any(root.iterdir()):
    raise InputError(f"input directory {root} is empty")
  return root


@dataclasses.dataclass(frozen=True)
class ClassLayout:
  """Where the files of each class are. `class_dirs[i]` lists the folders of
  class label i; `loose` are files outside every class folder; `skipped`
  the class folders that cannot be a class (a name that is not UTF-8)."""
  names: tuple[str, ...]
  class_dirs: tuple[tuple[pathlib.Path, ...], ...]
  loose: tuple[pathlib.Path, ...]
  skipped: tuple[SkippedFile, ...] = ()


def class_layout(root: pathlib.Path) -> ClassLayout:
  """Classes of a folder input: its subfolders (looking through top-level
  split folders), or the folder itself as one class when it has none."""
  top = _subdirs(root)
  bases = top if top and all(d.name.lower() in _SPLIT_DIR_NAMES
                             for d in top) else [root]
  # Files next to the split folders belong to no split and no class.
  loose = ([p for p in sorted(root.iterdir()) if _is_file_or_broken_link(p)]
           if bases != [root] else [])
  by_name: dict[str, list[pathlib.Path]] = collections.defaultdict(list)
  bad_names: list[SkippedFile] = []
  for base in bases:
    for d in _subdirs(base):
      if _is_utf8(d.name):
        by_name[d.name].append(d)
      else:
        bad_names.append(SkippedFile(
            _relative(d, root) + "/", "folder name is not valid UTF-8 (the class names are "
            "stored as text); rename the folder; its files are left out"))
  if not by_name:
    # Any folder with an undecodable name is then searched like the rest
    # of the input, and its files are skipped one by one.
    return ClassLayout((display_name(root.resolve().name) or "photos",), (tuple(bases),),
                       tuple(loose))
  for base in bases:
    loose += [p for p in sorted(base.iterdir()) if _is_file_or_broken_link(p)]
  if set(by_name) <= set(STYLE_NAMES):
    names = STYLE_NAMES
  else:
    names = tuple(sorted(by_name))
  return ClassLayout(names, tuple(tuple(by_name.get(n, ())) for n in names),
                     tuple(loose), tuple(bad_names))


def ab_folder_pairs(root: pathlib.Path
                     ) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """pix2pixHD-style (X_A, X_B) folder pairs (or (A, B)) directly in root."""
  names = {d.name: d for d in _subdirs(root)}
  pairs = []
  for name, d in sorted(names.items()):
    if name == "A" or name.endswith("_A"):
      partner = name[:-1] + "B"
      if partner in names:
        pairs.append((d, names[partner]))
  return pairs


def _relative(path: pathlib.Path, root: pathlib.Path) -> str:
  """The key of `path`: relative to `root`, POSIX form, printable."""
  return display_name(path.relative_to(root).as_posix())


def folder_items(root: pathlib.Path, layout: ClassLayout, kind: str
                 ) -> tuple[list[Item], list[SkippedFile]]:
  """One `kind` item per file of each class folder (labelled by class), and
  the files outside every class folder as skipped."""
  items, skipped = [], list(layout.skipped)
  for path in layout.loose:
    skipped.append(SkippedFile(_relative(path, root),
                               "file outside the class subfolders"))
  seen: set[str] = set()
  for label, dirs in enumerate(layout.class_dirs):
    for d in dirs:
      files, unusable = _files_under(d, root)
      skipped += unusable
      for path in files:
        key = _relative(path, root)
        if key not in seen:
          seen.add(key)
          items.append(Item(kind, key, label, (str(path),)))
  return items, skipped


def pix2pix_hd_items(root: pathlib.Path,
                     pairs: list[tuple[pathlib.Path, pathlib.Path]]
                      ) -> tuple[list[Item], list[SkippedFile]]:
  """One "a_b" item per file present in both folders of a pair (matched by
  relative path without extension; label 0); anything else is skipped."""
  items, skipped = [], []
  paired = {d for pair in pairs for d in pair}
  for p in sorted(root.iterdir()):
    if p not in paired:
      skipped.append(SkippedFile(
          _relative(p, root), "not inside an _A/_B folder pair"))
  for dir_a, dir_b in pairs:
    def by_stem(d: pathlib.Path, skipped: list[SkippedFile] = skipped
                ) -> dict[str, pathlib.Path]:
      out: dict[str, pathlib.Path] = {}
      files, unusable = _files_under(d, root)
      skipped += unusable
      for p in files:
        stem = p.relative_to(d).with_suffix("").as_posix()
        if stem in out:
          skipped.append(SkippedFile(
              _relative(p, root),
              f"same name as {_relative(out[stem], root)} but another "
              "extension; cannot tell which one to pair"))
        else:
          out[stem] = p
      return out

    files_a, files_b = by_stem(dir_a), by_stem(dir_b)
    for stem in sorted(set(files_a) | set(files_b)):
      if stem not in files_b:
        skipped.append(SkippedFile(_relative(files_a[stem], root),
                                   f"no file named {stem}.* in {dir_b.name}/"))
      elif stem not in files_a:
        skipped.append(SkippedFile(_relative(files_b[stem], root),
                                   f"no file named {stem}.* in {dir_a.name}/"))
      else:
        items.append(Item("a_b", _relative(files_a[stem], root), 0,
                          (str(files_a[stem]), str(files_b[stem]))))
  return items, skipped
