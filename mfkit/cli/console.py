"""Where the CLI writes: results (paths, tables, YAML) to stdout, messages and progress to stderr."""
from __future__ import annotations

from rich.console import Console

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
state = {"verbose": False}
