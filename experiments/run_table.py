#!/usr/bin/env python3
"""Runs `sstc run CONFIG` for configs (skipping finished runs) and writes
experiments/results/runs.csv and runs.md from the runs' summary.json files:
one row per run, the float network and the coded one side by side, with the
.sst file's own test error as the engine computes it from the file alone.

    experiments/run_table.py [--collect] [CONFIG ...]   default: configs/mnist_fc.ini

Every figure comes from a run's summary.json (seed, epochs and wall time included).
A config without a [compress] section gives a float-only row.
"""
import argparse
import configparser
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SSTC = os.path.join(ROOT, "build", "sstc")
RESULTS = os.path.join(ROOT, "experiments", "results")
COLUMNS = ["config", "network", "method", "N", "K", "seed", "float_epochs", "float_seconds", "float_test_error",
           "coded_epochs", "coded_seconds", "test_error", "sst_test_error", "test_flip", "bits_per_weight"]


def run_dir(config):
    """Where `sstc run` writes a config's results (its default --out)."""
    cp = configparser.ConfigParser(inline_comment_prefixes=("#", ";"), strict=False)
    with open(os.path.join(ROOT, config)) as f:
        text = f.read()
    # layer sections repeat: keep only the ones this needs
    keep, cur = [], None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("["):
            cur = s.strip("[]").strip()
        if cur in ("experiment", "compress"):
            keep.append(line)
    cp.read_string("\n".join(keep))
    name = cp.get("experiment", "name", fallback=os.path.splitext(os.path.basename(config))[0])
    if not cp.has_section("compress"):
        return name, os.path.join(ROOT, "runs", name), False
    method = cp.get("compress", "method", fallback="sst")
    n, k = (1, 1) if method == "ternary" else (cp.getint("compress", "N", fallback=8), cp.getint("compress", "K", fallback=2))
    return name, os.path.join(ROOT, "runs", "%s-%s-%d-%d" % (name, method, n, k)), True


def load(path):
    with open(path) as f:
        return json.load(f)


def row(config):
    name, out, coded = run_dir(config)
    summary = os.path.join(out, "summary.json")
    if not os.path.exists(summary):
        return None
    s = load(summary)
    f = load(os.path.join(out, "float", "summary.json")) if coded and os.path.exists(
        os.path.join(out, "float", "summary.json")) else (s if not coded else {})
    return {
        "config": config, "network": name, "method": s.get("method"), "N": s.get("N", ""), "K": s.get("K", ""),
        "seed": s["seed"], "float_epochs": f.get("epochs", ""), "float_seconds": f.get("seconds", ""),
        "float_test_error": s.get("float_test_error", f.get("test_error")),
        "coded_epochs": s["epochs"] if coded else "", "coded_seconds": s["seconds"] if coded else "",
        "test_error": s["test_error"] if coded else "", "sst_test_error": s.get("sst_test_error", ""),
        "test_flip": s.get("test_flip", False), "bits_per_weight": s.get("bits_per_weight", 32),
    }


def pct(x):
    return "" if x in ("", None) else "%.2f %%" % (100 * x)


def write(rows):
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "runs.csv"), "w") as f:
        f.write(",".join(COLUMNS) + "\n")
        for r in rows:
            f.write(",".join(str(r[c]) for c in COLUMNS) + "\n")
    md = ["# Whole runs (`sstc run`)", "",
          "Written by `experiments/run_table.py` from the runs' summary.json files. Each row is one",
          "`sstc run CONFIG`: the float network trained from scratch, then coded as the config's",
          "[compress] section says; \"model.sst alone\" is the test error of the `.sst` file run by the",
          "multiplication-free engine from the file alone (`sstc run` checks that it agrees). For a config",
          "without [compress], `sstc run` and `sstc train` make the same run (float only).", "",
          "| config | seed | float (epochs, s) | float error | coded (epochs, s) | coded error | model.sst alone | bits/weight |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append("| `%s` | %s | %s, %s | %s | %s | %s | %s | %s |" % (
            r["config"], r["seed"], r["float_epochs"], r["float_seconds"], pct(r["float_test_error"]),
            ("%s, %s" % (r["coded_epochs"], r["coded_seconds"])) if r["coded_epochs"] != "" else "-",
            pct(r["test_error"]) or "-", pct(r["sst_test_error"]) or "-",
            "%.3f" % r["bits_per_weight"] if r["test_error"] != "" else "32 (float)"))
    md.append("")
    md.append("Errors with `test_flip` in the config are averaged over each test image and its mirror image.")
    with open(os.path.join(RESULTS, "runs.md"), "w") as f:
        f.write("\n".join(md) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collect", action="store_true", help="only collect finished runs, run nothing")
    ap.add_argument("configs", nargs="*", default=["configs/mnist_fc.ini"])
    a = ap.parse_args()
    for c in a.configs:
        if a.collect or row(c) is not None:
            continue
        print("sstc run %s" % c, flush=True)
        r = subprocess.run([SSTC, "run", c], cwd=ROOT)
        if r.returncode != 0:
            print("run_table: sstc run %s failed (exit %d)" % (c, r.returncode), file=sys.stderr)
    rows = [r for r in (row(c) for c in a.configs) if r is not None]
    write(rows)
    print("wrote %s/runs.md (%d rows)" % (os.path.relpath(RESULTS, ROOT), len(rows)))


if __name__ == "__main__":
    main()
