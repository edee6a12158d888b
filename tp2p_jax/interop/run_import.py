"""PyTorch checkpoints of the original releases -> a run directory in the
trainer's format (the library behind `python -m tp2p_jax.cli.import_torch`,
whose docstring describes what is imported and how).

`import_run(family, workdir, generator, ...)` converts the files, builds the
run's config from the family's experiment config and writes one checkpoint;
`report(result)` describes the result in lines of text.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import shlex
import textwrap
from typing import Any, Mapping, Sequence, Union

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from tp2p_jax.interop.mapping import Conversion, WeightImportError
from tp2p_jax.interop.pth_reader import read_state_dict
from tp2p_jax.interop.torch_weights import convert
from tp2p_jax import methods
from tp2p_jax.core import config_files, storage
from tp2p_jax.core.checkpoints import Checkpointer
from tp2p_jax.core.run_dir import config_to_dict, save_run_config
from tp2p_jax.methods.imported_weights import (ImportedWeights, ImportedWeightsError,
                                               module_kwargs)

Source = Union[str, os.PathLike, Mapping[str, Any]]

# Stored where the trainer keeps the data iterator's position: an imported
# run has read no data. It is no position grain can restore, so run_train.py
# does not continue training from an imported run.
IMPORTED_DATA_STATE = json.dumps({"imported_from": "pytorch"})


@dataclasses.dataclass(frozen=True)
class Family:
  """Attributes:
    config: the experiment config (its name) the run's config starts from.
    generators: converter kinds a generator file may be, tried in order.
    discriminator: the converter kind of its discriminator.
    method: the method whose runs the release's files become (its
      `imported_state` turns the converted networks into its state).
    roles: the files a run of the family may take beside the generator.
  """
  config: str
  generators: tuple[str, ...]
  discriminator: str
  method: str = "paired_gan"
  roles: tuple[str, ...] = ("discriminator",)


FAMILIES: dict[str, Family] = {
    "transpix2pix": Family("transpix2pix", ("transpix2pix_generator",),
                           "transpix2pix_discriminator",
                           roles=("discriminator", "style_encoder")),
    "pix2pix": Family("pix2pix", ("unet_256", "unet_128", "resnet_9blocks", "resnet_6blocks"),
                      "patchgan"),
    "pix2pixhd": Family("pix2pixhd", ("pix2pixhd_local", "pix2pixhd_global"),
                        "pix2pixhd_multiscale_discriminator"),
    "cyclegan": Family("cyclegan", ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128"),
                       "patchgan", method="cyclegan",
                       roles=("discriminator", "generator_b", "discriminator_b")),
}

# Converter kind -> registry name in tp2p_jax.models (config.generator /
# config.discriminator).
GENERATOR_NAMES = {"transpix2pix_generator": "transpix2pix", "unet_256": "unet_256",
                   "unet_128": "unet_128", "resnet_9blocks": "resnet_9blocks",
                   "resnet_6blocks": "resnet_6blocks", "pix2pixhd_global": "pix2pixhd",
                   "pix2pixhd_local": "pix2pixhd"}
DISCRIMINATOR_NAMES = {"transpix2pix_discriminator": "patchgan", "patchgan": "patchgan",
                       "pix2pixhd_multiscale_discriminator": "multiscale_patchgan"}
STYLE_ENCODER_KIND = "transpix2pix_style_encoder"

# What each role is, for messages; CycleGAN's discriminators are named after
# the domain they judge (the release's netD_A judges B images).
ROLE_TITLES = {"generator": "generator", "generator_b": "generator B->A",
               "discriminator": "discriminator", "discriminator_b": "discriminator B",
               "style_encoder": "style encoder"}
CYCLEGAN_TITLES = {"generator": "G_AB (netG_A, A->B)", "generator_b": "G_BA (netG_B, B->A)",
                   "discriminator": "D of domain B (netD_A)",
                   "discriminator_b": "D of domain A (netD_B)"}

class ImportRunError(ValueError):
  """A request that cannot become a run; the message is one line."""


@dataclasses.dataclass(frozen=True)
class ImportedRun:
  """The result of `import_run`.

  Attributes:
    workdir: the run directory written.
    family: "transpix2pix" | "pix2pix" | "pix2pixhd" | "cyclegan".
    config: the run's config (as saved in `config.json`).
    step: the checkpoint's step.
    conversions: role ("generator", "generator_b", "discriminator",
      "discriminator_b", "style_encoder") -> its `Conversion`.
    kinds: role -> converter kind.
    sources: role -> file (absolute path, or "<state_dict>").
    fresh: roles initialised from the config, not imported.
  """
  workdir: str
  family: str
  config: ml_collections.ConfigDict
  step: int
  conversions: dict[str, Conversion]
  kinds: dict[str, str]
  sources: dict[str, str]
  fresh: tuple[str, ...]


# --- reading and converting ----------------------------------------------------


def _label(source: Source) -> str:
  if isinstance(source, Mapping):
    return "<state_dict>"
  return storage.text(os.fspath(source))


def _state_dict(source: Source) -> dict[str, np.ndarray]:
  if isinstance(source, Mapping):
    return {str(k): np.asarray(v) for k, v in source.items()}
  return read_state_dict(_label(source))  # CheckpointFormatError names the file


def _convert_one(role: str, label: str, state_dict: Mapping[str, np.ndarray],
                 kinds: Sequence[str], options: Mapping[str, dict[str, Any]],
                 what: str) -> tuple[str, Conversion]:
  """Converts with the first kind that fits; a one-line error naming the file
  otherwise (the most specific converter message: one that recognised the
  network but found something off, else the first)."""
  errors = []
  for kind in kinds:
    try:
      return kind, convert(kind, state_dict, **options.get(kind, {}))
    except WeightImportError as e:
      errors.append(str(e))
  if len(kinds) == 1:
    raise ImportRunError(f"{label} (--{role}): {errors[0]}")
  specific = [e for e in errors if "(not " not in e]
  if specific:
    raise ImportRunError(f"{label} (--{role}): {specific[0]} (--netG chooses the kind)")
  raise ImportRunError(f"{label} (--{role}): not {what} (tried {', '.join(kinds)}): "
                       f"{errors[0]}")


# --- the run's config --------------------------------------------------------------


def default_config_path(family: str) -> str:
  """The file of the family's experiment config (experiments/<family>.py)."""
  return config_files.path_of(FAMILIES[family].config)


