"""The ood check's inputs: its data sets come from the audit's data directory, its
feature detectors run on TorchScript models, one detector that cannot run does not take
the others down, and the digits' "near" set is harder than the "far" one."""

import gzip
import json

import numpy as np
import pytest
import torch
from torch import nn

from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit, run_check
from assay.checks import CheckContext
from assay.checks.ood import TURN_INTO_DIGITS, build_ood_set
from assay.cli import main
from assay.core import loaders
from assay.core.data import load_data
from assay.core.features import classifier_head, logits_and_features
from assay.core.model import ModelWrapper
from assay.errors import AssayValueError
from assay.shift.ood import DETECTORS

FEATURE_DETECTORS = ("knn", "mahalanobis", "vim")


def _fake_idx(root, name, n=40):
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(name))
    for images, labels in loaders.IDX_FILES.values():
        for file, array in ((images, rng.integers(0, 256, size=(n, 28, 28))),
                            (labels, np.arange(n) % 10)):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(
                int(s).to_bytes(4, "big") for s in array.shape)
            with gzip.open(folder / file, "wb") as out:
                out.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_root(tmp_path, monkeypatch):
    """Fake MNIST and Fashion-MNIST under a data directory that only --data-dir names."""
    monkeypatch.delenv("ASSAY_DATA_DIR", raising=False)
    root = tmp_path / "data"
    _fake_idx(root, "mnist")
    _fake_idx(root, "fashion-mnist")
    return root


def _mnist_model():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10)).eval()


def _ood_check(sets=("far",), detectors=("msp",), gates=(), n=20):
    return {"checks": [{"name": "ood", "gates": list(gates), "params": {
        "ood_sets": list(sets), "detectors": list(detectors), "n": n}}]}


# ----------------------------------------------------------------- the data directory
def test_far_set_is_read_from_the_data_directory_given_to_run_audit(mnist_root):
    data = load_data("mnist:test:20", data_root=mnist_root)
    model = ModelWrapper(_mnist_model(), num_classes=10, input_shape=(1, 28, 28))
    result = run_audit(model, data, plan_from_dict(_ood_check()), progress=False,
                       data_root=mnist_root)
    (check,) = result.checks
    assert check.details["ood_sets"] == {"far": "fashion-mnist:test:10"}
    assert not [f for f in check.findings if f.code == "ood_set_fallback"]


def test_cli_passes_its_data_dir_to_the_ood_check(mnist_root, tmp_path):
    model_file = tmp_path / "mnist.pt"
    torch.jit.save(torch.jit.script(_mnist_model()), str(model_file))
    plan = tmp_path / "plan.toml"
    plan.write_text('[[checks]]\nname = "ood"\n'
                    'params = { ood_sets = ["far"], detectors = ["msp"], n = 20 }\n')
    out = tmp_path / "report"
    code = main(["audit", "--model", str(model_file), "--data", "mnist:test:20", "--data-dir",
                 str(mnist_root), "--plan", str(plan), "--out", str(out), "--quiet",
                 "--no-cache"])
    assert code in (0, 1)  # random weights may warn; the point is where the set came from
    (check,) = json.loads((out / "report.json").read_text())["checks"]
    assert check["details"]["ood_sets"] == {"far": "fashion-mnist:test:10"}
    assert "ood_set_fallback" not in {f["code"] for f in check["findings"]}


def test_a_named_ood_set_that_is_not_there_is_refused_before_any_check(digits, tmp_path,
                                                                        monkeypatch):
    monkeypatch.delenv("ASSAY_DATA_DIR", raising=False)
    _, test = digits
    model = ModelWrapper(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), num_classes=10,
                         input_shape=(1, 8, 8))
    plan = plan_from_dict(_ood_check(sets=["fashion-mnist:test:10"]))
    with pytest.raises(AssayValueError, match=r"checks\[0\]: check 'ood': the 'ood_sets' entry "
                                              r"'fashion-mnist:test:10': .*is missing"):
        run_audit(model, test, plan, progress=False, data_root=tmp_path)


def test_built_image_sets_are_refused_for_tabular_data():
    from assay.core.data import Dataset

    data = Dataset(torch.rand(20, 5), torch.arange(20) % 2, "toy", "test", ("a", "b"))
    model = ModelWrapper(nn.Sequential(nn.Linear(5, 2)).eval(), num_classes=2, input_shape=(5,))
    plan = plan_from_dict(_ood_check(sets=["rotated", "corrupted"]))
    from assay.audit.runner import preflight

    with pytest.raises(AssayValueError, match="'rotated' turns images.*'corrupted'.*4 dimensions"):
        preflight(model, data, plan)


# ----------------------------------------------------------------- TorchScript models
@pytest.fixture
def scripted_variants(digits_net, tmp_path):
    x = torch.rand(4, 1, 8, 8)
    made = {"script": torch.jit.script(digits_net), "trace": torch.jit.trace(digits_net, x),
            "frozen": torch.jit.freeze(torch.jit.script(digits_net).eval())}
    loaded = {}
    for kind, module in made.items():  # as a user's file comes back
        torch.jit.save(module, str(tmp_path / f"{kind}.pt"))
        loaded[kind] = torch.jit.load(str(tmp_path / f"{kind}.pt"))
    return loaded


