"""What the benches print and write: units, ratios and verdicts, tables, JSON, the header
that names the machine, and --profile's breakdown of time inside fastad's kernels."""

import json

import numpy as np

from _machine import apply_thread_limit, blas_info, blas_line, machine_info
from _timing import now


def fmt_time(seconds):
    if seconds is None or seconds != seconds:
        return "-"
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def time_unit(seconds):
    """(unit, scale) that suits every value in `seconds`, so a table column holds one
    unit, named in its header: time_unit([0.3, 0.0004]) -> ("ms", 1e3)."""
    finite = [x for x in seconds if x is not None and x == x]
    top = max(finite, default=0.0)
    if top >= 1:
        return "s", 1.0
    if top >= 1e-3:
        return "ms", 1e3
    return "us", 1e6


def fmt_in(seconds, unit):
    """`seconds` as a bare number in `unit` (one of time_unit's)."""
    if seconds is None or seconds != seconds:
        return "-"
    value = seconds * {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def fmt_ratio(r):
    return "-" if r is None or r != r else f"{r:.3f}x"


def target_check(ratio, limit):
    """'met' / 'MISSED' / 'n/a' for ratio <= limit."""
    if ratio is None or ratio != ratio:
        return "n/a"
    return "met" if ratio <= limit else "MISSED"


def print_table(rows, headers):
    """Print rows (lists of str) under headers, columns aligned."""
    cols = list(zip(*([headers] + rows))) if rows else [[h] for h in headers]
    widths = [max(len(str(c)) for c in col) for col in cols]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def write_json(path, data):
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=2, default=_json_default)
        print(f"wrote {path}")


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def header(title, args, extra=""):
    info = machine_info()   # imports scipy/fastad first, so threadpoolctl sees their BLAS
    apply_thread_limit(args)
    libs = blas_info()
    print(f"== {title}{' (--quick)' if args.quick else ''}")
    print(f"machine: {info['cpu']} ({info.get('isa', '?')}), {info['cpus']} cpus; python "
          f"{info['python']}, numpy "
          f"{info['numpy']}, scipy {info.get('scipy', '?')}, fastad {info.get('fastad', '?')} "
          f"(tape {info.get('fastad_tape', '?')})")
    print(f"BLAS: {blas_line(libs)}")
    if "loadavg" in info:
        load = info["loadavg"]
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in load)}")
        if load[0] > 0.5:
            print("WARNING: the machine is busy; multi-threaded BLAS stalls when a core is "
                  "taken (tens of ms per call): absolute times and ratios are unreliable")
    if extra:
        print(extra)
    return {"machine": info, "blas": libs}


def kernel_breakdown(step, n, label_gemm=True):
    """Time every call fastad makes into its compiled kernels during `n` calls of step.

    Wraps each function of fastad's kernel modules (fastad.kernels.gemm, pointwise,
    rows), which the ops call by module attribute, in a timer for the instrumented
    steps. Returns (seconds per step uninstrumented, [(seconds per step, calls per step,
    kernel label)], seconds per step instrumented).
    """
    import collections

    from fastad.kernels import gemm, pointwise, rows
    checks = {"fits_blas", "blas_ready"}  # gemm's operand checks, not kernels
    originals = {(module, name): f for module in (gemm, pointwise, rows)
                 for name, f in vars(module).items()
                 if callable(f) and not isinstance(f, type) and not name.startswith("_")
                 and name not in checks}
    totals = collections.defaultdict(float)
    counts = collections.Counter()

    def label(name, a):
        if name == "gemm" and label_gemm and len(a) >= 3:
            def lay(m):
                return "C" if m.flags.c_contiguous else "F"
            acc = f" accumulate={bool(a[3])}" if len(a) > 3 else ""
            out = " -> F" if len(a) > 4 and a[4] else ""  # written column-major
            return (f"gemm {a[0].shape[0]}x{a[0].shape[1]}({lay(a[0])}) @ "
                    f"{a[1].shape[0]}x{a[1].shape[1]}({lay(a[1])}){out}{acc}")
        return name

    def timed_kernel(name, f):
        def wrapper(*a, **k):
            t0 = now()
            r = f(*a, **k)
            key = label(name, a)
            totals[key] += now() - t0
            counts[key] += 1
            return r
        return wrapper

    step()
    t0 = now()
    for _ in range(n):
        step()
    plain = (now() - t0) / n
    for (module, name), f in originals.items():
        setattr(module, name, timed_kernel(name, f))
    try:
        step()
        totals.clear()
        counts.clear()
        t0 = now()
        for _ in range(n):
            step()
        instrumented = (now() - t0) / n
    finally:
        for (module, name), f in originals.items():
            setattr(module, name, f)
    rows = sorted(((t / n, counts[k] / n, k) for k, t in totals.items()), reverse=True)
    return plain, rows, instrumented


def profile_report(step, n, kernel_n=None, top=15):
    """Print fastad's kernel breakdown and a cProfile of `n` steps (for --profile)."""
    import cProfile
    import io
    import pstats
    print("\n--profile: time inside fastad's compiled kernels (fastad.kernels calls)")
    plain, rows, instrumented = kernel_breakdown(step, kernel_n or n)
    total = sum(t for t, _, _ in rows)
    table_rows = [[fmt_time(t), f"{c:g}", k] for t, c, k in rows]
    print_table(table_rows, ["per step", "calls", "kernel"])
    print(f"step {fmt_time(plain)} uninstrumented; kernels {fmt_time(total)} "
          f"({total / plain:.0%}); outside kernels ~{fmt_time(plain - total)} "
          f"(instrumented step {fmt_time(instrumented)})")
    from fastad.ops.linalg import product_orders
    for (dtype, m, k, n_cols), (choice, seconds) in product_orders().items():
        trials = ", ".join(f"{o} {min(s) * 1e3:.1f} ms" for o, s in seconds.items() if s)
        print(f"product {m}x{k} @ {k}x{n_cols} {dtype}: written {choice or 'still timing'} "
              f"(fastest trial: {trials}; FASTAD_GEMM_ORIENTATION=C|F forces it)")
    print(f"\n--profile: cProfile of {n} steps, top {top} by own time")
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(n):
        step()
    pr.disable()
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    print(text[text.find("ncalls") - 3 if "ncalls" in text else 0:].rstrip())
