"""Speed and strength of assay's evasion attacks against torchattacks, ART and foolbox.

Everything runs in one process on MNIST (IDX files under $ASSAY_DATA_DIR, default
../shared/data), on the same two networks given to every library: the zoo's LeNet-style
CNN (Madry et al.'s MNIST net), trained with assay's one training loop

- "normal": plain training (Adam, 1 epoch on the 60k training images);
- "adv": adversarially trained at Linf eps 0.3 (fine-tuned from "normal" for 2 epochs with 3-step
  PGD-AT through ``fit``'s ``loss_fn`` hook, eps ramped up over the first 20% of batches).

Both state_dicts are cached in benchmarks/.cache/ (``--retrain`` trains again); training
takes about 5 minutes for each on 2 CPU cores. ``--data cifar10`` runs everything on
CIFAR-10 instead, with the zoo ResNet ("normal": 3 epochs; "adv": 2 more epochs of 3-step
PGD-AT) at Linf 8/255 (L2 0.5).

``--bf16-experiment`` adds one row: assay's standard evaluation with every stage on a
bfloat16 autocast copy of the net, its examples re-classified by the float32 net (what
running the gradient stages in bf16 would buy and cost; assay does not do it).

Part "pgd": PGD-20 (step 2.5 eps / 20, one random start) at Linf eps 0.3 (and with
``--norms linf,l2`` L2 eps 2.0) on ``--n-pgd`` test images: assay ``PGD``,
``torchattacks.PGD`` / ``PGDL2``, ART ``ProjectedGradientDescentPyTorch`` and foolbox
``LinfPGD`` / ``L2PGD``, all with the same batch size.

Part "aa": the standard evaluation (AutoAttack, Croce & Hein 2020) at Linf eps 0.3 on
``--n-aa`` test images: assay's ``evaluate_robustness(mode="standard")`` against the
composition torchattacks' ``AutoAttack(version="standard")`` builds (APGD-CE, APGD-T,
FAB-T, Square 5000 queries, run one after the other on the points still robust, as its
``MultiAttack`` does) but with 100 APGD / APGD-T steps as in the original AutoAttack
(torchattacks' own AutoAttack leaves them at 10), FAB-T at ``--fab-steps`` (default 100,
the original's; torchattacks' AutoAttack leaves it at 10). The torchattacks side runs
MultiAttack's loop step by step to time each attack (``--check-multiattack`` also runs
the MultiAttack object itself). ``--art-aa`` adds ART's AutoAttack as a second peer, given
APGD-CE, APGD-DLR (100 iterations, one restart each) and Square (5000 queries): ART has no
untargeted-only APGD-T/FAB-T composition, so it is a near, not an exact, match.

assay stops attacking a point once it is misclassified (early stop); the peers' PGD and
APGD keep iterating on it. On the normal model, where almost every point breaks in a step
or two, the ratios mostly measure that; the adversarially trained model is the fair
comparison of per-step cost.

Robust accuracy is computed once, the same way, for every library (the bare net on the
returned inputs, with the perturbation checked against the ball and [0, 1]). A faster
attack that breaks fewer points is not better: read times together with robust
accuracies.

Usage (the peers are for benchmarking only, never assay dependencies:
pip install --no-deps torchattacks  (it declares torchvision and would pull a CUDA torch);
pip install adversarial-robustness-toolbox foolbox; --art-aa also needs multiprocess):

    python benchmarks/evasion.py [--data mnist] [--n-pgd 1000] [--n-aa 100] [--threads 2]
        [--models normal,adv] [--parts pgd,aa] [--norms linf] [--fab-steps 100]
        [--art-aa] [--bf16-experiment] [--markdown out.md] [--retrain]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from assay.attacks.evasion import PGD
from assay.attacks.evasion.evaluation import evaluate_robustness
from _machine import data_root, lazy_data, machine, timed
from assay.core import zoo
from assay.core.data import load_data
from assay.core.model import ModelWrapper
from assay.core.training import TrainConfig, fit

CACHE = Path(__file__).parent / ".cache"
PGD_STEPS = 20
# Per data set (--data): input shape, classes, zoo network, radii, training recipes
# (recorded next to the cached weights). The CIFAR-10 nets are the zoo ResNet, trained
# on the 50k training images ("normal": 3 epochs; "adv": 2 more with 3-step PGD-AT at
# Linf 8/255), since the MNIST LeNet under-uses the CPU.
DATASETS = {
    "mnist": dict(shape=(1, 28, 28), arch="lenet", eps={"linf": 0.3, "l2": 2.0},
                  normal=dict(epochs=1, batch_size=128, lr=1e-3, optimizer="adam", seed=0),
                  adv=dict(epochs=2, batch_size=128, lr=1e-3, optimizer="adam", seed=0,
                           eps=0.3, steps=3, warmup=0.2, init="normal")),
    "cifar10": dict(shape=(3, 32, 32), arch="resnet", eps={"linf": 8 / 255, "l2": 0.5},
                    normal=dict(epochs=3, batch_size=128, lr=1e-3, optimizer="adam", seed=0),
                    adv=dict(epochs=2, batch_size=128, lr=1e-3, optimizer="adam", seed=0,
                             eps=8 / 255, steps=3, warmup=0.2, init="normal")),
}
DATA = "mnist"  # set by --data
SHAPE, CLASSES = (1, 28, 28), 10
EPS = DATASETS["mnist"]["eps"]
NORMAL, ADV = DATASETS["mnist"]["normal"], DATASETS["mnist"]["adv"]


def use_data(name: str) -> None:
    """Point the module's settings at the data set ``name``."""
    global DATA, SHAPE, EPS, NORMAL, ADV
    settings = DATASETS[name]
    DATA, SHAPE, EPS = name, settings["shape"], settings["eps"]
    NORMAL, ADV = settings["normal"], settings["adv"]


