"""A real training run: an MLP on scikit-learn's handwritten digits, with fastad.

The digits data set (1,797 8x8 images, 10 classes) ships inside scikit-learn: no
download. A 64-128-64-10 ReLU network is trained with cross-entropy and Adam on a
stratified 75/25 split (inputs standardised on the training set), everything seeded.

When PyTorch is installed, the same network (same initial weights, data, batch order,
optimizer and hyperparameters) is trained by PyTorch in a child process, never in this
one (their thread pools would spin against each other). The two alternate epoch by
epoch, the child blocking on a pipe while fastad runs, so that speed drift on a busy
machine hits both alike; the report shows them side by side.

    python bench/train_digits.py                  # 30 epochs, a few seconds
    python bench/train_digits.py --quick          # one epoch, for CI
    python bench/train_digits.py --plot loss.png --json digits.json
    python bench/train_digits.py --resume         # checkpoint halfway, finish in a new process
    mpiexec -n 2 python -m mpi4py bench/train_digits.py --distributed   # data-parallel
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

TARGET_ACCURACY = 0.97
LAYERS = (64, 128, 64, 10)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of split, init and batch order")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS/OpenMP threads for both frameworks (default 1: these "
                        "matrices are too small to share; 0 keeps each library's default)")
    p.add_argument("--quick", action="store_true", help="one epoch only (for CI)")
    p.add_argument("--plot", metavar="FILE", help="save the loss curves as a PNG")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--resume", action="store_true",
                   help="also train half the epochs, checkpoint model and optimizer with "
                        "fa.save, finish in a new process, and check the weights equal the "
                        "uninterrupted run's bit for bit")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the MPI ranks this runs on (fastad.distributed; "
                        "launch with mpiexec -n N python -m mpi4py): each rank trains on its "
                        "share of every batch; no PyTorch comparison")
    p.add_argument("--capture", action="store_true",
                   help="train with the step fa.capture'd (recorded once, replayed after); "
                        "target: >= 5x PyTorch eager per epoch")
    p.add_argument("--torch-child", metavar="NPZ", help=argparse.SUPPRESS)
    p.add_argument("--resume-child", nargs=2, metavar=("CHECKPOINT", "OUT"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.epochs = 1
    if args.epochs < 1 or args.batch < 1 or args.threads < 0:
        p.error("--epochs and --batch must be positive, --threads non-negative")
    return args


# --- the problem and the epoch loop, shared by both frameworks ---------------------------

def load_digits_split(seed):
    """(x_train, y_train, x_test, y_test): float32 inputs standardised on the train set."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(x_train)
    return (scaler.transform(x_train).astype(np.float32), y_train.astype(np.int64),
            scaler.transform(x_test).astype(np.float32), y_test.astype(np.int64))


def batch_orders(n, epochs, seed):
    """One shuffled order of the n training examples per epoch."""
    rng = np.random.default_rng([seed, 1])
    return np.stack([rng.permutation(n) for _ in range(epochs)])


def batches(order, batch):
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def run_epoch(step, evaluate, data, order, batch):
    """One epoch: `step(x, y)` trains on a batch and returns its loss.

    Only the training loop is timed; test accuracy is measured after it.
    """
    x_train, y_train, x_test, y_test = data
    start = time.perf_counter()
    losses = [step(x_train[idx], y_train[idx]) for idx in batches(order, batch)]
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(evaluate(x_test) == y_test))
    return {"losses": losses, "seconds": seconds, "test_accuracy": accuracy}


# --- fastad -------------------------------------------------------------------------------

def fastad_model(seed):
    import fastad as fa

    rng = np.random.default_rng(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(LAYERS[:-1], LAYERS[1:])):
        layers.append(fa.nn.Linear(n_in, n_out, rng=rng))
        if i < len(LAYERS) - 2:
            layers.append(fa.nn.ReLU())
    return fa.nn.Sequential(*layers)


