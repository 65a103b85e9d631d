"""Reference architectures, built by name for any input shape and class count.

| name       | what                                                                      |
|------------|---------------------------------------------------------------------------|
| mlp        | two hidden layers of 256 units with ReLU; for tabular or flattened input  |
|            | (with a tabular schema: its ``TabularEncoder`` first, on raw rows)        |
| small_cnn  | conv16-conv32 (3x3, stride 2) and a 100-unit hidden layer; seconds on CPU |
| lenet      | the MNIST CNN of Madry et al. (ICLR 2018): conv32-5x5, pool, conv64-5x5,  |
|            | pool, fc1024                                                              |
| resnet     | a small pre-activation ResNet (He et al., ECCV 2016): 3 stages of one     |
|            | block, widths 16/32/64                                                    |
| dp_cnn     | the MNIST CNN of Papernot et al. (AAAI 2021) for DP-SGD: conv16-8x8/2,    |
|            | pool, conv32-4x4/2, pool, fc32, with tanh (tempered sigmoid) activations; |
|            | 26k weights, so DP noise drowns less signal; images of 16 pixels or more  |

Weights are initialised from ``seed`` without touching the global random state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .._params import check_choice, check_int
from ..errors import AssayValueError
from ..registry import Registry
from .tabular import TabularEncoder, TabularSchema


def _mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    width = 1
    for size in input_shape:
        width *= size
    return nn.Sequential(nn.Flatten(), nn.Linear(width, 256), nn.ReLU(),
                         nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, num_classes))


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise AssayValueError(f"The architecture '{name}' needs image input of shape (C, H, W); "
                              f"got input_shape {input_shape}. Use 'mlp' for tabular data.")
    return input_shape


def _small_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    channels, height, width = _image_shape("small_cnn", input_shape)
    out_h, out_w = (height + 1) // 2, (width + 1) // 2
    out_h, out_w = (out_h + 1) // 2, (out_w + 1) // 2
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * out_h * out_w, 100), nn.ReLU(),
        nn.Linear(100, num_classes))


def _lenet(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    channels, height, width = _image_shape("lenet", input_shape)
    return nn.Sequential(
        nn.Conv2d(channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (height // 4) * (width // 4), 1024), nn.ReLU(),
        nn.Linear(1024, num_classes))


def _dp_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    channels, height, width = _image_shape("dp_cnn", input_shape)
    if min(height, width) < 16:
        raise AssayValueError(f"The architecture 'dp_cnn' needs images of at least 16 x 16 "
                              f"pixels; got input_shape {input_shape}. Use 'small_cnn'.")

    def after(size: int) -> int:  # conv 8/2 pad 3, pool 2/1, conv 4/2, pool 2/1
        return ((size + 6 - 8) // 2 + 1 - 1 - 4) // 2 + 1 - 1

    return nn.Sequential(
        nn.Conv2d(channels, 16, 8, stride=2, padding=3), nn.Tanh(), nn.MaxPool2d(2, 1),
        nn.Conv2d(16, 32, 4, stride=2), nn.Tanh(), nn.MaxPool2d(2, 1),
        nn.Flatten(), nn.Linear(32 * after(height) * after(width), 32), nn.Tanh(),
        nn.Linear(32, num_classes))


class _PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
                         if stride != 1 or in_planes != planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class _PreActResNet(nn.Module):
    def __init__(self, channels: int, num_classes: int, widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1, bias=False)
        blocks, in_planes = [], widths[0]
        for index, planes in enumerate(widths):
            blocks.append(_PreActBlock(in_planes, planes, stride=1 if index == 0 else 2))
            in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_planes)
        self.head = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.blocks(self.stem(x))))
        return self.head(out.mean(dim=(2, 3)))


def _resnet(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    channels, _, _ = _image_shape("resnet", input_shape)
    return _PreActResNet(channels, num_classes)


# Each architecture, a function (input shape, class count) -> nn.Module; other packages
# add theirs through the "assay.architectures" entry-point group.
ARCHITECTURES: Registry[Callable[[tuple[int, ...], int], nn.Module]] = Registry(
    "architecture", group="assay.architectures")
ARCHITECTURES.add("mlp", _mlp)
ARCHITECTURES.add("small_cnn", _small_cnn)
ARCHITECTURES.add("lenet", _lenet)
ARCHITECTURES.add("resnet", _resnet)
ARCHITECTURES.add("dp_cnn", _dp_cnn)


def build(name: str, *, input_shape: Sequence[int], num_classes: int, seed: int = 0,
          schema: TabularSchema | None = None) -> nn.Module:
    """Build architecture ``name`` for ``input_shape`` (no batch dim) and ``num_classes``.

    The weights are drawn on the CPU from ``seed`` inside a forked CPU random state, so
    the global random states (CPU and CUDA) are left as they were and the same seed gives
    the same weights.

    With a tabular ``schema`` (``mlp`` only; ``input_shape`` is then ``(len(features),)``,
    the raw rows), the network is ``nn.Sequential(TabularEncoder(schema), mlp)`` with the
    MLP on the encoded width: the model reads raw rows and codes them itself. The MLP's
    weights are those of ``build("mlp", input_shape=(schema.encoded_width,), ...)``.

    >>> net = build("small_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    check_choice("name", name, ARCHITECTURES, "zoo.build")
    check_int("num_classes", num_classes, "zoo.build", low=2)
    check_int("seed", seed, "zoo.build", low=0)
    shape = tuple(int(s) for s in input_shape)
    if schema is not None:
        return _tabular(name, shape, num_classes, seed, schema)
    # Built on the CPU from the CPU generator alone: torch.manual_seed would reseed every
    # CUDA device too, which fork_rng(devices=[]) does not restore.
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.default_generator.manual_seed(seed)
        return ARCHITECTURES[name](shape, num_classes)


def _tabular(name: str, shape: tuple[int, ...], num_classes: int, seed: int,
             schema: TabularSchema) -> nn.Module:
    if not isinstance(schema, TabularSchema):
        raise AssayValueError(f"The 'schema' parameter of zoo.build must be a TabularSchema or "
                              f"None. Got {type(schema).__name__} instead.")
    if name != "mlp":
        raise AssayValueError(f"The architecture {name!r} takes images; tabular data (a "
                              "schema) needs 'mlp'. Fix: pass --arch mlp.")
    if shape != (len(schema.features),):
        raise AssayValueError(f"zoo.build: input_shape {shape} does not match the schema's "
                              f"{len(schema.features)} feature columns.")
    mlp = build(name, input_shape=(schema.encoded_width,), num_classes=num_classes, seed=seed)
    return nn.Sequential(TabularEncoder(schema), mlp)
