import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from assay.core import loaders
from assay.core.data import Dataset, load_data, parse_spec
from assay.errors import AssayValueError

from conftest import require_data


def test_digits_splits_are_fixed_and_disjoint():
    train, test = loaders.load_digits("train"), loaders.load_digits("test")
    assert (len(train), len(test)) == (1348, 449)
    assert train.input_shape == (1, 8, 8) and train.num_classes == 10
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) <= 1.0
    assert torch.equal(loaders.load_digits("test").x, test.x)
    rows = {tuple(r.tolist()) for r in train.x.flatten(1)}
    overlap = sum(tuple(r.tolist()) in rows for r in test.x.flatten(1))
    assert overlap < 10  # digits has a handful of duplicate images, no shared indices


@pytest.mark.parametrize("spec,expected", [("mnist", ("mnist", None, None)),
                                           ("mnist:test:1000", ("mnist", "test", 1000)),
                                           ("cifar10:train", ("cifar10", "train", None)),
                                           ("digits::20", ("digits", None, 20))])
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "mnist:test:0", "mnist:test:x", "a:b:c:d"])
def test_bad_specs(spec):
    with pytest.raises(AssayValueError):
        parse_spec(spec)


def test_load_data_spec_for_digits(monkeypatch):
    data = load_data("digits:test:50")
    assert len(data) == 50 and data.split == "test"
    with pytest.raises(AssayValueError, match="Unknown data set"):
        load_data("svhn")
    with pytest.raises(AssayValueError, match="Unknown split"):
        load_data("digits:val")
    monkeypatch.delenv("ASSAY_DATA_DIR", raising=False)
    with pytest.raises(AssayValueError, match="ASSAY_DATA_DIR"):
        load_data("mnist")


@pytest.mark.parametrize("make,match", [
    (lambda: (torch.full((4, 2), float("nan")), torch.zeros(4, dtype=torch.long)), "NaN"),
    (lambda: (torch.zeros(4, 2), torch.tensor([0, 1, 2, 3])), "labels must lie in 0..2"),
    (lambda: (torch.zeros(4, 2), torch.tensor([0, -1, 1, 1])), "labels must lie"),
    (lambda: (torch.zeros(3, 2), torch.zeros(4, dtype=torch.long)), "3 samples"),
    (lambda: (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)), "empty"),
    (lambda: (torch.zeros(4, 2, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)), "floating"),
])
def test_bad_arrays_are_refused(make, match):
    x, y = make()
    with pytest.raises(AssayValueError, match=match):
        Dataset(x, y, "toy", "test", ("a", "b", "c"))


def test_npz_nhwc_uint8_and_group(tmp_path):
    path = tmp_path / "toy.npz"
    x = np.random.default_rng(0).integers(0, 256, size=(6, 5, 5, 3), dtype=np.uint8)
    np.savez(path, x=x, y=np.array([0, 1, 2, 0, 1, 2]), group=np.array([0, 0, 1, 1, 0, 1]))
    data = load_data(f"{path}:4")
    assert data.x.shape == (4, 3, 5, 5) and data.num_classes == 3
    assert torch.allclose(data.x[0, :, 1, 2], torch.from_numpy(x[0, 1, 2] / 255.0).float())
    assert data.group.tolist() == [0, 0, 1, 1]


