"""The PyTorch side of the benchmarks, run as a child process (never in fastad's).

PyTorch's OpenMP threads and OpenBLAS's threads spin-wait against each other when they
share a process, so bench scripts start this file with `_common.TorchChild` and talk to
it over stdin/stdout, one JSON object per line:

  {"op": "setup", "bench": "mlp"|"tiny", "threads": int|None, "config": {...}}
  {"op": "set", "config": {...}}              change e.g. the batch size
  {"op": "time", "n": N, "warmup": W}         -> {"times": [seconds per step], "loss": ...}
  {"op": "quit"}

The problems are rebuilt here from the same deterministic generators as fastad's side
(`_common.mlp_params` / `mlp_data`), so both sides see identical weights and data; the
replies carry the loss so the parent can check it matches.
"""
import json
import sys
import time

import numpy as np

from _common import mlp_data, mlp_params, proc_status_kb


class MLP:
    """Sigmoid/ReLU MLP step: forward + torch.autograd.grad of the loss wrt all params."""

    def __init__(self, torch, sizes, batch, act="sigmoid", loss="seed", dtype="float32",
                 seed=0, data_seed=1):
        self.torch = torch
        self.sizes, self.act, self.loss_kind = list(sizes), act, loss
        self.dtype = np.dtype(dtype)
        self.data_seed = data_seed
        arrays = mlp_params(self.sizes, seed=seed, dtype=self.dtype)
        self.params = [torch.from_numpy(a).requires_grad_() for a in arrays]
        self.set_batch(batch)

    def set_batch(self, batch):
        X, y = mlp_data(self.sizes[0], self.sizes[-1], batch, seed=self.data_seed,
                        dtype=self.dtype)
        self.X = self.torch.from_numpy(X)
        self.y = self.torch.from_numpy(y)
        self.rows = self.torch.arange(batch)

    def forward(self):
        torch = self.torch
        act = torch.sigmoid if self.act == "sigmoid" else torch.relu
        h = self.X
        ps = self.params
        n_layers = len(ps) // 2
        for l in range(n_layers):
            z = h @ ps[2 * l] + ps[2 * l + 1]
            h = act(z) if l < n_layers - 1 else z
        if self.loss_kind == "seed":
            # As the seed wrote it: -mean(log(softmax(L4))[arange(n), y]).
            return -torch.mean(torch.log(torch.softmax(h, dim=-1))[self.rows, self.y])
        return torch.nn.functional.cross_entropy(h, self.y)

    def step(self):
        loss = self.forward()
        grads = self.torch.autograd.grad(loss, self.params)
        del grads
        return loss


class Tiny:
    """x = sigmoid(x * 1.0001 + 0.01), `depth` times, on a float64 vector; grad of sum."""

    def __init__(self, torch, n=16, depth=200, dtype="float64"):
        self.torch = torch
        self.depth = depth
        self.x0 = torch.from_numpy(np.linspace(-1, 1, n).astype(dtype)).requires_grad_()

    def step(self):
        torch = self.torch
        x = self.x0
        for _ in range(self.depth):
            x = torch.sigmoid(x * 1.0001 + 0.01)
        loss = torch.sum(x)
        (g,) = torch.autograd.grad(loss, [self.x0])
        del g
        return loss


def main():
    import torch
    problem = None
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.get("op")
        try:
            if op == "setup":
                if msg.get("threads"):
                    torch.set_num_threads(int(msg["threads"]))
                cls = {"mlp": MLP, "tiny": Tiny}[msg["bench"]]
                problem = cls(torch, **msg["config"])
                reply = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                         "interop_threads": torch.get_num_interop_threads(),
                         "mkldnn": bool(torch.backends.mkldnn.is_available()),
                         "blas": _blas_of(torch)}
            elif op == "set":
                problem.set_batch(msg["config"]["batch"])
                reply = {"ok": True}
            elif op == "time":
                for _ in range(msg.get("warmup", 0)):
                    problem.step()
                times = []
                loss = None
                for _ in range(msg["n"]):
                    t0 = time.perf_counter()
                    loss = problem.step()
                    times.append(time.perf_counter() - t0)
                reply = {"times": times, "loss": float(loss) if loss is not None else None,
                         "vmhwm_kb": proc_status_kb("VmHWM")}
            elif op == "quit":
                print(json.dumps({"ok": True}), flush=True)
                return
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as e:  # report, keep serving
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


def _blas_of(torch):
    cfg = torch.__config__.show()
    for key in ("BLAS_INFO=", "LAPACK_INFO="):
        if key in cfg:
            return cfg.split(key, 1)[1].split(",", 1)[0]
    return "unknown"


if __name__ == "__main__":
    main()
