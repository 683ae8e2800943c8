"""Scheduling inputs onto replicas: admission, the slot queue of each pool, picking a replica."""