def fastad_trainer(model, lr, capture=False):
    """(step, evaluate, optimizer) for a fastad model; with `capture`, the step is
    fa.capture'd (its loss read outside it)."""
    import fastad as fa

    opt = fa.optim.Adam(model.parameters(), lr=lr)

    def train_step(x, y):
        opt.zero_grad()
        loss = fa.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    if capture:
        train_step = fa.capture(train_step)

    def step(x, y):
        return train_step(x, y).item()

    @fa.no_grad()
    def evaluate(x):
        return fa.argmax(model(x), axis=1)

    return step, evaluate, opt


def train_epochs(args, data, orders, checkpoint=None):
    """A fastad model trained on `orders` (no timing), from `checkpoint` (a fa.load'ed
    {"model", "optim"}) if given; returns (model, optimizer)."""
    model = fastad_model(args.seed)
    step, _, opt = fastad_trainer(model, args.lr)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        opt.load_state_dict(checkpoint["optim"])
    x_train, y_train = data[0], data[1]
    for order in orders:
        for idx in batches(order, args.batch):
            step(x_train[idx], y_train[idx])
    return model, opt


def resume_child(args, checkpoint_path, out):
    """The second half, in a process of its own: load the checkpoint, train the epochs
    after it, save the final weights."""
    import fastad as fa

    checkpoint = fa.load(checkpoint_path)
    orders = batch_orders(len(load_digits_split(args.seed)[0]), args.epochs, args.seed)
    model, _ = train_epochs(args, load_digits_split(args.seed),
                            orders[checkpoint["epoch"]:], checkpoint)
    fa.save(out, model.state_dict())


def check_resume(args, data, orders, tmp):
    """Checkpoint halfway, finish in a new process: True if its weights equal an
    uninterrupted run's, bit for bit."""
    import fastad as fa

    half = len(orders) // 2
    model, opt = train_epochs(args, data, orders[:half])
    checkpoint, out = os.path.join(tmp, "half.npz"), os.path.join(tmp, "resumed.npz")
    fa.save(checkpoint, {"model": model.state_dict(), "optim": opt.state_dict(),
                         "epoch": half})
    subprocess.run([sys.executable, os.path.abspath(__file__), "--resume-child", checkpoint,
                    out, "--epochs", str(args.epochs), "--seed", str(args.seed), "--lr",
                    str(args.lr), "--batch", str(args.batch)], check=True)
    resumed = fa.load(out)
    whole, _ = train_epochs(args, data, orders)
    return all(np.array_equal(resumed[k], v) for k, v in whole.state_dict().items())


def limit_blas_threads(threads):
    """Limit the BLAS libraries loaded in this process (threadpoolctl); a description."""
    if not threads:
        return "library default"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "library default (threadpoolctl not installed)"
    threadpool_limits(limits=threads)
    return str(threads)


# --- PyTorch, in a child process ------------------------------------------------------------

