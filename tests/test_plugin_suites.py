"""Each shipped plugin's own test suite, run as its author runs it: from the plugin's folder, in a process
of its own (so its conftest and helpers are its own, as in a third party's package)."""
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

PLUGINS = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "tests").is_dir())


@pytest.mark.parametrize("plugin", PLUGINS)
def test_plugin_suite_passes(plugin, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MFKIT_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                            cwd=ROOT / "plugins" / plugin, capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, f"plugins/{plugin}/tests failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    print(result.stdout.strip().splitlines()[-1])  # shown with -s / -rA: the plugin's own count and time
