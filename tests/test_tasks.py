"""Tasks are data: a task pickles, and what every task shares (model, data, seed, ...)
turns into plain data and bytes that another process rebuilds without pickle
(issue 12, part 6)."""

import pickle

import pytest
import torch
from torch import nn

from assay.audit.plan import plan_from_dict
from assay.audit.tasks import (AuditInputs, Task, dataset_from_payload, dataset_payload,
                               model_from_payload, model_payload, task_key, zoo_arch)
from assay.core import zoo
from assay.core.loaders import load_digits
from assay.core.model import ModelFinding, ModelWrapper
from assay.core.training import TrainConfig, TrainingRecipe
from assay.errors import AssayValueError


class Gated(nn.Module):
    """Not a zoo architecture, with a data-dependent branch (a trace would freeze it)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        z = self.linear(x.flatten(1))
        if bool(z.mean() > 0):
            return z * 2
        return z


def plain(value):
    """Whether ``value`` holds nothing but plain data and bytes."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(plain, value))
    return value is None or isinstance(value, (bool, int, float, str, bytes))


@pytest.fixture
def split():
    return load_digits("test").subset(40)


def wrapped(net, **settings):
    return ModelWrapper(net, num_classes=10, input_shape=(1, 8, 8), **settings)


@pytest.mark.parametrize("kind", ["zoo", "torchscript"])
def test_a_rebuilt_model_gives_the_same_logits_and_fingerprint(kind, split):
    net = (zoo.build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=3)
           if kind == "zoo" else Gated())
    model = wrapped(net, bounds=(0.0, 1.0), mean=[0.3], std=[0.2], name="m")
    model.findings.append(ModelFinding("probabilities", "looks like probabilities"))
    payload = model_payload(model)
    assert payload["network"]["kind"] == kind and plain(payload)
    rebuilt = model_from_payload(pickle.loads(pickle.dumps(payload)))
    assert torch.equal(rebuilt(split.x), model(split.x))
    assert rebuilt.fingerprint() == model.fingerprint()
    assert rebuilt.describe() == model.describe() and rebuilt.findings == model.findings


def test_zoo_models_are_recognised_and_others_are_not():
    for arch in ("mlp", "small_cnn", "lenet", "resnet"):
        shape = (1, 28, 28) if arch == "lenet" else (1, 8, 8)
        assert zoo_arch(zoo.build(arch, input_shape=shape, num_classes=10), shape, 10) == arch
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert zoo_arch(other, (1, 8, 8), 10) is None
    hooked = zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10)
    hooked.register_forward_hook(lambda module, args, out: -out)
    assert zoo_arch(hooked, (1, 8, 8), 10) is None  # a rebuild would lose the hook


def test_a_model_that_cannot_be_sent_is_refused_with_the_fix():
    class Opaque(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(64, 10)

        def forward(self, x):
            return self.linear(torch.from_numpy(x.flatten(1).numpy()))  # not scriptable

    with pytest.raises(AssayValueError, match="local executor"):
        model_payload(wrapped(Opaque()))


def test_audit_inputs_round_trip_and_keep_every_tasks_key(split):
    model = wrapped(zoo.build("mlp", input_shape=(1, 8, 8), num_classes=10, seed=1))
    train = load_digits("train").subset(30)
    inputs = AuditInputs(model=model, data=split, train_data=train, seed=4, data_root="/data",
                         training=TrainingRecipe("mlp", TrainConfig(epochs=2, lr=0.01)),
                         progress=False)
    payload = inputs.to_payload()
    assert plain(payload)
    rebuilt = AuditInputs.from_payload(pickle.loads(pickle.dumps(payload)))
    assert rebuilt.training == inputs.training and rebuilt.seed == 4
    assert rebuilt.data.sha256() == split.sha256() and rebuilt.train_data.sha256() == train.sha256()
    spec = plan_from_dict({"checks": [{"name": "accuracy"}]}).checks[0]
    # The same key on the other side: a shared cache serves both.
    assert task_key(spec, rebuilt, rebuilt.model.fingerprint()) == task_key(
        spec, inputs, model.fingerprint())


def test_a_dataset_keeps_its_groups_and_names():
    data = load_digits("test").subset(10)
    data = type(data)(data.x, data.y, data.name, data.split, data.classes,
                      torch.arange(10) % 2, "src")
    back = dataset_from_payload(dataset_payload(data))
    assert torch.equal(back.group, data.group) and back.label == data.label
    assert back.classes == data.classes and back.source == "src"


def test_a_task_is_small_picklable_data():
    plan = plan_from_dict({"checks": [{"name": "robustness", "params": {"eps": [0.1]},
                                       "gates": ["robust_accuracy@linf=0.1 >= 0.5"]}]})
    task = Task(plan.checks[0], "ab" * 32, threads=1)
    blob = pickle.dumps(task)
    assert pickle.loads(blob) == task and len(blob) < 2000


def test_a_payload_of_another_format_is_refused():
    with pytest.raises(AssayValueError, match="format"):
        model_from_payload({"format": 99})
    with pytest.raises(AssayValueError, match="payload"):
        AuditInputs.from_payload([1])


def test_a_tabular_split_travels_with_its_attributes_and_schema(tmp_path):
    from assay.core.data import load_data

    path = tmp_path / "rows.csv"
    path.write_text("age,job,sex,y\n" + "".join(
        f"{20 + i % 40},{'ab'[i % 2]},{'FM'[i % 3 == 0]},{i % 2}\n" for i in range(60)))
    data = load_data(str(path), target="y", sensitive=["sex"])
    back = dataset_from_payload(pickle.loads(pickle.dumps(dataset_payload(data))))
    assert back.sha256() == data.sha256()
    assert back.attribute("sex")[1] == data.attribute("sex")[1]
    assert back.schema == data.schema
