"""Privacy accounting of DP-SGD with Google's ``dp-accounting`` (never written by hand).

DP-SGD is ``steps`` compositions of the Poisson-subsampled Gaussian mechanism: each step
samples every record with probability ``sample_rate`` and adds Gaussian noise of standard
deviation ``noise_multiplier`` times the clipping norm. Two accountants turn that into an
(epsilon, delta) guarantee under add-or-remove-one neighbouring:

- ``"rdp"``: Renyi differential privacy. I. Mironov. "Renyi Differential Privacy". CSF
  2017; the subsampled Gaussian's RDP from I. Mironov, K. Talwar, L. Zhang. "Renyi
  Differential Privacy of the Sampled Gaussian Mechanism". arXiv 1908.10530, 2019.
  ``dp_accounting.rdp.RdpAccountant`` with its default orders (Opacus's
  ``RDPAccountant`` agrees to 9 digits).
- ``"pld"``: privacy loss distributions. A. Koskela, J. Jalko, A. Honkela. "Computing
  Tight Differential Privacy Guarantees Using FFT". AISTATS 2020; V. Doroshenko, B.
  Ghazi, P. Kamath, R. Kumar, P. Manurangsi. "Connect the Dots: Tighter Discrete
  Approximations of Privacy Loss Distributions". PETS 2022.
  ``dp_accounting.pld.PLDAccountant`` (discretisation 1e-4); tighter than RDP (2.38
  against 2.60 at sigma 1.1, q 256/60000, 60 MNIST epochs, delta 1e-5).

``dp-accounting`` is the optional extra ``assay[privacy]``; without it every function
here raises an ``AssayValueError`` naming it.

    >>> round(dp_sgd_epsilon(1.1, 256 / 60000, 14062, 1e-5), 2)  # doctest: +SKIP
    2.6
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

from ..._params import check_choice, check_float, check_int
from ...errors import AssayValueError

Accountant = Literal["rdp", "pld"]
ACCOUNTANTS: tuple[Accountant, ...] = ("rdp", "pld")
_OWNER = "DP-SGD accounting"
_MAX_NOISE = 2.0 ** 20  # a noise multiplier past this is no training signal at all


def _dp_accounting() -> Any:
    try:
        import dp_accounting
    except ImportError as err:
        raise AssayValueError(
            "DP-SGD accounting needs Google's dp-accounting package, which is not installed: "
            "pip install 'assay[privacy]'.") from err
    return dp_accounting


def _new_accountant(accountant: Accountant) -> Any:
    dpa = _dp_accounting()
    if accountant == "rdp":
        return dpa.rdp.RdpAccountant()
    return dpa.pld.PLDAccountant()


def check_delta(delta: float, owner: str = _OWNER) -> float:
    return check_float("delta", delta, owner, low=0.0, high=1.0, low_open=True, high_open=True)


def check_epsilon(epsilon: float, owner: str = _OWNER) -> float:
    return check_float("epsilon", epsilon, owner, low=0.0, low_open=True)


def _check_schedule(sample_rate: float, steps: int, accountant: str) -> None:
    check_float("sample_rate", sample_rate, _OWNER, low=0.0, high=1.0, low_open=True)
    check_int("steps", steps, _OWNER, low=1)
    check_choice("accountant", accountant, ACCOUNTANTS, _OWNER)


def dp_sgd_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                   accountant: Accountant = "rdp") -> float:
    """The epsilon of ``steps`` DP-SGD steps at ``delta``.

    noise_multiplier : float >= 0 - the noise's standard deviation over the clipping norm
        (0: no noise, epsilon is infinite)
    sample_rate : float in (0, 1] - each record's probability of being in a batch
    steps : int >= 1
    delta : float in (0, 1)
    accountant : {"rdp", "pld"}, default "rdp"
    """
    check_float("noise_multiplier", noise_multiplier, _OWNER, low=0.0)
    _check_schedule(sample_rate, steps, accountant)
    check_delta(delta)
    if noise_multiplier == 0:
        return math.inf
    dpa = _dp_accounting()
    event = dpa.SelfComposedDpEvent(
        dpa.PoissonSampledDpEvent(sample_rate, dpa.GaussianDpEvent(noise_multiplier)), steps)
    ledger = _new_accountant(accountant)
    # dp-accounting logs (through absl) each RDP order whose series does not converge and
    # leaves it out; the bound from the other orders stays valid, so the lines are noise
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        ledger.compose(event)
        return float(ledger.get_epsilon(delta))
    finally:
        absl.setLevel(level)


def calibrate_noise(epsilon: float, delta: float, sample_rate: float, steps: int,
                    accountant: Accountant = "rdp", *, tolerance: float = 1e-3) -> float:
    """The smallest noise multiplier (within a relative ``tolerance``, default 1e-3) whose
    :func:`dp_sgd_epsilon` is at most ``epsilon``: bisection over dp-accounting's epsilon,
    which falls as the noise grows. The value returned always meets the target (the upper
    end of the last bracket), never one just below it."""
    check_epsilon(epsilon)
    check_delta(delta)
    _check_schedule(sample_rate, steps, accountant)
    check_float("tolerance", tolerance, _OWNER, low=0.0, high=1.0, low_open=True,
                high_open=True)

    def meets(sigma: float) -> bool:
        return dp_sgd_epsilon(sigma, sample_rate, steps, delta, accountant) <= epsilon

    # the bracket starts at RDP's answer for PLD (which is tighter, so needs a little less
    # noise): PLD's epsilon is slow to compute, the slower the smaller the noise
    high = (calibrate_noise(epsilon, delta, sample_rate, steps, "rdp", tolerance=tolerance)
            if accountant == "pld" else 1.0)
    low = 0.0  # sigma 0 never meets a finite epsilon
    if meets(high):
        low = high * 0.8
        while meets(low):
            high, low = low, low * 0.8
    else:
        while not meets(high):
            low, high = high, high * 2
            if high > _MAX_NOISE:
                raise AssayValueError(
                    f"epsilon {epsilon:g} at delta {delta:g} needs a noise multiplier above "
                    f"{_MAX_NOISE:g} for {steps} steps at sampling rate {sample_rate:g}: "
                    "raise epsilon or delta, or train fewer steps.")
    while high - low > tolerance * high:
        middle = (low + high) / 2
        if meets(middle):
            high = middle
        else:
            low = middle
    return high
