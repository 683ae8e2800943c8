"""The `ember` command line (typer + rich)."""
