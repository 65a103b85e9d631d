"""PGD in the L1 ball: the exact L1 projection, the SLIDE step, and strength against peers.

Measured on the digits CNN (449 test digits, clean accuracy 0.958), 20 steps, default
step 2.5 eps / steps, one random start; robust accuracy (lower is stronger):

    eps   ours (SLIDE, box-aware)   ART PGD norm=1   foolbox L1 PGD
    1.0   0.597                     0.753            0.884
    2.0   0.178                     0.704            0.690
    3.0   0.033                     0.659            0.412

ART steps along the single largest |grad| coordinate even when that pixel sits at a bound
and the step pushes it outside (the clip then undoes it), and projects by rescaling;
foolbox steps along grad / ||grad||_1 and projects by rescaling. The tests below only ask
that ours is not weaker than either by more than 2 points.
"""

import pytest
import torch

from assay.attacks._projection import ascent_direction, distance, project, random_in_ball
from assay.attacks.evasion.apgd import APGD
from assay.attacks.evasion.fab import FABT
from assay.attacks.evasion.fgsm import FGSM
from assay.attacks.evasion.mifgsm import MIFGSM
from assay.attacks.evasion.pgd import PGD
from assay.errors import AssayValueError


def reference_l1_projection(v: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto the L1 ball by bisection on the soft threshold theta (float64)."""
    out = []
    for row in v.double().flatten(1):
        if float(row.abs().sum()) <= eps:
            out.append(row)
            continue
        low, high = 0.0, float(row.abs().max())
        for _ in range(200):
            mid = (low + high) / 2
            if float((row.abs() - mid).clamp_min(0).sum()) > eps:
                low = mid
            else:
                high = mid
        out.append(row.sign() * (row.abs() - high).clamp_min(0))
    return torch.stack(out).view(v.shape)


def robust_accuracy(model, x_adv, y):
    return float((model.predict(x_adv) == y).float().mean())


@pytest.mark.parametrize("shape,eps", [((50, 1, 8, 8), 1.0), ((40, 3, 5, 5), 0.3),
                                       ((30, 7), 2.5), ((20, 100), 0.01)])
def test_l1_projection_is_exact(shape, eps):
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(shape, generator=gen, dtype=torch.float64) * torch.rand(
        shape[0], *([1] * (len(shape) - 1)), generator=gen, dtype=torch.float64) * 2
    ours = project(v, "l1", eps)
    assert torch.allclose(ours, reference_l1_projection(v, eps), atol=1e-10)
    assert float(distance(ours, torch.zeros_like(ours), "l1").max()) <= eps * (1 + 1e-12)
    # Idempotent, and points inside the ball stay where they are (bit for bit).
    assert torch.allclose(project(ours, "l1", eps), ours, atol=1e-12)
    inside = v.flatten(1).abs().sum(1) <= eps
    assert torch.equal(ours[inside], v[inside])
    # No feasible point is closer: random points of the ball are all farther from v.
    others = project(torch.randn((200, *shape[1:]), generator=gen, dtype=torch.float64), "l1", eps)
    gap = (v[:1] - ours[:1]).flatten(1).norm(dim=1)
    assert bool(((v[:1] - others).flatten(1).norm(dim=1) >= gap - 1e-12).all())


def test_l1_projection_edge_cases():
    v = torch.tensor([[3.0, -1.0, 0.0], [0.2, 0.1, -0.1], [1.0, 1.0, 1.0]])
    assert torch.equal(project(v, "l1", 0.0), torch.zeros_like(v))
    out = project(v, "l1", 1.0)
    assert torch.allclose(out[0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(out[1], v[1])
    assert torch.allclose(out[2], torch.full((3,), 1 / 3))  # ties share the budget


def test_slide_direction_and_random_start():
    gen = torch.Generator().manual_seed(1)
    grad = torch.randn(6, 1, 10, 10, generator=gen)
    for q, k in ((99.0, 1), (90.0, 10), (0.0, 100)):
        d = ascent_direction(grad, "l1", percentile=q).flatten(1)
        assert torch.allclose(d.abs().sum(1), torch.ones(6))
        assert bool(((d != 0).sum(1) == k).all())
        kept = d != 0  # the kept coordinates are the largest |grad| ones, with grad's sign
        flat = grad.flatten(1)
        assert bool((flat.abs()[kept].view(6, k).amin(1) >= flat.abs().masked_fill(kept, 0).amax(1)).all())
        assert torch.equal(d[kept].sign(), flat[kept].sign())
    start = random_in_ball(torch.Size((500, 64)), "l1", 2.0, device=torch.device("cpu"),
                           dtype=torch.float32, generator=gen)
    norms = distance(start, torch.zeros_like(start), "l1")
    assert float(norms.max()) <= 2.0 * (1 + 1e-5)
    assert 0.8 < float(norms.mean()) < 1.2  # the radius is uniform in [0, eps]


@pytest.mark.parametrize("eps", [0.5, 2.0])
def test_pgd_l1_stays_in_ball_and_bounds(digits, digits_model, eps):
    _, test = digits
    x, y = test.x[:200], test.y[:200]
    result = PGD(eps=eps, norm="l1", steps=20, restarts=2, seed=0).run(digits_model, x, y)
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert float(distance(result.x_adv, x, "l1").max()) <= eps * (1 + 1e-5)
    assert float(result.x_adv.min()) >= 0.0 and float(result.x_adv.max()) <= 1.0
    assert torch.equal(result.success, digits_model.predict(result.x_adv) != y)


def test_pgd_l1_eps_zero_gives_clean_accuracy(digits, digits_model):
    _, test = digits
    x_adv = PGD(eps=0.0, norm="l1", seed=0)(digits_model, test.x, test.y)
    assert torch.equal(x_adv, test.x)
    assert robust_accuracy(digits_model, x_adv, test.y) == robust_accuracy(digits_model, test.x, test.y)


def test_pgd_l1_targeted(digits, digits_model):
    _, test = digits
    x, y = test.x[:100], test.y[:100]
    target = (y + 1) % 10
    result = PGD(eps=5.0, norm="l1", steps=30, targeted=True, seed=0).run(digits_model, x, target)
    assert torch.equal(result.success, digits_model.predict(result.x_adv) == target)
    assert float(result.success.float().mean()) > 0.5


@pytest.mark.parametrize("eps", [1.0, 2.0])
def test_pgd_l1_not_weaker_than_art(digits, digits_model, digits_net, eps):
    pytest.importorskip("art")
    import numpy as np
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    _, test = digits
    x, y = test.x, test.y
    steps, step = 20, 2.5 * eps / 20
    ours = PGD(eps=eps, norm="l1", steps=steps, seed=0)(digits_model, x, y)
    classifier = PyTorchClassifier(model=digits_net.eval(), loss=torch.nn.CrossEntropyLoss(),
                                   input_shape=(1, 8, 8), nb_classes=10, clip_values=(0.0, 1.0))
    np.random.seed(0)
    peer = ProjectedGradientDescentPyTorch(classifier, norm=1, eps=eps, eps_step=step,
                                           max_iter=steps, num_random_init=1, batch_size=512,
                                           verbose=False).generate(x.numpy(), y=y.numpy())
    peer = torch.from_numpy(peer)
    assert float(distance(peer, x, "l1").max()) <= eps * (1 + 1e-4)
    ours_acc, peer_acc = robust_accuracy(digits_model, ours, y), robust_accuracy(digits_model, peer, y)
    assert ours_acc < robust_accuracy(digits_model, x, y) - 0.2  # the attack does something
    assert ours_acc <= peer_acc + 0.02, (ours_acc, peer_acc)


def test_pgd_l1_not_weaker_than_foolbox(digits, digits_model, digits_net):
    fb = pytest.importorskip("foolbox")
    _, test = digits
    x, y = test.x, test.y
    eps = 2.0
    ours = PGD(eps=eps, norm="l1", steps=20, seed=0)(digits_model, x, y)
    attack = fb.attacks.L1ProjectedGradientDescentAttack(steps=20, rel_stepsize=2.5 / 20)
    torch.manual_seed(0)
    _, peer, _ = attack(fb.PyTorchModel(digits_net.eval(), bounds=(0, 1)), x, y, epsilons=eps)
    ours_acc, peer_acc = robust_accuracy(digits_model, ours, y), robust_accuracy(digits_model, peer, y)
    assert ours_acc <= peer_acc + 0.02, (ours_acc, peer_acc)


@pytest.mark.parametrize("make", [lambda: APGD(eps=0.1, norm="l1"), lambda: FGSM(eps=0.1, norm="l1"),
                                  lambda: MIFGSM(eps=0.1, norm="l1"), lambda: FABT(eps=0.1, norm="l1"),
                                  lambda: PGD(eps=0.1, norm="l0"),
                                  lambda: PGD(eps=0.1, norm="l1", l1_percentile=100.0),
                                  lambda: PGD(eps=0.1, norm="l1", l1_percentile=-1.0)])
def test_other_attacks_reject_l1(make):
    with pytest.raises(AssayValueError, match="parameter of"):
        make()
