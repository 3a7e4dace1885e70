"""Timing on a small, noisy machine: cases run in interleaved rounds or alternating
blocks, so drift hits all alike, and targets are judged on paired ratios (the median
over rounds of the ratio between adjacent blocks); memory counters from /proc."""

import gc
import statistics
import time


now = time.perf_counter


def timed(fn, number=1):
    """Wrap a plain callable as a case for `interleave`: the case runs fn `number` times
    and returns the mean seconds per call."""
    if number == 1:
        def case():
            t0 = now()
            fn()
            return now() - t0
    else:
        def case():
            t0 = now()
            for _ in range(number):
                fn()
            return (now() - t0) / number
    case.__name__ = getattr(fn, "__name__", "case")
    return case


def interleave(cases, repeats, warmup=1, between=None):
    """Median-of-repeats timing of several cases, interleaved.

    `cases` is a list of (name, case) where case() runs one unit of work and returns
    the seconds it took (wrap plain callables with `timed`; a case that must do
    untimed setup first, e.g. a forward pass, times itself). Each case is warmed up
    `warmup` times, then `repeats` rounds run every case once, the starting case
    rotating each round. `between()` (untimed) runs after every case, e.g. to drop
    references. Returns {name: [seconds, ...]}.
    """
    names = [n for n, _ in cases]
    times = {n: [] for n in names}
    for _ in range(warmup):
        for _, case in cases:
            case()
            if between:
                between()
    for r in range(repeats):
        k = r % len(cases)
        for name, case in cases[k:] + cases[:k]:
            times[name].append(case())
            if between:
                between()
    return times


def in_process(cases):
    """A block runner for `alternate_blocks`: the cases, interleaved within the block."""
    def run(n):
        return interleave(cases, n, warmup=0)
    run.warm = lambda: interleave(cases, 0, warmup=1)
    return run


def in_child(child, name="pytorch", warmup=2, number=1):
    """A block runner for `alternate_blocks`: n samples of `number` steps (mean per step)
    timed by a TorchChild."""
    def run(n):
        ts = child.time(n * number)
        return {name: [sum(ts[i:i + number]) / number for i in range(0, len(ts), number)]}
    run.warm = lambda: child.time(0, warmup=warmup)
    return run


def alternate_blocks(runners, rounds, per_block, settle_seconds=0.2):
    """Time several groups of cases in alternating blocks; returns {name: [seconds]}.

    Each runner (see `in_process`, `in_child`) times `per_block` repeats of its cases.
    Groups that must not run back to back at a fine grain go in separate runners:
    PyTorch (its own process) and anything calling NumPy's BLAS, because a BLAS
    library's worker threads keep spinning for ~0.1 s after each call, and two pools
    spinning on 2 cores slow each other by 10-100x on small products. `settle` lets
    them go idle between blocks; the order of the runners rotates every round.
    """
    times = {}
    for run in runners:
        run.warm()
        settle(settle_seconds)
    for r in range(rounds):
        k = r % len(runners)
        for run in runners[k:] + runners[:k]:
            for name, ts in run(per_block).items():
                times.setdefault(name, []).extend(ts)
            settle(settle_seconds)
    return times


def alternate_with_child(runners, child, rounds, per_block, settle_seconds=0.2, **timing):
    """alternate_blocks over `runners` and, when `child` (a TorchChild, or None) is given,
    its timings (in_child(child, **timing)); the child is closed after."""
    try:
        if child:
            runners = [*runners, in_child(child, **timing)]
        return alternate_blocks(runners, rounds, per_block, settle_seconds)
    finally:
        if child:
            child.close()


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def paired_ratio(times, a, b, per_block):
    """Median over rounds of (median of a's block) / (median of b's block).

    `times` comes from `alternate_blocks`, whose rounds hold one block of every case, run
    within a second or so of each other. This machine drifts between a fast and a slow
    phase (up to 2x, over minutes), which a ratio of overall medians mixes in; the ratio
    within each round cancels it.
    """
    ratios = []
    for start in range(0, min(len(times[a]), len(times[b])), per_block):
        block_a, block_b = times[a][start:start + per_block], times[b][start:start + per_block]
        ratios.append(median(block_a) / median(block_b))
    return median(ratios)


def summarize(xs):
    """{median, min, max, n} of a list of seconds."""
    if not xs:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": median(xs), "min": min(xs), "max": max(xs), "n": len(xs),
            "samples": list(xs)}


def settle(seconds):
    """Let spinning BLAS/OpenMP worker threads of the other process go idle."""
    gc.collect()
    time.sleep(seconds)


def minor_faults():
    """Minor page faults of this process so far (first touches of fresh memory)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def proc_status_kb(field):
    """A /proc/self/status field in kB (VmHWM: peak RSS, VmRSS: current RSS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    if field == "VmHWM":
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return None


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs). True if done."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
