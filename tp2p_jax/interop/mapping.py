"""Turning a PyTorch state_dict into a Flax variable tree, tensor by tensor.

A network's importer lists where each PyTorch tensor goes (`StateDictMapper`
`conv`, `linear`, `batch_norm`, ... calls); the mapper converts layouts
(OIHW -> HWIO, (out, in) -> (in, out), transposed-conv kernels flipped),
checks every converted shape against the Flax module's own variable shapes
(from `jax.eval_shape`, nothing allocated), and at the end checks that every
Flax variable was filled and every PyTorch tensor used. Errors are one line
naming the tensor.

Layout conventions (PyTorch -> here):
  Conv2d.weight (O, I, kh, kw) -> kernel (kh, kw, I, O)
  ConvTranspose2d.weight (I, O, kh, kw) -> kernel (kh, kw, I, O), spatially
    flipped (flax.linen.ConvTranspose without kernel transposition, the form
    of tp2p_jax.models.convolution.ConvTransposeX2)
  Linear.weight (O, I) -> kernel (I, O)
  BatchNorm weight/bias/running_mean/running_var -> params scale/bias,
    batch_stats mean/var
"""
from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Callable, Iterable, Mapping

import flax.linen as nn
import jax
import numpy as np

Path = tuple[str, ...]
Transform = Callable[[np.ndarray], np.ndarray]


class WeightImportError(ValueError):
  """A state_dict does not fit the requested network; the message names the
  tensor and the problem in one line."""


def conv_kernel(w: np.ndarray) -> np.ndarray:
  """Conv2d weight (O, I, kh, kw) -> (kh, kw, I, O)."""
  return np.transpose(w, (2, 3, 1, 0))


def conv_transpose_kernel(w: np.ndarray) -> np.ndarray:
  """ConvTranspose2d weight (I, O, kh, kw) -> flipped (kh, kw, I, O)."""
  return np.ascontiguousarray(np.transpose(w, (2, 3, 0, 1))[::-1, ::-1])


def linear_kernel(w: np.ndarray) -> np.ndarray:
  """Linear weight (O, I) -> (I, O)."""
  return np.transpose(w, (1, 0))


def identity(w: np.ndarray) -> np.ndarray:
  return w


@dataclasses.dataclass(frozen=True)
class Conversion:
  """An imported network.

  Attributes:
    module: the Flax module, applied as in this package's own code.
    variables: {"params": ..., ["batch_stats": ...]} as numpy float32 arrays.
    sources: Flax variable path ("params/E1/conv1/conv/kernel") -> the
      PyTorch tensor name it came from.
    unused: PyTorch tensors that the original creates but never uses in its
      forward pass (or pure bookkeeping counters); reported, then dropped.
  """
  module: nn.Module
  variables: dict[str, Any]
  sources: dict[str, str]
  unused: tuple[str, ...]

  def torch_name(self, collection: str, *path: str) -> str:
    return self.sources["/".join((collection, *path))]