def load_family_config(family: str) -> ml_collections.ConfigDict:
  """`get_config()` of the family's experiment file."""
  if family not in FAMILIES:
    raise ImportRunError(f"unknown --family {family!r}; expected one of {sorted(FAMILIES)}")
  module = importlib.import_module(f"{config_files.PACKAGE}.{FAMILIES[family].config}")
  return module.get_config()


def _required_multiple(module: nn.Module) -> int:
  """The side every input image must be a multiple of (its downsampling)."""
  for attrs in (("num_downs",), ("n_downsampling",),
                ("n_downsample_global", "n_local_enhancers")):
    if all(hasattr(module, a) for a in attrs):
      return 2 ** sum(int(getattr(module, a)) for a in attrs)
  return 1


def _class_names(config: ml_collections.ConfigDict, num_classes: int | None,
                 encoder_label: str) -> list[str]:
  """Style classes of an imported TransPix2Pix run: the dataset's when the
  config names one (they must match the encoder's class count), else the
  config's names if their count fits the encoder, else class_0, class_1 ..."""
  from tp2p_jax.data.sources import class_names
  from tp2p_jax.inference.run_loading import names_no_dataset
  data = config.data
  if not names_no_dataset(config):
    try:
      names = list(class_names(data))
    except (OSError, ValueError) as e:
      raise ImportRunError(f"config.data ({data.source} {data.get('data_dir', '')!r}): cannot "
                           f"read the class names: {_first_line(e)}") from None
    if num_classes is not None and len(names) != num_classes:
      raise ImportRunError(f"{encoder_label} (--style_encoder): the encoder has {num_classes} "
                           f"classes, the dataset {data.get('data_dir') or data.source} "
                           f"{len(names)} ({', '.join(names)})")
    return names
  names = list(data.style_names)
  if num_classes is None or len(names) == num_classes:
    return names
  return [f"class_{i}" for i in range(num_classes)]


def _first_line(error: BaseException) -> str:
  return (str(error) or type(error).__name__).splitlines()[0]


def _replace(config: ml_collections.ConfigDict, field: str, values: Mapping[str, Any]) -> None:
  config[field] = ml_collections.ConfigDict(dict(values))


