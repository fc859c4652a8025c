"""Run test cases in child processes, so that a crash fails one test instead of the whole run.

A *case* is ``(case_id, "module:function", args)``: the child imports ``module`` (from this
directory), calls ``function(*args)`` and reports what it returned (it must return something
JSON-serialisable) or what it raised. Cases run one after another in one child; if the child
dies (segfault, abort, a sanitizer report, ``os._exit``) or hangs, the case it was running is
recorded as ``crashed``/``hang`` with the exit status and the tail of stderr (faulthandler is
on, so a segfault shows the Python stack), and a fresh child continues with the next case.
A crash therefore costs one child start (~0.3 s), not the pytest run.

Memory: a case that would need an impossible amount of memory must fail with MemoryError or
ValueError, never by actually touching gigabytes on a shared machine. The child caps its own
address space (``RLIMIT_AS``) at what it uses after start-up plus ``mem_headroom`` bytes, so an
allocation the library should never attempt fails fast instead of swapping the machine. Under
AddressSanitizer (which reserves terabytes of shadow address space) the cap is left to ASan's
``max_allocation_size_mb`` option instead (see .ci/sanitize.sh).
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
_MARK = "@@fastcells-isolated@@ "

# Executed by the child: ``python -c _CHILD <tests dir> <cases.json> <headroom bytes>``.
_CHILD = r"""
import faulthandler, importlib, json, os, sys, traceback
faulthandler.enable()
sys.path.insert(0, sys.argv[1])
import isolated
isolated._child_main(sys.argv[2], int(sys.argv[3]))
"""


def under_asan():
    """True when this process runs with AddressSanitizer preloaded (the sanitizer CI step)."""
    return "asan" in os.environ.get("LD_PRELOAD", "") or "ASAN_OPTIONS" in os.environ


def vm_size():
    """Virtual memory size of this process in bytes (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def max_rss():
    """Peak resident set size of this process in bytes."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _emit(obj):
    sys.stdout.write(_MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _child_main(cases_path, headroom):
    import importlib
    import traceback

    with open(cases_path) as f:
        cases = json.load(f)
    # Warm up: load NumPy, the kernels and OpenMP's thread pool before capping memory, so the
    # cap only constrains what the cases themselves allocate.
    import numpy as np
    import fastcells
    fastcells.rnn_forward(np.zeros((1, 2, 1)), None, np.zeros((1, 1)), np.zeros((1, 1)),
                          n_threads=2)
    modules = {}
    for _, target, _ in cases:
        mod = target.split(":")[0]
        if mod not in modules:
            modules[mod] = importlib.import_module(mod)
    if headroom > 0 and not under_asan() and sys.platform.startswith("linux"):
        import resource
        limit = vm_size() + headroom
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for case_id, target, args in cases:
        _emit({"start": case_id})
        mod, fn = target.split(":")
        try:
            value = getattr(modules[mod], fn)(*args)
            _emit({"id": case_id, "status": "ok", "value": value})
        except BaseException as e:  # noqa: BLE001 - everything is reported to the parent
            _emit({"id": case_id, "status": "raised", "exc_type": type(e).__name__,
                   "message": str(e)[:2000], "traceback": traceback.format_exc()[-4000:]})


def run_cases(cases, *, timeout=300, mem_headroom=2 << 30, env=None):
    """Run ``cases`` in child processes; return {case_id: outcome dict}.

    Outcome ``status`` is ``ok`` (with ``value``), ``raised`` (with ``exc_type``, ``message``,
    ``traceback``), ``crashed`` (with ``returncode`` and ``stderr``) or ``hang``.
    ``timeout`` is per child process (the cases still to run when it expires are retried in a
    new child, the one that was running is marked ``hang``).
    """
    cases = [list(c) for c in cases]
    outcomes = {}
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONFAULTHANDLER"] = "1"
    while cases:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(cases, f)
            path = f.name
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, HERE, path, str(mem_headroom)],
                capture_output=True, text=True, timeout=timeout, env=child_env)
            stdout, stderr, rc, hung = proc.stdout, proc.stderr, proc.returncode, False
        except subprocess.TimeoutExpired as e:
            stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
            rc, hung = None, True
        finally:
            os.unlink(path)
        started = None
        for line in stdout.splitlines():
            if not line.startswith(_MARK):
                continue
            msg = json.loads(line[len(_MARK):])
            if "start" in msg:
                started = msg["start"]
            else:
                outcomes[msg["id"]] = msg
                started = None
        done = set(outcomes)
        if started is None:
            remaining = [c for c in cases if c[0] not in done]
            if remaining:  # died before starting a case (import error, warm-up crash)
                for c in remaining:
                    outcomes[c[0]] = {"id": c[0], "status": "crashed" if not hung else "hang",
                                      "returncode": rc, "stderr": stderr[-6000:],
                                      "note": "child died outside any case"}
            break
        outcomes[started] = {"id": started, "status": "hang" if hung else "crashed",
                             "returncode": rc, "stderr": stderr[-6000:]}
        cases = [c for c in cases if c[0] not in outcomes]
    return outcomes


def describe(outcome):
    """One readable paragraph about an outcome, for assertion messages."""
    s = outcome["status"]
    if s == "ok":
        return f"returned {outcome['value']!r}"
    if s == "raised":
        return f"raised {outcome['exc_type']}: {outcome['message']}\n{outcome['traceback']}"
    return (f"{s.upper()} (exit status {outcome.get('returncode')}); stderr tail:\n"
            f"{outcome.get('stderr', '')}")
