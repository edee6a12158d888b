"""A Cloud Storage JSON API server on 127.0.0.1 for the tests of `gs://` run
directories: the PyPI `gcp-storage-emulator`, with two behaviours of the
real service that it lacks and that the project relies on.

- Downloads carry the object's `x-goog-generation` header. tensorstore (the
  orbax checkpoint writer) reads generations from it; without it, a
  checkpoint's OCDBT manifest read fails with "Malformed StorageGeneration"
  as soon as reads and writes interleave.
- Uploads and deletes honour `ifGenerationMatch` (0: only if absent), with
  HTTP 412 otherwise, atomically (requests are handled one at a time):
  the run directory's lock object and OCDBT's manifest updates are
  conditional writes.

  python -m tests.gcs_server --port=PORT --bucket=NAME

Used by the `gcs` fixture (tests/conftest.py), which starts it on a free
port and points gcsfs (`STORAGE_EMULATOR_HOST`) and tensorstore
(`TENSORSTORE_GCS_HTTP_URL`, `GOOGLE_AUTH_TOKEN_FOR_TESTING`) at it.
"""
from __future__ import annotations

import argparse
import json
import threading
from http import HTTPStatus
from typing import Any, Callable

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_WRITES = threading.RLock()


def _object_name(request: Any) -> str | None:
  if "name" in request.query:
    return request.query["name"][0]
  data = request.data
  if isinstance(data, dict) and isinstance(data.get("meta"), dict):
    return data["meta"].get("name")
  return request.params.get("object_id")


def _precondition_fails(request: Any, storage: Any, name: str | None) -> bool:
  wanted = request.query.get("ifGenerationMatch")
  if not wanted or name is None:
    return False
  try:
    current = str(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
  except NotFound:
    current = "0"
  return current != wanted[0]


def _refuse(response: Any) -> None:
  response.status = HTTPStatus.PRECONDITION_FAILED
  response.json({"error": {"code": 412, "message": "Precondition Failed"}})


def _conditional(handler: Callable[..., Any]) -> Callable[..., Any]:
  def wrapped(request, response, storage, *args, **kwargs):
    with _WRITES:
      if _precondition_fails(request, storage, _object_name(request)):
        return _refuse(response)
      return handler(request, response, storage, *args, **kwargs)
  return wrapped


def _with_generation(handler: Callable[..., Any]) -> Callable[..., Any]:
  def wrapped(request, response, storage, *args, **kwargs):
    result = handler(request, response, storage, *args, **kwargs)
    try:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except (NotFound, KeyError):
      return result
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
    return result
  return wrapped


# The server module builds its routing table from these names when it is
# imported, so they are replaced first.
objects.insert = _conditional(objects.insert)
objects.delete = _conditional(objects.delete)
objects.download = _with_generation(objects.download)

from gcp_storage_emulator import server as emulator_server  # noqa: E402
from gcp_storage_emulator.server import create_server  # noqa: E402

# One thread per connection, one request at a time: the emulator's own
# server serves one connection until the client closes it, so a client
# with several keep-alive connections (gcsfs, tensorstore) waits on each
# idle one in turn (77 small uploads took 107 s instead of 2).
_REQUESTS = threading.RLock()
_handle = emulator_server.Router.handle


def _handle_one_at_a_time(self, method):
  with _REQUESTS:
    return _handle(self, method)


emulator_server.Router.handle = _handle_one_at_a_time
emulator_server.server.HTTPServer = emulator_server.server.ThreadingHTTPServer

# The emulator rewrites a JSON of every object's metadata after each write,
# so that a server on disk survives a restart; in memory that only makes
# each write cost O(objects) (a session's later tests ran 4-8x slower).
from gcp_storage_emulator.storage import Storage  # noqa: E402

Storage._write_config_to_file = lambda self: None


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--bucket", default="tp2p-test-bucket")
  args = parser.parse_args()
  server = create_server("127.0.0.1", args.port, in_memory=True,
                         default_bucket=args.bucket)
  server.start()
  print(json.dumps({"port": args.port, "bucket": args.bucket}), flush=True)
  try:
    threading.Event().wait()
  finally:
    server.stop()


if __name__ == "__main__":
  main()