def strip_module_prefix(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """DataParallel checkpoints prefix every name with 'module.'; drop it."""
  if state_dict and all(k.startswith("module.") for k in state_dict):
    return {k[len("module."):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def _flatten(tree: Mapping[str, Any], prefix: Path = ()) -> dict[Path, Any]:
  out: dict[Path, Any] = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, (*prefix, k)))
    else:
      out[(*prefix, k)] = v
  return out


def _unflatten(flat: Mapping[Path, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, v in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return tree


class StateDictMapper:
  """Fills a module's variable tree from a PyTorch state_dict.

  Args:
    kind: the network kind, for messages.
    state_dict: tensor name -> numpy array.
    expected: the module's variables as shapes (`jax.eval_shape(module.init, ...)`).
    unused_patterns: fnmatch patterns of tensors the original never uses in
      its forward pass; they are reported and dropped. Bookkeeping counters
      (`*num_batches_tracked`) always are.
  """

  def __init__(self, kind: str, state_dict: Mapping[str, np.ndarray], expected: Mapping[str, Any],
               unused_patterns: Iterable[str] = ()):
    self.kind = kind
    self.state_dict = dict(state_dict)
    self.expected = {(col, *path): leaf.shape
                     for col, tree in expected.items()
                     for path, leaf in _flatten(tree).items()}
    self.unused_patterns = (*unused_patterns, "*num_batches_tracked")
    self._filled: dict[Path, np.ndarray] = {}
    self._sources: dict[Path, str] = {}
    self._used: set[str] = set()

  def has(self, name: str) -> bool:
    return name in self.state_dict

  def tensor(self, name: str) -> np.ndarray:
    """The named tensor as float32 (marked used)."""
    if name not in self.state_dict:
      raise WeightImportError(f"{self.kind}: state_dict has no tensor {name!r}")
    self._used.add(name)
    return np.asarray(self.state_dict[name], dtype=np.float32)

  def put(self, path: Path, name: str, transform: Transform = identity,
          collection: str = "params") -> None:
    """Stores transform(state_dict[name]) at collection/path, checking its shape."""
    full = (collection, *path)
    if full not in self.expected:
      raise WeightImportError(
          f"{self.kind}: tensor {name!r} maps to {'/'.join(full)}, which this network "
          "does not have (wrong kind or options?)")
    value = transform(self.tensor(name))
    if tuple(value.shape) != tuple(self.expected[full]):
      raise WeightImportError(
          f"{self.kind}: tensor {name!r} has shape {tuple(self.state_dict[name].shape)}, "
          f"which does not fit {'/'.join(full)} {tuple(self.expected[full])}")
    if full in self._filled:
      raise WeightImportError(f"{self.kind}: {'/'.join(full)} filled twice (from {name!r})")
    self._filled[full] = np.ascontiguousarray(value, dtype=np.float32)
    self._sources[full] = name

  # Layer helpers: `path` is the Flax module path, `prefix` the PyTorch one.
  def conv(self, path: Path, prefix: str, bias: bool | None = None) -> None:
    """Conv2d -> {kernel, bias}; bias=None takes it when the state_dict has it."""
    self.put((*path, "kernel"), f"{prefix}.weight", conv_kernel)
    if bias or (bias is None and self.has(f"{prefix}.bias")):
      self.put((*path, "bias"), f"{prefix}.bias")

  def conv_transpose(self, path: Path, prefix: str, bias: bool | None = None) -> None:
    self.put((*path, "kernel"), f"{prefix}.weight", conv_transpose_kernel)
    if bias or (bias is None and self.has(f"{prefix}.bias")):
      self.put((*path, "bias"), f"{prefix}.bias")

  def linear(self, path: Path, prefix: str, bias: bool | None = None,
             transform: Transform = linear_kernel) -> None:
    self.put((*path, "kernel"), f"{prefix}.weight", transform)
    if bias or (bias is None and self.has(f"{prefix}.bias")):
      self.put((*path, "bias"), f"{prefix}.bias")

  def batch_norm(self, path: Path, prefix: str) -> None:
    """BatchNorm{1,2}d with affine parameters and running statistics."""
    self.put((*path, "scale"), f"{prefix}.weight")
    self.put((*path, "bias"), f"{prefix}.bias")
    self.put((*path, "mean"), f"{prefix}.running_mean", collection="batch_stats")
    self.put((*path, "var"), f"{prefix}.running_var", collection="batch_stats")

  def layer_norm(self, path: Path, prefix: str) -> None:
    self.put((*path, "scale"), f"{prefix}.weight")
    self.put((*path, "bias"), f"{prefix}.bias")

  def result(self, module: nn.Module) -> Conversion:
    missing = [p for p in self.expected if p not in self._filled]
    if missing:
      raise WeightImportError(
          f"{self.kind}: nothing in the state_dict fills {'/'.join(missing[0])}"
          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    leftover = [n for n in self.state_dict if n not in self._used]
    unused = [n for n in leftover if any(fnmatch.fnmatchcase(n, p) for p in self.unused_patterns)]
    unknown = [n for n in leftover if n not in unused]
    if unknown:
      raise WeightImportError(
          f"{self.kind}: tensor {unknown[0]!r} {tuple(np.shape(self.state_dict[unknown[0]]))} "
          f"has no place in this network" + (f" (and {len(unknown) - 1} more)"
                                               if len(unknown) > 1 else "")
          + " (wrong kind or options?)")
    variables = _unflatten(self._filled)
    sources = {"/".join(p): n for p, n in self._sources.items()}
    return Conversion(module, variables, sources, tuple(unused))


def expected_variables(module: nn.Module, *args: Any, **kwargs: Any) -> dict[str, Any]:
  """The module's variable shapes for these inputs (nothing is computed)."""
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  shapes = jax.eval_shape(lambda: module.init(rngs, *args, **kwargs))
  return {col: jax.tree_util.tree_map(lambda x: x, tree) for col, tree in shapes.items()}
