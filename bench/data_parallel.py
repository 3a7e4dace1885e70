"""Data-parallel training over MPI (fastad.distributed): what a second rank buys, and
what the allreduce costs and hides.

Model: MLP 784->1024->1024->10 (ReLU), batch 256 per rank, float32, SGD; every rank
uses 1 BLAS thread. Cases, timed per step in interleaved rounds (medians), in one run:

- 1 rank alone (a separate 1-process job, the other core idle): the samples/s baseline;
- 2 ranks without any communication (each trains its own copy): the step floor;
- 2 ranks with DataParallel (bucket_mb=25, and bucket_mb=1 for more overlap);
- 2 ranks, "fused": no_sync backward, then one blocking Allreduce of all gradients in
  one flat buffer (the naive way), and the allreduce alone: bucketed (the buckets'
  Iallreduce, launched back to back, then Waitall) vs fused (one Allreduce, same bytes).

Reported: samples/s of 2 ranks vs 1; DataParallel step vs the no-communication step;
bucketed vs fused allreduce; the share of allreduce time the sweep hid
(1 - (DataParallel step - no-comm step) / fused allreduce alone), beside the room the
bucket launch times leave (the allreduce time that fits between each bucket's measured
launch and the end of the sweep, on a model of the measured link); and a projection of
the step to 8 and 64 machines with ring allreduce under an alpha-beta model
(T = 2(P-1) alpha + 2 (P-1)/P n beta per bucket; stated network: 25 Gb/s, 10 us),
replaying the measured bucket launch times against the end of the sweep.

Run: `python bench/data_parallel.py [--quick]`, which launches the MPI jobs itself with
the mpiexec next to this Python (and reports single-process figures only when mpi4py or
mpiexec is missing).

`--tcp 1gbit` runs every job over TCP instead of shared memory: in a fresh network
namespace (`unshare -n`, needs root) whose loopback `tc`'s tbf qdisc limits to that rate
(both directions share it: the two ranks' traffic together), with MPICH's wheel on
libfabric's tcp provider (MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=tcp MPIR_CVAR_NOLOCAL=1)
or Open MPI's `--mca btl tcp,self`. The qdisc's byte counter is read after each job to
check that the gradients did cross the limited link.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

SIZES = (784, 1024, 1024, 10)
BATCH = 256
NET_ALPHA = 10e-6          # s, stated network latency
NET_BANDWIDTH = 25e9 / 8   # bytes/s (25 Gb/s)


def build(seed=0):
    import fastad as fa
    from fastad import nn
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(SIZES[0], SIZES[1], rng=rng), nn.ReLU(),
                          nn.Linear(SIZES[1], SIZES[2], rng=rng), nn.ReLU(),
                          nn.Linear(SIZES[2], SIZES[3], rng=rng))
    data = np.random.default_rng(seed + 1)
    X = data.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = data.integers(0, SIZES[-1], BATCH)
    return fa, model, X, y


def one_blas_thread():
    """One BLAS thread per rank (threadpoolctl). False if unavailable."""
    return C.limit_threads(1, user_api="blas")


# --- the MPI job (every rank) -----------------------------------------------------------

def child(args):
    import fastad.distributed as dist
    from mpi4py import MPI
    comm = dist.init(blas_threads=1)
    one_blas_thread()
    rank, size = comm.Get_rank(), comm.Get_size()
    steps, rounds = (3, 2) if args.quick else (10, 5)

    fa, plain, X, y = build(0)
    plain_opt = fa.optim.SGD(plain.parameters(), lr=1e-3)
    models = {}
    for mb in (25, 1):
        _, m, _, _ = build(0)
        models[mb] = dist.DataParallel(m, bucket_mb=mb)
    opts = {mb: fa.optim.SGD(m.parameters(), lr=1e-3) for mb, m in models.items()}
    _, fused_model, _, _ = build(0)
    fused_model = dist.DataParallel(fused_model)
    fused_opt = fa.optim.SGD(fused_model.parameters(), lr=1e-3)
    params = fused_model.parameters()
    flat = np.zeros(sum(p.value.size for p in params), np.float32)

    def plain_step():
        plain_opt.zero_grad()
        fa.cross_entropy(plain(X), y).backward()
        plain_opt.step()

    def dp_step(mb):
        def step():
            opts[mb].zero_grad()
            fa.cross_entropy(models[mb](X), y).backward()
            opts[mb].step()
        return step

    def fused_step():
        fused_opt.zero_grad()
        with fused_model.no_sync():
            fa.cross_entropy(fused_model(X), y).backward()
        at = 0
        for p in params:
            flat[at:at + p.value.size] = p.grad.ravel()
            at += p.value.size
        comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        np.multiply(flat, 1.0 / size, out=flat)
        at = 0
        for p in params:
            p.grad = flat[at:at + p.value.size].reshape(p.value.shape)
            at += p.value.size
        fused_opt.step()

    buckets = [np.zeros(b.count, np.float32) for b in models[25]._buckets]
    fine_buckets = [np.zeros(b.count, np.float32) for b in models[1]._buckets]

    def allreduce_fused():
        comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)

    tiny = np.zeros(2, np.float32)

    def allreduce_tiny():   # the link's latency
        comm.Allreduce(MPI.IN_PLACE, tiny, op=MPI.SUM)

    def allreduce_bucketed(bufs):
        def run():
            MPI.Request.Waitall([comm.Iallreduce(MPI.IN_PLACE, b, op=MPI.SUM) for b in bufs])
        return run

    cases = {"plain": plain_step, "dp25": dp_step(25), "dp1": dp_step(1)}
    if size > 1:
        cases.update({"fused": fused_step, "ar_fused": allreduce_fused, "ar_tiny": allreduce_tiny,
                      "ar_bucketed25": allreduce_bucketed(buckets),
                      "ar_bucketed1": allreduce_bucketed(fine_buckets)})
    for step in cases.values():   # warm-up: buffers, optimizer state
        step()
        step()
    times = {name: [] for name in cases}
    order = list(cases)
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            comm.Barrier()
            n = steps * 4 if name.startswith("ar_") and not args.tcp else steps
            start = time.perf_counter()
            for _ in range(n):
                cases[name]()
            elapsed = np.array([(time.perf_counter() - start) / n])
            comm.Allreduce(MPI.IN_PLACE, elapsed, op=MPI.MAX)   # the slowest rank
            times[name].append(float(elapsed[0]))
    result = {name: float(np.median(t)) for name, t in times.items()}

    # When does each bucket start, relative to the end of the sweep? (for the projection)
    launches = {mb: bucket_timeline(fa, model, opts[mb], X, y, 3 if args.quick else 9)
                for mb, model in models.items()}
    result["launches"] = launches
    result["bytes"] = int(flat.nbytes)
    result["size"] = size
    if rank == 0:
        print("RESULT " + json.dumps(result), flush=True)
    MPI.Finalize()


def bucket_timeline(fa, model, opt, X, y, passes):
    """Medians over `passes` steps: how long before the end of the sweep each bucket's
    allreduce started (a bucket launched after the sweep: 0), and how long backward()
    then waited for the allreduces to finish."""
    before_end, waits = [], []
    launch, end = model._launch_ready, model._end
    stamps = []

    def spy_launch():
        before = model._next
        launch()
        stamps.extend([time.perf_counter()] * (model._next - before))

    def spy_end(gradients):
        t_end = time.perf_counter()
        try:
            return end(gradients)
        finally:
            waits.append(time.perf_counter() - t_end)
            before_end.append([max(0.0, t_end - s) for s in stamps])
            stamps.clear()

    object.__setattr__(model, "_launch_ready", spy_launch)
    object.__setattr__(model, "_end", spy_end)
    try:
        for _ in range(passes):
            opt.zero_grad()
            fa.cross_entropy(model(X), y).backward()
            opt.step()
    finally:
        object.__setattr__(model, "_launch_ready", launch)
        object.__setattr__(model, "_end", end)
    return {"before_end": np.median(before_end, axis=0).tolist(), "wait": float(np.median(waits)),
            "bytes": [b.buffer.nbytes for b in model._buckets]}


# --- the launcher -----------------------------------------------------------------------

def mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    for where in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        found = shutil.which("mpiexec", path=where)
        if found:
            return found
    return shutil.which("mpiexec")


def mpi_flavour(launcher):
    """"mpich", "openmpi" or "other", from `mpiexec --version`."""
    out = subprocess.run([launcher, "--version"], capture_output=True, text=True).stdout
    return "openmpi" if "Open MPI" in out else "mpich" if "HYDRA" in out else "other"


def over_link(cmd, rate):
    """`cmd` in a fresh network namespace whose loopback tc's tbf qdisc limits to `rate`
    (burst 128 KB: more than the loopback's 64 KB packets, which tbf would drop); the
    qdisc's counters go to stderr after the job."""
    script = (f"ip link set lo up && tc qdisc add dev lo root tbf rate {rate} burst 128kb "
              'latency 50ms && { "$@"; rc=$?; tc -s qdisc show dev lo >&2; exit $rc; }')
    return ["unshare", "--net", "sh", "-c", script, "sh"] + cmd


def job(launcher, n, args):
    child = [sys.executable, "-m", "mpi4py", os.path.abspath(__file__), "--child"]
    child += ["--quick"] if args.quick else []
    env = C.child_env()
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    options = []
    if args.tcp:
        child += ["--tcp", args.tcp]
        flavour = mpi_flavour(launcher)
        if flavour == "mpich":   # the ofi netmod on libfabric's tcp provider, no shared memory
            env.update(MPIR_CVAR_CH4_NETMOD="ofi", FI_PROVIDER="tcp", MPIR_CVAR_NOLOCAL="1")
        elif flavour == "openmpi":
            # (not --oversubscribe: Open MPI then yields when idle, and an 8-byte
            # allreduce took 4 ms instead of 10-140 us)
            options = ["--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo"]
            options += ["--allow-run-as-root"] if os.geteuid() == 0 else []
        else:
            raise SystemExit(f"--tcp: {launcher} is neither MPICH's nor Open MPI's mpiexec")
    cmd = [launcher] + options + ["-n", str(n)] + child
    if args.tcp:
        cmd = over_link(cmd, args.tcp)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env,
                          cwd=C.REPO_DIR)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    if args.tcp:
        sent = re.search(r"Sent (\d+) bytes", proc.stderr)
        result["link_bytes"] = int(sent.group(1)) if sent else 0
    return result


