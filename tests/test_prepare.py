"""Tests of the paired dataset builder, its sources and the prepare CLI."""
from __future__ import annotations

import concurrent.futures
import io
import json
import pathlib
import pickle
from typing import Any
from unittest import mock

import numpy as np
from PIL import Image, ImageDraw
import pytest
import tensorflow_datasets as tfds

from tests.subprocess_runs import run_module
from tp2p_jax.cli import prepare as prepare_cli
from tp2p_jax.data import pipeline, prepared, sketch, toycats
from tp2p_jax.data.prepared import builder as prepared_builder

S = 64  # stored image side in these tests


def _photo(index: int, size: int = 80) -> np.ndarray:
  return toycats.render_example(index, size, seed=11)["photo"]


def _save(image: Image.Image, path: pathlib.Path, **kwargs: Any) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path, **kwargs)


def _dark_fraction(sketch_image: np.ndarray) -> float:
  return float((sketch_image[..., 0] < 128).mean())


def _is_line_drawing(sketch_image: np.ndarray) -> bool:
  """Thin dark lines on white: a few percent dark, the rest mostly pure
  white, grey channels."""
  white = (sketch_image == 255).all(axis=2).mean()
  return (0.002 < _dark_fraction(sketch_image) < 0.15 and white > 0.75
          and (sketch_image[..., 0] == sketch_image[..., 2]).all())


