"""Replicas: their lifecycle, where they run (GPUs, cores), the supervision of their processes."""
