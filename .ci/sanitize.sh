#!/usr/bin/env bash
# Sanitizer step: build fastcells with AddressSanitizer + UndefinedBehaviorSanitizer and run the
# kernel tests under them. Fails on any sanitizer report (and on any test failure).
#
#   bash .ci/sanitize.sh            # from anywhere; uses $PYTHON (default python3)
#
# * Its own throw-away venv in /tmp (no system site-packages, so no torch: PyTorch must never
#   be imported under ASan; a stub that raises ImportError also shadows it, so tests that want
#   torch skip). The repository is copied to /tmp first: the build writes nothing into it.
# * FASTCELLS_SANITIZE=1 makes setup.py compile with -fsanitize=address,undefined
#   -fno-sanitize-recover=undefined; installed non-editable with --no-build-isolation.
# * The interpreter is not instrumented, so libasan is LD_PRELOADed. detect_leaks=0 because
#   CPython deliberately leaves memory at exit; halt_on_error=1 + -fno-sanitize-recover make
#   every report fatal. allocator_may_return_null=1 with max_allocation_size_mb: an allocation
#   the library should never attempt (tests with sizes beyond BLAS integers) fails as a NULL
#   -> MemoryError instead of ASan aborting or actually mapping gigabytes.
# * Before the tests: the built extension must carry ASan/UBSan instrumentation (nm/ldd), and
#   a deliberate heap overflow under the preloaded runtime must be reported (canary).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/fastcells-sanitize.XXXXXX)
if [ -z "${FASTCELLS_SANITIZE_KEEP:-}" ]; then trap 'rm -rf "$WORK"' EXIT; else echo "work dir: $WORK"; fi

CC=${CC:-gcc}
LIBASAN=$($CC -print-file-name=libasan.so)
if [ ! -e "$LIBASAN" ]; then
    echo "sanitize: $CC has no libasan.so ($LIBASAN); install the compiler's ASan runtime" >&2
    exit 1
fi

echo "== sanitize: venv + build dependencies"
$PY -m venv "$WORK/venv"
# shellcheck disable=SC1091
source "$WORK/venv/bin/activate"
pip_quiet() {  # pip, minus the notes about configured index locations that do not exist
    python -m pip "$@" 2> >(grep -v 'is neither a file nor a directory' >&2)
}
pip_quiet install --quiet --upgrade pip
pip_quiet install --quiet "setuptools>=68" "Cython>=3.0" numpy scipy "threadpoolctl>=3.1" \
    "pytest>=7" wheel

echo "== sanitize: copy of the repository"
mkdir -p "$WORK/src"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # tracked + untracked-but-not-ignored files: exactly what a fresh clone (plus local edits) has
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
        tar cf - --null -T - --ignore-failed-read 2>/dev/null) | (cd "$WORK/src" && tar xf -)
else
    (cd "$ROOT" && tar cf - --exclude=build --exclude='*.so' --exclude='*.egg-info' \
        --exclude=__pycache__ --exclude=.git .) | (cd "$WORK/src" && tar xf -)
fi

echo "== sanitize: build with FASTCELLS_SANITIZE=1 (ASan + UBSan)"
(cd "$WORK/src" && FASTCELLS_SANITIZE=1 pip_quiet install --quiet --no-build-isolation \
    --no-deps . )

SO=$(python - <<'EOF'
import importlib.util, os
spec = importlib.util.find_spec("fastcells")
d = os.path.dirname(spec.origin)
print(next(os.path.join(d, f) for f in os.listdir(d) if f.startswith("_kernels") and f.endswith(".so")))
EOF
)
case "$SO" in "$WORK"/venv/*) ;; *) echo "sanitize: fastcells resolves outside the venv: $SO" >&2; exit 1 ;; esac
echo "   extension: $SO"
n_asan=$(nm -D "$SO" | grep -c '__asan_report' || true)
n_ubsan=$(nm -D "$SO" | grep -c '__ubsan_handle' || true)
echo "   undefined __asan_report* symbols: $n_asan, __ubsan_handle* symbols: $n_ubsan"
ldd "$SO" | grep -E 'libasan|libubsan' | sed 's/^/   /'
if [ "$n_asan" -eq 0 ] || [ "$n_ubsan" -eq 0 ]; then
    echo "sanitize: the extension is not instrumented (FASTCELLS_SANITIZE ignored?)" >&2
    exit 1
fi

export LD_PRELOAD="$LIBASAN"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1:max_allocation_size_mb=3072:detect_odr_violation=0"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"
export PYTHONFAULTHANDLER=1
mkdir -p "$WORK/hide/torch"
echo 'raise ImportError("torch is hidden under AddressSanitizer (see .ci/sanitize.sh)")' \
    > "$WORK/hide/torch/__init__.py"
export PYTHONPATH="$WORK/hide"

echo "== sanitize: canary (a deliberate heap overflow must be reported)"
if python -c '
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
p = libc.malloc(16)
ctypes.memset(p, 0, 17)        # one byte past the end
' >"$WORK/canary.log" 2>&1; then
    echo "sanitize: ASan did not report a heap overflow: runtime not active" >&2
    cat "$WORK/canary.log" >&2
    exit 1
fi
grep -q "heap-buffer-overflow" "$WORK/canary.log" || { cat "$WORK/canary.log" >&2; exit 1; }
echo "   reported as expected"
python -c 'import fastcells, numpy as np; fastcells.lstm_forward(np.zeros((2,2,3)), None, None, np.zeros((8,3)), np.zeros((8,2)))'
python -c 'import torch' 2>/dev/null && { echo "sanitize: torch importable under ASan" >&2; exit 1; }

echo "== sanitize: kernel tests under ASan + UBSan"
cd "$WORK/src"
# --capture=sys: pytest captures Python-level output only, so a sanitizer report (written by C
# to file descriptor 2) reaches the log even when it aborts the process. Child processes of the
# isolation helper (tests/isolated.py) inherit LD_PRELOAD/ASAN_OPTIONS: they run sanitized too,
# and a report there fails its test with the report in the message.
set +e
python -m pytest tests/test_kernels.py tests/test_validation.py tests/test_robustness.py tests/test_capi.py \
    tests/test_gemm_packed.py tests/test_memory.py tests/test_slices.py \
    -v -p no:cacheprovider --capture=sys >"$WORK/tests.log" 2>&1
status=$?
set -e
# The verbose log is long: show failures and the summary (or, if pytest itself died, its tail).
grep -E "^(FAILED|ERROR) |^=+ .*(passed|failed|error).* =+$" "$WORK/tests.log" || tail -n 30 "$WORK/tests.log"
if grep -qE "ERROR: AddressSanitizer|runtime error:|UndefinedBehaviorSanitizer" "$WORK/tests.log"; then
    echo "sanitize: sanitizer report(s):" >&2
    grep -B2 -A25 -E "ERROR: AddressSanitizer|runtime error:|UndefinedBehaviorSanitizer" \
        "$WORK/tests.log" | grep -vE '(Python|Objects|Include|Modules)/' | head -n 120 >&2 || true
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "sanitize: tests failed under the sanitizers (exit $status)" >&2
    exit "$status"
fi
echo "== sanitize: passed, no sanitizer reports"
