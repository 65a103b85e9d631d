"""assay.explain against captum (the oracle): the same model, inputs and settings give the
same attributions to 1e-5; IG's completeness; bad input is refused naming the parameter."""

import pytest
import torch
from torch import nn

from assay.core import zoo
from assay.core.loaders import load_digits
from assay.core.model import ModelWrapper
from assay.core.threads import using_threads
from assay.errors import AssayValueError
from assay.explain.metrics import completeness_error
from assay.explain import (EXPLAINERS, GradCAM, IntegratedGradients, Occlusion, SmoothGrad,
                           explain, make_explainer)

captum_attr = pytest.importorskip("captum.attr")

ATOL = 1e-5


@pytest.fixture(autouse=True)
def one_thread():
    with using_threads(1):  # many small operators: one thread is the fast choice here
        yield


@pytest.fixture(scope="module")
def batch():
    data = load_digits("test")
    return data.x[:12], data.y[:12]


@pytest.fixture(scope="module")
def cnn():
    net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=3)
    return ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8), mean=[0.3], std=[0.4])


def assert_close(ours, theirs):
    assert ours.shape == theirs.shape
    gap = float((ours - theirs.detach()).abs().max())
    assert gap <= ATOL * max(1.0, float(theirs.detach().abs().max())), gap


def test_saliency_and_gradient_x_input_equal_captum(cnn, batch):
    x, y = batch
    assert_close(explain(cnn, x, y, "saliency"), captum_attr.Saliency(cnn).attribute(x, y))
    assert_close(explain(cnn, x, y, "saliency", settings={"abs": False}),
                 captum_attr.Saliency(cnn).attribute(x, y, abs=False))
    assert_close(explain(cnn, x, y, "gradient_x_input"),
                 captum_attr.InputXGradient(cnn).attribute(x, y))


@pytest.mark.parametrize("rule,steps", [("gausslegendre", 64), ("gausslegendre", 7),
                                        ("riemann_left", 20), ("riemann_middle", 9)])
def test_integrated_gradients_equal_captum(cnn, batch, rule, steps):
    x, y = batch
    ours = IntegratedGradients(steps=steps, rule=rule, batch_size=100).run(cnn, x, y)
    theirs, delta = captum_attr.IntegratedGradients(cnn).attribute(
        x, target=y, n_steps=steps, method=rule, return_convergence_delta=True)
    assert_close(ours.attributions, theirs)
    assert_close(ours.delta, delta)


def test_integrated_gradients_baseline_and_default_target(cnn, batch):
    x, _ = batch
    baseline = torch.full_like(x[:1], 0.5)
    ours = explain(cnn, x, method="integrated_gradients",
                   settings={"steps": 16, "baseline": baseline})
    predicted = cnn.predict(x)
    theirs = captum_attr.IntegratedGradients(cnn).attribute(
        x, baselines=baseline.expand_as(x), target=predicted, n_steps=16)
    assert_close(ours, theirs)


def test_integrated_gradients_completeness_with_64_steps(digits_model, digits):
    """On the trained digits CNN: |sum of attributions - (f(x) - f(0))| < 1% of the gap."""
    x = digits[1].x[:64]
    result = IntegratedGradients(steps=64).run(digits_model, x)
    error = completeness_error(result)
    assert float(error.max()) < 0.01, error.max()


def test_smoothgrad_equals_captum_with_the_same_noise(cnn, batch):
    x, y = batch
    samples, sigma, seed = 6, 0.2, 11
    ours = SmoothGrad(samples=samples, noise=sigma, seed=seed, batch_size=None)(cnn, x, y)
    torch.manual_seed(seed)  # captum draws from the global generator, assay from its own
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(cnn))
    theirs = tunnel.attribute(x, target=y, nt_type="smoothgrad", nt_samples=samples,
                              stdevs=sigma)
    assert_close(ours, theirs)


def test_smoothgrad_without_noise_is_saliency_and_seeded_runs_repeat(cnn, batch):
    x, y = batch
    assert_close(SmoothGrad(samples=3, noise=0.0)(cnn, x, y), explain(cnn, x, y, "saliency"))
    first, second = (SmoothGrad(samples=5, seed=4, batch_size=7)(cnn, x, y) for _ in range(2))
    assert torch.equal(first, second)
    assert not torch.equal(first, SmoothGrad(samples=5, seed=5)(cnn, x, y))


