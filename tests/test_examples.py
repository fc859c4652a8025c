"""The examples' --quick modes run end to end (a few seconds each) and exit 0.

Each quick mode trains briefly and exits non-zero unless its training loss decreased.
Examples whose data package is missing are skipped (statsmodels, scikit-learn).
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def run_example(script, tmp_path, *extra, timeout=120):
    cmd = [sys.executable, os.path.join(EXAMPLES, script), "--quick", "--out", str(tmp_path),
           *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def check(res):
    assert res.returncode == 0, (f"exit code {res.returncode}\n--- stdout\n{res.stdout[-3000:]}"
                                 f"\n--- stderr\n{res.stderr[-3000:]}")
    assert "decreased" in res.stdout


def test_char_lm_quick(tmp_path):
    res = run_example("char_lm.py", tmp_path)
    check(res)
    assert "chars/s" in res.stdout and "fastcells.reference" in res.stdout


def test_forecast_quick(tmp_path):
    pytest.importorskip("statsmodels")
    res = run_example("forecast.py", tmp_path)
    check(res)
    assert "held-out RMSE" in res.stdout


def test_classify_digits_quick(tmp_path):
    pytest.importorskip("sklearn")
    res = run_example("classify_digits.py", tmp_path)
    check(res)
    assert "held-out accuracy" in res.stdout


@pytest.mark.parametrize("script, blocked", [("forecast.py", "statsmodels"),
                                             ("classify_digits.py", "sklearn")])
def test_missing_dependency_exits_2(script, blocked):
    """Without its data package an example exits with code 2 and says how to install it."""
    code = (f"import sys, runpy; sys.modules[{blocked!r}] = None; "
            f"sys.path.insert(0, {EXAMPLES!r}); sys.argv = [{script!r}, '--quick']; "
            f"runpy.run_path({os.path.join(EXAMPLES, script)!r}, run_name='__main__')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert res.returncode == 2, res.stderr
    assert "pip install" in res.stderr
