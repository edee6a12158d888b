"""`tp2p COMMAND [FLAGS]`: one console script for every command.

  tp2p train --config=toycats:tiny --workdir=/tmp/tiny
  tp2p predict --workdir=runs/toycats --input=sketches/ --output=out/ --style=ginger
  tp2p evaluate --workdir=runs/toycats
  tp2p export --workdir=runs/toycats --output=generator.jaxexport
  tp2p prepare --source=... --data_dir=data/cats
  tp2p import-torch --family=transpix2pix --generator=EMA_gen.pth --workdir=runs/release
  tp2p stylize --content=photo.jpg --style=painting.jpg --output=out.png
  tp2p dream --input=photo.jpg --output=dream.png
  tp2p serve --workdir=runs/toycats --port=8000

Each is also `python -m tp2p_jax.cli.<module>` (import-torch:
`tp2p_jax.cli.import_torch`); `tp2p COMMAND --help` lists its flags.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, str] = {
    "train": "tp2p_jax.cli.train",
    "predict": "tp2p_jax.cli.predict",
    "evaluate": "tp2p_jax.cli.evaluate",
    "export": "tp2p_jax.cli.export",
    "prepare": "tp2p_jax.cli.prepare",
    "import-torch": "tp2p_jax.cli.import_torch",
    "stylize": "tp2p_jax.cli.stylize",
    "dream": "tp2p_jax.cli.dream",
    "serve": "tp2p_jax.cli.serve",
}


def main(argv: list[str] | None = None) -> None:
  """Runs `COMMAND`'s `main` with argv[0] = "tp2p COMMAND" and exits with its
  status."""
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(__doc__)
    sys.exit(0 if len(argv) >= 2 else 2)
  command = argv[1]
  if command not in COMMANDS:
    print(f"error: unknown command {command!r}; commands: {', '.join(COMMANDS)}",
          file=sys.stderr)
    sys.exit(2)
  module = importlib.import_module(COMMANDS[command])
  sys.exit(module.main([f"tp2p {command}", *argv[2:]]))


if __name__ == "__main__":
  main()
