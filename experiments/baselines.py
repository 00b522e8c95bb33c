#!/usr/bin/env python3
"""Trains the float baselines from configs/ (skipping finished runs) and writes
experiments/results/baselines.csv and baselines.md from their summary.json.

    experiments/baselines.py [--collect] [NAME ...]     NAME: mnist_fc fashion_fc cifar10_cnn
                                                        cifar10_cnn_small cifar10_resnet20

Every figure comes from a run's summary.json (seed, epochs and wall time included).
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SSTC = os.path.join(ROOT, "build", "sstc")
RESULTS = os.path.join(ROOT, "experiments", "results")
HEADER = ("dataset,method,N,K,normalize,schedule,layers,seed,bits_per_weight,compression,"
          "test_error,float_test_error,epochs,seconds")
BASELINES = {  # name -> (config, dataset to prepare, target test error or None)
    "mnist_fc": ("configs/mnist_fc.ini", "mnist", 0.012),
    "fashion_fc": ("configs/fashion_fc.ini", "fashion-mnist", None),
    "cifar10_cnn": ("configs/cifar10_cnn.ini", "cifar10", 0.12),
    "cifar10_cnn_small": ("configs/cifar10_cnn_small.ini", "cifar10", None),
    "cifar10_resnet20": ("configs/cifar10_resnet20.ini", "cifar10", 0.09),
}


def flip_error(n):
    """Test error of run n's final checkpoint with flip averaging (sstc eval --flip), cached next to it."""
    run = os.path.join(ROOT, "runs", n)
    cache = os.path.join(run, "eval_flip.txt")
    if not os.path.exists(cache):
        r = subprocess.run([SSTC, "eval", os.path.join(run, "checkpoint.sstc"), "--flip"], cwd=ROOT,
                           capture_output=True, text=True)
        if r.returncode != 0:
            print("sstc eval --flip failed for %s: %s" % (n, r.stderr.strip()), file=sys.stderr)
            return None
        with open(cache, "w") as f:
            f.write(r.stdout)
    with open(cache) as f:
        for tok in f.read().split():
            if tok.startswith("test_error="):
                return float(tok.split("=", 1)[1])
    return None


def config_sets_test_flip(n):
    """Whether baseline n's config sets [data] test_flip = true (its run then evaluated with flips)."""
    section = None
    for line in open(os.path.join(ROOT, BASELINES[n][0])):
        line = line.split("#")[0].split(";")[0].strip()
        if line.startswith("["):
            section = line.strip("[]").strip()
        elif section == "data" and "=" in line:
            k, v = (t.strip() for t in line.split("=", 1))
            if k == "test_flip":
                return v.lower() in ("true", "1", "yes", "on")
    return False


def flip_note(names):
    flipped = ["`%s`" % BASELINES[n][0] for n in names if BASELINES[n][1] == "cifar10" and config_sets_test_flip(n)]
    if not flipped:
        return "The runs themselves evaluated without it."
    return ("%s set%s `[data] test_flip = true`: %s run evaluated with it already (the two columns agree); "
            "the other runs evaluated without it." % (", ".join(flipped), "s" if len(flipped) == 1 else "",
                                                      "its" if len(flipped) == 1 else "their"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="baselines to run (default: all)")
    ap.add_argument("--collect", action="store_true", help="only collect finished runs")
    a = ap.parse_args()
    names = a.names or list(BASELINES)
    for n in names:
        if n not in BASELINES:
            sys.exit("unknown baseline %s; known: %s" % (n, " ".join(BASELINES)))
    if not a.collect:
        if not os.path.exists(SSTC):
            subprocess.run(["make", "-C", ROOT, "-j2", "all"], check=True)
        for n in names:
            cfg, data, _ = BASELINES[n]
            out = os.path.join(ROOT, "runs", n)
            if os.path.exists(os.path.join(out, "summary.json")):
                continue
            subprocess.run([SSTC, "data", "prepare", data], check=True, cwd=ROOT)
            cmd = [SSTC, "train", cfg, "--out", out]
            if os.path.exists(os.path.join(out, "checkpoint.sstc")):
                cmd.append("--resume")
            subprocess.run(cmd, check=True, cwd=ROOT)
    rows = []
    for n in BASELINES:
        p = os.path.join(ROOT, "runs", n, "summary.json")
        if os.path.exists(p):
            with open(p) as f:
                rows.append((n, json.load(f)))
    flips = {n: flip_error(n) for n, s in rows if s["dataset"] == "cifar10"}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "baselines.csv"), "w") as f:
        f.write(HEADER + "\n")
        for n, s in rows:
            f.write("%s,float,,,,,all,%d,32,1,%.6f,%.6f,%d,%.1f\n" % (
                s["dataset"], s["seed"], s["test_error"], s["test_error"], s["epochs"], s["seconds"]))
    md = ["# Float baselines", "",
          "Written by `experiments/baselines.py` from the runs' summary.json files "
          "(`sstc train CONFIG`, 2 threads).", "",
          "| config | dataset | test error | target | seed | epochs | wall time | test error, flip-averaged |",
          "|---|---|---|---|---|---|---|---|"]
    for n, s in rows:
        tgt = BASELINES[n][2]
        fe = flips.get(n)
        md.append("| `%s` | %s | %.2f %% | %s | %d | %d | %.0f s | %s |" % (
            BASELINES[n][0], s["dataset"], 100 * s["test_error"],
            ("<= %.2f %% (%s)" % (100 * tgt, "met" if s["test_error"] <= tgt else "not met")) if tgt else "-",
            s["seed"], s["epochs"], s["seconds"], "%.2f %%" % (100 * fe) if fe is not None else "-"))
    missing = [n for n in BASELINES if n not in dict(rows)]
    if missing:
        md += ["", "Not run yet: " + ", ".join("`%s`" % BASELINES[n][0] for n in missing) + "."]
    md += ["", "CIFAR-10 figures are on the mirror's JPEG re-encoding of the images (quality 75), "
           "which is slightly lossy: close to, but not the same as, results on the original binary batches.",
           "", "The last column (CIFAR-10 only) is the same final network evaluated with test-time flip "
           "averaging (`sstc eval runs/NAME/checkpoint.sstc --flip`: the class probabilities of each test "
           "image and its mirror image averaged). " + flip_note(n for n, _ in rows)]
    with open(os.path.join(RESULTS, "baselines.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("wrote", os.path.join(RESULTS, "baselines.md"))


if __name__ == "__main__":
    main()
