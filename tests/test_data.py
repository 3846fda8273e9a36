"""Image data: idx parsing, folder layouts, corrupt files, bad layouts; canonical preprocessing parity."""
import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from edgeft.data.images import (Preprocess, find_fashion_mnist, load_eval_split, load_image_dataset,
                                normalize_batch, preprocess_images, read_idx)
from edgeft.errors import DataError

from .conftest import write_digits_folder

P16 = Preprocess(size=16, resize=16, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_read_idx_roundtrip_and_truncation(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    blob = struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", 2, 3, 4) + arr.tobytes()
    (tmp_path / "a.gz").write_bytes(gzip.compress(blob))
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "b").write_bytes(blob[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "b")


@pytest.mark.skipif(find_fashion_mnist() is None, reason="Debian dataset-fashion-mnist not installed "
                                                          "(scripts/setup.sh installs it when run as root)")
def test_fashion_mnist_is_the_real_set():
    ds = load_image_dataset("fashion-mnist", Preprocess(size=28, resize=28), val_fraction=0.1)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (54000, 6000, 10000)
    assert np.bincount(ds.test.targets).tolist() == [1000] * 10
    assert ds.test.targets[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]   # the known first test labels
    assert ds.classes[0] == "T-shirt_top" and ds.classes[9] == "Ankle_boot"


def test_folder_autosplit_is_seeded_and_stratified(digits_folder):
    a = load_image_dataset(str(digits_folder), P16, val_fraction=0.2, split_seed=3)
    b = load_image_dataset(str(digits_folder), P16, val_fraction=0.2, split_seed=3)
    assert a.classes == [str(i) for i in range(10)]
    assert a.val.ids == b.val.ids and len(a.val) == 60 and np.bincount(a.val.targets).tolist() == [6] * 10
    assert set(a.val.ids).isdisjoint(a.train.ids)
    assert len(a.info["val_files"]) == 60


def test_train_val_layout_and_mismatched_classes(tmp_path):
    write_digits_folder(tmp_path, per_class=5, classes=range(3), split="train")
    write_digits_folder(tmp_path, per_class=3, classes=range(3), split="val")
    ds = load_image_dataset(str(tmp_path), P16)
    assert (len(ds.train), len(ds.val)) == (15, 9)
    write_digits_folder(tmp_path, per_class=3, classes=[5], split="val")
    with pytest.raises(DataError, match=r"class folders differ between train/ and val/.*only in val: \['5'\]"):
        load_image_dataset(str(tmp_path), P16)


def test_corrupt_images_skipped_with_count_or_strict(tmp_path):
    write_digits_folder(tmp_path, per_class=6, classes=range(2))
    (tmp_path / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "1" / "empty.jpg").write_bytes(b"")
    ds = load_image_dataset(str(tmp_path), P16, val_fraction=0.3)
    assert ds.info["skipped"] == 2 and len(ds.train) + len(ds.val) == 12
    with pytest.raises(DataError, match="unreadable image .*(broken.png|empty.jpg)"):
        load_image_dataset(str(tmp_path), P16, val_fraction=0.3, strict=True)


def test_bad_layouts_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="neither a built-in dataset"):
        load_image_dataset(str(tmp_path / "nope"), P16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_image_dataset(str(tmp_path / "empty"), P16)
    write_digits_folder(tmp_path / "one", per_class=4, classes=[1])
    with pytest.raises(DataError, match="single class"):
        load_image_dataset(str(tmp_path / "one"), P16)
    write_digits_folder(tmp_path / "hole", per_class=4, classes=[1, 2])
    (tmp_path / "hole" / "3").mkdir()
    with pytest.raises(DataError, match=r"empty class folder\(s\).*3"):
        load_image_dataset(str(tmp_path / "hole"), P16)


def test_eval_split_labels_must_match_model(tmp_path):
    write_digits_folder(tmp_path, per_class=2, classes=[1, 7])
    s, cls = load_eval_split(str(tmp_path), P16, classes=[str(i) for i in range(10)])
    assert cls[7] == "7" and sorted(set(s.targets.tolist())) == [1, 7]
    with pytest.raises(DataError, match="do not match the model's labels"):
        load_eval_split(str(tmp_path), P16, classes=["cat", "dog"])


def test_training_tensors_equal_runtime_preprocessing_of_the_files(digits_folder):
    """The in-memory training path and the device runtime's decode of the same PNG give the same input."""
    from edgeft.tasks.image_cls.task import normalize

    p = Preprocess(size=24, resize=28, mean=(0.3, 0.4, 0.5), std=(0.2, 0.25, 0.3))
    ds = load_image_dataset(str(digits_folder), p, val_fraction=0.2)
    files = ds.val.ids[:8]
    runtime = preprocess_images(files, p)                             # numpy/Pillow device path
    train_eval = normalize_batch(ds.val.images[:8], p)                # training eval path (numpy)
    o = (28 - 24) // 2
    torch_path = normalize(torch.from_numpy(ds.val.images[:8]).permute(0, 3, 1, 2)[..., o:o + 24, o:o + 24], p)
    assert np.abs(runtime - train_eval).max() == 0
    assert np.abs(torch_path.numpy() - runtime).max() < 1e-6
    # a grey image given as an RGB camera frame gives the same input as the grey file
    rgb = [np.repeat(np.asarray(Image.open(f))[..., None], 3, -1) for f in files]
    assert np.abs(preprocess_images(rgb, p) - runtime).max() == 0


def test_shorter_side_resize_and_center_crop():
    p = Preprocess(size=4, resize=6, resize_mode="shorter", interpolation="nearest", mean=(0,) * 3, std=(1,) * 3)
    img = np.zeros((6, 12, 3), np.uint8)
    img[:, 3:9] = 255          # the central 6x6 square is white
    x = preprocess_images([img], p)
    assert x.shape == (1, 3, 4, 4) and x.min() == 1.0
