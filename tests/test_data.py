import gzip
import shutil

import numpy as np
import pytest

from spikediff.data import DatasetNotFoundError, fetch, load_images, to_model_range
from spikediff.data.idx import IdxFormatError, decode_idx, encode_idx, read_raw


def test_bundled_digits_split_and_range():
    xtr, ytr = load_images("digits", "train")
    xte, yte = load_images("digits", "test")
    assert xtr.shape == (1438, 8, 8) and xte.shape == (359, 8, 8)
    assert xtr.dtype == np.uint8 and xtr.max() == 255 and xtr.min() == 0
    assert set(np.unique(ytr)) == set(range(10))
    x = to_model_range(xtr[:4])
    assert tuple(x.shape) == (4, 1, 8, 8) and float(x.min()) >= -1 and float(x.max()) <= 1


def test_mnist_slice_is_the_official_data(mnist_root):
    x, y = load_images("mnist", "train", limit=100)
    assert x.shape == (100, 28, 28)
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the well-known first training labels
    xt, yt = load_images("mnist", "test")
    assert xt.shape == (10000, 28, 28) and yt[:5].tolist() == [7, 2, 1, 0, 4]
    # digits are dark background, bright strokes
    assert x[:, 0, 0].max() == 0 and x.max() == 255


def test_corrupt_file_is_reported_with_its_path(mnist_root, tmp_path):
    shutil.copytree(mnist_root / "mnist", tmp_path / "mnist")
    target = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(target.read_bytes()))
    raw[100] ^= 0xFF
    target.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DatasetNotFoundError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        load_images("mnist", "test", root=tmp_path)
    target.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetNotFoundError, match="t10k-labels"):
        load_images("mnist", "test", root=tmp_path)


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="spikediff data fetch fashion-mnist"):
        load_images("fashion-mnist", "train", root=tmp_path)


def test_fetch_from_a_directory_of_raw_idx_files(mnist_root, tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    for f in (mnist_root / "mnist").glob("*.gz"):
        (src / f.name[:-3]).write_bytes(read_raw(f))  # uncompressed, as some mirrors ship them
    folder = fetch("mnist", root=tmp_path / "store", from_dir=src, log=lambda _m: None)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in (mnist_root / "mnist").iterdir())
    x, _ = load_images("mnist", "test", root=tmp_path / "store", limit=3)
    assert x.shape == (3, 28, 28)


def test_fetch_rejects_a_directory_with_wrong_files(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    with pytest.raises(DatasetNotFoundError, match="--from"):
        fetch("mnist", root=tmp_path, from_dir=tmp_path / "nope", log=lambda _m: None)
    with pytest.raises(DatasetNotFoundError, match="cannot fetch"):
        fetch("cifar10", root=tmp_path)


def test_idx_round_trip_and_errors():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert (decode_idx(encode_idx(arr)) == arr).all()
    with pytest.raises(IdxFormatError, match="not a uint8 IDX"):
        decode_idx(b"\x00\x00\x0d\x03" + b"\x00" * 12)
    with pytest.raises(IdxFormatError, match="header says"):
        decode_idx(encode_idx(arr)[:-1])


def test_fashion_mnist_from_the_debian_package(tmp_path):
    """Fetched into a temporary root; skipped only where neither apt nor the official mirror answers."""
    try:
        fetch("fashion-mnist", root=tmp_path, log=lambda _m: None)
    except DatasetNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST unavailable here: {exc}")
    x, y = load_images("fashion-mnist", "test", root=tmp_path)
    assert x.shape == (10000, 28, 28)
    assert y[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]  # the official test-set order
