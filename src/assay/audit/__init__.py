"""Audit plans, the runner, results and their cache, executors."""
