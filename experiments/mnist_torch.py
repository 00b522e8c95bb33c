"""Shared by the PyTorch scripts of experiments/: the MNIST images that
`sstc data prepare mnist` writes (datasets/mnist/{train,test}/<class>/*.png),
read with Pillow (python3-pil), and the Python code blocks of docs/export.md,
which the scripts run as they stand (so the documentation is what runs)."""
import os, re
import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_mnist(split):
    """(images (n,1,28,28) float32 in [0,1], labels (n,) int64) of one split."""
    root = os.path.join(ROOT, "datasets", "mnist", split)
    if not os.path.isdir(root):
        raise SystemExit("%s: not found; run `build/sstc data prepare mnist` first" % root)
    xs, ys = [], []
    for c in sorted(os.listdir(root), key=int):
        for f in sorted(os.listdir(os.path.join(root, c))):
            with Image.open(os.path.join(root, c, f)) as im:
                xs.append(np.asarray(im.convert("L"), np.uint8))
            ys.append(int(c))
    x = np.stack(xs).astype(np.float32)[:, None] / 255
    return x, np.array(ys, np.int64)


def export_md_block(i):
    """The i-th ```python block of docs/export.md."""
    src = open(os.path.join(ROOT, "docs", "export.md")).read()
    return re.findall(r"```python\n(.*?)```", src, re.S)[i]
