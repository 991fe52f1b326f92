"""Evaluation: the α-UMi static (step-level) metrics and end-to-end task success over a task suite."""
