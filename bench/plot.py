"""Training-step time vs batch size on the seed network: fastad, the GEMM floor, PyTorch.

For each batch size (16, 32, ..., 1024), one training step of the seed network
(16384 -> 5000 -> 3000 -> 512 -> 40, sigmoid, the seed's log(softmax) loss, float32)
is timed in fastad and as its GEMM floor (the 11 products through SciPy's sgemm,
interleaved in this process), and in PyTorch eager (a child process, alternating
blocks). Writes a PNG (default bench/step_vs_batch.png) and optionally JSON.

Run from the repo root: `python bench/plot.py [--quick] [--out FILE] [--json FILE]
[--repeats N]` (slow at full size: about two minutes with the default 3 repeats).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402
from seed import FULL_SIZES, QUICK_SIZES  # noqa: E402

FULL_BATCHES = [16, 32, 64, 128, 256, 512, 1024]
QUICK_BATCHES = [8, 16, 32]


def main():
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(C.BENCH_DIR, "step_vs_batch.png"),
                   help="PNG to write (default bench/step_vs_batch.png)")
    p.add_argument("--batches", type=int, nargs="+", default=None,
                   help="batch sizes (default 16 32 ... 1024; 8 16 32 with --quick)")
    args = p.parse_args()
    import fastad as fa

    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    batches = args.batches or (QUICK_BATCHES if args.quick else FULL_BATCHES)
    repeats = args.repeats or 3
    meta = C.header("step time vs batch size", args,
                    f"network {'->'.join(map(str, sizes))}, batches {batches}, "
                    f"median of {repeats}")
    arrays = C.mlp_params(sizes)
    params = [fa.tensor(a, requires_grad=True) for a in arrays]
    child = C.maybe_torch(args, "mlp", sizes=sizes, batch=batches[0], act="sigmoid",
                          loss="seed")
    torch_info = child.info if child else None
    series = {"fastad": [], "floor": [], "pytorch": []}
    ratios = {"floor": [], "pytorch": []}   # fastad / each, paired (C.paired_ratio)
    rows_out = []
    try:
        for batch in batches:
            X, y = C.mlp_data(sizes[0], sizes[-1], batch)
            x = fa.tensor(X)
            rows = np.arange(batch)

            def fastad_step(x=x, y=y, rows=rows):  # this batch's data
                loss = C.fastad_mlp_loss(fa, params, x, y, rows)
                grads = fa.grad(loss, params)
                del grads, loss

            floor = C.GemmFloor(arrays, X, sizes, batch, repeats=1)
            runners = [C.in_process([("fastad", C.timed(fastad_step)),
                                     ("floor", C.timed(floor.step))])]
            if child:
                child.set(batch=batch)
                runners.append(C.in_child(child, warmup=1))
            times = C.alternate_blocks(runners, rounds=repeats, per_block=1,
                                       settle_seconds=0.1 if args.quick else 0.3)
            med = {k: C.median(v) for k, v in times.items()}
            for k in series:
                series[k].append(med.get(k))
            for k in ratios:
                ratios[k].append(C.paired_ratio(times, "fastad", k, 1) if k in times else None)
            flops = C.mlp_gemm_flops(sizes, batch)
            rows_out.append([str(batch), C.fmt_time(med["fastad"]), C.fmt_time(med["floor"]),
                             C.fmt_time(med.get("pytorch")), C.fmt_ratio(ratios["floor"][-1]),
                             C.fmt_ratio(ratios["pytorch"][-1]) if child else "-",
                             f"{flops / med['fastad'] / 1e9:.1f}"])
            print(f"batch {batch}: " + ", ".join(f"{k} {C.fmt_time(v)}"
                                                 for k, v in med.items()), flush=True)
            del floor, x, X
    finally:
        if child:
            child.close()
    print()
    C.print_table(rows_out, ["batch", "fastad", "GEMM floor", "PyTorch",
                             "fastad/floor (paired)", "fastad/PyTorch (paired)",
                             "fastad GFLOP/s"])

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 7), sharex=True,
                                  gridspec_kw={"height_ratios": [2, 1]})
    labels = {"fastad": "fastad", "floor": "GEMM floor (SciPy sgemm, same products)",
              "pytorch": f"PyTorch {torch_info['torch']} eager" if torch_info else "PyTorch"}
    for k, style in (("fastad", "o-"), ("floor", "s--"), ("pytorch", "^-")):
        if any(v is not None for v in series[k]):
            ax.plot(batches, [v * 1e3 if v else np.nan for v in series[k]], style,
                    label=labels[k])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_ylabel("training step (ms, median)")
    ax.set_title(f"Seed network {'-'.join(map(str, sizes))}, float32, "
                 f"{meta['machine']['cpus']} cores")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax2.plot(batches, ratios["floor"], "s--", label="fastad / GEMM floor")
    if child:
        ax2.plot(batches, ratios["pytorch"], "^-", label="fastad / PyTorch")
    ax2.axhline(1.0, color="gray", lw=0.8)
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(batches)
    ax2.set_xticklabels([str(b) for b in batches])
    ax2.set_xlabel("batch size")
    ax2.set_ylabel("ratio (paired)")
    ax2.grid(True, alpha=0.3)
    ax2.legend()
    load = meta["machine"].get("loadavg")
    import textwrap
    note = (f"BLAS: {C.blas_line(meta['blas'])}; medians of {repeats}"
            + (f"; load average at start {load[0]:.2f}" if load else ""))
    fig.text(0.01, 0.005, "\n".join(textwrap.wrap(note, 140)), fontsize=6, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    C.write_json(args.json, {"config": {"sizes": sizes, "batches": batches,
                                        "repeats": repeats, "quick": args.quick},
                             **meta, "pytorch": torch_info,
                             "median_seconds": series, "paired_ratios": ratios})


if __name__ == "__main__":
    main()
