"""Speed and quality of assay's attributions against captum, in one process.

Part "speed": Integrated Gradients (64 Gauss-Legendre steps, zero baseline, the label as
target) for the first ``--n`` MNIST test images (default 1000) on the zoo's LeNet (Madry
et al.'s MNIST CNN, trained by benchmarks/evasion.py's "normal" recipe and cached in
benchmarks/.cache/), assay ``IntegratedGradients`` against captum
``IntegratedGradients.attribute(n_steps=64, internal_batch_size=B)``, each over the same
batches of ``--batch-size`` rows (inputs x steps). assay runs its passes on a
channels_last copy of the model on the CPU and batches steps x inputs into one wide pass;
captum runs the model as it is. Printed: both times, their ratio (captum / assay, > 1:
assay faster), the largest difference between the attributions (absolute, and relative to
the largest attribution) and both completeness errors; the channels_last passes round
differently (on an untrained LeNet: 8e-7 for attributions up to 4e-3). Then the cost per
image of assay's deletion and insertion curves (17 points each) and ROAD (9 points) on the
IG maps.

Part "quality": for each method (saliency, gradient x input, IG, SmoothGrad, Grad-CAM,
occlusion with 4x4 windows at stride 4, and a random attribution), deletion and insertion
AUC (Petsiuk et al. 2018), ROAD's MoRF accuracy averaged over 10%-90% removed (Rong et
al. 2022), max-sensitivity (Yeh et al. 2019; radius 0.02, 10 draws; Quantus's MNIST LeNet
tutorial reports saliency 0.39 +/- 0.11 and IG 0.25 +/- 0.08), and the rank correlation
after cascading randomisation (Adebayo et al. 2018), on the first ``--n-quality`` images
(default 200), as mean +/- standard deviation over images. Part "cifar": the same table
on the first ``--n-cifar`` CIFAR-10 test images (default 100) with the zoo's ResNet,
trained once with Adam for ``--cifar-epochs`` (default 10) and cached in
benchmarks/.cache/; without the randomisation column unless ``--cifar-randomisation``
(the ResNet has 17 layers with parameters, each a full re-run of every method).

captum is a benchmark and test dependency only (pip install captum==0.9.0 -c
constraints.txt).

    python benchmarks/explanations.py [--n 1000] [--n-quality 200] [--threads 2]
        [--batch-size 512] [--parts speed,quality,cifar] [--cifar-epochs 10]
        [--n-cifar 100] [--cifar-randomisation] [--markdown out.md] [--retrain]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from _machine import data_root, lazy_data, machine, timed
from assay.core import zoo
from assay.core.data import load_data
from assay.core.model import ModelWrapper
from assay.core.training import TrainConfig, fit
from assay.explain import Attribution, IntegratedGradients, make_explainer
from assay.explain import metrics as M
from evasion import CACHE, load_or_train

STEPS = 64
QUALITY_METHODS = ("saliency", "gradient_x_input", "integrated_gradients", "smoothgrad",
                   "gradcam", "occlusion")


def captum_ig(net: nn.Module, x: Tensor, y: Tensor, batch_rows: int) -> tuple[Tensor, Tensor]:
    """captum's IG over the same input blocks as assay's (``batch_rows // STEPS`` inputs
    a block, each block's steps in passes of ``batch_rows`` rows)."""
    from captum.attr import IntegratedGradients as CaptumIG

    ig = CaptumIG(net)
    per = max(1, batch_rows // STEPS)
    parts, deltas = [], []
    for start in range(0, len(x), per):
        xb, yb = x[start:start + per], y[start:start + per]
        attr, delta = ig.attribute(xb, target=yb, n_steps=STEPS, internal_batch_size=batch_rows,
                                   return_convergence_delta=True)
        parts.append(attr.detach())
        deltas.append(delta.detach())
    return torch.cat(parts), torch.cat(deltas)


def completeness(attributions: Tensor, delta: Tensor, target: Tensor) -> float:
    return float(M.completeness_error(Attribution(attributions, target, delta)).mean())


def part_speed(net: nn.Module, x: Tensor, y: Tensor, batch_rows: int) -> list[str]:
    explainer = IntegratedGradients(steps=STEPS, batch_size=batch_rows)
    ours, ours_s = timed(lambda: explainer.run(net, x, y))
    (theirs, theirs_delta), theirs_s = timed(lambda: captum_ig(net, x, y, batch_rows))
    scale = float(theirs.abs().max())
    gap = float((ours.attributions - theirs).abs().max())
    lines = [
        f"IG ({STEPS} steps) on {len(x)} MNIST images, {batch_rows} rows a pass:",
        f"  assay  {ours_s:8.2f} s   completeness error "
        f"{completeness(ours.attributions, ours.delta, y):.4%}",
        f"  captum {theirs_s:8.2f} s   completeness error "
        f"{completeness(theirs, theirs_delta, y):.4%}",
        f"  ratio captum/assay {theirs_s / ours_s:.2f}x; largest difference {gap:.2e} "
        f"({gap / max(scale, 1e-12):.1e} of the largest attribution, {scale:.3g})"]
    for name, curve in (("deletion (17 points)", M.deletion_curve),
                        ("insertion (17 points)", M.insertion_curve),
                        ("ROAD MoRF (9 points)", M.road_curve)):
        _, seconds = timed(lambda c=curve: c(net, x, ours.attributions, y,
                                             batch_size=batch_rows))
        lines.append(f"  {name}: {1000 * seconds / len(x):.2f} ms per image")
    return lines


def part_quality(net: ModelWrapper, x: Tensor, batch_rows: int, title: str,
                 randomisation: bool = True) -> list[str]:
    """The quality table; ``randomisation=False`` leaves out the cascading randomisation,
    which explains the inputs again once per layer with parameters (17 on the ResNet)."""
    target = net.predict(x)
    noise = M.random_attribution(x, seed=0)
    rows = ["| method | deletion AUC | insertion AUC | ROAD MoRF accuracy | max-sensitivity | "
            "Spearman after randomisation | seconds |", "|---|---|---|---|---|---|---|"]

    def fmt(values: Tensor) -> str:
        return f"{float(values.mean()):.3f} +/- {float(values.std()):.3f}"

    for name in QUALITY_METHODS + ("random",):
        started = time.perf_counter()
        if name == "random":
            maps = noise
            sensitivity = spearman = None
        else:
            settings = {"batch_size": batch_rows}
            if name == "integrated_gradients":
                settings["steps"] = STEPS
            if name == "occlusion":  # 4x4 windows side by side: 49 (MNIST) or 64 a image
                settings["strides"] = 4
            explainer = make_explainer(name, settings)
            maps = explainer(net, x, target)
            sensitivity = M.max_sensitivity(net, x, target, explainer, reference=maps)
            spearman = M.cascading_randomisation(net, x, target, explainer,
                                                 reference=maps).spearman[-1] \
                if randomisation else None
        deletion = M.deletion_curve(net, x, maps, target, batch_size=batch_rows).auc
        insertion = M.insertion_curve(net, x, maps, target, batch_size=batch_rows).auc
        road = M.road_curve(net, x, maps, target, batch_size=batch_rows).hits.float().mean(1)
        seconds = time.perf_counter() - started
        rows.append(f"| {name} | {fmt(deletion)} | {fmt(insertion)} | {fmt(road)} | "
                    f"{'-' if sensitivity is None else fmt(sensitivity)} | "
                    f"{'-' if spearman is None else fmt(spearman)} | {seconds:.1f} |")
    return [f"Attribution quality on {len(x)} {title} test images (predicted class):"] + rows


def cifar_model(retrain: bool, epochs: int) -> tuple[ModelWrapper, dict]:
    """The zoo's ResNet trained on CIFAR-10 (Adam, ``epochs``), cached beside LeNet's."""
    weights, record_path = CACHE / "resnet-cifar10.pt", CACHE / "resnet-cifar10.json"
    recipe = dict(epochs=epochs, batch_size=128, lr=1e-3, optimizer="adam", seed=0)
    net = zoo.build("resnet", input_shape=(3, 32, 32), num_classes=10, seed=0)
    if not retrain and weights.exists() and record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("recipe") == recipe:
            net.load_state_dict(torch.load(weights, weights_only=True))
            return ModelWrapper(net.eval(), num_classes=10, input_shape=(3, 32, 32),
                                name="resnet"), {**record, "cached": True}
    train = load_data("cifar10:train", data_root=data_root())
    print(f"training resnet on CIFAR-10 ({recipe}) ...", flush=True)
    fit(net, train, TrainConfig(**recipe), show_progress=True)
    test = load_data("cifar10:test:2000", data_root=data_root())
    model = ModelWrapper(net.eval(), num_classes=10, input_shape=(3, 32, 32), name="resnet")
    record = {"recipe": recipe, "clean_test_accuracy": float(
        (model.predict(test.x) == test.y).float().mean())}
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), weights)
    record_path.write_text(json.dumps(record, indent=1))
    return model, {**record, "cached": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images for the IG timing")
    parser.add_argument("--n-quality", type=int, default=200, help="images for the table")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512, help="rows per pass")
    parser.add_argument("--parts", default="speed,quality",
                        help="speed, quality (MNIST) and/or cifar (trains a ResNet once)")
    parser.add_argument("--cifar-epochs", type=int, default=10)
    parser.add_argument("--n-cifar", type=int, default=100, help="CIFAR-10 images for its table")
    parser.add_argument("--cifar-randomisation", action="store_true",
                        help="also the randomisation column on CIFAR-10 (17 layers: slow)")
    parser.add_argument("--markdown", type=Path, help="also write the output here")
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    # the training loop logs a line per epoch (with its time) once training runs long
    logging.basicConfig(format="%(asctime)s assay: %(message)s", level=logging.WARNING)
    logging.getLogger("assay.core.training").setLevel(logging.INFO)
    parts = [p for p in args.parts.split(",") if p]

    root = data_root()
    test = load_data("mnist:test", data_root=root)
    train = lazy_data("mnist:train", root)

    net, record = load_or_train("normal", train, test, args.retrain, {})
    model = ModelWrapper(net, num_classes=10, input_shape=(1, 28, 28), name="lenet")
    lines = [f"MNIST, {machine()}",
             f"- LeNet {record['recipe']}; clean test accuracy {record['clean_test_accuracy']:.4f}"
             f"{' (cached)' if record.get('cached') else ''}"]
    print("\n".join(lines), flush=True)
    if "speed" in parts:
        # the bare network for both libraries: the same function, no wrapper in the way
        more = part_speed(net, test.x[:args.n], test.y[:args.n], args.batch_size)
        print("\n".join(more), flush=True)
        lines += more
    if "quality" in parts:
        more = part_quality(model, test.x[:args.n_quality], args.batch_size, "MNIST (LeNet)")
        print("\n".join(more), flush=True)
        lines += more
    if "cifar" in parts:
        resnet, cifar_record = cifar_model(args.retrain, args.cifar_epochs)
        cifar = load_data(f"cifar10:test:{args.n_cifar}", data_root=root)
        more = [f"- ResNet {cifar_record['recipe']}; clean test accuracy "
                f"{cifar_record['clean_test_accuracy']:.4f}"]
        more += part_quality(resnet, cifar.x, args.batch_size, "CIFAR-10 (ResNet)",
                             randomisation=args.cifar_randomisation)
        print("\n".join(more), flush=True)
        lines += more
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
