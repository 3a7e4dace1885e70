"""A small MLP training step: where per-op overhead meets small matrix products.

784 -> 256 -> 256 -> 10, batch 64, float32, ReLU hidden layers and
`fa.cross_entropy(logits, y)` (the fused loss; `--act sigmoid`, `--loss seed` for the
seed's spelling), weights N(0, 0.01) used as `fa.dot(h, w) + b`. One step = forward +
`fa.grad(loss, [6 params])`, gradients dropped. Compared, in one run:

  - its GEMM floor: the step's 8 matrix products through scipy.linalg.blas.sgemm on
    preallocated arrays (best orientation), interleaved with fastad's steps;
  - the hand-written NumPy step (same process, in its own blocks: NumPy's OpenBLAS
    is a second thread pool);
  - PyTorch eager (child process, alternating blocks).

Targets: fastad <= 1.2x the floor and <= 1.0x PyTorch, as paired ratios (the median
over rounds of the ratio between adjacent blocks; see _common.paired_ratio).
Run from the repo root: `python bench/small_mlp.py [--quick] [--json FILE] [--repeats N]`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

SIZES = [784, 256, 256, 10]
BATCH = 64
KERNELS_ALONE = "fastad's kernels alone (no tape)"
FLOOR = "GEMM floor (SciPy sgemm)"


def main():
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument("--act", choices=["relu", "sigmoid"], default="relu")
    p.add_argument("--loss", choices=["ce", "seed"], default="ce",
                   help="ce: fa.cross_entropy; seed: -mean(log(softmax(L))[arange(n), y])")
    p.add_argument("--batch", type=int, default=BATCH)
    args = p.parse_args()
    import fastad as fa
    import threadpoolctl

    sizes, batch = SIZES, args.batch
    repeats = args.repeats or (6 if args.quick else 40)
    number = 5 if args.quick else 10          # steps per timed sample
    per_block = 3 if args.quick else 10       # samples per block
    loss_name = "fa.cross_entropy" if args.loss == "ce" else "seed log(softmax) loss"
    meta = C.header("small MLP benchmark", args,
                    f"network {'->'.join(map(str, sizes))}, {args.act}, {loss_name}, batch "
                    f"{batch}, float32; median of {repeats} samples of {number} steps")
    arrays = C.mlp_params(sizes)
    X, y = C.mlp_data(sizes[0], sizes[-1], batch)
    params, x, rows = C.fastad_mlp_tensors(fa, arrays, X)

    def fastad_step():
        loss = C.fastad_mlp_loss(fa, params, x, y, rows, act=args.act, loss=args.loss)
        grads = fa.grad(loss, params)
        del grads, loss

    # correctness: fastad's gradients against the hand-written NumPy step
    loss = C.fastad_mlp_loss(fa, params, x, y, rows, act=args.act, loss=args.loss)
    got = fa.grad(loss, params)
    ref_loss, ref = C.numpy_mlp_step(arrays, X, y, act=args.act)
    for i, (g, r) in enumerate(zip(got, ref)):
        if not np.allclose(g, r, rtol=1e-3, atol=1e-6):
            raise AssertionError(f"gradient {i} differs from the NumPy reference")
    fa_loss = float(loss.value)
    del loss, got, ref

    floor = C.GemmFloor(arrays, X, sizes, batch, repeats=5, check=args.quick)
    products, floor_step, floor_rowmajor_step = floor.products, floor.step, floor.row_major_step
    flops = C.mlp_gemm_flops(sizes, batch)

    def numpy_step():
        C.numpy_mlp_step(arrays, X, y, act=args.act)

    def kernels_step():
        C.kernels_mlp_step(arrays, X, y)

    tape_free = args.act == "relu" and args.loss == "ce"  # what kernels_mlp_step does

    if tape_free:  # correctness of the tape-free step, as for fastad's
        for i, (g, r) in enumerate(zip(C.kernels_mlp_step(arrays, X, y),
                                       C.numpy_mlp_step(arrays, X, y, act="relu")[1])):
            if not np.allclose(g, r, rtol=1e-3, atol=1e-6):
                raise AssertionError(f"kernels-only gradient {i} differs from NumPy's")

    controller = threadpoolctl.ThreadpoolController()
    blas_threads = max((lib.num_threads for lib in controller.lib_controllers
                        if lib.user_api == "blas"), default=1)

    def one_thread(fn):
        """A case running fn with every BLAS pool limited to 1 thread (set untimed)."""
        timed_fn = C.timed(fn, number)

        def case():
            with controller.limit(limits=1, user_api="blas"):
                return timed_fn()
        return case

    ours = [("fastad step", C.timed(fastad_step, number)),
            *([(KERNELS_ALONE, C.timed(kernels_step, number))] if tape_free else []),
            (FLOOR, C.timed(floor_step, number)),
            ("GEMM floor, all outputs row-major (as fastad)",
             C.timed(floor_rowmajor_step, number))]
    if blas_threads > 1:
        ours += [("fastad step, 1 BLAS thread", one_thread(fastad_step)),
                 ("GEMM floor, 1 BLAS thread", one_thread(floor_step))]
    runners = [C.in_process(ours),
               C.in_process([("hand-written NumPy step", C.timed(numpy_step, number))])]
    child = C.maybe_torch(args, "mlp", sizes=sizes, batch=batch, act=args.act,
                          loss=args.loss)
    torch_loss = None
    try:
        if child:
            runners.append(C.in_child(child, number=number, warmup=20))
        times = C.alternate_blocks(runners, rounds=-(-repeats // per_block),
                                   per_block=per_block,
                                   settle_seconds=0.3)
        if child:
            torch_loss = child.request({"op": "time", "n": 1})["loss"]
    finally:
        if child:
            child.close()

    med = {k: C.median(v) for k, v in times.items()}
    m_fa = med["fastad step"]
    # targets: paired ratios (see C.paired_ratio); the table's medians are for reference
    r_floor = C.paired_ratio(times, "fastad step", FLOOR, per_block)
    r_torch = C.paired_ratio(times, "fastad step", "pytorch", per_block) if child else None
    rows_t = []
    for name in times:
        label = name
        if name == "pytorch":
            label = (f"PyTorch {child.info['torch']} eager (child, {child.info['threads']} "
                     f"threads, {child.info['blas']})")
        target = ""
        if name == FLOOR:
            target = f"paired {C.fmt_ratio(r_floor)} <= 1.2x: {C.target_check(r_floor, 1.2)}"
        elif name == "pytorch":
            target = f"paired {C.fmt_ratio(r_torch)} <= 1.0x: {C.target_check(r_torch, 1.0)}"
        rows_t.append([label, C.fmt_time(med[name]), C.fmt_time(min(times[name])),
                       f"{flops / med[name] / 1e9:.1f}", C.fmt_ratio(m_fa / med[name]), target])
    print()
    C.print_table(rows_t, ["step", "median", "min", "GFLOP/s", "fastad / this", "target"])
    note = f"loss: fastad {fa_loss:.6f}, NumPy {ref_loss:.6f}"
    if torch_loss is not None:
        note += f", PyTorch {torch_loss:.6f}"
    print(note)
    if tape_free:
        print(f"the tape's share: fastad / its kernels alone "
              f"{C.fmt_ratio(C.paired_ratio(times, 'fastad step', KERNELS_ALONE, per_block))}, "
              f"kernels alone / GEMM floor "
              f"{C.fmt_ratio(C.paired_ratio(times, KERNELS_ALONE, FLOOR, per_block))} (paired)")
    print("GEMM floor per product (min of 5; C = row-major result, F = column-major):")
    C.print_table([[prod.name, f"{prod.m}x{prod.k} @ {prod.k}x{prod.n}",
                    C.fmt_time(prod.timings["C"]), C.fmt_time(prod.timings["F"]),
                    prod.orientation] for prod in products],
                  ["product", "shape", "C", "F", "best"])

    targets = {"step / GEMM floor <= 1.2": (r_floor, 1.2)}
    if "pytorch" in med:
        targets["step / PyTorch <= 1.0"] = (r_torch, 1.0)
    print("\ntargets:")
    C.print_table([[k, C.fmt_ratio(v), C.target_check(v, lim)]
                   for k, (v, lim) in targets.items()], ["target", "measured", ""])
    results = {"config": {"sizes": sizes, "batch": batch, "act": args.act, "loss": args.loss,
                          "repeats": repeats, "steps_per_sample": number,
                          "quick": args.quick},
               **meta, "flops": flops,
               "times": {k: C.summarize(v) for k, v in times.items()},
               "loss": {"fastad": fa_loss, "numpy": ref_loss, "pytorch": torch_loss},
               "pytorch": child.info if child else None,
               "floor_products": [{"name": prod.name, "orientation": prod.orientation,
                                   "timings": prod.timings} for prod in products],
               "targets": {k: {"ratio": v, "limit": lim, "status": C.target_check(v, lim)}
                           for k, (v, lim) in targets.items()}}
    if args.profile:
        C.profile_report(fastad_step, 300)
    C.write_json(args.json, results)


if __name__ == "__main__":
    main()
