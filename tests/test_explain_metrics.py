"""The explanation metrics and the ``explanations`` check, with properties that could fail:
on the trained digits CNN, saliency and IG beat a random attribution on deletion and pass
the randomisation test; an edge detector that ignores the model fails the randomisation
test, and a random attribution fails faithfulness; the check flags both."""

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

import assay.checks.explanations  # noqa: F401  (registers the check)
from assay.checks.base import CheckContext, get_check
from assay.core.threads import using_threads
from assay.errors import AssayValueError
from assay.explain import EXPLAINERS, Explainer, make_explainer
from assay.explain import metrics as M
from assay.explain.evaluation import evaluate_explanations


class EdgeDetector(Explainer):
    """The image gradient magnitude of the input: looks like an explanation, ignores the model."""

    name = "test_edge_detector"

    def _attribute(self, model, x, target):
        gx, gy = torch.zeros_like(x), torch.zeros_like(x)
        gx[..., 1:] = x[..., 1:] - x[..., :-1]
        gy[..., 1:, :] = x[..., 1:, :] - x[..., :-1, :]
        return (gx ** 2 + gy ** 2).sqrt(), None


class RandomMap(Explainer):
    name = "test_random_map"

    def _attribute(self, model, x, target):
        return M.random_attribution(x, seed=123), None


@pytest.fixture(autouse=True)
def one_thread():
    with using_threads(1):  # many small operators: one thread is the fast choice here
        yield


@pytest.fixture
def fake_methods(monkeypatch):
    for cls in (EdgeDetector, RandomMap):
        monkeypatch.setitem(EXPLAINERS._entries, cls.name, cls)


@pytest.fixture(scope="module")
def sample(digits):
    return digits[1].x[:48]


def test_gradient_and_ig_are_faithful_and_sane(digits_model, sample):
    methods = {m: make_explainer(m) for m in ("saliency", "integrated_gradients")}
    result = evaluate_explanations(digits_model, sample, methods)
    for name, found in result.methods.items():
        assert found.faithful and found.gain_interval[0] > 0.1, (name, found.gain_interval)
        assert found.sane and found.spearman < 0.3, (name, found.spearman)
        assert float(found.insertion.auc.mean()) > float(result.random_insertion.auc.mean())
    assert result.methods["integrated_gradients"].completeness < 0.01


def test_edge_detector_fails_randomisation_and_random_map_fails_faithfulness(digits_model,
                                                                             sample):
    result = evaluate_explanations(digits_model, sample,
                                   {"edge": EdgeDetector(), "random": RandomMap()})
    edge, noise = result.methods["edge"], result.methods["random"]
    assert not edge.sane and edge.spearman > 0.99
    assert not noise.faithful and abs(noise.deletion_gain) < 0.1


def test_check_flags_both_and_passes_the_gradients(digits_model, digits, fake_methods):
    check = get_check("explanations")
    methods = ["saliency", "integrated_gradients", "test_edge_detector", "test_random_map"]
    params = check.resolve_params({"methods": methods, "n": 48, "ig_steps": 32})
    ctx = CheckContext(digits_model, digits[1], seed=0, progress=False)
    output = check.run(ctx, params)
    assert set(output.metrics) == set(check.metric_names(params))
    assert set(check.describe_metrics(output.metrics)) == set(output.metrics)
    flagged = {(f.code, f.message.split(":")[0]) for f in output.findings if f.level == "warn"}
    assert ("fails_randomisation", "test_edge_detector") in flagged
    assert ("no_better_than_random", "test_random_map") in flagged
    assert not any(method in ("saliency", "integrated_gradients") for _, method in flagged)
    passed = [f.message for f in output.findings if f.code == "explanation_passed"]
    assert len(passed) == 2
    assert output.metrics["deletion_auc@saliency"] < output.metrics["deletion_auc@random"]
    assert output.metrics["completeness_error@integrated_gradients"] < 0.01
    assert len(output.galleries) == 5
    classes = output.galleries[-1]
    assert len(classes.images) == 10 and classes.captions[0].startswith("0 (p=")
    gallery = output.galleries[0]
    assert len(gallery.images) == len(gallery.captions) >= 2
    assert any("wrong" in c for c in gallery.captions) and any("ok" in c for c in gallery.captions)


