"""Data-side backdoor defenses: Spectral Signatures and Activation Clustering find poison
that stands out in a label's features, and their scans measure against known poison."""

import pytest
import torch
from torch import nn

from assay.attacks.poisoning import BadNets
from assay.core import zoo
from assay.core.dataset import Dataset
from assay.core.loaders import load_digits
from assay.core.threads import using_threads
from assay.core.training import TrainConfig, fit
from assay.defenses.backdoor import ActivationClustering, SpectralSignatures
from assay.errors import AssayValueError
from assay.metrics.ood import auroc


def _features_model(dim: int, classes: int) -> nn.Module:
    """A model whose penultimate features are its flattened input."""
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, classes)).eval()


def _planted(n_clean=400, n_poison=40, dim=16, shift=8.0):
    """Label 0: clean rows plus rows shifted along one direction; label 1: clean rows."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * n_clean + n_poison, dim, generator=g)
    x[:n_poison, 0] += shift
    y = torch.cat([torch.zeros(n_clean + n_poison), torch.ones(n_clean)]).long()
    return Dataset(x, y, "planted", "train", ("a", "b")), torch.arange(n_poison)


@pytest.mark.parametrize("defense", [SpectralSignatures(expected_rate=0.1),
                                     ActivationClustering(dims=4)])
def test_poison_shifted_along_one_direction_is_found(defense):
    data, poisoned = _planted()
    scan = defense.scan(_features_model(16, 2), data)
    quality = scan.against(poisoned)
    assert quality["tpr"] >= 0.95 and quality["auroc"] >= 0.95, quality
    assert quality["fpr"] <= 0.16, quality  # spectral removes 1.5 x 10% of every label
    kept = scan.clean_data(data)
    assert len(kept) == len(data) - int(scan.flagged.sum())


def test_spectral_scores_are_squared_projections_on_the_top_direction():
    data, _ = _planted()
    scan = SpectralSignatures(expected_rate=0.05).scan(_features_model(16, 2), data)
    label0 = data.x[data.y == 0].double()
    centred = label0 - label0.mean(0)
    top = torch.linalg.svd(centred, full_matrices=False)[2][0]
    assert torch.allclose(scan.scores[data.y == 0], (centred @ top) ** 2, atol=1e-9)
    assert int(scan.flagged[data.y == 0].sum()) == round(1.5 * 0.05 * int((data.y == 0).sum()))


def test_badnets_poison_in_a_digits_model_stands_out():
    train = load_digits("train")
    poisoned = BadNets(target=3, rate=0.05).poison(train)
    net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
    with using_threads(1):
        fit(net, poisoned.data, TrainConfig(epochs=15, batch_size=64, lr=3e-3),
            show_progress=False)
    truth = torch.zeros(len(train), dtype=torch.bool)
    truth[poisoned.poisoned] = True
    target = poisoned.data.y == 3
    for defense, floor in ((SpectralSignatures(), 0.6), (ActivationClustering(), 0.8)):
        scan = defense.scan(net, poisoned.data)
        within = auroc(scan.scores[target & truth], scan.scores[target & ~truth])
        assert within >= floor, (scan.method, within)  # random scores: 0.5
    assert scan.against(poisoned.poisoned)["tpr"] >= 0.7  # activation clustering


def test_bad_input_is_refused():
    data, _ = _planted()
    one_label = Dataset(data.x[:50], torch.zeros(50, dtype=torch.int64), "p", "train",
                        ("a", "b"))
    with pytest.raises(AssayValueError, match="single label"):
        SpectralSignatures().scan(_features_model(16, 2), one_label)
    with pytest.raises(AssayValueError, match="'expected_rate'"):
        SpectralSignatures(expected_rate=1.5)
    with pytest.raises(AssayValueError, match="'size_threshold'"):
        ActivationClustering(size_threshold=0.9)
    scan = SpectralSignatures().scan(_features_model(16, 2), data)
    with pytest.raises(AssayValueError, match="both poisoned and clean"):
        scan.against(torch.arange(len(data)))


def test_strip_catches_triggered_inputs_of_a_trojaned_model_only():
    from assay.defenses.backdoor import STRIP

    train, test = load_digits("train"), load_digits("test")
    attack = BadNets(target=3, rate=0.1)
    held, rest = test.split_off(0.5, seed=0)
    others = rest.y != 3
    clean_x, triggered = rest.x[others], attack.apply_trigger(rest.x[others])
    far = {}
    for name, data in (("trojaned", attack.poison(train).data), ("clean", train)):
        net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
        with using_threads(1):
            fit(net, data, TrainConfig(epochs=15, batch_size=64, lr=3e-3), show_progress=False)
        detector = STRIP(n_overlays=20, frr=0.05).fit(net, held)
        rates = detector.rates(clean_x, triggered)
        assert rates["frr"] <= 0.12, rates  # the threshold was set at 5% on other clean data
        far[name] = rates["far"]
    assert far["trojaned"] <= 0.1 and far["clean"] >= 0.7, far  # no trojan: nothing to catch


def test_strip_refuses_too_little_clean_data_and_tabular_rows():
    from assay.defenses.backdoor import STRIP

    test = load_digits("test")
    net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
    with pytest.raises(AssayValueError, match="needs at least 200"):
        STRIP(n_overlays=100).fit(net, test.subset(150))
    rows = Dataset(torch.rand(300, 4), torch.arange(300) % 2, "t", "test", ("a", "b"))
    with pytest.raises(AssayValueError, match="superimposes images"):
        STRIP().fit(_features_model(4, 2), rows)
    with pytest.raises(AssayValueError, match="'frr'"):
        STRIP(frr=0.0)


def test_neural_cleanse_names_the_target_of_a_trojaned_model_and_spares_a_clean_one():
    from assay.defenses.backdoor import NeuralCleanse

    train, test = load_digits("train"), load_digits("test")
    attack = BadNets(target=3, rate=0.1)
    scans = {}
    for name, data in (("trojaned", attack.poison(train).data), ("clean", train)):
        net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
        with using_threads(1):
            fit(net, data, TrainConfig(epochs=15, batch_size=64, lr=3e-3), show_progress=False)
            scans[name] = NeuralCleanse(steps=300).scan(net, test)
    trojaned, clean = scans["trojaned"], scans["clean"]
    assert trojaned.suspected_target == 3 and trojaned.anomaly_index > 2, trojaned.l1
    assert clean.flagged == () and clean.suspected_target == -1, clean.l1
    assert float(trojaned.l1[3]) < 0.5 * float(trojaned.l1.median())
    assert trojaned.masks.shape == (10, 8, 8) and trojaned.patterns.shape == (10, 1, 8, 8)
    assert bool(((trojaned.masks >= 0) & (trojaned.masks <= 1)).all())
    assert float(trojaned.success.min()) >= 0.99  # every kept trigger reached the threshold


def test_neural_cleanse_refuses_what_it_cannot_scan():
    from assay.defenses.backdoor import NeuralCleanse

    rows = Dataset(torch.rand(40, 4), torch.arange(40) % 2, "t", "test", ("a", "b"))
    with pytest.raises(AssayValueError, match="image triggers"):
        NeuralCleanse().scan(_features_model(4, 2), rows)
    images = Dataset(torch.rand(20, 1, 4, 4), torch.arange(20) % 2, "t", "test", ("a", "b"))
    with pytest.raises(AssayValueError, match="2 classes gives no median"):
        NeuralCleanse().scan(_features_model(16, 2), images)
    with pytest.raises(AssayValueError, match="'steps'"):
        NeuralCleanse(steps=0)


@pytest.fixture(scope="module")
def trojaned_digits():
    train = load_digits("train")
    attack = BadNets(target=3, rate=0.1)
    net = zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
    with using_threads(1):
        fit(net, attack.poison(train).data, TrainConfig(epochs=15, batch_size=64, lr=3e-3),
            show_progress=False)
    return net.eval(), attack, train


def _ca_asr(net, attack, test):
    from assay.core.inference import batched_predict

    others = test.y != 3
    ca = float((batched_predict(net, test.x) == test.y).float().mean())
    asr = float((batched_predict(net, attack.apply_trigger(test.x[others])) == 3)
                .float().mean())
    return ca, asr


def test_neural_cleanse_unlearning_removes_the_backdoor(trojaned_digits):
    import copy

    from assay.defenses.backdoor import NeuralCleanse
    from assay.defenses.backdoor.removal import unlearn

    net, attack, train = trojaned_digits
    test = load_digits("test")
    held, rest = train.split_off(0.2, seed=0)
    before = _ca_asr(net, attack, test)
    cleaned = copy.deepcopy(net)
    with using_threads(1):
        scan = NeuralCleanse(steps=300).scan(cleaned, held)
        removal = unlearn(cleaned, rest, scan, TrainConfig(epochs=5, batch_size=64, lr=3e-3))
    after = _ca_asr(cleaned, attack, test)
    assert removal.target == 3 and before[1] >= 0.95
    assert after[1] <= 0.15 and after[0] >= before[0] - 0.02, (before, after)


def test_fine_pruning_keeps_accuracy_and_the_architecture(trojaned_digits):
    import copy

    from assay.defenses.backdoor.removal import fine_prune

    net, attack, train = trojaned_digits
    held, rest = train.split_off(0.2, seed=0)
    pruned = copy.deepcopy(net)
    with using_threads(1):
        removal = fine_prune(pruned, rest, held, TrainConfig(epochs=1, batch_size=64, lr=1e-3),
                             max_accuracy_drop=0.04)
    assert pruned.state_dict().keys() == net.state_dict().keys()
    conv = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)][-1]
    assert removal.pruned_channels and removal.channels == conv.out_channels
    gone = list(removal.pruned_channels)
    assert float(conv.weight[gone].abs().sum()) == 0.0 and float(conv.bias[gone].abs().sum()) == 0
    ca = _ca_asr(pruned, attack, load_digits("test"))[0]
    assert ca >= _ca_asr(net, attack, load_digits("test"))[0] - 0.05
    with pytest.raises(AssayValueError, match="no nn.Conv2d"):
        fine_prune(_features_model(4, 3), rest, held)


def test_anp_prunes_only_low_masks_and_keeps_the_function_of_the_rest(trojaned_digits):
    import copy

    from assay.defenses.backdoor.removal import adversarial_neuron_prune

    net, attack, train = trojaned_digits
    test = load_digits("test")
    clean = train.subset(200)
    # threshold 0: no mask ends below it, so nothing changes, whatever was learnt
    same = copy.deepcopy(net)
    with using_threads(1):
        removal = adversarial_neuron_prune(same, clean, iterations=20, threshold=0.0)
    assert removal.pruned_channels == () and removal.channels == 16 + 32 + 100
    for (name, a), b in zip(net.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), name
    assert all(p.requires_grad for p in same.parameters())  # the weights were only frozen
    # no perturbation and the natural loss only: masks barely move from 1, nothing pruned
    calm = copy.deepcopy(net)
    with using_threads(1):
        assert adversarial_neuron_prune(calm, clean, iterations=20, eps=0.0, alpha=1.0,
                                        lr=1e-3).pruned_channels == ()
    # the defaults on the trojaned model: pruned neurons have zero weights, accuracy holds
    pruned = copy.deepcopy(net)
    with using_threads(1):
        removal = adversarial_neuron_prune(pruned, clean, iterations=300)
    assert pruned.state_dict().keys() == net.state_dict().keys()
    layers = [m for m in pruned.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][:-1]
    assert sum(removal.pruned_per_layer) == len(removal.pruned_channels) > 0
    for layer, count in zip(layers, removal.pruned_per_layer):
        assert int((layer.weight.flatten(1).abs().sum(1) == 0).sum()) >= count
    assert _ca_asr(pruned, attack, test)[0] >= _ca_asr(net, attack, test)[0] - 0.05
    with pytest.raises(AssayValueError, match="'eps'"):
        adversarial_neuron_prune(copy.deepcopy(net), clean, eps=1.5)
    with pytest.raises(AssayValueError, match="hidden"):
        adversarial_neuron_prune(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), clean)
