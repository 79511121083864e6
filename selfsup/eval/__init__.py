"""Evaluation: fine-tuning metrics (metrics.py) and, later, the task runners."""