def test_npz_refuses_pickles_and_missing_arrays(tmp_path):
    objects = tmp_path / "objects.npz"
    np.savez(objects, x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(AssayValueError, match="pickled objects"):
        load_data(str(objects))
    missing = tmp_path / "missing.npz"
    np.savez(missing, x=np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(AssayValueError, match="missing array"):
        load_data(str(missing))
    nan = tmp_path / "nan.npz"
    np.savez(nan, x=np.full((2, 2), np.nan, dtype=np.float32), y=np.array([0, 1]))
    with pytest.raises(AssayValueError, match="NaN"):
        load_data(str(nan))
    with pytest.raises(AssayValueError, match="no such file"):
        load_data(str(tmp_path / "absent.npz"))


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as out:
        out.write(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root, name="mnist", n=12):
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, (images, labels) in loaders.IDX_FILES.items():
        _write_idx(folder / images, rng.integers(0, 256, size=(n, 28, 28)))
        _write_idx(folder / labels, np.arange(n) % 10)
    return folder


def test_idx_loader_and_download_from_a_mirror(tmp_path):
    source = _fake_mnist(tmp_path / "mirror")
    data = load_data("mnist:train:5", data_root=tmp_path / "mirror")
    assert data.x.shape == (5, 1, 28, 28) and data.y.tolist() == [0, 1, 2, 3, 4]
    target = tmp_path / "downloaded"
    loaders.download_idx("mnist", target, base_url=source.as_uri() + "/")
    again = load_data("mnist:train:5", data_root=target)
    assert torch.equal(again.x, data.x)


def test_truncated_idx_is_refused(tmp_path):
    folder = _fake_mnist(tmp_path)
    raw = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(AssayValueError, match="IDX header"):
        load_data("mnist:test", data_root=tmp_path)


def test_cifar_python_batches_load_only_arrays(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batch = {b"data": rng.integers(0, 256, size=(4, 3072), dtype=np.uint8), b"labels": [3, 1, 4, 1]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    data = load_data("cifar10:test", data_root=tmp_path)
    assert data.x.shape == (4, 3, 32, 32) and data.y.tolist() == [3, 1, 4, 1]
    assert torch.allclose(data.x[0].flatten(), torch.from_numpy(batch[b"data"][0] / 255.0).float())

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Payload(), b"labels": []}))
    with pytest.raises(AssayValueError, match="refused to load builtins.print"):
        load_data("cifar10:test", data_root=tmp_path)


def test_cifar_jpeg_tree_interleaves_classes(tmp_path):
    for class_name in loaders.CIFAR10_CLASSES[:3]:
        folder = tmp_path / "cifar10" / "CIFAR-10-images" / "test" / class_name
        folder.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), color=(10 * i, 50, 200)).save(folder / f"{i:04d}.jpg")
    data = load_data("cifar10:test", data_root=tmp_path)
    assert data.y.tolist() == [0, 1, 2, 0, 1, 2]
    assert data.x.shape == (6, 3, 32, 32)


@pytest.mark.data
def test_real_mnist_and_fashion():
    root = require_data("mnist")
    mnist = load_data("mnist:test:1000", data_root=root)
    assert mnist.x.shape == (1000, 1, 28, 28) and mnist.y[:5].tolist() == [7, 2, 1, 0, 4]
    require_data("fashion-mnist")
    fashion = load_data("fashion-mnist:test:10", data_root=root)
    assert fashion.classes[9] == "ankle boot" and fashion.y[0] == 9


@pytest.mark.data
def test_real_cifar10_jpeg_archive():
    root = require_data("cifar10")
    data = load_data("cifar10:test:100", data_root=root)
    assert data.x.shape == (100, 3, 32, 32)
    assert data.y[:10].tolist() == list(range(10))


def test_npz_named_sensitive_attributes(tmp_path):
    path = tmp_path / "people.npz"
    np.savez(path, x=np.zeros((4, 3), np.float32), y=np.array([0, 1, 1, 0]),
             group_sex=np.array([0, 1, 1, 0]), group_age=np.array([2, 0, 1, 1]))
    data = load_data(str(path))
    assert sorted(data.attributes) == ["age", "sex"] and data.group is None
    codes, values = data.attribute("age")
    assert codes.tolist() == [2, 0, 1, 1] and values == ("0", "1", "2")
    part = data.take(torch.tensor([3, 1]))
    assert part.attributes["sex"].tolist() == [0, 1] and part.attributes["age"].tolist() == [1, 0]
    with pytest.raises(AssayValueError, match="no sensitive attribute 'race'.*age, sex"):
        data.attribute("race")


def test_sensitive_attributes_are_validated_and_hashed():
    x, y = torch.zeros(3, 2), torch.tensor([0, 1, 0])
    plain = Dataset(x, y, "t", "test", ("a", "b"))
    named = Dataset(x, y, "t", "test", ("a", "b"), attributes={"sex": torch.tensor([0, 1, 1])},
                    attribute_values={"sex": ("f", "m")})
    assert named.attribute("sex")[1] == ("f", "m")
    assert plain.sha256() != named.sha256()
    renamed = Dataset(x, y, "t", "test", ("a", "b"), attributes={"sex": torch.tensor([0, 1, 1])},
                      attribute_values={"sex": ("m", "f")})
    assert renamed.sha256() != named.sha256()  # the value names decide what a group means
    for bad, match in (({"sex": torch.tensor([0, 1])}, "3 codes"),
                       ({"sex": torch.tensor([0, -1, 1])}, "negative"),
                       ({"a*b": torch.tensor([0, 1, 1])}, "name"),
                       ({"sex": torch.tensor([0.0, 1.0, 1.0])}, "int64")):
        with pytest.raises(AssayValueError, match=match):
            Dataset(x, y, "t", "test", ("a", "b"), attributes=bad)
    with pytest.raises(AssayValueError, match="names only 2 values"):
        Dataset(x, y, "t", "test", ("a", "b"), attributes={"sex": torch.tensor([0, 2, 1])},
                attribute_values={"sex": ("f", "m")})
