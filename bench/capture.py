"""Captured steps (fa.capture): the tiny-ops chain and the small MLP, replayed.

Two problems, each timed in one run with alternating blocks (paired ratios, see
_common.paired_ratio):

  - tiny ops: bench/tiny_ops.py's chain (float64[16], x = sigmoid(x * 1.0001 + 0.01)
    200 times, loss sum(x), then fa.grad of x0), captured, against the same chain run
    eagerly, the hand-written NumPy forward + backward, and PyTorch eager (child);
  - small MLP: bench/small_mlp.py's step (784 -> 256 -> 256 -> 10, batch 64, float32,
    ReLU, fa.cross_entropy; forward + fa.grad of the 6 parameters), captured, against
    its GEMM floor (the step's 8 products through SciPy's sgemm, best orientation) and
    the eager step.

Every captured result is first checked bit for bit against the eager one.
Targets (SPEC "captured (replayed) steps"): tiny ops <= 0.1x the hand-written NumPy,
small MLP <= 1.05x its GEMM floor. The digits training run has its own:
`python bench/train_digits.py --capture` (>= 5x PyTorch eager per epoch).
Run from the repo root: `python bench/capture.py [--quick] [--json FILE] [--repeats N]`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

TINY_N, TINY_DEPTH = 16, 200
SIZES, BATCH = [784, 256, 256, 10], 64


def same_bits(a, b):
    return all(np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(a, b))


def tiny_cases(fa, number):
    x0_value = np.linspace(-1, 1, TINY_N)
    x0 = fa.tensor(x0_value, requires_grad=True)

    def eager():
        return C.tiny_chain(fa, x0, TINY_DEPTH)
    captured = fa.capture(eager)
    for _ in range(3):
        got = captured()
    if not same_bits([got], [eager()]):
        raise AssertionError("the captured tiny-ops chain differs from the eager one")
    return [("tiny: captured", C.timed(captured, number)),
            ("tiny: eager", C.timed(eager, number)),
            ("tiny: hand-written NumPy", C.timed(
                lambda: C.numpy_tiny_chain(x0_value, TINY_DEPTH), number))]


def mlp_cases(fa, number, check):
    arrays = C.mlp_params(SIZES)
    X, y = C.mlp_data(SIZES[0], SIZES[-1], BATCH)
    params, x, rows = C.fastad_mlp_tensors(fa, arrays, X)

    def eager(xb, yb):
        loss = C.fastad_mlp_loss(fa, params, xb, yb, rows, act="relu", loss="ce")
        return fa.grad(loss, params)
    captured = fa.capture(eager)
    for _ in range(3):
        got = captured(x, y)
    if not same_bits(got, eager(x, y)):
        raise AssertionError("the captured small-MLP step differs from the eager one")
    floor = C.GemmFloor(arrays, X, SIZES, BATCH, repeats=5, check=check)
    return [("mlp: captured", C.timed(lambda: captured(x, y), number)),
            ("mlp: GEMM floor", C.timed(floor.step, number)),
            ("mlp: eager", C.timed(lambda: eager(x, y), number))]


def main():
    p = C.parser(__doc__.split("\n\n")[0])
    args = p.parse_args()
    import fastad as fa

    repeats = args.repeats or (6 if args.quick else 40)
    number = 2 if args.quick else 5
    per_block = 3 if args.quick else 10
    meta = C.header("capture benchmark", args,
                    f"tiny ops: float64[{TINY_N}] x {TINY_DEPTH} x 3 ops; small MLP "
                    f"{'->'.join(map(str, SIZES))}, batch {BATCH}; median of {repeats} "
                    f"samples of {number} runs")
    runners = [C.in_process(tiny_cases(fa, number)),
               C.in_process(mlp_cases(fa, number, check=args.quick))]
    child = C.maybe_torch(args, "tiny", n=TINY_N, depth=TINY_DEPTH)
    times = C.alternate_with_child(runners, child, rounds=-(-repeats // per_block),
                                   per_block=per_block, settle_seconds=0.1,
                                   name="tiny: PyTorch eager", number=number, warmup=10)

    med = {k: C.median(v) for k, v in times.items()}
    print()
    C.print_table([[name, C.fmt_time(med[name])] for name in times], ["run", "median"])

    def paired(a, b):
        return C.paired_ratio(times, a, b, per_block)
    targets = {
        "tiny: captured / hand-written NumPy <= 0.1 (paired)":
            (paired("tiny: captured", "tiny: hand-written NumPy"), 0.1),
        "small MLP: captured / GEMM floor <= 1.05 (paired)":
            (paired("mlp: captured", "mlp: GEMM floor"), 1.05),
    }
    shown = {"tiny: captured / eager": paired("tiny: captured", "tiny: eager"),
             "small MLP: captured / eager": paired("mlp: captured", "mlp: eager")}
    if "tiny: PyTorch eager" in times:
        shown["tiny: captured / PyTorch eager"] = paired("tiny: captured",
                                                         "tiny: PyTorch eager")
    print()
    C.print_table([[name, C.fmt_ratio(value), C.target_check(value, limit)]
                   for name, (value, limit) in targets.items()]
                  + [[name, C.fmt_ratio(value), ""] for name, value in shown.items()],
                  ["ratio", "measured", ""])
    results = {"config": {"tiny": {"n": TINY_N, "depth": TINY_DEPTH},
                          "mlp": {"sizes": SIZES, "batch": BATCH},
                          "repeats": repeats, "runs_per_sample": number,
                          "quick": args.quick},
               **meta,
               "times": {k: C.summarize(v) for k, v in times.items()},
               "ratios": shown,
               "targets": {name: {"value": value, "limit": limit,
                                  "status": C.target_check(value, limit)}
                           for name, (value, limit) in targets.items()}}
    C.write_json(args.json, results)


if __name__ == "__main__":
    main()
