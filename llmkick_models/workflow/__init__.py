"""Experiments on top of lm-eval: the ``llmkick`` command, sweeps over compression points, their report."""