@pytest.mark.parametrize("kind", ["script", "trace", "frozen"])
def test_features_of_a_torchscript_model_are_those_of_the_python_model(kind, digits,
                                                                        digits_net,
                                                                        scripted_variants):
    _, test = digits
    x = test.x[:30]
    expected_logits, expected = logits_and_features(digits_net, x)
    module = scripted_variants[kind]
    # eval(): a frozen module loaded from a file has no 'training' flag until it is set.
    for model in (module, ModelWrapper(module.eval(), num_classes=10, input_shape=(1, 8, 8))):
        logits, feats = logits_and_features(model, x, batch_size=7)
        torch.testing.assert_close(feats, expected)
        torch.testing.assert_close(logits, expected_logits)
        head = classifier_head(model, x)
        torch.testing.assert_close(feats @ head.weight.T + head.bias, logits, rtol=1e-4,
                                   atol=1e-4)


def test_every_detector_scores_a_torchscript_model_like_the_python_one(digits, digits_net,
                                                                       scripted_variants):
    train, test = digits
    python = ModelWrapper(digits_net, num_classes=10, input_shape=(1, 8, 8))
    scripted = ModelWrapper(scripted_variants["script"], num_classes=10, input_shape=(1, 8, 8))
    plan = plan_from_dict(_ood_check(sets=["far", "near"], detectors=sorted(DETECTORS)))
    spec = plan.checks[0]
    results = [run_check(spec, CheckContext(model=model, data=test.subset(100), progress=False,
                                            train_data=train.subset(300)))
               for model in (python, scripted)]
    assert all(r.status != "error" for r in results)
    assert not [f for f in results[1].findings if f.code == "detector_failed"]
    assert results[1].metrics.keys() == results[0].metrics.keys()
    for name, value in results[0].metrics.items():
        assert results[1].metrics[name] == pytest.approx(value, abs=1e-3), name


def test_a_head_inside_control_flow_is_explained():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 6)
            self.head = nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.body(x))
            if bool(h.sum() > -1.0):
                return self.head(h)
            return self.head(-h)

    with pytest.raises(AssayValueError, match="inside control flow"):
        logits_and_features(torch.jit.script(Branchy()), torch.randn(5, 4))


# ----------------------------------------------------------------- one detector fails
def test_a_detector_that_cannot_run_leaves_the_others_and_says_why(digits):
    train, test = digits
    with torch.random.fork_rng():
        torch.manual_seed(0)
        no_linear = nn.Sequential(nn.Conv2d(1, 10, 8), nn.Flatten()).eval()
    model = ModelWrapper(no_linear, num_classes=10, input_shape=(1, 8, 8))
    plan = plan_from_dict(_ood_check(detectors=["msp", "energy", *FEATURE_DETECTORS],
                                     gates=["auroc@msp:far >= 0.0", "auroc@vim:far >= 0.0"]))
    result = run_check(plan.checks[0], CheckContext(model=model, data=test.subset(60),
                                                    train_data=train.subset(200),
                                                    progress=False))
    failed = [f for f in result.findings if f.code == "detector_failed"]
    assert [f.message.split()[1] for f in failed] == list(FEATURE_DETECTORS)
    assert all(f.level == "warn" and "no nn.Linear" in f.message for f in failed)
    assert {"auroc@msp:far", "auroc@energy:far"} <= result.metrics.keys()
    assert not any(name.endswith(("@vim:far", "@knn:far", "@mahalanobis:far"))
                   for name in result.metrics)
    gates = {g.metric: g.passed for g in result.gates}
    assert gates == {"auroc@msp:far": True, "auroc@vim:far": False}  # never a wrong pass
    assert result.status == "fail"

    only_features = plan_from_dict(_ood_check(detectors=list(FEATURE_DETECTORS)))
    errored = run_check(only_features.checks[0], CheckContext(model=model, data=test.subset(60),
                                                              progress=False))
    assert errored.status == "error" and "no OOD detector could run" in errored.error


# ----------------------------------------------------------------- the digits' near set
def test_rotated_digits_leave_out_the_digits_a_half_turn_maps_onto_digits(digits):
    _, test = digits
    rotated = build_ood_set("rotated", test, (0.0, 1.0), seed=0)
    keep = ~torch.isin(test.y, torch.tensor(TURN_INTO_DIGITS))
    assert set(rotated.y.tolist()) == {2, 3, 4, 5, 7}
    torch.testing.assert_close(rotated.x, test.x[keep].flip(2, 3))


def test_digits_near_set_is_harder_than_far_for_every_detector(digits, digits_model):
    """Inverted digits, the earlier near set, gave AUROC 1.000 to Mahalanobis and ViM."""
    train, test = digits
    plan = plan_from_dict(_ood_check(sets=["far", "near"], detectors=sorted(DETECTORS), n=1000))
    result = run_check(plan.checks[0], CheckContext(model=digits_model, data=test,
                                                    train_data=train, progress=False))
    assert result.details["ood_sets"] == {"far": "noise", "near": "rotated"}
    for name in DETECTORS:
        far, near = (result.metrics[f"auroc@{name}:{s}"] for s in ("far", "near"))
        assert near < far - 0.05, (name, near, far)
        assert near < 0.95, (name, near)
