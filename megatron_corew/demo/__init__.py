"""Offline demo assets: the tiny arithmetic task, its warm-started model and bundle, and a tiny rephraser.

Nothing in the core imports this package; tests, benchmarks and tools/make_tiny_task.py do.
"""