def ring_allreduce(nbytes, machines):
    if machines == 1:
        return 0.0
    return 2 * (machines - 1) * NET_ALPHA + 2 * (machines - 1) / machines * nbytes / NET_BANDWIDTH


def exposed(launches, cost):
    """How long the bucket allreduces run past the end of the sweep, when each starts at
    its measured launch (or once the previous one is done: they share the link) and
    one of n bytes takes cost(n)."""
    free_at = -float("inf")   # when the link is free, relative to the end of the sweep
    for before_end, nbytes in zip(launches["before_end"], launches["bytes"]):
        free_at = max(-before_end, free_at) + cost(nbytes)
    return max(0.0, free_at)


def project(step, launches, machines):
    """Step time on `machines` machines: compute (the no-communication step) plus the part
    of the serialized bucket allreduces that runs past the end of the sweep."""
    return step + exposed(launches, lambda nbytes: ring_allreduce(nbytes, machines))


def hideable(result, mb):
    """About the largest share of the allreduce time that the sweep could hide, given
    when the buckets were launched, if the link were busy from each launch on (a model
    of the measured link: an allreduce of n bytes takes tiny + n (fused - tiny) / all
    bytes)."""
    alpha = result["ar_tiny"]
    beta = max(0.0, result["ar_fused"] - alpha) / result["bytes"]
    return 1 - exposed(result["launches"][mb], lambda n: alpha + n * beta) / result["ar_fused"]


