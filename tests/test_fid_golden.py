"""The FID network against pytorch-fid's (0.3.0) on fixtures written by
tools/make_fid_fixtures.py from pytorch-fid's own code; no torch here.

* The resize and normalisation (fast): our `preprocess` of 2 x - 1 equals
  pytorch-fid's ``2 F.interpolate(x, (299, 299), bilinear) - 1`` from 64,
  256 and 512 pixels.
* Pool3 features (299x299 in the fast tier; 64 and 256 slow: each compiles
  the full network, ~2-3 s on a 2-core CPU): pytorch-fid's
  InceptionV3 (FIDInceptionA/C/E blocks) on the shared synthetic recipe's
  weights in pytorch-fid's state_dict layout, converted by
  `convert_torch_state_dict`, at 299x299 and after the resize from 64x64
  and 256x256.
* pytorch-fid's weight-file layout (fast: read and convert; slow: its
  features): a ``torch.save`` file with every key of
  ``pt_inception-2015-12-05-6726825d.pth``, read by `load_inception_weights`
  as `evaluate --inception_weights` does.

Tolerance: max |ours - pytorch-fid's| <= 1e-4 x max |pytorch-fid's|.
"""
from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

import jax
import numpy as np
import pytest

from tp2p_jax.interop.synthetic import synthetic_state_dict
from tp2p_jax.models import inception

from golden_check import assert_close

GOLDEN = pathlib.Path(__file__).parent / "golden"
FIXTURE = GOLDEN / "fid_inception.npz"
PTH = GOLDEN / "fid_inception_pytorch_fid_layout.pth"


@functools.lru_cache(maxsize=1)
def _fixture() -> dict[str, Any]:
  with np.load(FIXTURE) as f:
    data = {k: f[k] for k in f.files}
  data["meta"] = json.loads(str(data["meta"]))
  data["layout"] = json.loads(str(data["layout"]))
  return data


@functools.lru_cache(maxsize=1)
def _recipe_variables() -> dict[str, Any]:
  """The fixture's weights, rebuilt as tools/make_fid_fixtures.py's
  `recipe_state_dict` builds them, through the importer."""
  data = _fixture()
  gain = np.float32(data["meta"]["bn_weight_gain"])
  sd = {k: v * gain if k.endswith(".bn.weight") else v
        for k, v in synthetic_state_dict(data["layout"]).items()}
  return jax.device_put(inception.convert_torch_state_dict(sd))


def _to_unit_range(x_uint8: np.ndarray) -> np.ndarray:
  """uint8 images -> [-1, 1] as our pipeline takes them (pytorch-fid: [0, 1])."""
  return 2.0 * (x_uint8.astype(np.float32) / 255.0) - 1.0


@pytest.mark.parametrize("size", [64, 256, 512])
def test_resize_matches_pytorch_fid(size: int) -> None:
  """Up- and downsampling (512: no antialiasing, as F.interpolate's default)."""
  data = _fixture()
  step = data["meta"]["resize_step"]
  if size == 512:  # the 256 input nearest-upsampled, as the tool made it
    images = data["input/256"].repeat(2, axis=1).repeat(2, axis=2)
  else:
    images = data[f"input/{size}"]
  ours = np.asarray(inception.preprocess(_to_unit_range(images)))
  assert ours.shape == (2, 299, 299, 3)
  assert_close(ours[:, ::step, ::step], data[f"resized/{size}"], f"resize from {size}")


def test_pytorch_fid_weight_file_layout_is_read() -> None:
  variables = inception.load_inception_weights(PTH)
  expected = jax.tree.map(np.shape, inception.init_inception_variables())
  assert jax.tree.map(np.shape, variables) == expected
  # Every key pytorch-fid's file holds is either converted or knowingly ignored.
  layout = _fixture()["layout"]
  assert set(layout) >= set(inception.to_torch_state_dict(variables))
  assert {"fc.weight", "fc.bias"} <= set(layout)


@pytest.mark.parametrize("size", [299, pytest.param(64, marks=pytest.mark.slow),
                                  pytest.param(256, marks=pytest.mark.slow)])
def test_pool3_features_match_pytorch_fid(size: int) -> None:
  data = _fixture()
  ours = inception.inception_features(_to_unit_range(data[f"input/{size}"]),
                                      _recipe_variables())
  err = assert_close(ours, data[f"features/{size}"], f"pool3 features from {size}x{size}")
  print(f"{size}: max rel error {err:.3g}")


@pytest.mark.slow
def test_pytorch_fid_weight_file_gives_pytorch_fid_features() -> None:
  data = _fixture()
  size = data["meta"]["pth_input_size"]
  variables = jax.device_put(inception.load_inception_weights(PTH))
  ours = inception.inception_features(_to_unit_range(data[f"input/{size}"]), variables)
  err = assert_close(ours, data[f"pth_features/{size}"], "pool3 features, weight file")
  print(f"weight file: max rel error {err:.3g}")


def test_wrong_or_broken_pth_is_refused_in_one_line(tmp_path: pathlib.Path) -> None:
  # A torch checkpoint of another network: the first missing key.
  other = GOLDEN / "import" / "resnet_6blocks_ngf2.pth"
  with pytest.raises(inception.InceptionWeightError,
                     match=r"resnet_6blocks_ngf2.pth: missing key 'Conv2d_1a_3x3"):
    inception.load_inception_weights(other)
  # A truncated weight file: the reader's one line, naming the file.
  cut = tmp_path / "pt_inception.pth"
  cut.write_bytes(PTH.read_bytes()[:100_000])
  with pytest.raises(inception.InceptionWeightError) as e:
    inception.load_inception_weights(cut)
  assert str(cut) in str(e.value) and "\n" not in str(e.value)
