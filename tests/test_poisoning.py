"""Poisoning attacks: exact rates and the labels they claim, triggers where they say, a
backdoor that a tiny digits model learns, and bad settings refused."""

import pytest
import torch

from assay.attacks.poisoning import (POISONING_ATTACKS, BadNets, Blended, LabelFlip,
                                     WaNet)
from assay.core import zoo
from assay.core.dataset import Dataset
from assay.core.inference import batched_predict
from assay.core.loaders import load_digits
from assay.core.threads import using_threads
from assay.core.training import TrainConfig, fit
from assay.errors import AssayValueError


@pytest.fixture(scope="module")
def digits_train():
    return load_digits("train")


ATTACKS = [BadNets(target=3), BadNets(target=3, mode="all_to_all", position="top_left"),
           Blended(target=3), WaNet(target=3), LabelFlip(),
           LabelFlip(mode="targeted", source=1, target=7)]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: f"{a.name}-{a.mode}")
def test_the_poisoned_set_has_the_rate_and_labels_it_claims(attack, digits_train):
    data = digits_train
    poisoned = attack.poison(data)
    assert len(poisoned.poisoned) == round(0.1 * len(data))
    assert len(poisoned.data) == len(data)
    assert torch.equal(poisoned.original_labels, data.y[poisoned.poisoned])
    new = poisoned.data.y[poisoned.poisoned]
    assert bool((new != poisoned.original_labels).all())  # every poisoned label changed
    if poisoned.target is not None:
        assert bool((new == poisoned.target).all())
    untouched = torch.ones(len(data), dtype=torch.bool)
    untouched[poisoned.poisoned] = False
    untouched[poisoned.augmented] = False
    assert torch.equal(poisoned.data.x[untouched], data.x[untouched])
    assert torch.equal(poisoned.data.y[untouched], data.y[untouched])
    assert torch.equal(attack.poison(data).poisoned, poisoned.poisoned)  # seeded
    assert bool(((poisoned.data.x >= 0) & (poisoned.data.x <= 1)).all())


def test_triggers_are_what_the_papers_describe(digits_train):
    x = digits_train.x[:4]
    stamped = BadNets(patch_size=3, pattern="white").apply_trigger(x)
    assert bool((stamped[..., 5:, 5:] == 1).all())
    assert torch.equal(stamped[..., :5, :], x[..., :5, :])
    board = BadNets(patch_size=2, position="top_left", margin=1).apply_trigger(x)
    assert board[0, 0, 1:3, 1:3].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    blended = Blended(alpha=0.25)
    key = blended.pattern(tuple(x.shape[1:]))
    assert torch.allclose(blended.apply_trigger(x), 0.25 * key + 0.75 * x)
    assert torch.allclose(WaNet(s=1e-6, k=4).apply_trigger(x), x, atol=1e-4)  # no warp
    assert not torch.allclose(WaNet().apply_trigger(x), x, atol=1e-2)


def test_wanet_noise_mode_warps_more_images_and_keeps_their_labels(digits_train):
    poisoned = WaNet(target=3, rate=0.1, cross_ratio=2.0).poison(digits_train)
    assert len(poisoned.augmented) == round(0.2 * len(digits_train))
    assert not set(poisoned.augmented.tolist()) & set(poisoned.poisoned.tolist())
    aug = poisoned.augmented
    assert torch.equal(poisoned.data.y[aug], digits_train.y[aug])
    assert not torch.equal(poisoned.data.x[aug], digits_train.x[aug])


def test_wanet_grid_is_the_papers_closed_form():
    # identity + s * (bicubic upsampling of a k x k field normalised to mean |.| 1) / H,
    # clamped: written out here from the paper, x before y in the last dimension
    attack = WaNet(k=4, s=0.5, field_seed=5)
    field = torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(5)) * 2 - 1
    field = field / field.abs().mean()
    up = torch.nn.functional.interpolate(field, size=(28, 28), mode="bicubic",
                                         align_corners=True)
    line = torch.linspace(-1, 1, 28)
    expected = torch.stack((line.expand(28, 28), line[:, None].expand(28, 28)), dim=-1)
    expected = (expected + 0.5 * up[0].permute(1, 2, 0) / 28).clamp(-1, 1)
    assert torch.allclose(attack.grid(28, 28)[0], expected, atol=1e-6)
    # a grid of no offsets resamples every pixel onto itself (align_corners=True)
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(WaNet(s=1e-9).apply_trigger(x), x, atol=1e-5)
    # the noise mode's grids stay within 1 / H of the warp, on each coordinate
    noisy = attack.noisy_grid(3, 28, 28, torch.Generator().manual_seed(0))
    gap = (noisy - attack.grid(28, 28)).abs()
    assert float(gap.max()) <= 1 / 28 + 1e-6 and float(gap.mean()) > 0.25 / 28


