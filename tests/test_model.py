import pickle
import warnings

import pytest
import torch
from torch import nn

from assay.core import zoo
from assay.core.loading import load_network, sniff_format
from assay.core.model import ModelWrapper
from assay.errors import AssayValueError, AssayWarning


def tiny_net():
    return zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)


def test_normalisation_lives_in_the_wrapper():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 4))
    model = ModelWrapper(net, num_classes=4, input_shape=(3, 2, 2), mean=[0.5, 0.4, 0.3],
                         std=[0.2, 0.25, 0.5])
    x = torch.rand(5, 3, 2, 2)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.5]).view(1, 3, 1, 1)
    assert torch.allclose(model(x), net((x - mean) / std))


def test_num_classes_inferred_and_eval_mode_enforced():
    net = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 7)).train()
    model = ModelWrapper(net, num_classes=None, input_shape=(1, 8, 8))
    assert model.num_classes == 7
    assert not net.training
    assert [f.code for f in model.findings] == ["train_mode"]
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(model(x), model(x))  # dropout is off


def test_probabilities_are_detected():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Softmax(dim=1))
    model = ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8))
    with pytest.warns(AssayWarning, match="probabilities"):
        found = model.inspect(torch.rand(16, 1, 8, 8))
    assert [f.code for f in found] == ["probabilities"]


def test_logits_are_not_flagged():
    model = ModelWrapper(tiny_net(), num_classes=10, input_shape=(1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.inspect(torch.rand(16, 1, 8, 8)) == []


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        return self.linear(x.flatten(1) + 0.1 * torch.randn_like(x.flatten(1)))


def test_stochastic_forward_is_detected():
    model = ModelWrapper(Noisy(), num_classes=10, input_shape=(1, 8, 8))
    with pytest.warns(AssayWarning, match="stochastic"):
        assert [f.code for f in model.inspect(torch.rand(8, 1, 8, 8))] == ["stochastic"]


def test_wrong_input_shape_is_a_clear_error():
    model = ModelWrapper(tiny_net(), num_classes=10, input_shape=(1, 8, 8))
    with pytest.raises(AssayValueError, match="input shape"):
        model.inspect(torch.rand(4, 1, 28, 28))
    wrong = ModelWrapper(tiny_net(), num_classes=10, input_shape=(1, 8, 8))
    wrong.input_shape = (3, 8, 8)
    with pytest.raises(AssayValueError, match="rejected inputs"):
        wrong.inspect(torch.rand(4, 3, 8, 8))


def test_class_count_mismatch_is_a_clear_error():
    with pytest.raises(AssayValueError, match="returns 10 outputs"):
        ModelWrapper(tiny_net(), num_classes=5, input_shape=(1, 8, 8)).inspect(torch.rand(2, 1, 8, 8))


@pytest.mark.parametrize("bad", [dict(bounds=(1.0, 0.0)), dict(std=[0.0]), dict(mean=[0.1, 0.2]),
                                 dict(num_classes=1), dict(input_shape=())])
def test_bad_wrapper_parameters(bad):
    kwargs = dict(num_classes=10, input_shape=(1, 8, 8)) | bad
    with pytest.raises(AssayValueError):
        ModelWrapper(tiny_net(), **kwargs)


def test_fingerprint_tracks_weights_and_settings():
    a = ModelWrapper(tiny_net(), num_classes=10, input_shape=(1, 8, 8))
    b = ModelWrapper(tiny_net(), num_classes=10, input_shape=(1, 8, 8))
    assert a.fingerprint() == b.fingerprint()
    c = ModelWrapper(tiny_net(), num_classes=10, input_shape=(1, 8, 8), bounds=(0.0, 2.0))
    assert c.fingerprint() != a.fingerprint()
    with torch.no_grad():
        next(b.net.parameters()).add_(1e-3)
    assert b.fingerprint() != a.fingerprint()


# ------------------------------------------------------------------------- loading
@pytest.fixture
def saved(tmp_path):
    net = tiny_net()
    x = torch.rand(3, 1, 8, 8)
    paths = {}
    paths["torchscript"] = tmp_path / "model.pt"  # TorchScript under a misleading name
    torch.jit.save(torch.jit.script(net), str(paths["torchscript"]))
    paths["state_dict"] = tmp_path / "weights.bin"
    torch.save(net.state_dict(), paths["state_dict"])
    from safetensors.torch import save_file
    paths["safetensors"] = tmp_path / "weights.safetensors"
    save_file(net.state_dict(), str(paths["safetensors"]))
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(net, (x,), dynamic_shapes={"input": {0: batch}})
    paths["export"] = tmp_path / "model.pt2"
    torch.export.save(program, str(paths["export"]))
    return net, x, paths


@pytest.mark.parametrize("kind", ["torchscript", "state_dict", "safetensors", "export"])
def test_every_format_is_recognised_by_content_and_loads(saved, kind):
    net, x, paths = saved
    assert sniff_format(paths[kind]) == kind
    loaded, detected = load_network(paths[kind], arch="small_cnn", input_shape=(1, 8, 8),
                                    num_classes=10)
    assert detected == kind
    assert torch.allclose(loaded(x), net(x), atol=1e-6)
    model = ModelWrapper(loaded, num_classes=None, input_shape=(1, 8, 8))
    assert model.num_classes == 10 and model.predict(torch.rand(70, 1, 8, 8)).shape == (70,)


class Payload:
    def __reduce__(self):
        return (print, ("this ran arbitrary code",))


def test_pickle_needing_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": Payload()}, path)
    with pytest.raises(AssayValueError, match="full pickle"):
        load_network(path, arch="small_cnn", input_shape=(1, 8, 8), num_classes=10)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(AssayValueError, match="full pickle"):
        load_network(raw, arch="small_cnn", input_shape=(1, 8, 8), num_classes=10)
    assert "arbitrary code" not in capsys.readouterr().out


def test_weights_need_a_matching_architecture(saved):
    _, _, paths = saved
    with pytest.raises(AssayValueError, match="--arch"):
        load_network(paths["state_dict"], input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(AssayValueError, match="do not fit"):
        load_network(paths["state_dict"], arch="lenet", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(AssayValueError, match="do not fit"):
        load_network(paths["safetensors"], arch="small_cnn", input_shape=(1, 8, 8), num_classes=3)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(AssayValueError, match="no such model file"):
        load_network(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"hello, not a model")
    with pytest.raises(AssayValueError, match="unknown model format"):
        load_network(junk)
