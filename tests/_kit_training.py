"""A small training run with the whole kit (Linear, LayerNorm, Dropout, CrossEntropyLoss,
clip_grad_norm_, Adam, StepLR, a shuffling DataLoader), for tests/test_kit_resume.py and
the child process that resumes it. One generator drives the init, the dropout masks and
the data order, so its saved state is the run's whole randomness."""
import numpy as np

import fastad as fa
from fastad import nn


def data():
    rng = np.random.default_rng(123)
    x = rng.standard_normal((100, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    return x, y


def fresh_run(seed):
    """(model, optimizer, scheduler, loader, rng), all drawing from one generator."""
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(8, 16, rng=rng), nn.LayerNorm(16), nn.ReLU(),
                          nn.Dropout(0.2, rng=rng), nn.Linear(16, 3, rng=rng))
    opt = fa.optim.Adam(model.parameters(), lr=0.02)
    sched = fa.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    loader = fa.data.DataLoader(*data(), batch_size=16, shuffle=True, rng=rng)
    return model, opt, sched, loader, rng


def train(run, epochs):
    model, opt, sched, loader, _ = run
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
        sched.step()


def checkpoint(path, run, epoch):
    model, opt, sched, _, rng = run
    fa.save(path, {"model": model.state_dict(), "optim": opt.state_dict(),
                   "sched": sched.state_dict(), "rng": rng.bit_generator.state,
                   "epoch": epoch})


def resume(path, epochs, out):
    """Load `path` into a fresh run (another seed), train up to `epochs` and save the
    model's weights to `out`."""
    run = fresh_run(seed=999)
    model, opt, sched, _, rng = run
    saved = fa.load(path)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optim"])
    sched.load_state_dict(saved["sched"])
    rng.bit_generator.state = saved["rng"]
    train(run, epochs - saved["epoch"])
    fa.save(out, model.state_dict())