def _read_all(dataset_dir: str) -> dict[str, list[dict[str, Any]]]:
  builder = tfds.builder_from_directory(dataset_dir)
  return {split: [source[i] for i in range(len(source))]
          for split, source in builder.as_data_source().items()}


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
  """Two class folders with photos in many formats, a truncated JPEG and a
  text file."""
  root = tmp_path_factory.mktemp("photos")
  rgb = [Image.fromarray(_photo(i)) for i in range(9)]
  _save(rgb[0], root / "indoor" / "a.jpg", quality=90)
  _save(rgb[1], root / "indoor" / "b.png")
  _save(rgb[2].convert("L"), root / "indoor" / "grey.png")
  # Landscape photo: centre-cropped to a square.
  _save(Image.fromarray(toycats.render_example(3, 80, seed=11)["photo"]
                        ).resize((120, 80)), root / "indoor" / "wide.jpg")
  rgba = rgb[4].convert("RGBA")
  rgba.putalpha(Image.fromarray(np.where(np.arange(80)[None, :] < 8, 0, 255)
                                .astype(np.uint8).repeat(80, 0)))
  _save(rgba, root / "outdoor" / "rgba.png")
  _save(rgb[5].convert("P", palette=Image.Palette.ADAPTIVE),
        root / "outdoor" / "palette.png")
  grey16 = np.asarray(rgb[6].convert("L")).astype(np.uint16) * 257
  _save(Image.fromarray(grey16), root / "outdoor" / "deep16.png")
  _save(rgb[7].convert("CMYK"), root / "outdoor" / "cmyk.jpg")
  _save(rgb[8].convert("LA"), root / "outdoor" / "nested" / "la.png")
  buffer = io.BytesIO()
  rgb[0].save(buffer, "JPEG")
  (root / "outdoor" / "broken.jpg").write_bytes(
      buffer.getvalue()[:len(buffer.getvalue()) // 2])
  (root / "indoor" / "notes.txt").write_text("not a photo\n")
  return root


_READABLE = {"indoor/a.jpg", "indoor/b.png", "indoor/grey.png",
             "indoor/wide.jpg", "outdoor/rgba.png", "outdoor/palette.png",
             "outdoor/deep16.png", "outdoor/cmyk.jpg", "outdoor/nested/la.png"}


@pytest.fixture(scope="module")
def folder_dataset(photo_folder: pathlib.Path,
                   tmp_path_factory: pytest.TempPathFactory
                   ) -> prepared.BuildResult:
  out = tmp_path_factory.mktemp("folder_out")
  return prepared.build("folder", str(photo_folder), str(out),
                        image_size=S, val_fraction=0.3)


def test_folder_source_acceptance(folder_dataset: prepared.BuildResult):
  result = folder_dataset
  assert result.written == len(_READABLE)
  assert {s.file for s in result.skipped} == {"outdoor/broken.jpg",
                                              "indoor/notes.txt"}
  reasons = {s.file: s.reason for s in result.skipped}
  assert "truncated" in reasons["outdoor/broken.jpg"].lower()
  assert "not an image" in reasons["indoor/notes.txt"]
  assert result.classes == ("indoor", "outdoor")
  assert sum(result.splits.values()) == result.written
  assert result.splits["train"] > 0 and result.splits["validation"] > 0

  builder = tfds.builder_from_directory(result.dataset_dir)
  assert set(builder.info.features) == {"photo", "sketch", "label",
                                        "filename"}
  assert builder.info.features["label"].names == ["indoor", "outdoor"]
  assert builder.info.metadata["skipped_files"] == [
      {"file": s.file, "reason": s.reason} for s in result.skipped]
  records = {}
  for split, examples in _read_all(result.dataset_dir).items():
    for ex in examples:
      name = ex["filename"].decode()
      records[name] = ex
      assert split == ("validation" if prepared.is_validation(
          name, 0.3) else "train")
  assert set(records) == _READABLE
  for name, ex in records.items():
    assert ex["photo"].shape == ex["sketch"].shape == (S, S, 3)
    assert ex["photo"].dtype == ex["sketch"].dtype == np.uint8
    assert ex["label"] == (0 if name.startswith("indoor/") else 1)
    assert _is_line_drawing(ex["sketch"]), name
  grey = records["indoor/grey.png"]["photo"].astype(int)
  assert (grey[..., 0] == grey[..., 1]).all()
  # 16-bit grey is scaled to 8 bits, not clipped to white.
  deep = records["outdoor/deep16.png"]["photo"]
  assert 30 < deep.mean() < 225
  # Transparent pixels are composited over white.
  assert (records["outdoor/rgba.png"]["photo"][:, :4] == 255).all()


def test_folder_build_is_deterministic(folder_dataset, photo_folder,
                                       tmp_path: pathlib.Path):
  again = prepared.build("folder", str(photo_folder), str(tmp_path),
                         image_size=S, val_fraction=0.3)
  first, second = (_read_all(r.dataset_dir) for r in (folder_dataset, again))
  assert first.keys() == second.keys()
  for split in first:
    for a, b in zip(first[split], second[split], strict=True):
      assert a["filename"] == b["filename"]
      np.testing.assert_array_equal(a["photo"], b["photo"])
      np.testing.assert_array_equal(a["sketch"], b["sketch"])
  with pytest.raises(prepared.InputError, match="already exists"):
    prepared.build("folder", str(photo_folder), str(tmp_path),
                   image_size=S, val_fraction=0.3)


def test_worker_processes_change_nothing(folder_dataset, photo_folder,
                                         tmp_path: pathlib.Path,
                                         monkeypatch: pytest.MonkeyPatch):
  monkeypatch.setattr(prepared_builder, "_MIN_ITEMS_FOR_WORKERS", 1)
  pools = []
  real_pool = concurrent.futures.ProcessPoolExecutor

  def recording_pool(*args: Any, **kwargs: Any) -> Any:
    pools.append(real_pool(*args, **kwargs))
    return pools[-1]

  monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor",
                      recording_pool)
  parallel = prepared.build("folder", str(photo_folder), str(tmp_path),
                            image_size=S, val_fraction=0.3,
                            num_workers=2)
  assert len(pools) == 1 and pools[0]._max_workers == 2
  assert parallel.skipped == folder_dataset.skipped
  first, second = (_read_all(r.dataset_dir) for r in (folder_dataset,
                                                      parallel))
  for split in first:
    for a, b in zip(first[split], second[split], strict=True):
      assert a["filename"] == b["filename"]
      np.testing.assert_array_equal(a["sketch"], b["sketch"])
      np.testing.assert_array_equal(a["photo"], b["photo"])


def test_style_name_folders_use_the_toy_cat_labels(tmp_path: pathlib.Path):
  _save(Image.fromarray(_photo(0)), tmp_path / "in" / "ginger" / "x.png")
  _save(Image.fromarray(_photo(1)), tmp_path / "in" / "black" / "y.png")
  result = prepared.build("folder", str(tmp_path / "in"),
                          str(tmp_path / "out"), image_size=S)
  assert result.classes == toycats.STYLE_NAMES
  labels = {ex["filename"].decode(): int(ex["label"])
            for exs in _read_all(result.dataset_dir).values() for ex in exs}
  assert labels == {"ginger/x.png": toycats.STYLE_NAMES.index("ginger"),
                    "black/y.png": toycats.STYLE_NAMES.index("black")}
  assert prepared.class_names(tmp_path / "out") == toycats.STYLE_NAMES


def test_some_coat_folders_say_which_classes_have_pairs(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]):
  for i in range(3):
    _save(Image.fromarray(_photo(i)), tmp_path / "in" / "ginger" / f"g{i}.png")
  _save(Image.fromarray(_photo(5)), tmp_path / "in" / "white" / "w.png")
  status, out, err = _cli(capsys, "--source=folder", f"--input={tmp_path / 'in'}",
                          f"--data_dir={tmp_path / 'out'}", f"--image_size={S}")
  assert status == 0, err
  summary = json.loads(out.strip().splitlines()[-1])
  assert summary["classes"] == list(toycats.STYLE_NAMES)
  train, val = summary["class_counts"]["train"], summary["class_counts"].get(
      "validation", [0] * len(toycats.STYLE_NAMES))
  by_name = {n: a + b for n, a, b in zip(toycats.STYLE_NAMES, train, val)}
  assert by_name["ginger"] == 3 and by_name["white"] == 1
  assert sum(by_name.values()) == 4 == summary["written"]
  empty = [n for n, c in zip(toycats.STYLE_NAMES, train) if c == 0]
  assert summary["classes_without_pairs"] == empty and "black" in empty
  warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
  assert any("validation split has" in w and "fewer than 32" in w for w in warnings), err
  assert any("no training pairs" in w and "black" in w and "no --style" in w
             for w in warnings), err
  # TFDS's "Downloading and preparing dataset" would be wrong: nothing is downloaded.
  assert "Downloading" not in out + err