def build_config(family: str, base: ml_collections.ConfigDict,
                 conversions: Mapping[str, Conversion], kinds: Mapping[str, str],
                 sources: Mapping[str, str], fresh: Sequence[str], step: int
                 ) -> ml_collections.ConfigDict:
  """The run's config: `base` with the generator, discriminator and style
  fields read off the imported modules, and an `imported` section (family,
  files, kinds, the networks initialised from the config, step)."""
  config = ml_collections.ConfigDict(config_to_dict(base))  # an unlocked copy
  g = conversions["generator"].module
  if family == "transpix2pix":
    if "style" not in config:
      raise ImportRunError("--config has no `style` section: TransPix2Pix imports start from "
                           "--config=transpix2pix")
    config.image_size = int(g.image_size)
    config.generator = GENERATOR_NAMES[kinds["generator"]]
    _replace(config, "generator_kwargs", module_kwargs(g, skip=("image_size", "style_dim")))
    config.style.embedding_dim = int(g.style_dim)
    encoder = conversions.get("style_encoder")
    num_classes = None
    if encoder is not None:
      e = encoder.module
      if int(e.embedding_dim) != int(g.style_dim):
        raise ImportRunError(
            f"{sources['style_encoder']} (--style_encoder): its embeddings are "
            f"{e.embedding_dim}-d, the generator {sources['generator']} takes "
            f"{g.style_dim}-d styles: not a matching pair")
      config.style.image_size = int(e.image_size)
      config.style.block_features = [int(b) for b in e.block_features]
      config.style.hidden = int(e.hidden)
      config.style.scale = float(e.scale)
      num_classes = int(e.num_classes)
    config.data.style_names = _class_names(config, num_classes,
                                           sources.get("style_encoder", ""))
  else:
    fam = FAMILIES[family]
    if config.get("method", "paired_gan") != fam.method:
      raise ImportRunError(f"--config is a {config.get('method', 'paired_gan')} config, "
                           f"--family={family} makes a {fam.method} run: start from "
                           f"--config={fam.config}")
    config.generator = GENERATOR_NAMES[kinds["generator"]]
    _replace(config, "generator_kwargs", module_kwargs(g))
    multiple = _required_multiple(g)
    if config.image_size % multiple:
      raise ImportRunError(
          f"the {kinds['generator']} generator takes images whose sides are multiples of "
          f"{multiple}; the config's image_size is {config.image_size}: pass "
          f"--config.image_size={max(multiple, config.image_size // multiple * multiple)}")
  d = conversions.get("discriminator")
  if d is not None:
    config.discriminator = DISCRIMINATOR_NAMES[kinds["discriminator"]]
    kwargs = module_kwargs(d.module)
    if config.discriminator == "multiscale_patchgan":
      # The scale count is a top-level field (see networks.discriminator_from_config).
      config.num_d = int(kwargs.pop("num_d"))
    _replace(config, "discriminator_kwargs", kwargs)
  config.imported = ml_collections.ConfigDict({
      "family": family, "files": dict(sources), "kinds": dict(kinds), "fresh": list(fresh),
      "step": int(step)})
  return config


# --- the train state --------------------------------------------------------------


def _role_label(config: ml_collections.ConfigDict, role: str,
                titles: Mapping[str, str] = ROLE_TITLES) -> str:
  """A network and its file, for messages."""
  source = config.imported.files.get(role)
  return f"{titles[role]} {source}" if source else f"{titles[role]} (initialised)"


def train_state(family: str, config: ml_collections.ConfigDict,
                conversions: Mapping[str, Conversion], step: int) -> Any:
  """The run's train state: the method's `imported_state` of the converted
  networks (the others initialised as a fresh run of `config` would)."""
  fam = FAMILIES[family]
  titles = CYCLEGAN_TITLES if "generator_b" in fam.roles else ROLE_TITLES
  weights = ImportedWeights(
      modules={r: c.module for r, c in conversions.items()},
      variables={r: c.variables for r, c in conversions.items()},
      labels={r: _role_label(config, r, titles) for r in ("generator",) + fam.roles}, step=step)
  try:
    return methods.get(config.method).imported_state(config, weights)
  except ImportedWeightsError as e:
    raise ImportRunError(str(e)) from None


# --- the run directory -------------------------------------------------------------


def _check_workdir(workdir: str, overwrite: bool) -> bool:
  """Whether an existing run directory is to be replaced; refuses a file, a
  non-empty directory without --overwrite, and any non-empty directory
  that holds no run (no config.json or checkpoints/)."""
  root = storage.path(workdir)
  if root.exists() and not root.is_dir():
    raise ImportRunError(f"{workdir}: exists and is not a directory (--workdir)")
  if not root.is_dir() or not any(True for _ in root.iterdir()):
    return False
  if not overwrite:
    raise ImportRunError(f"{workdir}: not empty; choose another --workdir, or pass --overwrite "
                         "to replace the run in it")
  if not ((root / "config.json").is_file() or (root / "checkpoints").is_dir()):
    raise ImportRunError(f"{workdir}: not empty and not a run directory (no config.json or "
                         "checkpoints/); --overwrite replaces run directories only")
  return True