# ----------------------------------------------------------------------------- setup
def new_net() -> nn.Module:
    return zoo.build(DATASETS[DATA]["arch"], input_shape=SHAPE, num_classes=CLASSES, seed=0)


@torch.no_grad()
def accuracy(net: nn.Module, x: Tensor, y: Tensor, batch: int = 1000) -> float:
    net.eval()
    hits = sum(int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
               for i in range(0, len(x), batch))
    return hits / max(len(x), 1)


def adversarial_loss(eps: float, steps: int, warmup_batches: int):
    """``fit``'s loss_fn for PGD-AT: cross-entropy on assay PGD examples (no early stop,
    default step 2.5 eps / steps, seeded per batch), eps ramped linearly over the first
    ``warmup_batches`` batches."""
    state = {"batch": 0}

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        ramp = min(1.0, (state["batch"] + 1) / max(warmup_batches, 1))
        attack = PGD(eps=eps * ramp, steps=steps, early_stop=False, seed=state["batch"])
        x_adv = attack(model, x, y)  # PGD switches to eval mode and back
        state["batch"] += 1
        return F.cross_entropy(model(x_adv), y)

    return loss_fn


def load_or_train(name: str, train, test, retrain: bool, nets: dict) -> tuple[nn.Module, dict]:
    """The trained net ``name`` and its training record, from the cache when possible."""
    arch = DATASETS[DATA]["arch"]
    weights, record_path = CACHE / f"{arch}-{name}.pt", CACHE / f"{arch}-{name}.json"
    recipe = NORMAL if name == "normal" else ADV
    net = new_net()
    if not retrain and weights.exists() and record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("recipe") == recipe:
            net.load_state_dict(torch.load(weights, weights_only=True))
            record["cached"] = True
            return net.eval(), record
    data = train()
    config = TrainConfig(**{k: recipe[k] for k in ("epochs", "batch_size", "lr", "optimizer",
                                                   "seed")})
    loss_fn = None
    if name == "adv":
        start, _ = nets.get("normal") or load_or_train("normal", train, test, retrain, nets)
        nets.setdefault("normal", (start, None))
        net.load_state_dict(start.state_dict())
        batches = -(-len(data) // recipe["batch_size"]) * recipe["epochs"]
        loss_fn = adversarial_loss(recipe["eps"], recipe["steps"],
                                   int(recipe["warmup"] * batches))
    print(f"training '{name}' ({recipe}) ...", flush=True)
    started = time.perf_counter()
    kwargs = {"loss_fn": loss_fn} if loss_fn is not None else {}
    history = fit(net, data, config, show_progress=True, **kwargs)
    seconds = time.perf_counter() - started
    record = {"recipe": recipe, "train_seconds": round(seconds, 1),
              "threads": torch.get_num_threads(), "loss": history.loss,
              "clean_test_accuracy": accuracy(net, test.x, test.y)}
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), weights)
    record_path.write_text(json.dumps(record, indent=1))
    record["cached"] = False
    return net.eval(), record


