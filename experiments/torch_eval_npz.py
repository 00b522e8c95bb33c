#!/usr/bin/python3
"""Evaluates an sstc .npz (`sstc export CHECKPOINT --npz FILE`, or a compression
run's model.npz) in PyTorch on the MNIST test set, with the very code
docs/export.md shows (it is read from there, so the documentation is what
runs): every array loaded strictly, out_scale and input.permutation applied.

    /usr/bin/python3 experiments/torch_eval_npz.py FILE.npz

Needs python3-torch, python3-numpy and python3-pil (Debian); reads datasets/mnist/test/
(`sstc data prepare mnist`). Prints the errors and the test error, which match
`sstc eval` of the checkpoint.
"""
import sys, torch
sys.path.insert(0, __import__("os").path.dirname(__file__))
from mnist_torch import load_mnist, export_md_block

code = export_md_block(0).replace('"weights.npz"', repr(sys.argv[1]))
g = {}; exec(code, g)
x, y = load_mnist("test"); x = torch.from_numpy(x); y = torch.from_numpy(y); ys = y
with torch.no_grad(): pred = g["forward"](x).argmax(1)
print("errors", int((pred != y).sum()), "of", len(ys), "test error %.2f %%" % (100 * float((pred != y).float().mean())))
