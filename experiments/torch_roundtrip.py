#!/usr/bin/python3
"""PyTorch -> sstc -> PyTorch: trains the MNIST MLP of configs/mnist_fc.ini in
PyTorch, saves it with the names docs/export.md gives (running that page's own
code), brings it in with `sstc import`, codes it with `sstc compress` ((8,2),
the config's [compress] section), and evaluates the decoded weights the
compression exports (model.npz) back in PyTorch, again with docs/export.md's
code. Prints the test error at each step:

    /usr/bin/python3 experiments/torch_roundtrip.py [--epochs 3] [--out runs/torch_roundtrip]

Needs python3-torch, python3-numpy, python3-pil (Debian), build/sstc (`make`)
and the MNIST images (`build/sstc data prepare mnist`). The PyTorch training is
short (default 3 epochs, no augmentation): the point is the round trip, not
the float figure.
"""
import argparse, json, os, subprocess, sys, time
import numpy as np, torch, torch.nn as nn
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_torch import ROOT, load_mnist, export_md_block

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--epochs", type=int, default=3)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--out", default="runs/torch_roundtrip")
a = ap.parse_args()
os.chdir(ROOT)
os.makedirs(a.out, exist_ok=True)
SSTC = os.path.join(ROOT, "build", "sstc")
torch.manual_seed(a.seed)
torch.set_num_threads(2)

xtr, ytr = load_mnist("train"); xte, yte = load_mnist("test")
mean, std = 0.1307, 0.3081  # what docs/export.md's saving code records as input.mean/std
norm = lambda x: (torch.from_numpy(x) - mean) / std
# the layer positions docs/export.md's saving code expects (fc1 at 1, bn1 at 2, ...)
net = nn.Sequential(nn.Flatten(), nn.Linear(784, 1024, bias=False), nn.BatchNorm1d(1024), nn.ReLU(),
                    nn.Linear(1024, 1024, bias=False), nn.BatchNorm1d(1024), nn.ReLU(),
                    nn.Linear(1024, 1024, bias=False), nn.BatchNorm1d(1024), nn.ReLU(), nn.Linear(1024, 10))
opt = torch.optim.Adam(net.parameters(), 1e-3)


def error(f, x, y):
    with torch.no_grad():
        return float((f(x).argmax(1) != torch.from_numpy(y)).float().mean())


t0 = time.time()
X, Y = norm(xtr), torch.from_numpy(ytr)
for e in range(a.epochs):
    net.train()
    for idx in torch.randperm(len(X)).split(100):
        opt.zero_grad()
        nn.functional.cross_entropy(net(X[idx]), Y[idx]).backward()
        opt.step()
    net.eval()
    print("pytorch epoch %d/%d: test error %.2f %%" % (e + 1, a.epochs, 100 * error(net, norm(xte), yte)), flush=True)
torch_err = error(net, norm(xte), yte)
train_s = time.time() - t0

# save with docs/export.md's own code
npz = os.path.join(a.out, "torch.npz")
exec(export_md_block(1).replace('"torch.npz"', repr(npz)), {"net": net, "np": np})


def sh(*cmd):
    print("$", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    if r.returncode:
        sys.stderr.write(r.stderr)
        raise SystemExit("%s failed (exit %d)" % (cmd[1], r.returncode))
    return r.stdout


ckpt = os.path.join(a.out, "torch.sstc")
sh(SSTC, "import", "configs/mnist_fc.ini", npz, "--out", ckpt)
ev = sh(SSTC, "eval", ckpt)
coded = os.path.join(a.out, "coded")
sh(SSTC, "compress", "configs/mnist_fc.ini", "--from", ckpt, "--out", coded, "--quiet")
summ = json.load(open(os.path.join(coded, "summary.json")))

# the decoded (8,2) weights back in PyTorch, with docs/export.md's loading code
g = {}
exec(export_md_block(0).replace('"weights.npz"', repr(os.path.join(coded, "model.npz"))), g)
back_err = error(lambda x: g["forward"](torch.from_numpy(x)), xte, yte)

print()
print("| step | where evaluated | test error |")
print("|---|---|---|")
print("| float, trained in PyTorch (%d epochs, %.0f s) | PyTorch | %.2f %% |" % (a.epochs, train_s, 100 * torch_err))
fields = dict(kv.split("=", 1) for kv in ev.split() if "=" in kv)
print("| imported (`sstc import`) | sstc eval | %.2f %% |" % (100 * float(fields["test_error"])))
print("| coded (8,2) by `sstc compress` (%d epochs, %.0f s) | sstc | %.2f %% |" % (summ["epochs"], summ["seconds"], 100 * summ["test_error"]))
print("| coded, its model.npz | PyTorch | %.2f %% |" % (100 * back_err))
