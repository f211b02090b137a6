"""Every template stays in bounds for the parameter sets the search can choose (see bounds_property.py)."""
import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = 12  # each new config compiles (a few seconds with bounds checks); the draw is derandomized


def test_kernels_stay_in_bounds_with_numba_boundscheck(tmp_path):
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "AUTOTUNE_CACHE_DIR": str(tmp_path)}  # no unchecked cache
    script = Path(__file__).with_name("bounds_property.py")
    result = subprocess.run([sys.executable, str(script), str(EXAMPLES)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
