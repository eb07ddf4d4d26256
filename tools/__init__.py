"""Command-line tools over the library and checkpoints_conversion (console entry points in setup.py)."""