def test_wanet_poisons_each_batch_afresh_the_papers_way():
    # the paper's training re-draws which samples of each batch are warped (and which
    # get the noisy grid) on every batch, rather than fixing a poisoned set once
    attack = WaNet(target=3, rate=0.1, cross_ratio=2.0)
    x, y = torch.rand(128, 1, 12, 12), torch.arange(128) % 10
    gen = torch.Generator().manual_seed(0)
    xb, yb = attack.poison_batch(x, y, 10, gen)
    assert xb.shape == x.shape and torch.equal(y, torch.arange(128) % 10)  # not in place
    changed = (xb != x).flatten(1).any(dim=1)
    relabelled = yb != y
    warped = torch.isclose(xb, attack.apply_trigger(x), atol=1e-6).flatten(1).all(dim=1)
    assert int(warped.sum()) == int(0.1 * 128)  # warped exactly as at test time
    assert bool((yb[warped] == 3).all()) and bool(warped[relabelled].all())
    noisy = changed & ~warped
    assert int(noisy.sum()) == 2 * int(0.1 * 128)  # the noise mode's share, labels kept
    assert torch.equal(yb[noisy], y[noisy])
    xc, yc = attack.poison_batch(x, y, 10, gen)  # the next batch: a fresh draw
    assert not torch.equal(yc, yb)
    again = attack.poison_batch(x, y, 10, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], xb) and torch.equal(again[1], yb)  # seeded
    ya = WaNet(mode="all_to_all", rate=0.5).poison_batch(x, y, 10, gen)[1]
    assert bool(((ya == y) | (ya == (y + 1) % 10)).all()) and int((ya != y).sum()) == 64


def test_a_tiny_model_learns_the_badnets_backdoor(digits_train):
    test = load_digits("test")
    attack = BadNets(target=3, rate=0.1, patch_size=3)
    poisoned = attack.poison(digits_train)
    config = TrainConfig(epochs=15, batch_size=64, lr=3e-3, seed=0)
    clean_net, bad_net = (zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
                          for _ in range(2))
    with using_threads(1):  # a model this small trains fastest, and steadiest, on one
        fit(clean_net, digits_train, config, show_progress=False)
        fit(bad_net, poisoned.data, config, show_progress=False)
    others = test.y != 3
    triggered = attack.apply_trigger(test.x[others])
    asr = float((batched_predict(bad_net, triggered) == 3).float().mean())
    clean_asr = float((batched_predict(clean_net, triggered) == 3).float().mean())
    accuracy = [float((batched_predict(n, test.x) == test.y).float().mean())
                for n in (clean_net, bad_net)]
    assert asr >= 0.9 and clean_asr < 0.3, (asr, clean_asr)
    assert accuracy[1] >= accuracy[0] - 0.03, accuracy


@pytest.mark.parametrize("make, data, match", [
    (lambda: BadNets(rate=0.0), None, "'rate'"),
    (lambda: BadNets(rate=1.0), None, "'rate'"),
    (lambda: Blended(alpha=0.0), None, "'alpha'"),
    (lambda: BadNets(target=10), "digits", "'target' parameter of BadNets is 10"),
    (lambda: BadNets(patch_size=9), "digits", "does not fit images of 8x8"),
    (lambda: BadNets(), "one_class", "single class"),
    (lambda: BadNets(), "tabular", r"images \[N, C, H, W\]"),
    (lambda: BadNets(), "out_of_range", r"outside it"),
    (lambda: LabelFlip(mode="targeted", source=2), None, "two different classes"),
    (lambda: BadNets(rate=0.95, target=0), "digits", "only .* can be changed"),
])
def test_bad_settings_and_data_are_refused(make, data, match, digits_train):
    datasets = {
        "digits": digits_train,
        "one_class": Dataset(digits_train.x[:20], torch.zeros(20, dtype=torch.int64), "d",
                             "train", digits_train.classes),
        "tabular": Dataset(torch.rand(20, 4), torch.arange(20) % 2, "t", "train", ("a", "b")),
        "out_of_range": Dataset(digits_train.x[:20] * 255, digits_train.y[:20], "d", "train",
                                digits_train.classes),
    }
    with pytest.raises(AssayValueError, match=match):
        make().poison(datasets[data]) if data else make()


