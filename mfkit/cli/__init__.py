"""The `mfkit` command line (Typer). Thin: parse, call the library, print."""
from mfkit.cli.app import app, main

__all__ = ["app", "main"]
