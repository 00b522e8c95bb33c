#!/usr/bin/python3
"""Evaluates an sstc .npz (`sstc export CHECKPOINT --npz FILE`, or a compression
run's model.npz) in PyTorch on the MNIST test set, with the very code
docs/export.md shows (it is read from there, so the documentation is what
runs): every array loaded strictly, out_scale and input.permutation applied.

    /usr/bin/python3 experiments/torch_eval_npz.py FILE.npz

Needs python3-torch and python3-numpy (Debian); reads datasets/mnist/test/
(`sstc data prepare mnist`). Prints the errors and the test error, which match
`sstc eval` of the checkpoint.
"""
import numpy as np, torch, re, sys, zlib, struct, os
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def png_gray(path):
    """An 8-bit grayscale, non-interlaced PNG (what `sstc data prepare mnist` writes)."""
    b = open(path, 'rb').read(); pos = 8; idat = b''; w = h = 0
    while pos < len(b):
        n, t = struct.unpack('>I4s', b[pos:pos+8]); d = b[pos+8:pos+8+n]; pos += 12 + n
        if t == b'IHDR': w, h, bd, ct = struct.unpack('>IIBB', d[:10]); assert bd == 8 and ct == 0
        elif t == b'IDAT': idat += d
    raw = zlib.decompress(idat); out = np.zeros((h, w), np.uint8); prev = np.zeros(w, np.int32)
    for y in range(h):
        f = raw[y*(w+1)]; line = np.frombuffer(raw[y*(w+1)+1:(y+1)*(w+1)], np.uint8).astype(np.int32); cur = np.zeros(w, np.int32)
        for x in range(w):
            a = cur[x-1] if x else 0; c = prev[x-1] if x else 0; up = prev[x]
            if f == 0: p = 0
            elif f == 1: p = a
            elif f == 2: p = up
            elif f == 3: p = (a + up) // 2
            else:
                pa, pb, pc = abs(up - c), abs(a - c), abs(a + up - 2*c); p = a if pa <= pb and pa <= pc else (up if pb <= pc else c)
            cur[x] = (line[x] + p) & 255
        out[y] = cur; prev = cur
    return out
src = open(os.path.join(ROOT, 'docs', 'export.md')).read()
code = re.findall(r"```python\n(.*?)```", src, re.S)[0].replace('"weights.npz"', repr(sys.argv[1]))
g = {}; exec(code, g)
root = os.path.join(ROOT, 'datasets', 'mnist', 'test'); xs = []; ys = []
for c in sorted(os.listdir(root), key=int):
    for f in sorted(os.listdir(os.path.join(root, c))):
        xs.append(png_gray(os.path.join(root, c, f))); ys.append(int(c))
x = torch.from_numpy(np.stack(xs).astype(np.float32) / 255).unsqueeze(1); y = torch.tensor(ys)
with torch.no_grad(): pred = g["forward"](x).argmax(1)
print("errors", int((pred != y).sum()), "of", len(ys), "test error %.2f %%" % (100 * float((pred != y).float().mean())))
