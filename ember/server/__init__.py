"""The control plane: API, gateway, autoscaler, scheduler, store and meter."""
