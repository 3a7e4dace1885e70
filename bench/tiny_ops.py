"""Per-op overhead on tiny tensors: record + backward, in microseconds per op.

A float64 vector of 16 elements, `x = fa.sigmoid(x * 1.0001 + 0.01)` 200 times (600
recorded ops: mul, add, sigmoid), loss `fa.sum(x)`, then `fa.grad(loss, x0)`. The time
of forward + gradient divided by 600 is fastad's cost per recorded op including its
backward. Compared, in one run, with the same computation written by hand in NumPy
(forward saving each sigmoid output, then the backward loop; same process,
interleaved) and with PyTorch eager (child process, alternating blocks).

Targets, ratios within one run (an absolute figure depends on the host's clock):
fastad <= 1.0x the hand-written NumPy and <= 0.35x PyTorch eager (when installed), both
as paired ratios. Also shown, to say where the time goes: fastad's forward alone
(recording) and under `fa.no_grad()` (no recording).
Run from the repo root: `python bench/tiny_ops.py [--quick] [--json FILE] [--repeats N]`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

N = 16
DEPTH = 200
OPS = 3 * DEPTH


def main():
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=DEPTH, help="loop iterations (3 ops each)")
    args = p.parse_args()
    import fastad as fa

    depth = args.depth
    ops = 3 * depth
    repeats = args.repeats or (6 if args.quick else 40)
    number = 2 if args.quick else 5      # forward+grad runs per timed sample
    per_block = 3 if args.quick else 10
    meta = C.header("tiny ops benchmark", args,
                    f"float64[{N}], x = sigmoid(x * 1.0001 + 0.01) x {depth} ({ops} recorded "
                    f"ops), loss sum(x); median of {repeats} samples of {number} runs")
    x0_value = np.linspace(-1, 1, N)
    x0 = fa.tensor(x0_value, requires_grad=True)

    def forward(x):
        for _ in range(depth):
            x = fa.sigmoid(x * 1.0001 + 0.01)
        return fa.sum(x)

    def fastad_run():
        return C.tiny_chain(fa, x0, depth)

    def fastad_forward():
        forward(x0)

    def fastad_no_grad():
        with fa.no_grad():
            forward(x0)

    def numpy_run():
        return C.numpy_tiny_chain(x0_value, depth)

    got = fastad_run()
    ref_loss, ref = numpy_run()
    if not np.allclose(got, ref, rtol=1e-10, atol=1e-14):
        raise AssertionError("fastad's gradient differs from the NumPy reference")

    runners = [C.in_process([
        ("fastad forward + grad", C.timed(fastad_run, number)),
        ("hand-written NumPy forward + backward", C.timed(numpy_run, number)),
        ("fastad forward only (recording)", C.timed(fastad_forward, number)),
        ("fastad forward under fa.no_grad()", C.timed(fastad_no_grad, number)),
    ])]
    child = C.maybe_torch(args, "tiny", n=N, depth=depth)
    times = C.alternate_with_child(runners, child, rounds=-(-repeats // per_block),
                                   per_block=per_block, settle_seconds=0.1,
                                   number=number, warmup=10)

    med = {k: C.median(v) for k, v in times.items()}
    m_fa = med["fastad forward + grad"]
    rows = []
    for name in times:
        label = name
        if name == "pytorch":
            label = (f"PyTorch {child.info['torch']} eager forward + autograd.grad (child, "
                     f"{child.info['threads']} threads)")
        rows.append([label, C.fmt_time(med[name]), f"{med[name] / ops * 1e6:.2f}",
                     C.fmt_ratio(m_fa / med[name])])
    print()
    C.print_table(rows, ["run", "median", "us / op", "fastad / this"])
    us_per_op = m_fa / ops * 1e6
    paired_numpy = C.paired_ratio(times, "fastad forward + grad",
                                  "hand-written NumPy forward + backward", per_block)
    targets = {"fastad / hand-written NumPy <= 1.0 (paired)": (paired_numpy, 1.0)}
    if "pytorch" in times:
        targets["fastad / PyTorch eager <= 0.35 (paired)"] = (
            C.paired_ratio(times, "fastad forward + grad", "pytorch", per_block), 0.35)
    print()
    C.print_table([[name, C.fmt_ratio(value), C.target_check(value, limit)]
                   for name, (value, limit) in targets.items()], ["target", "measured", ""])
    print(f"\nfastad: {us_per_op:.2f} us per recorded op including its backward, "
          f"{C.fmt_ratio(paired_numpy)} the hand-written NumPy (paired blocks) "
          f"(forward recording {med['fastad forward only (recording)'] / ops * 1e6:.2f}, "
          f"sweep ~{(m_fa - med['fastad forward only (recording)']) / ops * 1e6:.2f}, "
          f"no_grad forward {med['fastad forward under fa.no_grad()'] / ops * 1e6:.2f})")
    results = {"config": {"n": N, "depth": depth, "ops": ops, "repeats": repeats,
                          "runs_per_sample": number, "quick": args.quick},
               **meta,
               "times": {k: C.summarize(v) for k, v in times.items()},
               "us_per_op": {k: v / ops * 1e6 for k, v in med.items()},
               "paired_ratio_fastad_numpy": paired_numpy,
               "pytorch": child.info if child else None,
               "targets": {name: {"value": value, "limit": limit,
                                  "status": C.target_check(value, limit)}
                           for name, (value, limit) in targets.items()}}
    if args.profile:
        C.profile_report(fastad_run, 100)
    C.write_json(args.json, results)


if __name__ == "__main__":
    main()
