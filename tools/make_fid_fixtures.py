"""Writes the FID golden fixtures from pytorch-fid's own code (PyPI
`pytorch-fid`, 0.3.0): pytorch-fid's InceptionV3 (the FID variant, blocks
FIDInceptionA/C/E_1/E_2, its bilinear resize and its 2 x - 1 normalisation)
on seeded random weights. Needs torch, torchvision and pytorch-fid (CPU);
nothing is downloaded: pytorch-fid's weight download is replaced by the
synthetic weights.

  pip install pytorch-fid==0.3.0   # in a torch environment, not the project's
  python tools/make_fid_fixtures.py [--out tests/golden]

Writes:

  fid_inception.npz: the layout (pytorch-fid's state_dict names and shapes,
    what pt_inception-2015-12-05-6726825d.pth holds), the weight recipe
    (tp2p_jax/interop/synthetic.py with BatchNorm scales times
    BN_WEIGHT_GAIN, so that activations neither vanish nor explode over the
    network's depth; the recipe's running statistics are far from (0, 1)),
    uint8 NHWC inputs at 64x64, 256x256 and 299x299 (batch 2: noise and a
    smooth pattern; pytorch-fid reads images as k / 255 in [0, 1]), a
    subsample of pytorch-fid's resized and normalised network input, and
    the pool3 features. The 95 MB of weights are not stored: both sides
    rebuild them from the recipe.
  fid_inception_pytorch_fid_layout.pth: a torch.save state_dict with every
    key and shape of pytorch-fid's weight file (fc.* and
    num_batches_tracked included) whose tensors are strided views into a few
    small shared storages (1 MB in all), and in fid_inception.npz the
    features pytorch-fid computes with it: the file a user would pass to
    `evaluate --inception_weights`.

The suite checks them without torch: python -m pytest tests/test_fid_golden.py
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
from unittest import mock

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tp2p_jax.interop.synthetic import synthetic_state_dict  # noqa: E402

BN_WEIGHT_GAIN = 4.0
SIZES = (64, 256, 299)
BATCH = 2
# Rows/columns of pytorch-fid's 299x299 network input stored for the fast check.
RESIZE_STEP = 7
PTH_INPUT_SIZE = 64


def recipe_state_dict(layout: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
  """The golden weights: the shared recipe, BatchNorm scales x BN_WEIGHT_GAIN."""
  sd = synthetic_state_dict(layout)
  return {k: v * np.float32(BN_WEIGHT_GAIN) if k.endswith(".bn.weight") else v
          for k, v in sd.items()}


def images(size: int, seed: int) -> np.ndarray:
  """(BATCH, size, size, 3) uint8: uniform noise, and a smooth colour
  pattern with mild noise."""
  rng = np.random.default_rng(seed)
  noise = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
  t = np.linspace(0.0, 1.0, size)
  yy, xx = np.meshgrid(t, t, indexing="ij")
  pattern = np.stack([0.5 + 0.4 * np.sin(6 * xx + 3 * yy), yy, 0.5 + 0.4 * np.cos(9 * xx * yy)],
                     axis=-1)
  pattern = np.clip(pattern * 255 + rng.normal(0, 8, pattern.shape), 0, 255).astype(np.uint8)
  return np.stack([noise, pattern])


def upsample2(x: np.ndarray) -> np.ndarray:
  """(B, H, W, C) -> (B, 2 H, 2 W, C), nearest neighbour."""
  return x.repeat(2, axis=1).repeat(2, axis=2)


def strided_state_dict(torch, layout: dict[str, tuple[int, ...]], seed: int) -> dict:
  """Tensors of `layout` as strided views into small shared storages.

  Conv and linear weights view one N(0, 1) pool with distinct per-dimension
  strides (so any transposition changes the values); BatchNorm running
  variances take a window of a log-spaced pool near fan_in / 2 of their
  conv (that is what unit-variance inputs give through N(0, 1) weights),
  running means the same window of a pool scaled to match; scales and
  biases view pools of U(0.8, 1.6) and N(0, 0.1).
  """
  rng = np.random.default_rng(seed)
  n_w, n_stat = 2 ** 17, 2 ** 14
  pool_w = torch.from_numpy(rng.standard_normal(n_w).astype(np.float32))
  log_lo, log_hi = math.log(0.5), math.log(8000.0)
  levels = np.exp(np.linspace(log_lo, log_hi, n_stat))
  pool_var = torch.from_numpy((levels * rng.uniform(0.8, 1.2, n_stat)).astype(np.float32))
  pool_mean = torch.from_numpy(
      (rng.standard_normal(n_stat) * 0.3 * np.sqrt(levels)).astype(np.float32))
  pool_scale = torch.from_numpy(rng.uniform(0.8, 1.6, 4096).astype(np.float32))
  pool_bias = torch.from_numpy(rng.normal(0.0, 0.1, 4096).astype(np.float32))
  out = {}
  for name, shape in layout.items():
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
      out[name] = torch.zeros(shape, dtype=torch.int64)
    elif len(shape) > 1:
      dims = [d for d in shape]
      strides = [1] * len(dims)
      used = {1}
      for j in range(len(dims) - 2, -1, -1):
        limit = max(2, (n_w // 2) // (len(dims) * max(dims[j] - 1, 1)))
        s = int(rng.integers(2, limit + 1))
        while s in used:
          s = s + 1
        used.add(s)
        strides[j] = s
      extent = sum((d - 1) * s for d, s in zip(dims, strides)) + 1
      assert extent <= n_w, (name, extent)
      offset = int(rng.integers(0, n_w - extent + 1))
      out[name] = pool_w.as_strided(shape, strides, offset)
    else:
      (c,) = shape
      if leaf in ("running_var", "running_mean"):
        conv = layout[name.rsplit(".", 2)[0] + ".conv.weight"]
        fan_in = math.prod(conv[1:])
        target = (math.log(fan_in / 2) - log_lo) / (log_hi - log_lo) * (n_stat - 1)
        offset = int(min(max(target - c / 2, 0), n_stat - c))
        pool = pool_var if leaf == "running_var" else pool_mean
        out[name] = pool.as_strided(shape, (1,), offset)
      else:
        pool = pool_scale if leaf == "weight" and ".bn." in name else pool_bias
        out[name] = pool.as_strided(shape, (1,), int(rng.integers(0, 4096 - c + 1)))
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", type=pathlib.Path,
                      default=pathlib.Path(__file__).resolve().parents[1] / "tests" / "golden")
  args = parser.parse_args()

  import torch
  import torch.nn.functional as F
  import pytorch_fid
  import pytorch_fid.inception as pfi
  torch.manual_seed(0)

  # fid_inception_v3's layout (pytorch-fid's weight file), read off the
  # module it builds, with the download and the load stubbed out.
  with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: {}), \
       mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, *a, **k: None):
    layout = {k: tuple(v.shape) for k, v in pfi.fid_inception_v3().state_dict().items()}

  def network(state_dict: dict) -> torch.nn.Module:
    """pytorch-fid's FID network as users build it, with `state_dict` in
    place of the downloaded weight file."""
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: state_dict):
      net = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True,
                            normalize_input=True, use_fid_inception=True)
    return net.eval()

  def features(net: torch.nn.Module, x_uint8: np.ndarray,
               with_features: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    x = torch.from_numpy(x_uint8).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
      f = net(x)[0][:, :, 0, 0].numpy() if with_features else None
      resized = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    return f, resized.permute(0, 2, 3, 1).numpy()

  net = network({k: torch.from_numpy(v) for k, v in recipe_state_dict(layout).items()})
  data: dict[str, np.ndarray] = {}
  for size in SIZES:
    x = images(size, seed=size)
    f, resized = features(net, x)
    data[f"input/{size}"] = x
    data[f"features/{size}"] = f
    data[f"resized/{size}"] = resized[:, ::RESIZE_STEP, ::RESIZE_STEP]
    if size == 256:
      # Downsampling too (antialiasing would matter here): the 256 input
      # nearest-upsampled to 512, rebuilt the same way by the test.
      _, resized = features(net, upsample2(x), with_features=False)
      data["resized/512"] = resized[:, ::RESIZE_STEP, ::RESIZE_STEP]
    print(f"{size}: features max {np.abs(f).max():.3g}, "
          f"images differ by {np.abs(f[0] - f[1]).max() / np.abs(f).max():.3g} (rel)")

  pth = args.out / "fid_inception_pytorch_fid_layout.pth"
  strided = strided_state_dict(torch, layout, seed=1)
  torch.save(strided, pth)
  loaded = torch.load(pth, map_location="cpu", weights_only=True)
  assert list(loaded) == list(layout)
  f, _ = features(network(loaded), data[f"input/{PTH_INPUT_SIZE}"])
  data[f"pth_features/{PTH_INPUT_SIZE}"] = f
  print(f"{pth}: {pth.stat().st_size / 1e6:.2f} MB, features max {np.abs(f).max():.3g}, "
        f"images differ by {np.abs(f[0] - f[1]).max() / np.abs(f).max():.3g} (rel)")

  meta = {"pytorch_fid": pytorch_fid.__version__, "torch": torch.__version__,
          "bn_weight_gain": BN_WEIGHT_GAIN, "sizes": list(SIZES), "resize_step": RESIZE_STEP,
          "pth_input_size": PTH_INPUT_SIZE}
  out = args.out / "fid_inception.npz"
  np.savez_compressed(out, meta=json.dumps(meta), layout=json.dumps(layout), **data)
  print(f"{out}: {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
  main()
