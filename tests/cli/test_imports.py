"""`mfkit --help` and `mfkit recipes` answer without importing torch (about 1.5 s saved on every call)."""
import subprocess
import sys

import pytest

from tests.cli.util import env

PROBE = """
import sys
from mfkit.cli.app import app
try:
    app({args!r}, prog_name="mfkit")
except SystemExit as done:
    assert not done.code, done.code
print("TORCH" if "torch" in sys.modules else "NO-TORCH")
"""


@pytest.mark.parametrize("args", [["--help"], ["recipes"], ["train", "--help"], ["sample", "--help"]])
def test_light_commands_do_not_import_torch(args):
    done = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, env=env(),
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "NO-TORCH"


def test_lazy_top_level_names_resolve_and_agree():
    import mfkit

    assert set(mfkit.__all__) == set(mfkit._EXPORTS) | {"__version__"}
    for name in mfkit.__all__:
        assert getattr(mfkit, name) is not None, name
    assert mfkit.load_exported.__module__ == "mfkit.export"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        mfkit.nothing  # noqa: B018


@pytest.mark.parametrize("preset, expected", [(None, "8192"), ("64", "64")])
def test_import_raises_onednn_primitive_cache_unless_the_user_set_it(preset, expected):
    """A split batch gives a convolution net dozens of batch sizes; oneDNN's default 1024-entry cache of
    compiled kernels then thrashes (mfkit/__init__.py, docs/benchmarks.md)."""
    environment = {k: v for k, v in env().items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if preset is not None:
        environment["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = preset
    code = "import os, mfkit; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
