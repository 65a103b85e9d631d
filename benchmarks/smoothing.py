"""Speed and agreement of assay's randomized smoothing CERTIFY against ART and a bare loop.

One process, test images of ``--data`` (default mnist; also fashion-mnist or cifar10, read
from $ASSAY_DATA_DIR, default ../shared/data), a zoo network ``--arch`` (default lenet,
Madry et al.'s MNIST CNN; also small_cnn, mlp, resnet). The network is, in this order of
preference (``--weights auto``):

- "noise": trained by this script with Gaussian augmentation at sigma (assay's ``fit`` with
  ``gaussian_augmentation_loss``, 1 epoch on ``--train-images`` training images), cached
  as benchmarks/.cache/<arch>-noise-<sigma>.pt (``<data>-<arch>-noise-<sigma>.pt`` for
  data other than mnist);
- "normal": benchmarks/.cache/lenet-normal.pt written by benchmarks/evasion.py (plain
  training, no noise: the speed is the same, the certified radii are smaller; MNIST LeNet
  only).

``--weights noise`` trains (or reads the noise cache), ``--weights normal`` needs the
evasion cache. Weights are read with ``torch.load(weights_only=True)``.

Three runs certify the same ``--images`` images with the same sigma, n0 = 100, n
(``--n``, default 10000) and alpha = 0.001:

(a) assay ``SmoothedClassifier.certify`` with its defaults (``--batch``, default 256, is
    its default batch size): noise drawn by a torch.Generator on the model's device, the
    copies of all images cut into full forward passes, bincount of argmax; a channels_last
    copy of the net, compiled (a frozen TorchScript trace) when its first passes show at
    least 10 s of eager work left and kept only if its passes are >= 10% faster; the
    tracing and that trial are timed with the rest;
(b) ART ``PyTorchRandomizedSmoothing.certify`` (``sample_size`` = n0, ``scale`` = sigma,
    ART's defaults 32 and 0.1 overridden): per image, NumPy noise for the n0 and then the n
    copies, ``predict`` through ART's PyTorchClassifier. The batch size matters to ART as
    much as to us, so ART is first timed on the first ``--sweep-images`` images (default
    5) at each of ``--art-batches`` (default 32, its default, 256 and 1000) and then
    certifies all images at the fastest of them; the ratio is taken against that run.
    ART computes its bound with
    statsmodels' Clopper-Pearson interval; where statsmodels is missing the script puts
    in the same bound from SciPy (``beta.ppf(alpha, k, n - k + 1)``) and says so;
(c) a bare loop: per image, batches of noisy copies through the model, argmax and
    bincount, no statistics and no selection/estimation split (n0 + n copies); once with
    the net as given and once with a channels_last copy of it, the layout assay's
    ``SmoothedClassifier`` runs a convolutional net in on CPU (``channels_last=None``), at
    ``--batch``.

With ``--repeats R`` the three runs alternate R times and the best time of each counts.
It prints seconds per image, the ratios ART/assay and assay/bare, and how far assay's and
ART's results agree (the noise differs, so radii differ by Monte Carlo error).

Usage (ART is for benchmarking only: pip install adversarial-robustness-toolbox):

    python benchmarks/smoothing.py [--images 100] [--n 10000] [--batch 256]
        [--data mnist|fashion-mnist|cifar10] [--arch lenet|small_cnn|mlp|resnet]
        [--sigma 0.25] [--threads 2] [--repeats 1] [--weights auto|noise|normal]
        [--train-images 10000] [--sweep-images 5] [--art-batches 32,256,1000]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from _machine import data_root, machine, timed
from assay.core import zoo
from assay.core.data import load_data
from assay.core.training import TrainConfig, fit
from assay.defenses.smoothing import SmoothedClassifier, gaussian_augmentation_loss

CACHE = Path(__file__).parent / ".cache"
N0, ALPHA = 100, 0.001


@torch.no_grad()
def accuracy(net: nn.Module, x: Tensor, y: Tensor) -> float:
    return float(torch.cat([net(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
                 .eq(y).float().mean())


def load_net(choice: str, sigma: float, train_images: int, data: str, arch: str,
             shape: tuple[int, ...], classes: int) -> tuple[nn.Module, str]:
    """The network to certify and a line saying where its weights came from."""
    net = zoo.build(arch, input_shape=shape, num_classes=classes, seed=0)
    prefix = "" if data == "mnist" else f"{data}-"
    noise_path = CACHE / f"{prefix}{arch}-noise-{sigma:g}.pt"
    normal_path = CACHE / "lenet-normal.pt"
    if choice == "normal" and (data, arch) != ("mnist", "lenet"):
        raise SystemExit("--weights normal exists for the MNIST LeNet only")
    recipe = dict(epochs=1, batch_size=128, lr=1e-3, optimizer="adam", seed=0)
    if choice in ("auto", "noise") and noise_path.exists():
        record = json.loads(noise_path.with_suffix(".json").read_text())
        if record.get("train_images") == train_images:
            net.load_state_dict(torch.load(noise_path, weights_only=True))
            return net.eval(), f"{noise_path.name} (cached; Gaussian augmentation sigma = " \
                               f"{sigma:g}, {record})"
    if choice == "normal" or (choice == "auto" and normal_path.exists()
                              and (data, arch) == ("mnist", "lenet")):
        net.load_state_dict(torch.load(normal_path, weights_only=True))
        return net.eval(), (f"{normal_path.name} (plain training from benchmarks/evasion.py, "
                            "NOT noise-trained: same speed, smaller radii)")
    train = load_data(f"{data}:train:{train_images}", data_root=data_root())
    print(f"training {arch} on {data} with Gaussian augmentation sigma = {sigma:g} on "
          f"{train_images} images ...", flush=True)
    started = time.perf_counter()
    history = fit(net, train, TrainConfig(**recipe), loss_fn=gaussian_augmentation_loss(sigma),
                  show_progress=True)
    record = {"recipe": recipe, "train_images": train_images, "sigma": sigma,
              "train_seconds": round(time.perf_counter() - started, 1), "loss": history.loss}
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), noise_path)
    noise_path.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return net.eval(), f"{noise_path.name} (trained now: Gaussian augmentation, {record})"


def run_assay(net: nn.Module, x: Tensor, sigma: float, n: int, batch: int):
    result = SmoothedClassifier(net, sigma=sigma, batch_size=batch, seed=0).certify(
        x, n0=N0, n=n, alpha=ALPHA)
    return result.prediction.numpy(), result.radius.numpy()


def art_smoother(net: nn.Module, sigma: float, shape: tuple[int, ...],
                 classes: int) -> tuple[object, str]:
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    note = "statsmodels' Clopper-Pearson bound"
    if importlib.util.find_spec("statsmodels") is None:
        from scipy.stats import beta

        def lower(self, k, n):  # statsmodels' proportion_confint(k, n, 2 alpha, "beta")[0]
            return 0.0 if k == 0 else float(beta.ppf(self.alpha, k, n - k + 1))

        PyTorchRandomizedSmoothing._lower_confidence_bound = lower
        note = ("statsmodels missing: ART's bound replaced by the identical SciPy formula "
                "beta.ppf(alpha, k, n - k + 1)")
    smoother = PyTorchRandomizedSmoothing(
        model=net, loss=nn.CrossEntropyLoss(), input_shape=shape, nb_classes=classes,
        device_type="cpu", sample_size=N0, scale=sigma, alpha=ALPHA)
    return smoother, note


def run_art(smoother, x: Tensor, n: int, batch: int):
    np.random.seed(0)
    prediction, radius = smoother.certify(x.numpy(), n=n, batch_size=batch)
    return np.asarray(prediction), np.asarray(radius, dtype=np.float64)


@torch.no_grad()
def run_bare(net: nn.Module, x: Tensor, sigma: float, n: int, batch: int,
             classes: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    total, counts = N0 + n, []
    for image in x:
        count = torch.zeros(classes, dtype=torch.long)
        for start in range(0, total, batch):
            size = min(batch, total - start)
            noisy = image + sigma * torch.randn((size, *image.shape), generator=generator)
            count += torch.bincount(net(noisy).argmax(1), minlength=classes)
        counts.append(count)
    return torch.stack(counts).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=256,
                        help="assay's and the bare loops' batch (assay's default)")
    parser.add_argument("--data", choices=("mnist", "fashion-mnist", "cifar10"),
                        default="mnist")
    parser.add_argument("--arch", choices=("lenet", "small_cnn", "mlp", "resnet"),
                        default="lenet")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; the best counts")
    parser.add_argument("--weights", choices=("auto", "noise", "normal"), default="auto")
    parser.add_argument("--train-images", type=int, default=10_000)
    parser.add_argument("--sweep-images", type=int, default=5,
                        help="images on which ART's batch sizes are timed")
    parser.add_argument("--art-batches", default="32,256,1000",
                        help="ART batch sizes to time (its default is 32)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    # print assay's compile decisions (AutoCompiledForward logs them at debug level)
    logging.basicConfig(format="  assay: %(message)s")
    logging.getLogger("assay").setLevel(logging.DEBUG)

    test = load_data(f"{args.data}:test:{args.images}", data_root=data_root())
    x, y = test.x, test.y
    shape, classes = tuple(test.input_shape), test.num_classes
    net, source = load_net(args.weights, args.sigma, args.train_images, args.data, args.arch,
                           shape, classes)
    smoother, art_note = art_smoother(net, args.sigma, shape, classes)
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    # warm-up (allocator, kernels) on one image with a small n
    run_assay(net, x[:1], args.sigma, 200, args.batch)
    run_art(smoother, x[:1], 200, 32)
    run_bare(net, x[:1], args.sigma, 200, args.batch, classes)
    run_bare(net_cl, x[:1], args.sigma, 200, args.batch, classes)

    sweep = {}  # ART's seconds per image at each batch size
    for art_batch in [int(b) for b in args.art_batches.split(",")]:
        _, t = timed(lambda b=art_batch: run_art(smoother, x[:args.sweep_images], args.n, b))
        sweep[art_batch] = t / min(args.sweep_images, len(x))
    art_batch = min(sweep, key=sweep.get)

    t_ours = t_bare = t_bare_cl = t_art = float("inf")
    for _ in range(args.repeats):  # interleaved; the best of each (shared, noisy machines)
        (ours_pred, ours_radius), t = timed(lambda: run_assay(net, x, args.sigma, args.n,
                                                              args.batch))
        t_ours = min(t_ours, t)
        _, t = timed(lambda: run_bare(net, x, args.sigma, args.n, args.batch, classes))
        t_bare = min(t_bare, t)
        _, t = timed(lambda: run_bare(net_cl, x, args.sigma, args.n, args.batch, classes))
        t_bare_cl = min(t_bare_cl, t)
        (art_pred, art_radius), t = timed(lambda: run_art(smoother, x, args.n, art_batch))
        t_art = min(t_art, t)

    k = len(x)
    same_pred = float(np.mean(ours_pred == art_pred))
    both = (ours_pred >= 0) & (art_pred >= 0)
    gap = np.abs(ours_radius - art_radius)[both]
    yy = y.numpy()

    def cert_acc(pred, radius, r):
        return float(np.mean((pred == yy) & (radius >= r)))

    radii = (0.0, 0.25, 0.5, 0.75)
    lines = [
        f"{args.data} test images: {k}, {args.arch} weights: {source}",
        f"clean accuracy of the base net on them: {accuracy(net, x, y):.3f}",
        f"sigma = {args.sigma:g}, n0 = {N0}, n = {args.n}, alpha = {ALPHA:g}, batch = "
        f"{args.batch} (ART: {art_batch}); {machine()}; ART: {art_note}",
        f"ART's seconds per image by batch size on {min(args.sweep_images, k)} images: "
        + ", ".join(f"{b}: {t:.3f}" for b, t in sweep.items()),
        "",
        "| run | s per image |",
        "|---|---:|",
        f"| assay SmoothedClassifier.certify | {t_ours / k:.3f} |",
        f"| ART PyTorchRandomizedSmoothing.certify, batch {art_batch} | {t_art / k:.3f} |",
        f"| bare loop (noise, forward, argmax, bincount) | {t_bare / k:.3f} |",
        f"| bare loop, channels_last copy of the net | {t_bare_cl / k:.3f} |",
        "",
        f"- ART / assay: {t_art / t_ours:.2f}x; assay / bare: {t_ours / t_bare:.3f}x; "
        f"assay / bare channels_last: {t_ours / t_bare_cl:.3f}x",
        f"- same prediction (class or abstain): {same_pred:.1%}; abstentions assay "
        f"{int(np.sum(ours_pred < 0))}, ART {int(np.sum(art_pred < 0))}",
        f"- |radius difference| where both certify ({int(both.sum())} images): mean "
        f"{gap.mean() if len(gap) else float('nan'):.4f}, max "
        f"{gap.max() if len(gap) else float('nan'):.4f}",
        "- certified accuracy at L2 radius " + ", ".join(f"{r:g}" for r in radii) + ": assay "
        + " / ".join(f"{cert_acc(ours_pred, ours_radius, r):.2f}" for r in radii) + "; ART "
        + " / ".join(f"{cert_acc(art_pred, art_radius, r):.2f}" for r in radii),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
