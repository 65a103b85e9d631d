"""The hardening, certification and evaluation paths on a CUDA device: results stay on the
device, agree with the CPU within Monte Carlo or seed noise, and the CLI runs with --device.

Skipped where torch sees no CUDA device (the CI machine); run on a GPU machine with
``python -m pytest tests/test_cuda.py``. ``ASSAY_TEST_DEVICE=cpu`` runs the same tests on
the CPU (a check of the tests themselves where no GPU is at hand).
"""

import copy
import os

import pytest
import torch

from assay.attacks.evasion.evaluation import evaluate_robustness
from assay.cli import main
from assay.core.training import TrainConfig
from assay.defenses.adversarial import adversarial_training
from assay.defenses.compression import prune, quantize
from assay.defenses.smoothing import SmoothedClassifier

CUDA = torch.device(os.environ.get("ASSAY_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(),
                                reason="no CUDA device")


def on_device(t: torch.Tensor) -> bool:
    return t.device.type == CUDA.type


@pytest.fixture()
def cuda_model(digits_model):
    return copy.deepcopy(digits_model).to(CUDA)


def certified_accuracy(result, y, radius):
    return float(((result.prediction == y) & (result.radius >= radius)).float().mean())


def test_certify_on_cuda_agrees_with_the_cpu(digits, digits_model, cuda_model):
    _, test = digits
    x, y = test.x[:40], test.y[:40]
    gpu = SmoothedClassifier(cuda_model, sigma=0.25).certify(x, n=2000)
    cpu = SmoothedClassifier(digits_model, sigma=0.25).certify(x, n=2000)
    assert on_device(gpu.counts) and on_device(gpu.prediction) and on_device(gpu.radius)
    assert int(gpu.counts.sum()) == 40 * 2000
    # Different noise streams: the predictions agree on most points, the curves closely.
    agree = float((gpu.prediction.cpu() == cpu.prediction).float().mean())
    assert agree >= 0.9
    for r in (0.0, 0.25, 0.5):
        assert certified_accuracy(gpu, y.to(CUDA), r) == pytest.approx(
            certified_accuracy(cpu, y, r), abs=0.1)


def test_compiled_certify_on_cuda_gives_the_same_counts(digits, cuda_model):
    _, test = digits
    x = test.x[:3]
    plain = SmoothedClassifier(cuda_model, sigma=0.25, batch_size=256,
                               compile=False).certify(x, n0=50, n=300)
    fast = SmoothedClassifier(cuda_model, sigma=0.25, batch_size=256,
                              compile=True).certify(x, n0=50, n=300)
    # Fused kernels may round differently: an argmax can flip only on a near-tie.
    assert int((fast.counts - plain.counts).abs().sum()) <= 4


@pytest.mark.parametrize("method", ["pgd", "trades", "fast"])
def test_adversarial_training_on_cuda(digits, method):
    from assay.core import zoo
    from assay.metrics.accuracy import accuracy

    train, test = digits
    net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0).to(CUDA)
    result = adversarial_training(net, train, method=method, eps=0.1, guard_points=128,
                                  config=TrainConfig(epochs=3, lr=3e-3, seed=0),
                                  show_progress=False)
    assert all(on_device(p) for p in net.parameters())
    assert len(result.guard_accuracies) == 3 and result.collapsed_at is None
    net.eval()
    with torch.no_grad():
        clean = accuracy(net(test.x.to(CUDA)).argmax(1), test.y.to(CUDA))
    assert clean > 0.7


def test_evaluation_on_cuda_agrees_with_the_cpu(digits, digits_model, cuda_model):
    _, test = digits
    x, y = test.x[:100], test.y[:100]
    mode = cuda_model.training
    gpu = evaluate_robustness(cuda_model, x.to(CUDA), y.to(CUDA), eps=0.1, mode="quick")
    cpu = evaluate_robustness(digits_model, x, y, eps=0.1, mode="quick")
    assert on_device(gpu.x_adv)
    assert float((gpu.x_adv.cpu() - x).abs().max()) <= 0.1 + 1e-6
    assert float(gpu.robust.float().mean()) == pytest.approx(float(cpu.robust.float().mean()),
                                                            abs=0.05)
    assert cuda_model.training == mode


def test_compression_of_a_cuda_model(digits, cuda_model):
    _, test = digits
    pruned = prune(cuda_model, 0.5)
    weights = torch.cat([p.flatten() for n, p in pruned.named_parameters() if "weight" in n])
    assert on_device(weights) and float((weights == 0).float().mean()) == pytest.approx(0.5,
                                                                                     abs=0.01)
    quantized = quantize(cuda_model)  # int8 runs on the CPU: the copy moves there
    out = quantized(test.x[:8])
    assert out.device.type == "cpu" and out.shape == (8, 10)
    assert on_device(next(cuda_model.parameters()))  # the original stays where it was


def test_audit_and_harden_cli_with_device_cuda(tmp_path):
    assert main(["audit", "--demo", "--device", CUDA.type, "--out", str(tmp_path / "audit"),
                 "--quiet"]) == 0
    assert (tmp_path / "audit" / "report.json").is_file()
    assert main(["harden", "adversarial", "--arch", "small_cnn", "--data", "digits:train",
                 "--eval-data", "digits:test", "--method", "fast", "--eps", "0.1",
                 "--epochs", "2", "--device", CUDA.type, "--out", str(tmp_path / "at.safetensors"),
                 "--quiet"]) == 0
    assert (tmp_path / "at-report" / "comparison.json").is_file()
