"""Metering: what replicas hold, for how long, at what price; usage and cost from the store."""
