"""Knowledge distillation: train a student on the teacher's softened outputs.

Reference: G. Hinton, O. Vinyals, J. Dean. "Distilling the Knowledge in a Neural
Network". NIPS Deep Learning Workshop 2015 (arXiv:1503.02531).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._params import check_float
from ...core import zoo
from ...core.data import Dataset
from ...core.inference import eval_mode, model_device
from ...core.training import LossFn, TrainConfig, fit
from ...errors import AssayValueError
from ._common import rewrap


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, y: Tensor, *,
                      temperature: float, alpha: float) -> Tensor:
    """``alpha * T^2 * KL(p_t || p_s) + (1 - alpha) * CE(student_logits, y)`` with
    ``p = softmax(logits / T)``.

    The KL term is taken from the teacher's to the student's softened distribution, the
    form of Hinton et al. (their soft-target cross-entropy minus the teacher's entropy,
    which has no gradient); the ``T^2`` factor keeps its gradients on the scale of the
    hard-label term when T changes, as the paper prescribes. Mean over the batch.
    """
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    soft = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, y)
    return alpha * temperature ** 2 * soft + (1.0 - alpha) * hard


def distill(teacher: nn.Module, student: nn.Module | str, data: Dataset, *,
            temperature: float = 4.0, alpha: float = 0.9, config: TrainConfig = TrainConfig(),
            show_progress: bool = False) -> nn.Module:
    """A copy of ``student`` trained to match ``teacher`` on ``data``, through
    :func:`assay.core.training.fit` with :func:`distillation_loss`.

    Parameters
    ----------
    teacher : nn.Module or ModelWrapper - queried without gradients in eval mode (its mode
        is restored); takes ``data.x`` as it is.
    student : nn.Module, ModelWrapper, or str - a module is deep-copied (the input stays
        untrained); a name from :mod:`assay.core.zoo` ("mlp", "small_cnn", "lenet",
        "resnet") is built for ``data``'s input shape and class count with
        ``config.seed``, on the teacher's device, and wrapped like the teacher when the
        teacher is a ModelWrapper (same normalisation). A module student must take the
        same inputs as the teacher (wrap it with the same normalisation).
    data : Dataset - the transfer set (labels needed for the hard-label term).
    temperature : float > 0, default 4.0 - Hinton et al. found 2.5-4 best for small
        students on MNIST (higher for large ones).
    alpha : float in [0, 1], default 0.9 - weight of the soft-target term; the paper
        reports the best results with a much lower weight on the hard labels, and 0.9 is
        the common choice.
    config : TrainConfig, default TrainConfig() - epochs, batch size, optimiser, seed.

    Returns the trained student (eval mode).
    """
    owner = "distill"
    temperature = check_float("temperature", temperature, owner, low=0.0, low_open=True)
    alpha = check_float("alpha", alpha, owner, low=0.0, high=1.0)
    if not isinstance(data, Dataset):
        raise AssayValueError(f"The 'data' parameter of {owner} must be an assay Dataset. "
                              f"Got {type(data).__name__} instead.")
    teacher_device = model_device(teacher)
    if isinstance(student, str):
        net = zoo.build(student, input_shape=data.input_shape, num_classes=data.num_classes,
                        seed=config.seed, schema=data.schema).to(teacher_device)
        trained = rewrap(teacher, net, suffix=f" (distilled into {student})")
    elif isinstance(student, nn.Module):
        trained = copy.deepcopy(student)
    else:
        raise AssayValueError(f"The 'student' parameter of {owner} must be an nn.Module or a "
                              f"zoo name {sorted(zoo.ARCHITECTURES)}. "
                              f"Got {type(student).__name__} instead.")

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            teacher_logits = teacher(x.to(teacher_device)).to(x.device)
        return distillation_loss(model(x), teacher_logits, y, temperature=temperature,
                                 alpha=alpha)

    loss: LossFn = loss_fn
    with eval_mode(teacher):
        fit(trained, data, config, loss_fn=loss, show_progress=show_progress)
    return trained.eval()

