"""Algorithms that harden a model: training, certification, backdoor removal, fairness,
calibration."""
