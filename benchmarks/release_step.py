r"""Times the PyTorch TransPix2Pix release's train step and inference on CPU
(or a CUDA device), for `benchmark.py --reference=DIR` and
`device_check.py --reference=DIR` to set beside ours in the same run.

  python benchmarks/release_step.py --release_dir=TransPix2Pix/ --batch_size=4 --steps=5
  python benchmarks/release_step.py --release_dir=TransPix2Pix/ --device=cuda

Needs torch (`pip install -e ".[reference]"`, or any interpreter that has
it: `benchmark.py --reference_python=...`). The release's networks and EMA
are imported from `--release_dir` (a checkout of the release; nothing of it
is copied here); its step is the one of the release's `Trainer.one_step`:
D on real and detached fake pairs (BCE with logits, halved), D's Adam step
and EMA, then G on cGAN + 100 * L1 + the VGG16 relu2_2 feature MSE computed
under `no_grad` (as released: the feature loss sends no gradient to G), the
gradient norm clipped at 1, G's Adam step and EMA. Adam is the release's
(betas 0.5, 0.999, weight decay 1e-6). VGG16 weights are random here: a
timing does not need ImageNet's. The release runs at 256x256 only.

`--device` defaults to `$RELEASE_STEP_DEVICE` (else "cpu"), so a caller
that starts this script through `benchmark.time_release` picks the device
without a new argument there. On CUDA every timed call ends with
`torch.cuda.synchronize()`, and the result records torch's TF32 settings.
The release puts its position indices on "cuda" whenever CUDA is available
(attention_block.py, transformer_block.py), so on a CUDA machine the device
must be "cuda" (the current one).

`--dtype=bfloat16` (default `$RELEASE_STEP_DTYPE`, else float32, so that
`RELEASE_STEP_DTYPE=bfloat16 benchmark.py --dtype=bfloat16 --reference=DIR`
sets both sides in bfloat16 in one run) runs every forward pass and loss
under `torch.autocast(device_type, torch.bfloat16)`, torch's mixed precision:
convolutions and matrix products in bfloat16 (oneDNN's AVX512_BF16 kernels
on a CPU that has them), parameters, gradients and Adam float32.

This script imports neither jax nor tp2p_jax. The last line of stdout is one
JSON object.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

IMAGE_SIZE = 256  # the release's generator hard-wires it
STYLE_DIM = 256
# torchvision's VGG16 `features` up to relu2_2 (index 8), which is all the
# release's LossNetwork output uses; the later layers it also runs are
# included so that the forward cost is the release's.
_VGG16_FEATURES = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                   512, 512, 512, "M"]
_RELU2_2 = 8


def _vgg16_features(torch: Any) -> Any:
  layers, channels = [], 3
  for v in _VGG16_FEATURES:
    if v == "M":
      layers.append(torch.nn.MaxPool2d(2, 2))
    else:
      layers += [torch.nn.Conv2d(channels, v, 3, padding=1), torch.nn.ReLU(inplace=True)]
      channels = v
  return torch.nn.Sequential(*layers).eval()


def _times(fn: Callable[[], Any], count: int,
           sync: Callable[[], Any] | None = None) -> list[float]:
  """Wall time of `count` calls of `fn`; `sync` (e.g. torch.cuda.synchronize)
  after each, so that an asynchronous device's work is inside the time."""
  out = []
  for _ in range(count):
    t0 = time.perf_counter()
    fn()
    if sync is not None:
      sync()
    out.append(time.perf_counter() - t0)
  return out


