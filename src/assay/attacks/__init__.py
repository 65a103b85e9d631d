"""Algorithms that break a model: evasion (adversarial examples), poisoning (of its
training set) and privacy."""
