"""The package version, importable without the SDK."""

__version__ = "0.1.0"
