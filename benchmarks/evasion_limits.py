"""The compute limit of the standard evaluation: what each stage's passes cost bare, and
each stage's time as a multiple of that.

Part "passes": the time per input of one bare pass of the model in each form the
attacks could use, at several pass widths: forward + backward to the input (what
APGD-CE, APGD-T and FAB-T need) and forward only (what Square needs):

- eager: the model as given (float32, NCHW weights), what the peers run;
- channels_last: the copy ``evaluate_robustness`` attacks on CPU (float32);
- frozen trace: TorchScript, frozen and optimised for inference (forward only);
- bf16 autocast: the channels_last copy under bfloat16 autocast, and bf16 weights: a
  copy of it with bfloat16 weights (not the same function: Square may only screen on
  them, see ``ScreeningForward``, which tries the weights copy first);
- torch.compile (``--compile``): inductor, float32.

Part "stages": ``evaluate_robustness(mode="standard")`` on ``--n`` MNIST test images at
Linf 0.3, and for each stage its seconds against its limit: the stage's queries (inputs
passed through the model) times the per-input cost of the fastest form it may use at the
width of its passes (gradient stages: the fastest float32 forward + backward; Square: the
fastest forward, bf16 included). A ratio of 1.0 means the stage does nothing but bare
passes of the fastest form.

The MNIST nets are benchmarks/evasion.py's ("normal" and "adv", cached in
benchmarks/.cache; trained there when missing). ``--cifar`` adds the pass table of the
zoo ResNet on 3x32x32 inputs (untrained weights: a pass costs the same).

Usage: python benchmarks/evasion_limits.py [--n 100] [--threads 2] [--model adv]
    [--parts passes,stages] [--widths 32,100,256,900] [--cifar] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from _machine import data_root, lazy_data, machine
from assay.attacks.evasion.evaluation import evaluate_robustness
from assay.core import zoo
from assay.core.inference import bf16_autocast, bf16_copy, channels_last_copy, frozen_trace
from assay.core.model import ModelWrapper

GRADIENT_STAGES = ("APGD-CE", "APGD-T", "FAB-T")


def seconds_per_input(step: Callable[[], object], width: int, repeats: int) -> float:
    """The median of ``repeats`` timed calls of ``step`` (after one warm-up), per input."""
    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times) / width


def forms(net: nn.Module, sample: Tensor, compile_too: bool) -> dict[str, tuple[str, Callable]]:
    """name -> (kind, forward): kind "fp32" (the model's function up to rounding) or
    "bf16"; every forward takes a batch shaped like ``sample`` except in its width."""
    cl = channels_last_copy(net)
    out: dict[str, tuple[str, Callable]] = {"eager": ("fp32", net),
                                            "channels_last": ("fp32", cl),
                                            "bf16 autocast": ("bf16", bf16_autocast(cl)),
                                            "bf16 weights": ("bf16", bf16_copy(cl))}
    if compile_too:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["torch.compile"] = ("fp32", torch.compile(cl, dynamic=False))
    return out


def pass_table(net: nn.Module, shape: tuple[int, ...], widths: list[int], repeats: int,
               compile_too: bool) -> dict[tuple[str, str, int], float]:
    """(pass, form, width) -> seconds per input, printed as a table."""
    costs: dict[tuple[str, str, int], float] = {}
    candidates = forms(net, torch.rand(1, *shape), compile_too)
    for width in widths:
        x = torch.rand(width, *shape)
        xc = x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
        for name, (_, forward) in candidates.items():
            inputs = x if name == "eager" else xc

            def backward(forward=forward, inputs=inputs) -> None:
                point = inputs.clone().requires_grad_(True)
                torch.autograd.grad(forward(point)[:, 0].sum(), point)

            def forward_only(forward=forward, inputs=inputs) -> None:
                with torch.no_grad():
                    forward(inputs)

            costs["fwd+bwd", name, width] = seconds_per_input(backward, width, repeats)
            costs["fwd", name, width] = seconds_per_input(forward_only, width, repeats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = frozen_trace(channels_last_copy(net).eval(), xc)

        def traced_forward(traced=traced, inputs=xc) -> None:
            with torch.no_grad():
                traced(inputs)

        costs["fwd", "frozen trace", width] = seconds_per_input(traced_forward, width, repeats)
    names = [*candidates, "frozen trace"]
    print("\n| pass | form | " + " | ".join(f"width {w}" for w in widths) + " |")
    print("|---|---|" + "---:|" * len(widths))
    for kind in ("fwd+bwd", "fwd"):
        eager = {w: costs[kind, "eager", w] for w in widths}
        for name in names:
            if (kind, name, widths[0]) not in costs:
                continue
            cells = [f"{costs[kind, name, w] * 1e6:.0f} us ({eager[w] / costs[kind, name, w]:.2f}x)"
                     for w in widths]
            print(f"| {kind} | {name} | " + " | ".join(cells) + " |")
    print("(per input; in brackets: eager's time over this form's, at the same width)")
    return costs


def fastest(costs: dict[tuple[str, str, int], float], kind: str, width: int,
            allowed: set[str]) -> tuple[str, float]:
    """The fastest allowed form of ``kind`` at the measured width nearest ``width``."""
    widths = sorted({w for _, _, w in costs})
    near = min(widths, key=lambda w: abs(w - width))
    options = {form: s for (k, form, w), s in costs.items()
               if k == kind and w == near and form in allowed}
    name = min(options, key=options.__getitem__)
    return name, options[name]


def stage_table(net: nn.Module, n: int, batch: int, repeats: int, compile_too: bool) -> None:
    test = lazy_data("mnist:test", data_root())()
    x, y = test.x[:n], test.y[:n]
    wrapper = ModelWrapper(net, num_classes=10, input_shape=(1, 28, 28))
    started = time.perf_counter()
    result = evaluate_robustness(wrapper, x, y, eps=0.3, norm="linf", mode="standard", seed=0,
                                 batch_size=batch)
    total = time.perf_counter() - started
    print(f"\nstandard evaluation of {n} images: {total:.1f} s, robust accuracy "
          f"{result.robust_accuracy:.3f}, clean {result.clean_accuracy:.3f}")
    # On the CPU every stage passes the points it attacks, up to the batch size, at once
    # (APGD-T runs its targets one after another there; see APGDT's ``wide``).
    widths = sorted({min(batch, max(s.attacked, 1)) for s in result.stages})
    costs = pass_table(net, (1, 28, 28), widths, repeats, compile_too)
    fp32 = {name for (_, name, _) in costs if not name.startswith("bf16")}
    print("\n| stage | attacked | queries | seconds | limit form | limit (s) | "
          "seconds / limit |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for stage in result.stages:
        width = min(batch, max(stage.attacked, 1))
        if stage.name in GRADIENT_STAGES:
            form, cost = fastest(costs, "fwd+bwd", width, fp32 - {"frozen trace"})
        else:
            form, cost = fastest(costs, "fwd", width, set(n for (_, n, _) in costs))
        limit = stage.queries * cost
        print(f"| {stage.name} | {stage.attacked} | {stage.queries} | {stage.seconds:.2f} | "
              f"{form} (width {width}) | {limit:.2f} | {stage.seconds / max(limit, 1e-9):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--model", default="adv", choices=("normal", "adv"))
    parser.add_argument("--parts", default="passes,stages")
    parser.add_argument("--widths", default="32,100,256,900",
                        help="pass widths of the pass table")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cifar", action="store_true", help="also the zoo ResNet's passes")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    parts = args.parts.split(",")
    from evasion import load_or_train  # the nets of benchmarks/evasion.py, same cache
    root = data_root()
    net, record = load_or_train(args.model, lazy_data("mnist:train", root),
                                lazy_data("mnist:test", root)(), False, {})
    print(f"- MNIST LeNet '{args.model}', clean test accuracy "
          f"{record.get('clean_test_accuracy', float('nan')):.4f}")
    widths = [int(w) for w in args.widths.split(",") if w]
    if "passes" in parts:
        print("\nMNIST LeNet passes:")
        pass_table(net, (1, 28, 28), widths, args.repeats, args.compile)
    if args.cifar:
        print("\nzoo ResNet on 3x32x32 passes:")
        resnet = zoo.build("resnet", input_shape=(3, 32, 32), num_classes=10, seed=0).eval()
        pass_table(resnet, (3, 32, 32), widths, args.repeats, args.compile)
    if "stages" in parts:
        stage_table(net, args.n, args.batch_size, args.repeats, args.compile)


if __name__ == "__main__":
    main()