def parse_step(source: Source) -> int:
  """N of a release file name `..._iter_N.pth` (EMA_gen_iter_400000.pth), else 0."""
  if isinstance(source, Mapping):
    return 0
  match = re.search(r"iter_(\d+)", os.path.basename(os.fspath(source)))
  return int(match.group(1)) if match else 0


def import_run(family: str, workdir: str, generator: Source, *,
               discriminator: Source | None = None, style_encoder: Source | None = None,
               generator_b: Source | None = None, discriminator_b: Source | None = None,
               config: ml_collections.ConfigDict | None = None,
               generator_kind: str | None = None, step: int | None = None,
               overwrite: bool = False, transformer_heads: int = 8,
               attention_layout: str = "release", use_dropout: bool = True) -> ImportedRun:
  """Converts PyTorch checkpoints and writes them as a run directory.

  Args:
    family: "transpix2pix" | "pix2pix" | "pix2pixhd" | "cyclegan".
    workdir: the run directory to write (absent or empty, or a previous run
      with `overwrite`).
    generator: the generator's .pth path or state_dict (CycleGAN: netG_A,
      A -> B).
    discriminator: the discriminator's (CycleGAN: netD_A, which judges B).
    style_encoder: the CosFace encoder's (TransPix2Pix only).
    generator_b, discriminator_b: CycleGAN's netG_B (B -> A) and netD_B.
    config: the config to start from (default: the family's experiment).
    generator_kind: a converter kind of the family (default: the first of
      the family's kinds that fits the file).
    step: the checkpoint step (default: N of `iter_N` in the generator's
      file name, else 0).
    overwrite: replace a previous run in `workdir`.
    transformer_heads, attention_layout: TransPix2Pix generator options
      the tensors do not record (the release: 8, "release").
    use_dropout: U-Net generators: dropout in train mode (junyanz's
      --no_dropout is False).

  Returns:
    What was written (see `ImportedRun`).

  Raises:
    ImportRunError, WeightImportError, CheckpointFormatError: one line each.
  """
  if family not in FAMILIES:
    raise ImportRunError(f"unknown --family {family!r}; expected one of {sorted(FAMILIES)}")
  fam = FAMILIES[family]
  given = {"generator": generator, "discriminator": discriminator,
           "style_encoder": style_encoder, "generator_b": generator_b,
           "discriminator_b": discriminator_b}
  allowed = {"generator", *fam.roles}
  for role, source in given.items():
    if source is not None and role not in allowed:
      raise ImportRunError(f"--{role} is not part of a {family} run")
  sources = {role: source for role, source in given.items() if source is not None}
  if generator_kind is not None and generator_kind not in fam.generators:
    raise ImportRunError(f"--netG={generator_kind} is not a {family} generator; expected one "
                         f"of {', '.join(fam.generators)}")
  for role, source in sources.items():
    if not isinstance(source, Mapping) and not storage.path(_label(source)).is_file():
      raise ImportRunError(f"{_label(source)}: no such file (--{role})")
  workdir = storage.text(workdir)
  replace = _check_workdir(workdir, overwrite)
  if config is None:
    config = load_family_config(family)
  step = parse_step(generator) if step is None else int(step)
  if step < 0:
    raise ImportRunError(f"--step must be >= 0, got {step}")

  options = {"transpix2pix_generator": {"transformer_heads": transformer_heads,
                                        "attention_layout": attention_layout},
             "unet_256": {"use_dropout": use_dropout},
             "unet_128": {"use_dropout": use_dropout}}
  state_dicts = {role: _state_dict(source) for role, source in sources.items()}
  labels = {role: _label(source) for role, source in sources.items()}
  conversions: dict[str, Conversion] = {}
  kinds: dict[str, str] = {}
  for role in ("generator", "generator_b"):
    if role in sources:
      candidates = (generator_kind,) if generator_kind else fam.generators
      if role == "generator_b":
        candidates = (kinds["generator"],)  # one generator config for both directions
      kinds[role], conversions[role] = _convert_one(
          role, labels[role], state_dicts[role], candidates, options, f"a {family} generator")
  for role in ("discriminator", "discriminator_b"):
    if role in sources:
      kinds[role], conversions[role] = _convert_one(
          role, labels[role], state_dicts[role], (fam.discriminator,), options,
          f"a {family} discriminator")
  if "style_encoder" in sources:
    kinds["style_encoder"], conversions["style_encoder"] = _convert_one(
        "style_encoder", labels["style_encoder"], state_dicts["style_encoder"],
        (STYLE_ENCODER_KIND,), options, "a style encoder")
  del state_dicts

  fresh = tuple(role for role in sorted(allowed, key=list(given).index) if role not in sources)
  run_config = build_config(family, config, conversions, kinds, labels, fresh, step)
  state = train_state(family, run_config, conversions, step)

  if replace:
    storage.path(workdir).rmtree()
  storage.path(workdir).mkdir(parents=True, exist_ok=True)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"),
                      keep=int(run_config.get("keep_checkpoints", 3)), writer=True)
  try:
    ckpt.save(step, state, IMPORTED_DATA_STATE, config_to_dict(run_config))
  finally:
    ckpt.close()
  # config.json last: a directory with one holds a complete run.
  save_run_config(workdir, run_config)
  return ImportedRun(workdir=workdir, family=family, config=run_config, step=step,
                     conversions=conversions, kinds=kinds, sources=labels, fresh=fresh)