# ----------------------------------------------------------------------------- helpers
def robust_accuracy(net: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, norm: str,
                    eps: float) -> tuple[float, float]:
    """(robust accuracy, largest perturbation); an example outside the ball or [0, 1]
    counts as not adversarial (the point stays robust) and is reported."""
    x_adv = torch.as_tensor(np.asarray(x_adv) if not isinstance(x_adv, Tensor) else x_adv)
    x_adv = x_adv.to(x.dtype).reshape(x.shape)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    valid = (size <= eps * (1 + 1e-5) + 1e-5) & (x_adv.flatten(1).amin(1) >= -1e-6) & \
            (x_adv.flatten(1).amax(1) <= 1 + 1e-6)
    with torch.no_grad():
        pred = torch.cat([net(x_adv[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    correct = (pred == y) | ~valid
    if bool((~valid).any()):
        print(f"  warning: {int((~valid).sum())} examples leave the ball or the bounds")
    return float(correct.float().mean()), float(size.max()) if len(size) else 0.0


def batched(fn, x: Tensor, y: Tensor, batch: int) -> Tensor:
    return torch.cat([fn(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)])


def art_classifier(net: nn.Module):
    from art.estimators.classification import PyTorchClassifier
    return PyTorchClassifier(model=net, loss=nn.CrossEntropyLoss(), input_shape=SHAPE,
                             nb_classes=CLASSES, clip_values=(0.0, 1.0), device_type="cpu")


# ----------------------------------------------------------------------------- part 1
def pgd_runners(net: nn.Module, wrapper: ModelWrapper, norm: str, batch: int) -> dict:
    """library -> callable(x, y) returning adversarial examples; each seeds itself."""
    import foolbox as fb
    import torchattacks
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    eps = EPS[norm]
    step = 2.5 * eps / PGD_STEPS

    def run_assay(x, y):
        return PGD(eps=eps, norm=norm, steps=PGD_STEPS, step_size=step, seed=0,
                   batch_size=batch)(wrapper, x, y)

    def run_torchattacks(x, y):
        torch.manual_seed(0)
        cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
        attack = cls(net, eps=eps, alpha=step, steps=PGD_STEPS, random_start=True)
        return batched(attack, x, y, batch)

    def run_art(x, y):
        np.random.seed(0)
        attack = ProjectedGradientDescentPyTorch(
            art_classifier(net), norm=np.inf if norm == "linf" else 2, eps=eps,
            eps_step=step, max_iter=PGD_STEPS, num_random_init=1, batch_size=batch,
            verbose=False)
        return torch.from_numpy(attack.generate(x.numpy(), y=y.numpy()))

    def run_foolbox(x, y):
        torch.manual_seed(0)
        model = fb.PyTorchModel(net, bounds=(0, 1))
        cls = fb.attacks.LinfPGD if norm == "linf" else fb.attacks.L2PGD
        attack = cls(rel_stepsize=None, abs_stepsize=step, steps=PGD_STEPS, random_start=True)
        return batched(lambda xb, yb: attack(model, xb, yb, epsilons=eps)[1], x, y, batch)

    return {"assay": run_assay, "torchattacks": run_torchattacks, "ART": run_art,
            "foolbox": run_foolbox}


def part_pgd(name: str, net: nn.Module, x: Tensor, y: Tensor, norms: list[str],
             batch: int) -> list[str]:
    wrapper = ModelWrapper(net, num_classes=CLASSES, input_shape=SHAPE)
    rows = []
    for norm in norms:
        runners = pgd_runners(net, wrapper, norm, batch)
        results = {}
        for library, run in runners.items():
            run(x[:8], y[:8])  # warm-up: imports, allocator, estimator set-up
            x_adv, seconds = timed(lambda run=run: run(x, y))
            acc, size = robust_accuracy(net, x, y, x_adv, norm, EPS[norm])
            results[library] = (seconds, acc)
            print(f"  [{name}] PGD-{PGD_STEPS} {norm} eps {EPS[norm]:g}: {library:12s} "
                  f"{seconds:7.2f} s, robust accuracy {acc:.3f} (max |delta| {size:.4f})",
                  flush=True)
        ours = results["assay"][0]
        for library, (seconds, acc) in results.items():
            ratio = "1.0" if library == "assay" else f"{seconds / ours:.1f}"
            rows.append(f"| {name} | PGD-{PGD_STEPS} {norm} {EPS[norm]:g} | {library} | "
                        f"{seconds:.2f} | {acc:.3f} | {ratio} |")
    return rows


# ----------------------------------------------------------------------------- part 2
def torchattacks_standard(net: nn.Module, eps: float, fab_steps: int) -> list[tuple[str, object]]:
    """What torchattacks' AutoAttack(version="standard") builds, with 100 APGD steps."""
    from torchattacks import APGD, APGDT, FAB, Square
    return [
        ("APGD-CE", APGD(net, eps=eps, norm="Linf", steps=100, loss="ce", n_restarts=1,
                         seed=0)),
        ("APGD-T", APGDT(net, eps=eps, norm="Linf", steps=100, n_classes=CLASSES,
                         n_restarts=1, seed=0)),
        ("FAB-T", FAB(net, eps=eps, norm="Linf", steps=fab_steps, multi_targeted=True,
                      n_classes=CLASSES, n_restarts=1, seed=0)),
        ("Square", Square(net, eps=eps, norm="Linf", n_queries=5000, n_restarts=1, seed=0)),
    ]


def run_multiattack_mirror(net: nn.Module, attacks, x: Tensor, y: Tensor, batch: int):
    """torchattacks' MultiAttack.forward, step by step: each attack runs on the points
    that every earlier one left correctly classified; returns x_adv and per-attack
    (name, attacked, broken, seconds)."""
    final = x.clone()
    fails = torch.arange(len(x))
    stages = []
    for name, attack in attacks:
        started = time.perf_counter()
        attacked = len(fails)
        adv = batched(attack, x[fails], y[fails], batch) if attacked else x[:0]
        with torch.no_grad():
            wrong = net(adv).argmax(1) != y[fails] if attacked else torch.zeros(0, dtype=bool)
        final[fails[wrong]] = adv[wrong]
        fails = fails[~wrong]
        stages.append((name, attacked, int(wrong.sum()), time.perf_counter() - started))
    return final, stages


def run_art_autoattack(net: nn.Module, x: Tensor, y: Tensor, eps: float, batch: int):
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack
    estimator = art_classifier(net)
    np.random.seed(0)
    attacks = [AutoProjectedGradientDescent(estimator, norm=np.inf, eps=eps, eps_step=0.1,
                                            max_iter=100, nb_random_init=1, batch_size=batch,
                                            loss_type=loss, verbose=False)
               for loss in ("cross_entropy", "difference_logits_ratio")]
    attacks.append(SquareAttack(estimator, norm=np.inf, eps=eps, max_iter=5000, p_init=0.8,
                                nb_restarts=1, batch_size=batch, verbose=False))
    attack = AutoAttack(estimator, norm=np.inf, eps=eps, eps_step=0.1, attacks=attacks,
                        batch_size=batch)
    return torch.from_numpy(attack.generate(x.numpy(), y=y.numpy()))


class Bf16Autocast(nn.Module):
    """``net`` under bfloat16 autocast (float32 logits): not the same function as ``net``,
    for the --bf16-experiment only."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.net(x).float()


def part_aa(name: str, net: nn.Module, x: Tensor, y: Tensor, batch: int, fab_steps: int,
            art_aa: bool, check_multiattack: bool,
            bf16_experiment: bool = False) -> tuple[list[str], list[str]]:
    eps = EPS["linf"]
    wrapper = ModelWrapper(net, num_classes=CLASSES, input_shape=SHAPE)
    res, ours = timed(lambda: evaluate_robustness(wrapper, x, y, eps=eps, norm="linf",
                                                  mode="standard", seed=0, batch_size=batch))
    acc_ours, _ = robust_accuracy(net, x, y, res.x_adv, "linf", eps)
    print(f"  [{name}] assay standard evaluation: {ours:.1f} s, robust accuracy "
          f"{res.robust_accuracy:.3f} (re-checked: {acc_ours:.3f}), clean "
          f"{res.clean_accuracy:.3f}", flush=True)
    details = [f"- {name}, assay stages: " + "; ".join(
        f"{s.name} {s.seconds:.2f} s ({s.attacked} attacked, {s.broken} broken, "
        f"{s.queries} queries)" for s in res.stages)]
    print(details[-1], flush=True)

    attacks = torchattacks_standard(net, eps, fab_steps)
    (x_ta, stages), theirs = timed(lambda: run_multiattack_mirror(net, attacks, x, y, batch))
    acc_ta, _ = robust_accuracy(net, x, y, x_ta, "linf", eps)
    share = "; ".join(f"{n} {s:.2f} s ({100 * s / max(theirs, 1e-9):.0f}%, {a} attacked, "
                      f"{b} broken)" for n, a, b, s in stages)
    details.append(f"- {name}, torchattacks stages: {share}")
    print(f"  [{name}] torchattacks standard composition: {theirs:.1f} s, robust accuracy "
          f"{acc_ta:.3f}", flush=True)
    print(details[-1], flush=True)
    ours_stage = {s.name: s.seconds for s in res.stages}
    details.append(f"- {name}, per-stage ratio torchattacks/assay: " + "; ".join(
        f"{n} {s / ours_stage[n]:.1f}" for n, a, _, s in stages
        if a and ours_stage.get(n, 0) > 0))
    print(details[-1], flush=True)
    rows = [f"| {name} | standard eval. linf {eps:.3g} | assay | {ours:.1f} | "
            f"{res.robust_accuracy:.3f} | 1.0 |",
            f"| {name} | standard eval. linf {eps:.3g} | torchattacks (APGD 100 steps, FAB "
            f"{fab_steps}) | {theirs:.1f} | {acc_ta:.3f} | {theirs / ours:.1f} |"]
    if bf16_experiment:
        # Every stage on a bf16 copy; the benchmark's own check classifies the examples on
        # the float32 net, so only breaks the real model confirms count.
        copy = ModelWrapper(Bf16Autocast(net), num_classes=CLASSES, input_shape=SHAPE)
        res16, seconds = timed(lambda: evaluate_robustness(copy, x, y, eps=eps, norm="linf",
                                                           mode="standard", seed=0,
                                                           batch_size=batch))
        acc16, _ = robust_accuracy(net, x, y, res16.x_adv, "linf", eps)
        rows.append(f"| {name} | standard eval. linf {eps:.3g} | assay, every stage on bf16 "
                    f"autocast (experiment; re-checked in float32) | {seconds:.1f} | "
                    f"{acc16:.3f} | "
                    f"{seconds / ours:.2f} |")
        print(f"  [{name}] bf16 experiment: {seconds:.1f} s, robust accuracy re-checked in "
              f"float32 {acc16:.3f} (on the copy: {res16.robust_accuracy:.3f}); torchattacks "
              f"/ this: {theirs / seconds:.2f}", flush=True)
    if check_multiattack:
        from torchattacks import MultiAttack
        multi = MultiAttack([a for _, a in torchattacks_standard(net, eps, fab_steps)])
        x_ma, seconds = timed(lambda: batched(multi, x, y, batch))
        acc_ma, _ = robust_accuracy(net, x, y, x_ma, "linf", eps)
        rows.append(f"| {name} | standard eval. linf {eps:.3g} | torchattacks MultiAttack | "
                    f"{seconds:.1f} | {acc_ma:.3f} | {seconds / ours:.1f} |")
        print(f"  [{name}] torchattacks MultiAttack itself: {seconds:.1f} s, robust accuracy "
              f"{acc_ma:.3f}", flush=True)
    if art_aa:
        try:
            import multiprocess  # noqa: F401 - ART's AutoAttack imports it in generate()
        except ImportError:
            raise SystemExit("--art-aa: ART's AutoAttack needs 'multiprocess' "
                             "(pip install multiprocess)") from None
        x_art, seconds = timed(lambda: run_art_autoattack(net, x, y, eps, batch))
        acc_art, _ = robust_accuracy(net, x, y, x_art, "linf", eps)
        rows.append(f"| {name} | standard eval. linf {eps:.3g} | ART AutoAttack (APGD-CE, "
                    f"APGD-DLR, Square) | {seconds:.1f} | {acc_art:.3f} | "
                    f"{seconds / ours:.1f} |")
        print(f"  [{name}] ART AutoAttack: {seconds:.1f} s, robust accuracy {acc_art:.3f}",
              flush=True)
    return rows, details


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist", choices=sorted(DATASETS))
    parser.add_argument("--n-pgd", type=int, default=1000)
    parser.add_argument("--n-aa", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--models", default="normal,adv")
    parser.add_argument("--parts", default="pgd,aa", help="pgd,aa (empty: only train)")
    parser.add_argument("--norms", default="linf", help="PGD norms: linf and/or l2")
    parser.add_argument("--fab-steps", type=int, default=100,
                        help="FAB-T steps on the torchattacks side (original AutoAttack: 100; "
                             "torchattacks' AutoAttack: its default 10)")
    parser.add_argument("--art-aa", action="store_true", help="also run ART's AutoAttack")
    parser.add_argument("--bf16-experiment", action="store_true",
                        help="also run assay's standard evaluation with every stage on a "
                             "bf16 autocast copy (re-checked in float32)")
    parser.add_argument("--check-multiattack", action="store_true",
                        help="also run torchattacks' MultiAttack object itself")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    warnings.filterwarnings("ignore")
    models = [m for m in args.models.split(",") if m]
    parts = [p for p in args.parts.split(",") if p]
    norms = [n for n in args.norms.split(",") if n]

    use_data(args.data)
    root = data_root()
    test = load_data(f"{args.data}:test", data_root=root)
    train = lazy_data(f"{args.data}:train", root)

    nets: dict = {}
    facts = [f"{args.data}, {machine()}"]
    for name in models:
        net, record = load_or_train(name, train, test, args.retrain, nets)
        nets[name] = (net, record)
        facts.append(f"- model '{name}': {record['recipe']}, trained in "
                     f"{record['train_seconds']} s on {record['threads']} threads"
                     f"{' (cached)' if record['cached'] else ''}; clean test accuracy "
                     f"{record['clean_test_accuracy']:.4f}")
        print(facts[-1], flush=True)
    for line in (
            "- torchattacks' AutoAttack(version='standard') passes no steps to APGD / APGD-T "
            "(its default: 10 steps); here both run 100 steps as in the original AutoAttack.",
            f"- FAB-T runs {args.fab_steps} steps on the torchattacks side (original "
            "AutoAttack: 100; torchattacks' AutoAttack: its default 10).",
            f"- batch size {args.batch_size} for every library; PGD on the first {args.n_pgd}, "
            f"the standard evaluation on the first {args.n_aa} test images."):
        facts.append(line)
    print("\n".join(facts), flush=True)

    rows, details = [], []
    for name in models:
        net = nets[name][0]
        if "pgd" in parts:
            x, y = test.x[:args.n_pgd], test.y[:args.n_pgd]
            rows += part_pgd(name, net, x, y, norms, args.batch_size)
        if "aa" in parts:
            x, y = test.x[:args.n_aa], test.y[:args.n_aa]
            more_rows, more = part_aa(name, net, x, y, args.batch_size, args.fab_steps,
                                      args.art_aa, args.check_multiattack,
                                      args.bf16_experiment)
            rows += more_rows
            details += more
    if not rows:
        return
    lines = [*facts, "",
             "| model | attack | library | seconds | robust accuracy | time / assay time |",
             "|---|---|---|---:|---:|---:|", *rows, "", *details]
    text = "\n".join(lines)
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