def run(release_dir: str, batch_size: int, steps: int, warmup: int, infer_batches: int,
        threads: int | None, device: str = "cpu", dtype: str = "float32") -> dict[str, Any]:
  """Builds the release's G, D and EMAs on `device` ("cpu", "cuda",
  "cuda:N"), times `steps` train steps after `warmup` and `infer_batches`
  eval-mode generator calls, the forward passes under bfloat16 autocast
  with `dtype="bfloat16"`; returns the JSON-able results."""
  sys.path.insert(0, os.path.abspath(release_dir))
  import torch  # noqa: PLC0415
  from model_discriminator import Discriminator  # noqa: PLC0415
  from model_ema import WeightEMA  # noqa: PLC0415
  from model_generator import Generator  # noqa: PLC0415

  if threads:
    torch.set_num_threads(threads)
  torch.manual_seed(0)
  dev = torch.device(device)
  sync = torch.cuda.synchronize if dev.type == "cuda" else None

  def autocast() -> Any:
    if dtype == "float32":
      return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=torch.bfloat16)
  vgg = _vgg16_features(torch).to(dev)

  def features(x: Any) -> Any:
    out = None
    for i, module in enumerate(vgg):
      x = module(x)
      if i == _RELU2_2:
        out = x
    return out

  gen, disc = Generator(in_channels=3), Discriminator(in_channels=3)
  ema_gen, ema_disc = Generator(in_channels=3), Discriminator(in_channels=3)
  # On the device before the EMAs and optimisers take their parameters.
  for module in (gen, disc, ema_gen, ema_disc):
    module.to(dev)
  for p in list(ema_gen.parameters()) + list(ema_disc.parameters()):
    p.detach_()
  ema_g = WeightEMA(gen, ema_gen, lr=2e-4, alpha=0.98)
  ema_d = WeightEMA(disc, ema_disc, lr=2e-4, alpha=0.98)
  opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999), weight_decay=1e-6)
  opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999), weight_decay=1e-6)
  bce, l1, mse = torch.nn.BCEWithLogitsLoss(), torch.nn.L1Loss(), torch.nn.MSELoss()
  shape = (batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)
  # Drawn on the CPU whatever the device, so that every device sees the
  # same batch.
  x = (torch.rand(*shape) * 2 - 1).to(dev)
  y = (torch.rand(*shape) * 2 - 1).to(dev)
  embedding = torch.randn(batch_size, STYLE_DIM).to(dev)

  def step() -> None:
    gen.train()
    disc.train()
    opt_d.zero_grad()
    opt_g.zero_grad()
    with autocast():
      fake = gen(x, embedding)
      d_real, d_fake = disc(x, y), disc(x, fake.detach())
      d_loss = (bce(d_real, torch.ones_like(d_real))
                + bce(d_fake, torch.zeros_like(d_fake))) / 2
    d_loss.backward()
    opt_d.step()
    ema_d.step()
    with autocast():
      d_fake = disc(x, fake)
      with torch.no_grad():
        feature_loss = mse(features(fake), features(y))
      g_loss = bce(d_fake, torch.ones_like(d_fake)) + 100 * l1(fake, y) + feature_loss
    g_loss.backward()
    torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0, norm_type=2.0)
    opt_g.step()
    ema_g.step()

  def infer() -> None:
    with torch.no_grad(), autocast():
      gen.eval()
      gen(x, embedding)

  _times(step, warmup, sync)
  step_times = _times(step, steps, sync)
  _times(infer, max(warmup, 1), sync)
  infer_times = _times(infer, infer_batches, sync)
  extra: dict[str, Any] = {}
  if dev.type == "cuda":
    extra = {"device_name": torch.cuda.get_device_name(dev),
             "cuda_version": torch.version.cuda,
             "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
             "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
             "peak_bytes_allocated": int(torch.cuda.max_memory_allocated(dev))}
  return {
      **extra, "device": str(dev),
      "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
      "batch_size": batch_size, "image_size": IMAGE_SIZE, "dtype": dtype,
      "params": {"generator": sum(p.numel() for p in gen.parameters()),
                 "discriminator": sum(p.numel() for p in disc.parameters())},
      "train_step_s_all": step_times, "train_step_s": statistics.median(step_times),
      "infer_batch_s_all": infer_times,
      "infer_images_per_s": batch_size / statistics.median(infer_times),
  }


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--release_dir", required=True,
                      help="checkout of the TransPix2Pix release (has model_generator.py)")
  parser.add_argument("--batch_size", type=int, default=4)
  parser.add_argument("--steps", type=int, default=5, help="timed train steps (median)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
  parser.add_argument("--infer_batches", type=int, default=5)
  parser.add_argument("--threads", type=int, default=None,
                      help="torch intra-op threads (default: torch's, one per core)")
  parser.add_argument("--device", default=os.environ.get("RELEASE_STEP_DEVICE", "cpu"),
                      help="torch device: cpu, cuda or cuda:N (default: $RELEASE_STEP_DEVICE, "
                      "else cpu)")
  parser.add_argument("--dtype", default=os.environ.get("RELEASE_STEP_DTYPE", "float32"),
                      choices=["float32", "bfloat16"],
                      help="bfloat16: forward passes under torch.autocast (default: "
                      "$RELEASE_STEP_DTYPE, else float32)")
  args = parser.parse_args(argv)
  if not os.path.isfile(os.path.join(args.release_dir, "model_generator.py")):
    parser.error(f"--release_dir={args.release_dir}: no model_generator.py there (not a "
                 "checkout of the TransPix2Pix release)")
  for name in ("steps", "infer_batches"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1")
  if args.batch_size < 2:
    parser.error("--batch_size must be >= 2: the release's BatchNorm on its 1x1 "
                 "bottleneck cannot train on one image")
  result = run(args.release_dir, args.batch_size, args.steps, args.warmup,
               args.infer_batches, args.threads, args.device, args.dtype)
  print(json.dumps(result, sort_keys=True), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