# --- the report ----------------------------------------------------------------------


def _count(tree: Any) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def _wrapped(text: str, indent: str) -> list[str]:
  return textwrap.wrap(text, width=100, initial_indent=indent, subsequent_indent=indent + "  ",
                       break_on_hyphens=False)


def report(result: ImportedRun) -> list[str]:
  """The lines the CLI prints: what was imported from where, the tensors
  dropped, the networks initialised instead, and the next command."""
  two_way = result.family == "cyclegan"
  titles = CYCLEGAN_TITLES if two_way else ROLE_TITLES
  lines = [f"imported a {result.family} run into {result.workdir} (step {result.step}):"]
  for role, conversion in result.conversions.items():
    params = _count(conversion.variables["params"])
    stats = _count(conversion.variables.get("batch_stats", {}))
    module = conversion.module
    lines.append(f"  {titles[role]}: {result.sources[role]}")
    lines.extend(_wrapped(
        f"as {result.kinds[role]} ({type(module).__name__}), {params:,} parameters"
        + (f" + {stats:,} BatchNorm statistics" if stats else "")
        + ("; the trained and the EMA weights" if role.startswith("generator") else ""),
        "    "))
    if conversion.unused:
      # BatchNorm's counters are listed as a count: one per norm layer.
      counters = [u for u in conversion.unused if u.endswith(".num_batches_tracked")]
      named = [u for u in conversion.unused if u not in counters]
      parts = named + ([f"{len(counters)} BatchNorm counters (*.num_batches_tracked)"]
                       if counters else [])
      lines.extend(_wrapped(f"dropped {len(conversion.unused)} tensor(s) the original never "
                            f"uses: {', '.join(parts)}", "    "))
  for role in result.fresh:
    lines.append(f"  {titles[role]}: not given (--{role}); initialised from the config as a "
                 "fresh run would")
  lines.append("  optimiser states: fresh; checkpoint and config in "
               f"{os.path.join(result.workdir, 'checkpoints', str(result.step))}, "
               f"{os.path.join(result.workdir, 'config.json')}")
  if "generator_b" in result.fresh:
    lines.append("  note: G_BA is untrained, so only --direction=AtoB translates")
  if "style_encoder" in result.fresh:
    dim = result.config.style.embedding_dim
    lines.append(f"  note: no style encoder, so predict cannot style this run: the generator "
                 f"needs {dim}-d style embeddings (from the encoder it was trained with) or a "
                 "style encoder (import again with --style_encoder=STYLE.pth)")
  elif result.family == "transpix2pix":
    from tp2p_jax.inference.run_loading import names_no_dataset
    if names_no_dataset(result.config):
      lines.extend(_wrapped(
          "note: the release has no class-average style embeddings: predict styles by a "
          "reference photo (--style_image=PHOTO, through the imported encoder); --style, "
          "--style_mix, --grid and evaluate need the training data (import with "
          "--config.data.data_dir=DATASET)", "  "))
  workdir = shlex.quote(result.workdir)
  lines.append("next:")
  if result.family == "transpix2pix" and "style_encoder" in result.fresh:
    lines.append(f"  python -m tp2p_jax.cli.export --workdir={workdir} --output=generator.jaxexport"
                 "   # call it with (sketches, style embeddings)")
  elif result.family == "transpix2pix":
    lines.append(f"  python -m tp2p_jax.cli.predict --workdir={workdir} --input=SKETCHES "
                 "--output=OUT --style_image=PHOTO")
  elif two_way:
    directions = ["AtoB"] + ([] if "generator_b" in result.fresh else ["BtoA"])
    for direction in directions:
      lines.append(f"  python -m tp2p_jax.cli.predict --workdir={workdir} --input=IMAGES "
                   f"--output=OUT --direction={direction}")
  else:
    lines.append(f"  python -m tp2p_jax.cli.predict --workdir={workdir} --input=SKETCHES "
                 "--output=OUT")
  return lines
