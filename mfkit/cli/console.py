"""Where the CLI writes: results (paths, tables, YAML) to stdout, messages and progress to stderr."""
from __future__ import annotations

from rich.console import Console

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
state = {"verbose": False}


def show_warnings_plainly() -> None:
    """Show each UserWarning (files skipped, a setting cut to a limit) as one yellow ``warning: ...`` line on
    stderr, as the CLI's other messages; one raised outside mfkit and its plugins (a ``mfkit*`` package),
    by torch say, ends with its code location. Other warnings, and every warning with ``--verbose``, as
    Python shows them."""
    import warnings

    if getattr(warnings.showwarning, "mfkit_plain", False):
        return
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, UserWarning) and not state["verbose"]:
            where = "" if _from_mfkit(filename) else f" ({filename}:{lineno})"
            err.print(f"warning: {message}{where}", style="yellow", markup=False, highlight=False)
        else:
            default(message, category, filename, lineno, file, line)

    show.mfkit_plain = True
    warnings.showwarning = show


def _from_mfkit(filename: str) -> bool:
    """Whether ``filename`` lies inside an imported top-level package named ``mfkit*`` (mfkit, its plugins)."""
    import sys
    from pathlib import Path

    path = Path(filename).resolve()
    for name, module in list(sys.modules.items()):
        if name.startswith("mfkit") and "." not in name and getattr(module, "__file__", None):
            if path.is_relative_to(Path(module.__file__).resolve().parent):
                return True
    return False