def main():
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument("--child", action="store_true", help=argparse_hidden())
    p.add_argument("--tcp", metavar="RATE", help="run the ranks over TCP on a loopback that "
                   "tc's tbf limits to RATE (e.g. 1gbit), in a fresh network namespace "
                   "(needs root, unshare and tc)")
    args = p.parse_args()
    if args.child:
        return child(args)
    info = C.header("data-parallel training (fastad.distributed)", args)
    launcher = mpiexec()
    if launcher is None:
        one_blas_thread()
        fa, model, X, y = build(0)
        opt = fa.optim.SGD(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad()
            fa.cross_entropy(model(X), y).backward()
            opt.step()
        step()
        t = C.median([C.timed(step, 3)() for _ in range(3)])
        print(f"mpi4py or mpiexec missing (pip install '.[mpi]'): 1 process only, "
              f"{C.fmt_time(t)} per step, {BATCH / t:.0f} samples/s")
        return
    rounds = 1 if args.quick else 3
    ones, twos = [], []
    for _ in range(rounds):   # alternate the jobs: drift hits both
        ones.append(job(launcher, 1, args))
        twos.append(job(launcher, 2, args))

    def med(results, key):
        return float(np.median([r[key] for r in results]))
    one = med(ones, "plain")
    two = {k: med(twos, k) for k in ("plain", "dp25", "dp1", "fused", "ar_fused", "ar_tiny",
                                     "ar_bucketed25", "ar_bucketed1")}
    launches = twos[-1]["launches"]
    nbytes = twos[-1]["bytes"]
    rows = [
        ["1 rank alone, no MPI traffic", C.fmt_time(one), f"{BATCH / one:.0f}", "", ""],
        ["2 ranks, no communication", C.fmt_time(two["plain"]),
         f"{2 * BATCH / two['plain']:.0f}", "1.000x", ""],
    ]
    for key, label in (("dp25", "2 ranks, DataParallel bucket_mb=25"),
                       ("dp1", "2 ranks, DataParallel bucket_mb=1"),
                       ("fused", "2 ranks, one fused Allreduce after backward")):
        judged = key == "dp25" and not args.tcp   # the targets are for shared memory
        rows.append([label, C.fmt_time(two[key]), f"{2 * BATCH / two[key]:.0f}",
                     C.fmt_ratio(two[key] / two["plain"]),
                     C.target_check(two[key] / two["plain"], 1.05) if judged else ""])
    print(f"MLP {'-'.join(map(str, SIZES))}, batch {BATCH} per rank, float32, SGD, "
          f"1 BLAS thread per rank; gradients {nbytes / 2**20:.1f} MB")
    if args.tcp:
        crossed = min(r["link_bytes"] for r in twos)
        print(f"over TCP ({mpi_flavour(launcher)}), loopback limited to {args.tcp} by tbf "
              f"(the two ranks' traffic shares it): allreduce of the gradients "
              f"{C.fmt_time(two['ar_fused'])}, of 8 bytes {C.fmt_time(two['ar_tiny'])}; "
              f"{crossed / 2**20:.0f} MB crossed the link in a 2-rank job")
        if crossed < nbytes:
            raise SystemExit("--tcp: the gradients did not cross the limited link (MPI "
                             "used another transport)")
    C.print_table(rows, ["run", "step", "samples/s", "vs no-comm", "target <= 1.05x"])
    speedup = (2 * BATCH / two["dp25"]) / (BATCH / one)
    verdict = (f"over the {args.tcp} link; the 1.7x target is for shared memory" if args.tcp
               else f"target >= 1.7x: {'met' if speedup >= 1.7 else 'MISSED'}")
    print(f"\nsamples/s, 2 ranks (DataParallel) vs 1 rank: {speedup:.2f}x ({verdict})")
    for mb in ("25", "1"):
        ratio = two[f"ar_bucketed{mb}"] / two["ar_fused"]
        hidden = 1 - (two[f"dp{mb}"] - two["plain"]) / two["ar_fused"]
        most = float(np.median([hideable(r, mb) for r in twos]))
        print(f"bucket_mb={mb}: {len(launches[mb]['bytes'])} buckets; allreduce alone "
              f"{C.fmt_time(two[f'ar_bucketed{mb}'])} bucketed vs {C.fmt_time(two['ar_fused'])}"
              f" fused: {ratio:.2f}x (target <= 1.2x: {C.target_check(ratio, 1.2)}); "
              f"share of allreduce time hidden behind the sweep: "
              f"{100 * min(1.0, max(0.0, hidden)):.0f}% (the launch times leave room for "
              f"about {100 * most:.0f}%); backward() waited "
              f"{C.fmt_time(med([r['launches'][mb] for r in twos], 'wait'))} after the sweep")
    print(f"\nprojection (alpha-beta ring allreduce, stated network {NET_BANDWIDTH * 8 / 1e9:.0f}"
          f" Gb/s, {NET_ALPHA * 1e6:.0f} us; compute = the 2-rank no-comm step, bucket "
          "launch times as measured; weak scaling, batch 256 per machine):")
    rows = []
    for machines in (2, 8, 64):
        fused = two["plain"] + ring_allreduce(nbytes, machines)
        projected = {mb: project(two["plain"], launches[mb], machines) for mb in ("25", "1")}
        rows.append([str(machines), C.fmt_time(ring_allreduce(nbytes, machines)),
                     C.fmt_time(fused), C.fmt_time(projected["25"]), C.fmt_time(projected["1"]),
                     f"{machines * BATCH / projected['1']:.0f}"])
    C.print_table(rows, ["machines", "allreduce (fused)", "step, fused after backward",
                         "step, bucket_mb=25", "step, bucket_mb=1", "samples/s (bucket_mb=1)"])
    C.write_json(args.json, {**info, "one_rank": one, "two_ranks": two, "speedup": speedup,
                             "launches": launches, "bytes": nbytes, "tcp": args.tcp})


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
