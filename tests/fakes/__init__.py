"""In-memory stand-ins for what unit tests must not start: a backend, a clock."""