def torch_child(path):
    """Serve epochs of the problem saved at `path` with PyTorch: read an epoch number per
    stdin line, train that epoch, answer with one JSON line."""
    import torch

    problem = np.load(path, allow_pickle=False)
    config = json.loads(str(problem["config"]))
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    data = tuple(problem[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    orders = problem["orders"]
    layers = []
    for i, (n_in, n_out) in enumerate(zip(LAYERS[:-1], LAYERS[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(LAYERS) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    model.load_state_dict({k[len("init."):]: torch.from_numpy(problem[k])
                           for k in problem.files if k.startswith("init.")})
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        return loss.item()

    @torch.no_grad()
    def evaluate(x):
        return model(torch.from_numpy(x)).argmax(dim=1).numpy()

    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}),
          flush=True)
    for line in sys.stdin:
        epoch = json.loads(line)
        if epoch is None:
            break
        print(json.dumps(run_epoch(step, evaluate, data, orders[epoch], config["batch"])),
              flush=True)


class TorchEpochs:
    """The PyTorch child: `epoch(k)` trains its epoch k and returns run_epoch's result."""

    def __init__(self, path):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--torch-child", path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1)
        self.info = self._reply()

    def _reply(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"PyTorch child died:\n{self.proc.stderr.read()[-2000:]}")
        return json.loads(line)

    def epoch(self, k):
        self.proc.stdin.write(f"{json.dumps(int(k))}\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("null\n")
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.wait(timeout=60)


def start_torch(args, initial, data, orders, tmp):
    """A started TorchEpochs child for the same problem, or None (reason printed)."""
    import fastad as fa

    if args.no_torch:
        print("PyTorch: skipped (--no-torch)")
        return None
    if importlib.util.find_spec("torch") is None:
        print("PyTorch: not installed, comparison skipped")
        return None
    path = os.path.join(tmp, "problem.npz")
    problem = dict(zip(("x_train", "y_train", "x_test", "y_test"), data))
    problem.update({f"init.{k}": v for k, v in initial.items()})
    problem["orders"] = orders
    problem["config"] = np.array(json.dumps({"lr": args.lr, "batch": args.batch,
                                             "threads": args.threads}))
    fa.save(path, problem)
    try:
        child = TorchEpochs(path)
    except (RuntimeError, OSError) as e:
        print(f"PyTorch: child failed to start, comparison skipped: {e}")
        return None
    print(f"PyTorch {child.info['torch']}: same network, weights, data and batch order, "
          f"in a child process ({child.info['threads']} thread(s)), alternating epochs")
    return child


# --- report -------------------------------------------------------------------------------

def summary(epochs):
    return {"test_accuracy": epochs[-1]["test_accuracy"],
            "median_epoch_seconds": statistics.median(e["seconds"] for e in epochs),
            "final_epoch_loss": float(np.mean(epochs[-1]["losses"]))}


def report(history, captured=False):
    rows = {name: summary(epochs) for name, epochs in history.items() if epochs}
    print(f"{'':8}  {'test acc':>8}  {'time/epoch':>10}  {'final loss':>10}")
    for name, s in rows.items():
        print(f"{name:8}  {s['test_accuracy']:8.2%}  {s['median_epoch_seconds'] * 1e3:7.1f} ms"
              f"  {s['final_epoch_loss']:10.4f}")
    if "PyTorch" in rows:
        ratio = (rows["fastad"]["median_epoch_seconds"]
                 / rows["PyTorch"]["median_epoch_seconds"])
        rows["time_ratio"] = ratio
        first = [history[name][0]["losses"][0] for name in ("fastad", "PyTorch")]
        print(f"time/epoch ratio fastad / PyTorch: {ratio:.2f}x (medians over epochs)")
        if captured:
            verdict = "met" if 1 / ratio >= 5 else "MISSED"
            print(f"captured: PyTorch eager / fastad = {1 / ratio:.1f}x per epoch "
                  f"(target >= 5x: {verdict})")
        print(f"first-batch loss: fastad {first[0]:.6f}, PyTorch {first[1]:.6f}")
    return rows


def plot(path, history):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    styles = {"fastad": dict(color="C0", marker="o", linestyle="-"),
              "PyTorch": dict(color="C1", marker="x", linestyle="--")}
    for name, epochs in history.items():
        if not epochs:
            continue
        losses = np.concatenate([e["losses"] for e in epochs])
        per_epoch = len(epochs[0]["losses"])
        ax.plot(np.arange(1, len(losses) + 1) / per_epoch, losses, color=styles[name]["color"],
                alpha=0.2, linewidth=0.7)
        ax.plot(np.arange(1, len(epochs) + 1), [np.mean(e["losses"]) for e in epochs],
                markersize=4, label=f"{name} (test accuracy {epochs[-1]['test_accuracy']:.2%})",
                **styles[name])
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (per batch; epoch mean)")
    ax.set_title("MLP 64-128-64-10 on scikit-learn digits, Adam")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def on_my_share(step, comm):
    """`step` applied to this rank's share of each batch (every rank sees the same batch
    order); DataParallel averages the gradients over the ranks."""
    return lambda x, y: step(x[comm.rank::comm.size], y[comm.rank::comm.size])


def train_both(args, data, orders, model, child, comm=None):
    """Alternate fastad and PyTorch epochs; {name: [run_epoch result, ...]}."""
    from tqdm import tqdm

    step, evaluate, _ = fastad_trainer(model, args.lr, capture=args.capture)
    if comm is not None:
        step = on_my_share(step, comm)
    history = {"fastad": [], "PyTorch": []}
    settle = 0.05 if args.threads != 1 else 0  # let the other side's thread pool go idle
    with tqdm(total=len(orders), desc="training", unit="epoch", file=sys.stderr) as bar:
        for k, order in enumerate(orders):
            time.sleep(settle)
            history["fastad"].append(run_epoch(step, evaluate, data, order, args.batch))
            postfix = {"loss": f"{np.mean(history['fastad'][-1]['losses']):.4f}"}
            if child is not None:
                time.sleep(settle)
                history["PyTorch"].append(child.epoch(k))
                postfix["torch_loss"] = f"{np.mean(history['PyTorch'][-1]['losses']):.4f}"
            bar.update(1)
            bar.set_postfix(postfix)
    return history


def main(argv=None):
    args = parse_args(argv)
    if args.torch_child:
        torch_child(args.torch_child)
        return 0
    if args.resume_child:
        resume_child(args, *args.resume_child)
        return 0
    data = load_digits_split(args.seed)
    orders = batch_orders(len(data[0]), args.epochs, args.seed)
    model = fastad_model(args.seed)
    comm = None
    if args.distributed:
        import fastad.distributed as dist

        comm = dist.init()
        model = dist.DataParallel(model)
        args.no_torch = True
        if comm.rank != 0:  # one report, from rank 0
            sys.stdout = open(os.devnull, "w")
    initial = {k: v.copy() for k, v in model.state_dict().items()}
    print(f"== digits: MLP {'-'.join(map(str, LAYERS))} (ReLU), cross-entropy, Adam "
          f"lr={args.lr}, batch {args.batch}, {args.epochs} epoch(s), float32, seed "
          f"{args.seed}{' (--quick)' if args.quick else ''}")
    print(f"data: {len(data[0])} train / {len(data[2])} test images (8x8), stratified "
          "75/25 split, standardised")
    print(f"fastad: BLAS threads {limit_blas_threads(args.threads)}")
    if comm is not None:
        print(f"data-parallel over {comm.size} MPI rank(s), each on 1/{comm.size} of every "
              "batch")

    with tempfile.TemporaryDirectory() as tmp:
        child = start_torch(args, initial, data, orders, tmp)
        try:
            history = train_both(args, data, orders, model, child, comm)
        finally:
            if child is not None:
                child.close()
        if args.resume:
            same = check_resume(args, data, orders, tmp)
            print(f"resume: {len(orders) // 2} epoch(s), checkpoint (model + Adam state, "
                  f"fa.save), the rest in a new process: weights "
                  f"{'bit-identical to' if same else 'DIFFER from'} the uninterrupted run")
            if not same:
                return 1
    rows = report(history, captured=args.capture)
    met = history["fastad"][-1]["test_accuracy"] >= TARGET_ACCURACY
    print(f"target: test accuracy >= {TARGET_ACCURACY:.0%}: "
          f"{'met' if met else 'not met' + (' (expected with --quick)' if args.quick else '')}")

    if args.plot:
        plot(args.plot, history)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": {k: v for k, v in vars(args).items() if k != "torch_child"},
                       "torch": child.info if child is not None else None,
                       "summary": rows, "epochs": history}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
