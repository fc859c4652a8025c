"""The benchmark report's own switches: the allocator setting it applies and prints.

(The report's numbers are not asserted anywhere: speed is shown by running it, and CI runs
``--quick --fail-if-slower``.)"""
import json
import platform
import subprocess
import sys

import pytest

glibc = platform.libc_ver()[0] == "glibc"


def _report(tmp_path, *extra):
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "fastcells", "bench", "--cells", "rnn", "--shapes", "latency",
           "--modes", "infer", "--budget", "0.02", "--no-progress", "--json", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.skipif(not glibc, reason="mallopt is glibc's")
def test_keep_freed_memory_is_applied_and_reported(tmp_path):
    stdout, report = _report(tmp_path)
    assert report["header"]["malloc"].startswith("glibc mallopt: trim threshold")
    assert "glibc mallopt" in stdout
    assert report["rows"] and report["rows"][0]["fastcells_ms"] > 0


def test_malloc_default_leaves_the_allocator_alone(tmp_path):
    stdout, report = _report(tmp_path, "--malloc", "default")
    assert report["header"]["malloc"] == "default"


def test_keep_freed_memory_in_process():
    # in a child, so that this test process keeps glibc's own settings
    code = ("from fastcells import bench; r = bench.keep_freed_memory(); "
            "print('NONE' if r is None else r)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    if glibc:
        assert out == "glibc mallopt: trim threshold 1024 MiB, mmap threshold 32 MiB"
    else:
        assert out == "NONE"


def test_peak_measured_at_both_ends(tmp_path):
    stdout, report = _report(tmp_path, "--malloc", "default")
    start, end = report["header"]["peak_gflops"], report["header"]["peak_gflops_end"]
    assert set(start) == set(end) and all(v > 0 for v in end.values())
    assert "peak_gflops_end" in stdout


def test_peak_drift_warning():
    from fastcells.bench import peak_drift_warning
    assert peak_drift_warning({"float32/2thr": 300.0}, {"float32/2thr": 290.0}) is None
    w = peak_drift_warning({"float32/2thr": 312.0}, {"float32/2thr": 200.0})
    assert w is not None and "312.0 -> 200.0" in w
    assert peak_drift_warning({"float32/2thr": 200.0}, {"float32/2thr": 240.0}) is not None