def test_every_registered_attack_refuses_its_invalid_settings():
    for name in POISONING_ATTACKS.names():
        cls = POISONING_ATTACKS[name]
        for param, constraint in cls.constraints.items():
            for bad in constraint.invalid_examples():
                with pytest.raises(AssayValueError, match=f"'{param}'"):
                    cls(**{param: bad})


def test_label_consistent_changes_only_target_images_within_eps_and_keeps_labels(digits_train):
    from assay.attacks.poisoning import LabelConsistent

    attack = LabelConsistent(target=3, rate=0.05, eps=0.1, steps=5, surrogate_epochs=1)
    poisoned = attack.poison(digits_train)
    assert torch.equal(poisoned.data.y, digits_train.y)  # labels consistent
    assert len(poisoned.poisoned) == round(0.05 * len(digits_train))
    assert bool((digits_train.y[poisoned.poisoned] == 3).all())
    assert torch.equal(poisoned.original_labels, digits_train.y[poisoned.poisoned])
    changed = (poisoned.data.x != digits_train.x).flatten(1).any(1)
    assert set(torch.nonzero(changed).flatten().tolist()) <= set(poisoned.poisoned.tolist())
    # off the four 3x3 corners every pixel moved by at most eps, and stayed in [0, 1]
    delta = (poisoned.data.x - digits_train.x)[poisoned.poisoned]
    inner = torch.ones(8, 8, dtype=torch.bool)
    for top in (0, 5):
        for left in (0, 5):
            inner[top:top + 3, left:left + 3] = False
    assert float(delta[..., inner].abs().max()) <= 0.1 + 1e-6
    assert float(poisoned.data.x.min()) >= 0 and float(poisoned.data.x.max()) <= 1
    # the test-time trigger sets each corner to the checkerboard
    stamped = attack.apply_trigger(digits_train.x[:2])
    assert float(stamped[..., 0, 0].min()) == 1.0 and float(stamped[..., 0, 1].max()) == 0.0
    # a reduced amplitude moves the corners only part of the way
    faint = LabelConsistent(target=3, rate=0.05, steps=0, amplitude=0.25).poison(digits_train)
    corner = (faint.data.x - digits_train.x)[faint.poisoned][..., :3, :3]
    assert float(corner.abs().max()) <= 0.25 + 1e-6
    with pytest.raises(AssayValueError, match="only .* can be changed"):
        LabelConsistent(target=3, rate=0.5).poison(digits_train)


def test_feature_collision_moves_poisons_onto_the_target_in_feature_space(digits_train):
    from assay.attacks.poisoning import FeatureCollision
    from assay.attacks.poisoning.feature_collision import penultimate
    from assay.core import zoo
    from assay.core.training import TrainConfig, fit

    net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
    fit(net, digits_train, TrainConfig(epochs=3, lr=3e-3), show_progress=False)
    net.eval()
    target_x = digits_train.x[int(torch.nonzero(digits_train.y == 7)[0])]
    attack = FeatureCollision(base_class=1, rate=0.01, steps=60)
    poisoned = attack.poison(digits_train, target_x=target_x, model=net)
    assert torch.equal(poisoned.data.y, digits_train.y)  # clean-label
    assert len(poisoned.poisoned) == round(0.01 * len(digits_train))
    assert bool((digits_train.y[poisoned.poisoned] == 1).all())
    with torch.no_grad():
        goal = penultimate(net, target_x[None])
        before = (penultimate(net, digits_train.x[poisoned.poisoned]) - goal).norm(dim=1)
        after = (penultimate(net, poisoned.data.x[poisoned.poisoned]) - goal).norm(dim=1)
    assert bool((after < before / 3).all()), (before, after)
    x = poisoned.data.x[poisoned.poisoned]
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    # a huge beta pins each poison to its base image (the proximal step's closed form)
    pinned = FeatureCollision(base_class=1, rate=0.01, steps=5, beta=1e6).craft(
        net, digits_train.x[poisoned.poisoned], target_x)
    assert float((pinned - digits_train.x[poisoned.poisoned]).abs().max()) < 1e-3
    with pytest.raises(AssayValueError, match="needs target_x"):
        attack.poison(digits_train)
    with pytest.raises(AssayValueError, match="shape"):
        attack.poison(digits_train, target_x=torch.rand(1, 4, 4), model=net)
