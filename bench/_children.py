"""Child processes: PyTorch never runs in a bench's own process (its OpenMP threads and
OpenBLAS's spin-wait against each other), so `TorchChild` starts bench/_torch_ref.py and
talks to it over a pipe; `run_child_json` runs a Python child and reads its JSON."""

import json
import os
import subprocess
import sys

from _machine import torch_available


BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


REPO_DIR = os.path.dirname(BENCH_DIR)


TORCH_REF = os.path.join(BENCH_DIR, "_torch_ref.py")


def child_env():
    """The environment for a child: bench/ importable, and no empty PYTHONPATH entry
    (an empty entry means the working directory, the repo root, whose uncompiled
    fastad/ would shadow the installed package)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (BENCH_DIR, env.get("PYTHONPATH")) if p)
    return env


def run_child_json(args, timeout=900):
    """Run `python args...` (from the repo root) and return the JSON of its last stdout line."""
    proc = subprocess.run([sys.executable] + list(args), cwd=REPO_DIR, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return json.loads(lines[-1])


class TorchChild:
    """A PyTorch process serving timing requests over a pipe (see _torch_ref.py).

    Usage: child = TorchChild("seed", sizes=[...], batch=128, ...); child.time(5) ->
    list of seconds per step; child.close(). Between requests the child blocks on its
    stdin, so its threads sleep while this process measures.
    """

    def __init__(self, bench, threads=None, **config):
        cmd = [sys.executable, TORCH_REF]
        self.proc = subprocess.Popen(cmd, cwd=REPO_DIR, env=child_env(), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=1)
        self.info = self.request({"op": "setup", "bench": bench, "threads": threads,
                                  "config": config})

    def request(self, message):
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            err = self.proc.stderr.read()
            raise RuntimeError(f"PyTorch child died:\n{err[-3000:]}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"PyTorch child: {reply['error']}")
        return reply

    def time(self, n, warmup=0):
        """Time n steps (after `warmup` untimed ones); returns the list of seconds."""
        return self.request({"op": "time", "n": n, "warmup": warmup})["times"]

    def set(self, **config):
        return self.request({"op": "set", "config": config})

    def close(self):
        if self.proc.poll() is None:
            try:
                self.request({"op": "quit"})
            except (RuntimeError, ValueError, OSError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def maybe_torch(args, bench, **config):
    """A started TorchChild, or None (with the reason printed) if PyTorch is unavailable."""
    if args.no_torch:
        print("PyTorch: skipped (--no-torch)")
        return None
    if not torch_available():
        print("PyTorch: not installed, comparison skipped")
        return None
    try:
        return TorchChild(bench, threads=args.threads, **config)
    except (RuntimeError, OSError) as e:
        print(f"PyTorch: child failed to start, comparison skipped: {e}")
        return None
