"""OOD detection: features, metrics (sklearn as oracle) and the detectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from sklearn.neighbors import NearestNeighbors
from torch import nn

from assay.core.features import batched_logits, classifier_head, logits_and_features
from assay.errors import AssayValueError
from assay.metrics.ood import OODMetrics, aupr_in, aupr_out, auroc, fpr_at_tpr, ood_metrics
from assay.shift.ood import (DETECTORS, KNN, MSP, ODIN, Energy, Mahalanobis, MaxLogit,
                             OODDetector, ViM)

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def digits_mlp():
    """A small MLP trained on sklearn's 8x8 digits; test digits and uniform-noise images."""
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    x_train, y_train, x_test, y_test = x[:1200], y[:1200], x[1200:], y[1200:]
    with torch.random.fork_rng():  # reproducible initialisation, global RNG left as it was
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                              nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x_train), y_train).backward()
        opt.step()
    model.eval()
    noise = torch.rand(500, 64, generator=torch.Generator().manual_seed(1))
    return model, x_train, y_train, x_test, noise, y_test


def gaussian_toy(seed: int = 0):
    """In-distribution: 3 classes, Gaussians with a shared correlated covariance in R^8.
    OOD: a Gaussian centred far away. Features = input (nn.Identity before the head)."""
    g = torch.Generator().manual_seed(seed)
    d, n_per = 8, 300
    mix = torch.randn(d, d, generator=g) * 0.5 + torch.eye(d)
    means = torch.tensor([[4.0] * d, [-4.0] * d, [4.0, -4.0] * (d // 2)])

    def sample(n: int, centre: torch.Tensor) -> torch.Tensor:
        return torch.randn(n, d, generator=g) @ mix.T + centre

    x_train = torch.cat([sample(n_per, m) for m in means])
    y_train = torch.arange(3).repeat_interleave(n_per)
    x_test = torch.cat([sample(100, m) for m in means])
    x_ood = sample(300, torch.full((d,), 12.0)) + torch.tensor([0.0, 20.0] * (d // 2))
    model = nn.Sequential(nn.Identity(), nn.Linear(d, 3))
    return model, x_train, y_train, x_test, x_ood


# --------------------------------------------------------------------------- features


class HeadFirst(nn.Module):
    """The head is registered before the body: the executed-last rule must still find it."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(5, 3)
        self.body = nn.Linear(4, 5)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))


def test_features_are_the_input_of_the_last_linear_run():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = HeadFirst()
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(1))
    logits, feats = logits_and_features(model, x, batch_size=4)
    with torch.no_grad():
        expected = torch.tanh(model.body(x))
        torch.testing.assert_close(feats, expected)
        torch.testing.assert_close(logits, model(x))
    assert classifier_head(model, x) is model.head


def test_features_batching_no_grad_and_mode_restored():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 3))
    model.train()
    x = torch.randn(23, 6, generator=torch.Generator().manual_seed(1))
    logits_a, feats_a = logits_and_features(model, x, batch_size=5)
    logits_b, feats_b = logits_and_features(model, x, batch_size=100)
    assert model.training and all(m.training for m in model.modules())
    assert not logits_a.requires_grad and not feats_a.requires_grad
    assert feats_a.shape == (23, 8) and logits_a.shape == (23, 3)
    torch.testing.assert_close(logits_a, logits_b)  # eval mode: dropout off, deterministic
    torch.testing.assert_close(feats_a, feats_b)
    torch.testing.assert_close(batched_logits(model, x, batch_size=7), logits_b)


def test_features_errors():
    with pytest.raises(AssayValueError, match="no nn.Linear"):
        logits_and_features(nn.Sequential(nn.Flatten()), torch.randn(3, 4))
    model = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(AssayValueError, match="batch_size"):
        logits_and_features(model, torch.randn(3, 4), batch_size=0)
    with pytest.raises(AssayValueError, match="'x'"):
        logits_and_features(model, torch.randn(0, 4))
    with pytest.raises(AssayValueError, match="features"):  # head applied per token
        logits_and_features(nn.Sequential(nn.Linear(4, 2), nn.Flatten()), torch.randn(3, 5, 4))


# --------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("seed", range(25))
def test_ood_metrics_match_sklearn_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    n_in, n_out = (int(v) for v in torch.randint(1, 80, (2,), generator=g))
    # few distinct values -> many ties, within and across the two groups
    s_in = torch.randint(0, 7, (n_in,), generator=g).float() * 0.5 + 0.25
    s_out = torch.randint(0, 5, (n_out,), generator=g).float() * 0.5
    labels = np.r_[np.ones(n_in), np.zeros(n_out)]
    scores = np.r_[s_in.numpy(), s_out.numpy()]
    if seed % 2:  # exercise integer and float64 inputs too
        s_in, s_out = (s_in * 4).long(), (s_out * 4).long()
        scores = scores * 4
    assert auroc(s_in, s_out) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert aupr_in(s_in, s_out) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12)
    assert aupr_out(s_in, s_out) == pytest.approx(
        average_precision_score(1 - labels, -scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    for level in (0.95, 0.8, 0.5, 1.0):
        expected = fpr[np.searchsorted(tpr, level, side="left")]
        assert fpr_at_tpr(s_in, s_out, tpr=level) == pytest.approx(expected, abs=1e-12)
    both = ood_metrics(s_in, s_out)
    assert isinstance(both, OODMetrics)
    assert both.auroc == auroc(s_in, s_out) and both.aupr_out == aupr_out(s_in, s_out)
    assert both.fpr_at_tpr == fpr_at_tpr(s_in, s_out) and (both.n_in, both.n_out) == (n_in, n_out)


def test_ood_metrics_hand_example():
    s_in = torch.tensor([0.9, 0.8, 0.7, 0.4])
    s_out = torch.tensor([0.5, 0.3, 0.7])
    # pairs won by in-distribution: 3 + 3 + (2 + 0.5 tie) + 1 = 9.5 of 12
    assert auroc(s_in, s_out) == pytest.approx(9.5 / 12)
    # TPR >= 0.75 first at threshold 0.7, which also accepts one of three OOD scores
    assert fpr_at_tpr(s_in, s_out, tpr=0.75) == pytest.approx(1 / 3)
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert fpr_at_tpr(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 0.0
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5


@pytest.mark.parametrize("call", [
    lambda: auroc(torch.tensor([]), torch.tensor([1.0])),
    lambda: auroc(torch.ones(2, 2), torch.tensor([1.0])),
    lambda: aupr_in(torch.tensor([float("nan")]), torch.tensor([1.0])),
    lambda: aupr_out([1.0, 2.0], torch.tensor([1.0])),
    lambda: fpr_at_tpr(torch.ones(3), torch.ones(3), tpr=0.0),
    lambda: fpr_at_tpr(torch.ones(3), torch.ones(3), tpr=1.5),
    lambda: ood_metrics(torch.ones(3), torch.ones(3), tpr="0.95"),
])
def test_ood_metrics_bad_inputs(call):
    with pytest.raises(AssayValueError):
        call()


# --------------------------------------------------------------------------- detectors


def test_energy_score_is_logsumexp_of_logits(digits_mlp):
    model, _, _, x_test, *_ = digits_mlp
    with torch.no_grad():
        expected = torch.logsumexp(model(x_test), dim=1)
    assert torch.equal(Energy(batch_size=len(x_test)).score(model, x_test), expected)
    torch.testing.assert_close(Energy(batch_size=64).score(model, x_test), expected)
    # T * logsumexp(logits / T) tends to the max logit as T -> 0
    torch.testing.assert_close(Energy(temperature=1e-3).score(model, x_test),
                               MaxLogit().score(model, x_test), atol=1e-2, rtol=0)


def test_msp_and_maxlogit_values(digits_mlp):
    model, _, _, x_test, *_ = digits_mlp
    with torch.no_grad():
        logits = model(x_test)
    torch.testing.assert_close(MSP().score(model, x_test), logits.softmax(1).amax(1))
    torch.testing.assert_close(MaxLogit().score(model, x_test), logits.amax(1))


def test_msp_separates_digits_from_uniform_noise(digits_mlp):
    model, _, _, x_test, noise, y_test = digits_mlp
    with torch.no_grad():
        assert (model(x_test).argmax(1) == y_test).float().mean() > 0.9
    msp = MSP()
    # uniform noise is "far" OOD, yet logit-based scores only partly separate it on this
    # MLP (MSP reaches about 0.73 here); chance is 0.5
    assert auroc(msp.score(model, x_test), msp.score(model, noise)) > 0.6


@pytest.mark.parametrize("cls", [Mahalanobis, KNN, ViM])
def test_feature_detectors_separate_digits_from_uniform_noise(cls, digits_mlp):
    model, x_train, y_train, x_test, noise, _ = digits_mlp
    det = cls().fit(model, x_train, y_train)
    assert auroc(det.score(model, x_test), det.score(model, noise)) > 0.9


def test_odin_without_step_is_tempered_msp_and_step_raises_confidence(digits_mlp):
    model, _, _, x_test, *_ = digits_mlp
    with torch.no_grad():
        tempered = (model(x_test) / 1000.0).softmax(1).amax(1)
    torch.testing.assert_close(ODIN(epsilon=0.0).score(model, x_test), tempered)
    for p in model.parameters():
        p.grad = None
    stepped = ODIN(epsilon=0.002).score(model, x_test)
    # the step follows the gradient of the tempered confidence, so it goes up on average
    assert (stepped > tempered).float().mean() > 0.9
    assert all(p.grad is None for p in model.parameters())


def test_mahalanobis_gaussian_toy_matches_numpy_and_separates():
    model, x_train, y_train, x_test, x_ood = gaussian_toy()
    det = Mahalanobis().fit(model, x_train, y_train)
    s_in, s_out = det.score(model, x_test), det.score(model, x_ood)
    assert auroc(s_in, s_out) > 0.99
    # oracle: class means, tied covariance and its pseudo-inverse in float64 numpy
    xt, yt = x_train.double().numpy(), y_train.numpy()
    means = np.stack([xt[yt == c].mean(0) for c in range(3)])
    centred = xt - means[yt]
    precision = np.linalg.pinv(centred.T @ centred / len(xt))
    xq = torch.cat([x_test, x_ood]).double().numpy()
    diff = xq[:, None, :] - means[None]
    expected = -np.einsum("ncd,de,nce->nc", diff, precision, diff).min(1)
    np.testing.assert_allclose(torch.cat([s_in, s_out]).numpy(), expected, rtol=1e-4, atol=1e-3)


def test_mahalanobis_input_preprocessing_moves_towards_the_classes():
    model, x_train, y_train, x_test, _ = gaussian_toy()
    plain = Mahalanobis().fit(model, x_train, y_train).score(model, x_test)
    stepped = Mahalanobis(epsilon=0.01).fit(model, x_train, y_train).score(model, x_test)
    # a small signed step against the gradient of the distance brings every point closer
    # (a large one can overshoot points that already sit next to a mean)
    assert (stepped > plain).all()


def test_knn_matches_sklearn_neighbours():
    model, x_train, _, x_test, x_ood = gaussian_toy()
    det = KNN(k=10, batch_size=37).fit(model, x_train)
    scores = det.score(model, torch.cat([x_test, x_ood]))
    norm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    nn_index = NearestNeighbors(n_neighbors=10).fit(norm(x_train.double().numpy()))
    dist, _ = nn_index.kneighbors(norm(torch.cat([x_test, x_ood]).double().numpy()))
    np.testing.assert_allclose(scores.numpy(), -dist[:, -1], atol=1e-4)


def test_vim_matches_numpy_and_detects_residual_ood():
    g = torch.Generator().manual_seed(0)
    d, rank = 12, 4
    basis = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    principal, residual = basis[:, :rank], basis[:, rank:]
    x_train = torch.randn(600, rank, generator=g) * 3 @ principal.T \
        + 0.05 * torch.randn(600, d, generator=g)
    x_test = torch.randn(200, rank, generator=g) * 3 @ principal.T \
        + 0.05 * torch.randn(200, d, generator=g)
    x_ood = torch.randn(200, rank, generator=g) * 3 @ principal.T \
        + 2.0 * torch.randn(200, d - rank, generator=g) @ residual.T
    model = nn.Sequential(nn.Identity(), nn.Linear(d, 5))
    det = ViM(principal_dim=rank).fit(model, x_train)
    s_in, s_out = det.score(model, x_test), det.score(model, x_ood)
    assert auroc(s_in, s_out) > 0.99
    assert ViM().fit(model, x_train).principal_dim_ == d // 2  # paper's rule for small N
    # oracle: the paper's formulas in float64 numpy
    w = model[1].weight.detach().double().numpy()
    b = model[1].bias.detach().double().numpy()
    origin = -np.linalg.pinv(w) @ b
    xt = x_train.double().numpy()
    cov = (xt - origin).T @ (xt - origin) / len(xt)
    eigvals, eigvecs = np.linalg.eigh(cov)
    null_space = eigvecs[:, np.argsort(-eigvals)[rank:]]
    alpha = (xt @ w.T + b).max(1).mean() / np.linalg.norm((xt - origin) @ null_space,
                                                         axis=1).mean()
    xq = torch.cat([x_test, x_ood]).double().numpy()
    logits = xq @ w.T + b
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    expected = lse - alpha * np.linalg.norm((xq - origin) @ null_space, axis=1)
    assert det.alpha_ == pytest.approx(alpha, rel=1e-4)
    np.testing.assert_allclose(torch.cat([s_in, s_out]).numpy(), expected, rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_detector_runs_finite_and_keeps_state(name, digits_mlp):
    model, x_train, y_train, x_test, noise, _ = digits_mlp
    model.train()
    try:
        det = DETECTORS[name]()
        assert isinstance(det, OODDetector) and det.name == name
        assert det.fit(model, x_train, y_train) is det
        x = torch.cat([x_test[:70], noise[:30]])
        scores = det.score(model, x)
        again = DETECTORS[name]().fit(model, x_train, y_train).score(model, x)
        assert model.training  # mode restored
    finally:
        model.eval()
    assert scores.shape == (100,) and scores.dtype == torch.float32
    assert scores.device == x.device and not scores.requires_grad
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores, again)  # deterministic


@pytest.mark.parametrize("make", [
    lambda: MSP(batch_size=0),
    lambda: MaxLogit(batch_size=1.5),
    lambda: Energy(temperature=0.0),
    lambda: Energy(temperature=float("inf")),
    lambda: ODIN(temperature=-1.0),
    lambda: ODIN(epsilon=-0.001),
    lambda: Mahalanobis(epsilon=-1.0),
    lambda: KNN(k=0),
    lambda: KNN(k=2.0),
    lambda: ViM(principal_dim=0),
    lambda: ViM(principal_dim="auto"),
])
def test_detectors_reject_bad_parameters(make):
    with pytest.raises(AssayValueError):
        make()


@pytest.mark.parametrize("cls", [MSP, MaxLogit, Energy, ODIN, Mahalanobis, KNN, ViM])
def test_detector_settings_are_keyword_only(cls):
    with pytest.raises(TypeError):
        cls(256)


def test_detector_fit_errors():
    model, x_train, y_train, x_test, _ = gaussian_toy()
    for cls in (Mahalanobis, KNN, ViM):
        with pytest.raises(AssayValueError, match="fit"):
            cls().score(model, x_test)
    with pytest.raises(AssayValueError, match="at least k=50"):
        KNN().fit(model, x_train[:10])
    with pytest.raises(AssayValueError, match="principal_dim"):
        ViM(principal_dim=8).fit(model, x_train)
    with pytest.raises(AssayValueError, match="y_in_train"):
        Mahalanobis().fit(model, x_train, y_train[:5])
    with pytest.raises(AssayValueError, match="y_in_train"):
        Mahalanobis().fit(model, x_train, y_train + 3)
    with pytest.raises(AssayValueError, match="floating"):
        ODIN().score(nn.Sequential(nn.Linear(3, 2)), torch.ones(4, 3, dtype=torch.long))


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_detector_runs_on_the_project_model_wrapper(name, digits, digits_model):
    """The wrapped CNN of the shared fixtures: normalisation inside, [N, 1, 8, 8] images."""
    train, test = digits
    noise = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    det = DETECTORS[name](batch_size=64).fit(digits_model, train.x, train.y)
    scores = det.score(digits_model, torch.cat([test.x[:60], noise]))
    assert scores.shape == (100,) and torch.isfinite(scores).all()
