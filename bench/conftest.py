"""pytest-benchmark suite options.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench --benchmark-only \
        [--bench-quick] [--bench-dtypes float32,float64] [--bench-threads 1,2] \
        [--benchmark-group-by=param:config] [--benchmark-json=out.json]

Each configuration (cell x mode x shape x dtype x threads) is one benchmark group holding the
implementations side by side: fastcells, the NumPy reference, PyTorch (if installed) and the
GEMM floor; compare within a group. For a single table with ratios measured in paired
alternation, use ``python -m fastcells bench`` instead.
"""


def pytest_addoption(parser):
    g = parser.getgroup("fastcells benchmarks")
    g.addoption("--bench-quick", action="store_true",
                help="only the quick shapes (latency, small)")
    g.addoption("--bench-dtypes", default="float32,float64")
    g.addoption("--bench-threads", default="1,2")
    g.addoption("--bench-cells", default="lstm,gru,rnn")


def pytest_collection_modifyitems(config, items):
    from fastcells.bench import QUICK_SHAPES
    dtypes = set(config.getoption("--bench-dtypes").split(","))
    threads = set(config.getoption("--bench-threads").split(","))
    cells = set(config.getoption("--bench-cells").split(","))
    keep, drop = [], []
    for item in items:
        cs = getattr(item, "callspec", None)
        if cs is None:
            keep.append(item)
            continue
        cell, mode, shape, dtype, nt = cs.params["config"]
        ok = (dtype in dtypes and str(nt) in threads and cell in cells
              and (not config.getoption("--bench-quick") or shape in QUICK_SHAPES))
        (keep if ok else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
