"""The benches' shared helpers, gathered under one name (`import _common as C`). Each lives
in the module of its job:

- _timing: interleaved rounds, alternating blocks, paired ratios, memory counters;
- _machine: the shared command line, CPU/ISA, BLAS and versions;
- _children: PyTorch in a child process (never in a bench's own), JSON children;
- _problems: the MLP problems and one step in fastad, NumPy and bare kernels; the
  tiny-ops chain;
- _floor: the GEMM floor (the same products straight through SciPy's BLAS);
- _report: units, ratios, verdicts, tables, JSON, headers and --profile.

Only the standard library and NumPy are imported at import time, so memory children can
use these without loading fastad or SciPy.
"""
from _timing import (now, timed, interleave, in_process, in_child, alternate_blocks,
    alternate_with_child, median,
    paired_ratio, summarize, settle, minor_faults, proc_status_kb, reset_peak_rss)
from _machine import (parser, limit_threads, apply_thread_limit, blas_info, isa_level, machine_info,
    blas_line, torch_available)
from _children import (BENCH_DIR, REPO_DIR, TORCH_REF, child_env, run_child_json, TorchChild,
    maybe_torch)
from _problems import (mlp_params, mlp_data, fastad_mlp_tensors, mlp_gemm_flops,
    fastad_mlp_loss, numpy_mlp_step, kernels_mlp_step, tiny_chain, numpy_tiny_chain)
from _floor import Product, mlp_gemm_floor, GemmFloor
from _report import (fmt_time, time_unit, fmt_in, fmt_ratio, target_check, print_table,
    write_json, header, kernel_breakdown, profile_report)
