"""Where files live: a local folder or an object-store URL (`gs://BUCKET/...`).

Every path a command reads or writes goes through `path()`, an
`etils.epath.Path`: local paths are expanded (`~`) and made absolute, URLs
are kept as they are (`os.path.abspath("gs://b/run")` would make a local
folder named `gs:`). `gs://` goes through gcsfs (fsspec), which retries
transient errors (HTTP 429 and 5xx, dropped connections) itself;
checkpoints go through orbax and tensorstore, which do the same.

Object stores differ from a local disk in three ways the project relies on:
an object is visible only once its upload completed (so a single upload is
an atomic write: `atomic_files`), there is no append (so `metrics.jsonl` is
rewritten whole: `run_log`), and no rename (a "move" is a copy then a
delete: `move_tree`).

`staged_locally(url)` copies a data folder to a local cache once, for
readers that need a local file (ArrayRecord: google/array_record#120).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
from typing import Any, Union

from etils import epath

log = logging.getLogger("tp2p_jax")

PathLike = Union[str, os.PathLike, epath.Path]

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(p: PathLike) -> bool:
  """Whether `p` names an object-store location (`gs://...`, `s3://...`)."""
  return bool(_URL.match(os.fspath(p) if not isinstance(p, epath.Path) else str(p)))


def path(p: PathLike) -> epath.Path:
  """`p` as an `epath.Path`: a URL as given, a local path expanded and
  absolute."""
  if isinstance(p, epath.Path) and is_url(p):
    return p
  text = os.fspath(p) if not isinstance(p, str) else p
  if is_url(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def text(p: PathLike) -> str:
  """`path(p)` as a string for messages and libraries that take strings."""
  return str(path(p))


def join(p: PathLike, *parts: str) -> str:
  """`p` / parts as a string (URLs stay URLs)."""
  return str(path(p).joinpath(*parts))


def gcs_filesystem() -> Any:
  """The fsspec filesystem for gs:// (gcsfs), for what epath does not offer
  (conditional writes, object generations)."""
  import fsspec
  return fsspec.filesystem("gs")


def bucket_problem(url: str) -> str | None:
  """Why a gs:// URL cannot hold a run (no such bucket, no access), or None.
  Other schemes are not checked here."""
  if not url.startswith("gs://"):
    return None
  bucket = url[len("gs://"):].split("/", 1)[0]
  if not bucket:
    return "no bucket in the URL"
  try:
    fs = gcs_filesystem()
    fs.ls(bucket, detail=False)
  except FileNotFoundError:
    return f"bucket gs://{bucket} does not exist"
  except PermissionError as e:
    return f"no access to gs://{bucket} ({_first_line(e)})"
  except OSError as e:
    return f"cannot reach gs://{bucket} ({_first_line(e)})"
  return None


def _first_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return lines[0][:200] if lines else type(error).__name__


def copy_file(source: PathLike, target: PathLike) -> None:
  """Copies one file between any two locations (parent folders created)."""
  src, dst = path(source), path(target)
  dst.parent.mkdir(parents=True, exist_ok=True)
  src.copy(dst, overwrite=True)


def files_under(root: PathLike) -> list[tuple[str, int]]:
  """(relative name, size) of every file below `root`, sorted."""
  base = path(root)
  if is_url(root):
    import fsspec
    fs, _, (prefix,) = fsspec.get_fs_token_paths(str(base))
    found = fs.find(prefix, detail=True)
    return sorted((name[len(prefix):].lstrip("/"), int(info.get("size") or 0))
                  for name, info in found.items() if info.get("type") != "directory")
  out = []
  for dirpath, _, names in os.walk(os.fspath(base)):
    for name in names:
      full = os.path.join(dirpath, name)
      out.append((os.path.relpath(full, os.fspath(base)), os.path.getsize(full)))
  return sorted(out)


def move_tree(source: PathLike, target: PathLike) -> None:
  """Moves a folder: a rename on a local disk; on an object store each file
  is copied, then the source is removed (no object is ever lost: the
  copies exist before anything is deleted)."""
  src, dst = path(source), path(target)
  if not is_url(source):
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.rename(os.fspath(src), os.fspath(dst))
    return
  for name, _ in files_under(src):
    copy_file(src / name, dst / name)
  src.rmtree()


STAGED_MARKER = ".tp2p_staged.json"


def local_data_dir(data_dir: str) -> str:
  """`data_dir` itself when local; for a URL, its local copy
  (`staged_locally`): the input pipeline reads ArrayRecord files and image
  folders with random access, which array_record cannot do on an object
  store (google/array_record#120)."""
  if not data_dir or not is_url(data_dir):
    return data_dir
  return os.fspath(staged_locally(data_dir))


def staged_locally(url: str, cache_root: pathlib.Path | None = None) -> pathlib.Path:
  """A local copy of the folder at `url`, made once under `cache_root`
  (default: the project's cache folder, `caches.cache_dir()`, e.g.
  ~/.cache/tp2p_jax/staged/) and reused while the listing (names and sizes)
  is unchanged; each host of a multi-host run makes its own.

  The copy goes to a temporary folder renamed into place, so an
  interrupted copy is never taken for a complete one.

  Raises:
    FileNotFoundError: nothing under `url`.
  """
  if cache_root is None:
    from tp2p_jax.core.caches import cache_dir
    cache_root = cache_dir()
  listing = files_under(url)
  if not listing:
    raise FileNotFoundError(f"{url}: no files there")
  key = hashlib.sha256(url.encode()).hexdigest()[:16]
  target = cache_root / "staged" / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', url)[-60:]}-{key}"
  marker = target / STAGED_MARKER
  wanted = {"url": url, "files": [list(f) for f in listing]}  # as JSON reads it back
  if marker.exists():
    try:
      if json.loads(marker.read_text()) == wanted:
        log.info("data_dir %s: using its local copy in %s", url, target)
        return target
    except (OSError, ValueError):
      pass
  total = sum(size for _, size in listing)
  log.info("data_dir %s: copying %d files (%.1f MiB) to the local cache %s", url,
           len(listing), total / 2**20, target)
  staging = target.with_name(target.name + f".partial-{os.getpid()}")
  shutil.rmtree(staging, ignore_errors=True)
  for name, _ in listing:
    copy_file(f"{url.rstrip('/')}/{name}", staging / name)
  (staging / STAGED_MARKER).write_text(json.dumps(wanted))
  shutil.rmtree(target, ignore_errors=True)
  os.rename(staging, target)
  return target
