"""Differentially private training: DP-SGD (Abadi et al. CCS 2016) with per-sample
gradients from ``torch.func``, Poisson sampling, and accounting by Google's
``dp-accounting`` (RDP, Mironov 2017; PLD, Koskela et al. 2020 and Doroshenko et al.
2022), through the one training loop :func:`assay.core.training.fit`.

    >>> result = train_dp_sgd(model, data, epsilon=3.0, delta=1e-5)   # doctest: +SKIP
    >>> result.guarantee.to_dict()                                    # doctest: +SKIP
"""

from .accounting import ACCOUNTANTS, Accountant, calibrate_noise, dp_sgd_epsilon
from .clipping import clipping_factors, per_sample_norms
from .sgd import DPSGDStep, PoissonSampler, per_sample_gradients
from .training import DPTrainingResult, PrivacyGuarantee, plan_guarantee, train_dp_sgd
from .validators import private_training_problems, validate_private_model

__all__ = ["ACCOUNTANTS", "Accountant", "DPSGDStep", "DPTrainingResult", "PoissonSampler",
           "PrivacyGuarantee", "calibrate_noise", "clipping_factors", "dp_sgd_epsilon",
           "per_sample_gradients", "per_sample_norms", "plan_guarantee",
           "private_training_problems", "train_dp_sgd", "validate_private_model"]
