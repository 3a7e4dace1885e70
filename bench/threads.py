"""Do two threads' big matrix products overlap? (issue 5, item 4)

fastad's kernels release the GIL, so two Python threads that each run big matrix
products (a forward GEMM and the two GEMMs of its backward, through `fa.grad`) can run
at the same time. With BLAS limited to one thread per call (so BLAS's own parallelism
does not hide the effect), this measures:

1. overlap: one thread doing K units of work vs two threads doing K units each at the
   same time; ratio = two / one is 1.0 when the threads overlap fully on two cores and
   2.0 when they run one after the other. NumPy's `@` (GIL-free too) is timed the same
   way: it shows what the hardware allows. Where two virtual CPUs share a physical
   core (or its vector units), two compute-bound GEMMs cannot both run at full speed
   and even GIL-free ones give ~2.0: this 2-vCPU machine showed ~1.0 for fastad (and
   for np.sort) in one hour and ~2.0 for fastad and NumPy alike in the next;
2. a GIL probe, which does not depend on that: a pure-Python counting loop runs in the
   main thread while another thread runs one unit at 1536x1536 (kernel calls much
   longer than the interpreter's 5 ms switch interval); the probe's speed relative to
   running alone stays high when the kernels release the GIL and drops towards the
   control's (`sorted` of a long list, which holds the GIL) when they do not. Measured
   here: ~55% with fastad's kernels, ~14% with the same kernels built to hold the GIL,
   ~5% for the control (contention slows the probe too, so 100% is not expected).

Run from the repo root: `python bench/threads.py [--quick] [--json FILE] [--repeats N]`.
"""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

import fastad as fa  # noqa: E402


def limit_blas_to_one_thread():
    """One BLAS thread per call (threadpoolctl, from the bench extra). False if unavailable."""
    return C.limit_threads(1)


def fastad_unit(n, dtype, seed):
    """A unit of work: y = A @ B and fa.grad(y, [A, B], seed=S): three GEMMs in kernels."""
    rng = np.random.default_rng(seed)
    a = fa.Parameter(rng.standard_normal((n, n), dtype=dtype))
    b = fa.Parameter(rng.standard_normal((n, n), dtype=dtype))
    s = rng.standard_normal((n, n), dtype=dtype)

    def unit():
        fa.grad(a @ b, [a, b], seed=s)
    return unit


def numpy_unit(n, dtype, seed):
    """The same three products with NumPy's `@` (also GIL-free): the reference."""
    rng = np.random.default_rng(seed)
    a, b, s = (rng.standard_normal((n, n), dtype=dtype) for _ in range(3))

    def unit():
        a @ b
        s @ b.T
        a.T @ s
    return unit


def gil_holding_unit(n, dtype, seed):
    """The control for the probe: `sorted` of a long list holds the GIL throughout."""
    values = np.random.default_rng(seed).standard_normal(n * n // 4).tolist()

    def unit():
        sorted(values)
    return unit


def one_thread(unit, k):
    def case():
        t0 = C.now()
        for _ in range(k):
            unit()
        return C.now() - t0
    return case


def two_threads(units, k):
    """Both units' loops in two threads, started together; wall time until both end."""
    def case():
        start = threading.Barrier(3)

        def loop(unit):
            start.wait()
            for _ in range(k):
                unit()
        threads = [threading.Thread(target=loop, args=(u,)) for u in units]
        for t in threads:
            t.start()
        start.wait()
        t0 = C.now()
        for t in threads:
            t.join()
        return C.now() - t0
    return case


def _count_until(event, t0):
    """A pure-Python loop counting until `event` is set: (count, seconds since t0)."""
    count = 0
    while not event.is_set():
        count += 1
    return count, C.now() - t0


def probe_speed(unit, k, solo_seconds=0.05):
    """Speed of a pure-Python counting loop while another thread runs `unit` k times,
    relative to the same loop running alone for `solo_seconds`."""
    alone = threading.Event()
    timer = threading.Timer(solo_seconds, alone.set)
    t0 = C.now()
    timer.start()
    count, seconds = _count_until(alone, t0)
    solo_rate = count / seconds
    done = threading.Event()

    def work():
        for _ in range(k):
            unit()
        done.set()
    worker = threading.Thread(target=work)
    t0 = C.now()   # (start() may hand the GIL to the worker before returning)
    worker.start()
    count, seconds = _count_until(done, t0)
    worker.join()
    return (count / seconds) / solo_rate


def main():
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="matrix size (default 1024; 512 quick)")
    args = p.parse_args()
    n = args.n or (512 if args.quick else 1024)
    k = 4 if args.quick else 5
    repeats = args.repeats or (5 if args.quick else 7)
    dtype = np.float32
    limited = limit_blas_to_one_thread()

    results = {}
    for name, make in [("fastad", fastad_unit), ("numpy", numpy_unit)]:
        units = [make(n, dtype, seed) for seed in (1, 2)]
        times = C.interleave([("one", one_thread(units[0], k)),
                              ("two", two_threads(units, k))], repeats, warmup=1)
        one, two = C.median(times["one"]), C.median(times["two"])
        results[name] = {"one_thread_s": one, "two_threads_s": two, "ratio": two / one,
                         "times": times}
    # the probe needs kernel calls much longer than the interpreter's switch interval
    # (5 ms), or a GIL holder would let the probe in between its calls about half the time
    probe_n = max(n, 1536)
    for name, make in [("fastad", fastad_unit), ("numpy", numpy_unit),
                       ("sorted (holds the GIL)", gil_holding_unit)]:
        unit = make(probe_n, dtype, 3)
        unit()
        speeds = [probe_speed(unit, 1) for _ in range(2 if args.quick else 3)]
        results.setdefault(name, {})["probe_speed"] = C.median(speeds)

    print(f"threads.py: {k} units of (A @ B, dA, dB) per thread, {n}x{n} float32, BLAS "
          f"{'limited to 1 thread' if limited else 'threads NOT limited (no threadpoolctl)'}"
          f", {os.cpu_count()} CPUs, median of {repeats}")
    print(f"  BLAS: {C.blas_line(C.blas_info())}")
    for name in ("fastad", "numpy"):
        r = results[name]
        print(f"  {name:7s} one thread {r['one_thread_s'] * 1e3:8.1f} ms   two threads "
              f"{r['two_threads_s'] * 1e3:8.1f} ms   ratio two/one = {r['ratio']:.2f}")
    print(f"  GIL probe (a Python loop's speed while another thread runs one unit at "
          f"{probe_n}x{probe_n}, vs alone):")
    for name, r in results.items():
        print(f"    during {name:24s} {r['probe_speed']:6.0%}")
    print(f"ratio (fastad, two threads / one thread; 1.0 = full overlap, 2.0 = serialized): "
          f"{results['fastad']['ratio']:.2f}   (NumPy on this machine: "
          f"{results['numpy']['ratio']:.2f}; GIL probe during fastad's kernels: "
          f"{results['fastad']['probe_speed']:.0%}, during a GIL holder: "
          f"{results['sorted (holds the GIL)']['probe_speed']:.0%})")
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump({"n": n, "k": k, "repeats": repeats, "blas_limited": limited,
                       "machine": C.machine_info(), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