@pytest.mark.parametrize("window,strides", [((1, 1, 1), 1), ((1, 3, 3), 2), ((1, 2, 4), (1, 1, 3))])
def test_occlusion_equals_captum(cnn, batch, window, strides):
    x, y = batch
    ours = Occlusion(window=window, strides=strides, batch_size=50)(cnn, x, y)
    theirs = captum_attr.Occlusion(cnn).attribute(x, sliding_window_shapes=window,
                                                  strides=strides, target=y)
    assert_close(ours, theirs)


@pytest.mark.parametrize("layer", [None, "net.0", "0"])
@pytest.mark.parametrize("relu", [False, True])
def test_gradcam_equals_captum(cnn, batch, layer, relu):
    x, y = batch
    ours = GradCAM(layer=layer, relu=relu, batch_size=5)(cnn, x, y)
    module = cnn.net[2] if layer is None else cnn.net[0]
    cam = captum_attr.LayerGradCam(cnn, module).attribute(x, target=y, relu_attributions=relu)
    assert_close(ours, captum_attr.LayerAttribution.interpolate(cam, (8, 8), "bilinear"))


TABULAR_ONLY = {"kernel_shap", "lime"}


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_every_method_keeps_the_callers_model_and_repeats(batch, name):
    """Shape, device, train mode and weights (no .grad) kept; the same call, the same map."""
    if name in TABULAR_ONLY:
        net, x = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).train(), torch.rand(3, 5)
    else:
        net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0).train()
        x = batch[0][:3]
    out = explain(net, x, 1, name)
    assert out.shape == x.shape and out.device == x.device and out.dtype == x.dtype
    assert all(module.training for module in net.modules())
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(out, explain(net, x, 1, name))


def test_tabular_rows():
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(4, 5)
    for name in ("saliency", "gradient_x_input", "integrated_gradients", "smoothgrad",
                 "occlusion"):
        assert explain(net, x, method=name).shape == (4, 5)
    theirs = captum_attr.Occlusion(net).attribute(x, sliding_window_shapes=(1,), target=0)
    assert_close(explain(net, x, 0, "occlusion"), theirs)


# ----------------------------------------------------------------------------- bad input
def test_target_outside_the_classes_names_target(cnn, batch):
    x, _ = batch
    with pytest.raises(AssayValueError, match="target"):
        explain(cnn, x, 10, "saliency")
    with pytest.raises(AssayValueError, match="'target'"):
        explain(cnn, x, torch.zeros(3, dtype=torch.long), "saliency")
    with pytest.raises(AssayValueError, match="target"):
        explain(cnn, x, torch.full((len(x),), -1), "integrated_gradients")


def test_unknown_layer_names_layer(cnn, batch):
    x, y = batch
    with pytest.raises(AssayValueError, match="'layer'.*net.0"):
        explain(cnn, x, y, "gradcam", settings={"layer": "conv9"})
    with pytest.raises(AssayValueError, match="'layer'"):
        explain(cnn, x, y, "gradcam", settings={"layer": "net.5"})  # a Flatten: not [N,C,h,w]
    with pytest.raises(AssayValueError, match="no nn.Conv2d"):
        GradCAM()(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), x, 0)


@pytest.mark.parametrize("settings,name", [({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"),
                                           ({"rule": "simpson"}, "rule"),
                                           ({"batch_size": 0}, "batch_size"),
                                           ({"stepz": 8}, "settings")])
def test_bad_integrated_gradients_settings_name_the_parameter(cnn, batch, settings, name):
    x, y = batch
    with pytest.raises(AssayValueError, match=f"'{name}'"):
        explain(cnn, x, y, settings=settings)


def test_bad_settings_of_other_methods():
    with pytest.raises(AssayValueError, match="'samples'"):
        make_explainer("smoothgrad", {"samples": 0})
    with pytest.raises(AssayValueError, match="'noise'"):
        make_explainer("smoothgrad", {"noise": -1.0})
    with pytest.raises(AssayValueError, match="'window'"):
        make_explainer("occlusion", {"window": (0, 2, 2)})
    with pytest.raises(AssayValueError, match="'upsample'"):
        make_explainer("gradcam", {"upsample": "cubic"})
    with pytest.raises(AssayValueError, match="explanation method"):
        make_explainer("lrp")
    with pytest.raises(AssayValueError, match="'window'"):
        Occlusion(window=(1, 9, 9))(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)),
                                    torch.rand(2, 1, 8, 8), 0)


def test_inputs_outside_bounds_refused(cnn):
    with pytest.raises(AssayValueError, match="bounds"):
        explain(cnn, torch.full((2, 1, 8, 8), 3.0), method="saliency")
