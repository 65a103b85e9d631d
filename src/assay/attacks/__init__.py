"""Algorithms that break a model: evasion (adversarial examples), later poisoning and privacy."""