def test_flat_folder_is_one_class(tmp_path: pathlib.Path):
  for i in range(3):
    _save(Image.fromarray(_photo(i)), tmp_path / "cats" / f"{i}.png")
  result = prepared.build("folder", str(tmp_path / "cats"),
                          str(tmp_path / "out"), image_size=S)
  assert result.classes == ("cats",) and result.written == 3


def test_split_folders_are_looked_through_and_huge_images_skipped(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
  root = tmp_path / "in"
  _save(Image.fromarray(_photo(0, 50)), root / "train" / "tabby" / "a.png")
  _save(Image.fromarray(_photo(1, 50)), root / "val" / "tabby" / "b.png")
  _save(Image.fromarray(_photo(2, 50)), root / "train" / "tuxedo" / "c.png")
  _save(Image.fromarray(_photo(3, 80)), root / "train" / "tuxedo" / "d.png")
  (root / "README.txt").write_text("photos of cats\n")
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
  result = prepared.build("folder", str(root), str(tmp_path / "out"),
                          image_size=S)
  assert result.classes == ("tabby", "tuxedo")
  assert result.written == 3
  reasons = {s.file: s.reason for s in result.skipped}
  assert set(reasons) == {"README.txt", "train/tuxedo/d.png"}
  assert "DecompressionBomb" in reasons["train/tuxedo/d.png"]
  assert "outside the class subfolders" in reasons["README.txt"]


def test_empty_or_unusable_input_is_an_error(tmp_path: pathlib.Path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(prepared.InputError, match="empty"):
    prepared.build("folder", str(tmp_path / "empty"),
                   str(tmp_path / "out"))
  (tmp_path / "junk").mkdir()
  (tmp_path / "junk" / "a.txt").write_text("x")
  with pytest.raises(prepared.InputError, match="no usable images"):
    prepared.build("folder", str(tmp_path / "junk"),
                   str(tmp_path / "out"))
  with pytest.raises(prepared.InputError, match="does not exist"):
    prepared.build("folder", str(tmp_path / "nope"),
                   str(tmp_path / "out"))
  assert not (tmp_path / "out" / "sketch_photo_pairs").exists() or not list(
      (tmp_path / "out" / "sketch_photo_pairs").glob("*/*/dataset_info.json"))


# ---------------------------------------------------------------------------
# pix2pix.


def _line_image(index: int, size: int = S) -> np.ndarray:
  return toycats.render_example(index, size, seed=4)["sketch"]


def test_pix2pix_side_by_side_both_directions(tmp_path: pathlib.Path):
  halves = {}
  for i in range(4):
    a, b = _line_image(i), _photo(i, S)
    halves[f"{i}.png"] = (a, b)
    _save(Image.fromarray(np.concatenate([a, b], axis=1)),
          tmp_path / "ab" / f"{i}.png")
  for direction in ("AtoB", "BtoA"):
    result = prepared.build(
        "pix2pix", str(tmp_path / "ab"), str(tmp_path / direction),
        image_size=S, direction=direction)
    assert result.written == 4 and not result.skipped
    for exs in _read_all(result.dataset_dir).values():
      for ex in exs:
        a, b = halves[ex["filename"].decode()]
        sketch_half, photo_half = (a, b) if direction == "AtoB" else (b, a)
        np.testing.assert_array_equal(ex["sketch"], sketch_half)
        np.testing.assert_array_equal(ex["photo"], photo_half)


def test_pix2pix_hd_folders_report_mismatches(tmp_path: pathlib.Path):
  root = tmp_path / "hd"
  for stem in ("a", "b", "c"):
    _save(Image.fromarray(_line_image(ord(stem))), root / "train_A" /
          f"{stem}.png")
  for stem in ("a", "b", "d"):
    _save(Image.fromarray(_photo(ord(stem), S)), root / "train_B" /
          f"{stem}.jpg")
  _save(Image.fromarray(_line_image(9)), root / "train_A" / "e.png")
  _save(Image.fromarray(_photo(9, 2 * S)), root / "train_B" / "e.png")
  result = prepared.build("pix2pix", str(root), str(tmp_path / "out"),
                          image_size=S)
  assert result.written == 2
  reasons = {s.file: s.reason for s in result.skipped}
  assert set(reasons) == {"train_A/c.png", "train_B/d.jpg", "train_A/e.png"}
  assert "train_B" in reasons["train_A/c.png"]
  assert "train_A" in reasons["train_B/d.jpg"]
  assert "64x64" in reasons["train_A/e.png"]
  names = {ex["filename"].decode()
           for exs in _read_all(result.dataset_dir).values() for ex in exs}
  assert names == {"train_A/a.png", "train_A/b.png"}
  for exs in _read_all(result.dataset_dir).values():
    for ex in exs:
      stem = ex["filename"].decode()[len("train_A/"):-len(".png")]
      np.testing.assert_array_equal(ex["sketch"], _line_image(ord(stem)))


# ---------------------------------------------------------------------------
# TFDS sources, mocked: nothing is downloaded.


_ORIGINAL_INIT = tfds.core.DatasetBuilder.__init__
_ORIGINAL_PREPARE = tfds.core.DatasetBuilder.download_and_prepare


def _build_under_mock(**kwargs: Any) -> prepared.BuildResult:
  """`build` inside `tfds.testing.mock_data`, which replaces every builder's
  data_dir and download_and_prepare; ours gets the real ones back while the
  photo dataset stays mocked."""
  with mock.patch.object(tfds.core.DatasetBuilder, "__init__", _ORIGINAL_INIT
                         ), mock.patch.object(
                             prepared.SketchPhotoPairs,
                             "download_and_prepare", _ORIGINAL_PREPARE):
    return prepared.build("tfds", **kwargs)


def test_tfds_source_keeps_the_cats_of_mocked_oxford_pets(
    tmp_path: pathlib.Path):
  with tfds.testing.mock_data(num_examples=12,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    pets = tfds.builder("oxford_iiit_pet")
    breeds = pets.info.features["label"].names
    expected = {}
    for split in ("train", "test"):
      source = pets.as_data_source(split)
      for i in range(len(source)):
        name = breeds[int(source[i]["label"])]
        if name in prepared.OXFORD_PET_CAT_BREEDS:
          key = f"oxford_iiit_pet/{split}/{source[i]['file_name']}"
          expected[key] = name
    result = _build_under_mock(input_path=str(tmp_path / "tfds"),
                               data_dir=str(tmp_path / "out"),
                               tfds_name="oxford_iiit_pet",
                               tfds_splits=("train", "test"), image_size=S)
  assert 0 < len(expected) < 24  # some cats, some dogs
  assert result.written == len(expected) and not result.skipped
  assert result.classes == prepared.OXFORD_PET_CAT_BREEDS
  for exs in _read_all(result.dataset_dir).values():
    for ex in exs:
      assert result.classes[ex["label"]] == expected[ex["filename"].decode()]
      assert ex["photo"].shape == ex["sketch"].shape == (S, S, 3)


def test_tfds_source_keeps_the_cats_of_mocked_cats_vs_dogs(
    tmp_path: pathlib.Path):
  with tfds.testing.mock_data(num_examples=10,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    source = tfds.builder("cats_vs_dogs").as_data_source("train")
    cats = sum(int(source[i]["label"]) == 0 for i in range(len(source)))
    result = _build_under_mock(input_path=str(tmp_path / "tfds"),
                               data_dir=str(tmp_path / "out"),
                               tfds_name="cats_vs_dogs",
                               tfds_splits=("train",), image_size=S)
  assert 0 < cats < 10
  assert result.written == cats and result.classes == ("cat",)
  assert result.dataset.startswith("sketch_photo_pairs/tfds-cats_vs_dogs-")


def _pet_record(index: int, breed: str,
                breeds: list[str]) -> dict[str, Any]:
  """A fake Oxford pet: a dark 'cat' disc inside the trimap foreground and a
  dark square in the background, on a 96 x 128 (h x w) light image."""
  h, w = 96, 128
  img = Image.new("RGB", (w, h), (215, 210, 200))
  draw = ImageDraw.Draw(img)
  draw.ellipse([34, 18, 94, 78], fill=(60, 40, 30))
  draw.rectangle([100, 30, 124, 60], fill=(20, 30, 90))
  trimap = Image.new("L", (w, h), 2)
  ImageDraw.Draw(trimap).ellipse([32, 16, 96, 80], fill=3)
  ImageDraw.Draw(trimap).ellipse([36, 20, 92, 76], fill=1)
  return {
      "image": np.asarray(img),
      "segmentation_mask": np.asarray(trimap)[:, :, None],
      "label": np.int64(breeds.index(breed)),
      "species": np.int64(0 if breed[0].isupper() else 1),
      "file_name": f"{breed}_{index}.jpg".encode(),
      "head_bbox": np.zeros(4, np.float32),
  }


def test_tfds_source_masks_out_the_background(tmp_path: pathlib.Path):
  kinds = ["Siamese", "beagle", "Bombay", "pug", "Persian"]
  records: dict[str, list[dict[str, Any]]] = {}

  def fake_source(self: Any, split: str, **kwargs: Any) -> list[Any]:
    del self, kwargs
    return records[split]

  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                              as_data_source_fn=fake_source):
    breeds = list(tfds.builder("oxford_iiit_pet").info.features["label"].names)
    records["train"] = [_pet_record(i, b, breeds) for i, b in enumerate(kinds)]
    records["test"] = [_pet_record(9, "Sphynx", breeds)]
    result = _build_under_mock(input_path=str(tmp_path / "tfds"),
                               data_dir=str(tmp_path / "out"),
                               tfds_name="oxford_iiit_pet",
                               tfds_splits=("train", "test"), image_size=S)
  assert result.written == 4  # Siamese, Bombay, Persian, Sphynx
  # The crop keeps the central 96 x 96; the trimap's foreground ends at
  # x = 96 - 16 = 80 of 96, so its dilated mask is well left of the square
  # (x >= 84 of 96).
  trimap = _pet_record(0, "Siamese", breeds)["segmentation_mask"]
  trimap = trimap[:, 16:112, 0] != 2
  allowed = sketch.dilated_mask(trimap, S)
  names = set()
  for exs in _read_all(result.dataset_dir).values():
    for ex in exs:
      names.add(ex["filename"].decode())
      out = ex["sketch"]
      assert (out[~allowed] == 255).all()
      assert _is_line_drawing(out)
      assert (out[:, 56:] == 255).all()  # the square's lines are gone
  assert names == {"oxford_iiit_pet/train/Siamese_0.jpg",
                   "oxford_iiit_pet/train/Bombay_2.jpg",
                   "oxford_iiit_pet/train/Persian_4.jpg",
                   "oxford_iiit_pet/test/Sphynx_9.jpg"}


def test_tfds_source_streams_tfrecord_datasets(tmp_path: pathlib.Path):
  """TFDS's default TFRecord format has no random access: the source then
  streams the split through TensorFlow, or explains what to do without it."""
  records: list[dict[str, Any]] = []

  def no_random_access(self: Any, split: str, **kwargs: Any) -> Any:
    raise NotImplementedError("Random access data source for file format "
                              "tfrecord is not supported.")

  def stream(self: Any, split: str, **kwargs: Any) -> list[Any]:
    del self, kwargs
    return records if split == "train" else []

  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                              as_data_source_fn=no_random_access):
    breeds = list(tfds.builder("oxford_iiit_pet").info.features["label"].names)
    records += [_pet_record(i, b, breeds)
                for i, b in enumerate(["Birman", "pug", "Ragdoll"])]
    kwargs = dict(input_path=str(tmp_path / "tfds"), tfds_splits=("train",),
                  tfds_name="oxford_iiit_pet", image_size=S)
    with pytest.raises(prepared.InputError, match="array_record"):
      _build_under_mock(data_dir=str(tmp_path / "a"), **kwargs)
    with mock.patch.object(tfds.core.DatasetBuilder, "as_dataset", stream), \
        mock.patch.object(tfds, "as_numpy", lambda ds: iter(ds)), \
        mock.patch.object(prepared_builder.importlib.util, "find_spec",
                          lambda name: object()):
      result = _build_under_mock(data_dir=str(tmp_path / "b"), **kwargs)
  assert result.written == 2
  names = {ex["filename"].decode()
           for exs in _read_all(result.dataset_dir).values() for ex in exs}
  assert names == {"oxford_iiit_pet/train/Birman_0.jpg",
                   "oxford_iiit_pet/train/Ragdoll_2.jpg"}


# ---------------------------------------------------------------------------
# Reading back and the CLI.


def test_paired_source_feeds_the_input_pipeline(
    folder_dataset: prepared.BuildResult):
  source = prepared.PairedSource(folder_dataset.dataset_dir)
  assert len(source) == folder_dataset.splits["train"]
  assert repr(source) == repr(prepared.PairedSource(
      folder_dataset.dataset_dir))
  assert "0x" not in repr(source)
  record = source[0]
  assert record["sketch"].shape == record["photo"].shape == (S, S, 3)
  assert record["label"].dtype == np.int32
  clone = pickle.loads(pickle.dumps(source))
  np.testing.assert_array_equal(clone[0]["photo"], record["photo"])
  it = pipeline.make_dataset_iterator(
      source, global_batch_size=2, image_size=S, seed=0, augment=True,
      shard_index=0, shard_count=1)
  batch = next(it)
  assert batch["real_a"].shape == batch["real_b"].shape == (2, S, S, 3)
  assert batch["real_a"].dtype == np.float32
  assert batch["label"].shape == (2,) and batch["label"].dtype == np.int32
  assert -1.0 <= batch["real_a"].min() and batch["real_a"].max() <= 1.0
  val = prepared.PairedSource(folder_dataset.dataset_dir, "validation")
  assert len(val) == folder_dataset.splits["validation"]


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
  """The prepare command run in this process: (exit status, stdout, stderr)."""
  status = prepare_cli.main(["prepare", *args])
  captured = capsys.readouterr()
  return status, captured.out, captured.err


def test_cli_prints_json_last_and_matches_in_process_build(
    photo_folder: pathlib.Path, folder_dataset: prepared.BuildResult,
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]):
  status, out, err = _cli(capsys, "--source=folder", f"--input={photo_folder}",
                          f"--data_dir={tmp_path}", f"--image_size={S}",
                          "--val_fraction=0.3", "--num_workers=2")
  assert status == 0, err
  summary = json.loads(out.strip().splitlines()[-1])
  assert summary["written"] == len(_READABLE)
  assert summary["skipped"] == 2
  assert {s["file"] for s in summary["skipped_files"]} == {
      "outdoor/broken.jpg", "indoor/notes.txt"}
  assert summary["classes"] == ["indoor", "outdoor"]
  assert summary["splits"] == folder_dataset.splits
  assert summary["dataset"] == "sketch_photo_pairs/folder-64px-val0.3:1.0.0"
  assert summary["pairs_per_s"] > 0
  assert "broken.jpg" in err  # skipped files are named on stderr too
  ours, theirs = (_read_all(d) for d in (folder_dataset.dataset_dir,
                                         summary["data_dir"]))
  for split in ours:
    for a, b in zip(ours[split], theirs[split], strict=True):
      np.testing.assert_array_equal(a["sketch"], b["sketch"])
      np.testing.assert_array_equal(a["photo"], b["photo"])


def test_cli_errors_are_one_clean_line(tmp_path: pathlib.Path,
                                       capsys: pytest.CaptureFixture[str]):
  (tmp_path / "empty").mkdir()
  empty, out_dir = f"--input={tmp_path / 'empty'}", f"--data_dir={tmp_path / 'out'}"
  cases = [
      ((empty, out_dir, "--source=folder", "--num_workers=0"), str(tmp_path / "empty")),
      ((empty, out_dir, "--source=jpegs"), "--source must be folder, pix2pix or tfds:NAME"),
      ((empty, "--source=folder"), "--data_dir is required"),
      ((out_dir, "--source=folder"), "--input is required"),
      ((empty, out_dir, "--source=pix2pix", "--direction=sideways"), "direction"),
      ((empty, out_dir, "--source=folder", "photos/"), "unexpected arguments"),
  ]
  for args, message in cases:
    status, out, err = _cli(capsys, *args)
    assert status == 2, args
    assert out == "", args
    assert "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (args, err)


def test_cli_help_lists_the_flags(capsys: pytest.CaptureFixture[str]):
  status, out, _ = _cli(capsys, "--help")
  assert status == 0
  assert "python -m tp2p_jax.cli.prepare --source=folder" in out
  for flag in ("--source", "--input", "--data_dir", "--num_workers", "--overwrite"):
    assert flag in out


@pytest.mark.slow
def test_command_runs_as_a_module(photo_folder: pathlib.Path,
                                  folder_dataset: prepared.BuildResult,
                                  tmp_path: pathlib.Path):
  """`python -m tp2p_jax.cli.prepare` in a process of its own: exit status,
  and stdout holds only the JSON summary (TFDS's own output goes to stderr)."""
  proc = run_module("tp2p_jax.cli.prepare",
                    ["--source=folder", f"--input={photo_folder}", f"--data_dir={tmp_path}",
                     f"--image_size={S}", "--val_fraction=0.3", "--num_workers=0"],
                    timeout=300)
  assert proc.returncode == 0, proc.stderr
  [line] = proc.stdout.strip().splitlines()
  summary = json.loads(line)
  assert summary["dataset"] == "sketch_photo_pairs/folder-64px-val0.3:1.0.0"
  assert summary["splits"] == folder_dataset.splits
