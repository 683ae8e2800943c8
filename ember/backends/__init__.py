"""Backends: where replica processes run."""