def test_check_refuses_unknown_methods():
    check = get_check("explanations")
    with pytest.raises(AssayValueError, match="'methods'.*lrp"):
        check.resolve_params({"methods": ["lrp"]})
    with pytest.raises(AssayValueError, match="'random'"):
        check.resolve_params({"methods": ["random"]})


# ----------------------------------------------------------------------------- metrics
def test_spearman_matches_scipy_with_ties():
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (6, 30), generator=generator).float()
    b = a + torch.randn(6, 30, generator=generator)
    ours = M.spearman(a, b)
    theirs = torch.tensor([spearmanr(a[i], b[i]).statistic for i in range(6)])
    assert torch.allclose(ours.double(), theirs.double(), atol=1e-6)
    assert float(M.spearman(torch.ones(1, 5), torch.rand(1, 5))) == 0.0


def test_ssim_is_one_for_equal_maps_and_lower_for_noise():
    generator = torch.Generator().manual_seed(1)
    maps = torch.rand(3, 8, 8, generator=generator)
    assert torch.allclose(M.ssim(maps, maps * 3 + 1), torch.ones(3), atol=1e-5)
    assert float(M.ssim(maps, torch.rand(3, 8, 8, generator=generator)).max()) < 0.5


def test_deletion_and_insertion_of_a_linear_model():
    """A model that counts lit features: deleting the lit ones first drops the score
    fastest, and its deletion AUC is below the reverse order's."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(8, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[4.0] * 8, [0.0] * 8]))
        net[1].bias.zero_()
    x = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0.0]])
    target = torch.zeros(1, dtype=torch.long)
    good = M.deletion_curve(net, x, x, target, steps=8)
    bad = M.deletion_curve(net, x, 1 - x, target, steps=8)
    assert good.scores[0, 0] > 0.99 and good.scores[0, 4] == pytest.approx(0.5)
    assert float(good.auc) < float(bad.auc)
    assert M.insertion_curve(net, x, x, target, steps=8).scores[0, 4] > 0.99


def test_max_sensitivity_and_infidelity(digits_model, sample):
    x = sample[:16]
    target = digits_model.predict(x)
    stable = M.max_sensitivity(digits_model, x, target, make_explainer("saliency"), samples=4)
    noisy = M.max_sensitivity(digits_model, x, target, RandomMap(), samples=4)
    assert stable.shape == (16,) and float(stable.mean()) < float(noisy.mean())
    assert torch.equal(stable, M.max_sensitivity(digits_model, x, target,
                                                 make_explainer("saliency"), samples=4))
    ig = make_explainer("integrated_gradients", {"steps": 32})(digits_model, x, target)
    faithful = M.infidelity(digits_model, x, target, ig)
    random = M.infidelity(digits_model, x, target, M.random_attribution(x))
    assert float(faithful.mean()) < float(random.mean())


def test_randomisation_leaves_the_model_alone(digits_model, sample):
    before = {k: v.clone() for k, v in digits_model.state_dict().items()}
    x = sample[:8]
    result = M.cascading_randomisation(digits_model, x, digits_model.predict(x),
                                       make_explainer("saliency"))
    assert result.layers[0] == "net.7" and len(result.layers) == 4
    assert result.spearman.shape == (4, 8) and result.ssim.shape == (4, 8)
    assert all(torch.equal(before[k], v) for k, v in digits_model.state_dict().items())


def test_an_audit_runs_the_check_and_the_report_shows_its_gallery(digits, digits_model, tmp_path):
    from assay.audit.plan import plan_from_dict
    from assay.audit.runner import run_audit
    from assay.report.writers import write_reports

    plan = plan_from_dict({"checks": [{
        "name": "explanations", "params": {"methods": ["saliency", "gradient_x_input"], "n": 40},
        "gates": ["deletion_gain@saliency > 0", "randomisation_spearman@saliency < 0.5"]}]})
    result = run_audit(digits_model, digits[1], plan, progress=False, threads=1)
    check = result.checks[0]
    assert check.status == "pass", [f.message for f in check.findings]
    assert check.metric_info["deletion_auc@saliency"].direction == "lower"
    write_reports(result, tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "saliency: correctly classified and misclassified" in html
    assert "data:image/png;base64," in html


def test_gradcam_on_tabular_data_is_refused_before_work():
    from assay.core.dataset import Dataset

    check = get_check("explanations")
    params = check.resolve_params({"methods": ["gradcam"]})
    net = nn.Sequential(nn.Linear(4, 3))
    from assay.core.model import ModelWrapper

    data = Dataset(torch.rand(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]), "rows", "test",
                   ("a", "b", "c"))
    ctx = CheckContext(ModelWrapper(net, num_classes=3, input_shape=(4,)), data)
    assert "gradcam" in check.validate_for(ctx, params)[0]
    assert check.validate_for(ctx, check.resolve_params({"methods": ["kernel_shap", "lime"]})) == []


def test_tabular_methods_on_images_are_refused_before_work(digits_model, digits):
    check = get_check("explanations")
    params = check.resolve_params({"methods": ["saliency", "lime"]})
    problems = check.validate_for(CheckContext(digits_model, digits[1]), params)
    assert len(problems) == 1 and "'lime'" in problems[0]


def test_noisy_linear_imputation_restores_a_harmonic_image_and_keeps_known_pixels():
    ramp = torch.linspace(0, 1, 10).view(1, 1, 1, 10).expand(2, 1, 10, 10).clone()
    removed = torch.zeros(2, 1, 10, 10, dtype=torch.bool)
    removed[0, :, 2:8, 3:7] = True
    removed[1] = torch.rand(1, 10, 10, generator=torch.Generator().manual_seed(0)) < 0.5
    removed[1, :, :, [0, 9]] = False  # a one-sided mean at the left and right edges bends it
    exact = M.noisy_linear_imputation(ramp, removed, noise=0.0)
    assert float((exact - ramp).abs().max()) < 1e-4
    noisy = M.noisy_linear_imputation(ramp, removed, generator=torch.Generator().manual_seed(1))
    assert torch.equal(noisy[~removed.expand_as(ramp)], ramp[~removed.expand_as(ramp)])
    assert 0.005 < float((noisy - exact)[removed].std()) < 0.015


def test_road_ranks_ig_above_random(digits_model, sample):
    x = sample[:32]
    target = digits_model.predict(x)
    ig = make_explainer("integrated_gradients", {"steps": 32})(digits_model, x, target)
    noise = M.random_attribution(x)
    curves = {(name, order): M.road_curve(digits_model, x, maps, target, order=order)
              for name, maps in (("ig", ig), ("random", noise)) for order in ("morf", "lerf")}
    accuracy = {key: c.hits.float().mean(0) for key, c in curves.items()}
    assert len(accuracy["ig", "morf"]) == 9
    # removing IG's top pixels hurts more than removing random ones. (Its least relevant
    # pixels, the background where IG is 0, hurt more than random ones on these 8x8
    # digits: imputed from the strokes beside them, they thicken the digit.)
    assert float(accuracy["ig", "morf"].mean()) < float(accuracy["random", "morf"].mean()) - 0.1
    assert float(accuracy["ig", "morf"].mean()) < float(accuracy["ig", "lerf"].mean())
    with pytest.raises(AssayValueError, match="'order'"):
        M.road_curve(digits_model, x, ig, target, order="middle")


def test_activation_maximisation_makes_each_class_the_prediction(digits_model):
    from assay.explain import activation_maximisation

    images = activation_maximisation(digits_model, list(range(10)))
    assert images.shape == (10, 1, 8, 8) and float(images.min()) >= 0 and float(images.max()) <= 1
    probability = digits_model.predict_logits(images).softmax(1)
    assert probability.argmax(1).tolist() == list(range(10))
    start = activation_maximisation(digits_model, list(range(10)), steps=1)
    logits = digits_model.predict_logits(start).diagonal()
    assert bool((digits_model.predict_logits(images).diagonal() > logits + 3).all())
    assert torch.equal(images, activation_maximisation(digits_model, list(range(10))))
    units = activation_maximisation(digits_model, [0, 5], layer="net.0", steps=20)
    assert units.shape == (2, 1, 8, 8)
    with pytest.raises(AssayValueError, match="'classes'"):
        activation_maximisation(digits_model, [10])
    with pytest.raises(AssayValueError, match="'steps'"):
        activation_maximisation(digits_model, [1], steps=0)
    with pytest.raises(AssayValueError, match="'layer'"):
        activation_maximisation(digits_model, [1], layer="conv9")
