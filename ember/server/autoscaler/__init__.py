"""Replica counts: a pure policy and the loop that applies it."""
