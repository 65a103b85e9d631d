"""Speed of assay's common corruptions against the ``imagecorruptions`` package.

Both corrupt the same CIFAR-10 test images (100 per class, read from the JPEG tar.gz
under $ASSAY_DATA_DIR, default ../shared/data) at each severity 1..5; the table gives
milliseconds per image and corruption, averaged over the severities. imagecorruptions
works on one uint8 HxWx3 array at a time (NumPy, SciPy, OpenCV, scikit-image) and uses
its ImageNet-C constants; assay works on the whole float batch at once with the
CIFAR-10-C constants. Corruptions that fail in imagecorruptions (glass_blur, fog and
gaussian_blur on NumPy 2) are reported as n/a.

Usage (imagecorruptions is for benchmarking only: pip install "setuptools<81" imagecorruptions):

    python benchmarks/corruptions.py [--images 1000] [--repeats 3] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from assay.shift.corruptions import corrupt, list_corruptions

ARCHIVE = Path("cifar10", "CIFAR-10-images-jpg.tar.gz")
SEVERITIES = (1, 2, 3, 4, 5)


def load_cifar_test(n: int) -> np.ndarray:
    """n CIFAR-10 test images (n / 10 per class, archive order) as uint8 [n, 32, 32, 3]."""
    root = Path(os.environ.get("ASSAY_DATA_DIR", Path(__file__).parents[1] / ".." / "shared"
                               / "data"))
    per_class, taken, images = math.ceil(n / 10), {}, []
    with tarfile.open(root / ARCHIVE) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not (member.isfile() and len(parts) == 4 and parts[1] == "test"):
                continue
            if taken.get(parts[2], 0) >= per_class:
                continue
            taken[parts[2]] = taken.get(parts[2], 0) + 1
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                images.append(np.asarray(img.convert("RGB")))
            if len(images) == n:
                break
    return np.stack(images)


def time_imagecorruptions(images: np.ndarray, name: str) -> float | None:
    """ms per image, or None when imagecorruptions fails on this corruption."""
    from imagecorruptions import corrupt as ic_corrupt
    np.random.seed(0)
    start = time.perf_counter()
    try:
        for severity in SEVERITIES:
            for img in images:
                ic_corrupt(img, corruption_name=name, severity=severity)
    except Exception:  # noqa: BLE001 - the oracle's own bugs (NumPy 2) become n/a
        return None
    return (time.perf_counter() - start) * 1e3 / (len(images) * len(SEVERITIES))


def time_assay(x: torch.Tensor, name: str, repeats: int) -> float:
    """ms per image: the best of ``repeats`` runs over all severities."""
    for severity in SEVERITIES:  # warm-up: caches, allocator
        corrupt(x[:8], name, severity, seed=0)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for severity in SEVERITIES:
            corrupt(x, name, severity, seed=severity)
        best = min(best, time.perf_counter() - start)
    return best * 1e3 / (len(x) * len(SEVERITIES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")

    images = load_cifar_test(args.images)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).contiguous()
    rows, ratios, ic_total, assay_total = [], [], 0.0, 0.0
    for name in list_corruptions(include_extra=True):
        ours = time_assay(x, name, args.repeats)
        theirs = time_imagecorruptions(images, name)
        if theirs is None:
            rows.append(f"| {name} | n/a | {ours:.4f} | n/a |")
            continue
        ratios.append(theirs / ours)
        ic_total, assay_total = ic_total + theirs, assay_total + ours
        rows.append(f"| {name} | {theirs:.4f} | {ours:.4f} | {theirs / ours:.1f} |")

    geometric = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    lines = [
        f"{len(images)} CIFAR-10 test images, severities 1-5, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), NumPy {np.__version__}, "
        f"{platform.processor() or platform.machine()}",
        "",
        "| corruption | imagecorruptions ms/image | assay ms/image | ratio |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"- mean ratio over the {len(ratios)} corruptions both run: "
        f"{sum(ratios) / len(ratios):.1f}",
        f"- geometric mean ratio: {geometric:.1f}; smallest ratio: {min(ratios):.1f}",
        f"- mean ms per image and corruption (same {len(ratios)}): imagecorruptions "
        f"{ic_total / len(ratios):.3f}, assay {assay_total / len(ratios):.4f} "
        f"(ratio {ic_total / assay_total:.1f})",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
