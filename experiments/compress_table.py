#!/usr/bin/env python3
"""Runs a compression sweep from the experiment configs and writes its table.

    experiments/compress_table.py mnist [--only PATTERN] [--list] [--threads N]

For each run of the table (method, N, K, normalization, schedule, seed) it calls
`build/sstc compress CONFIG --from FLOAT --out runs/tables/<table>/<run>` with
--set overrides, skipping runs whose summary.json already exists. The float
network is trained once per dataset (runs/<float run>/, skipped if present).
Then it collects every summary.json of the table (and the float run's) into
experiments/results/<table>.csv (one row per run) and <table>.md, and draws
experiments/results/<table>_error_vs_bits.png with gnuplot when available.
Every figure comes from a run's summary.json; nothing is typed in.
"""
import argparse
import array
import ast
import fnmatch
import json
import os
import shlex
import signal
import shutil
import subprocess
import sys
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# SSTC_BIN: another build of sstc to run (a pinned build, say, while the
# working tree changes under a long sweep)
SSTC = os.environ.get("SSTC_BIN") or os.path.join(ROOT, "build", "sstc")
RESULTS = os.path.join(ROOT, "experiments", "results")
# config: which network (the CIFAR-10 tables code two networks, and ResNet-20);
# test_flip: whether test_error averages each image with its mirror image, in which
# case test_error_single is the single-view figure (empty otherwise)
HEADER = ("config,dataset,method,N,K,normalize,schedule,layers,seed,bits_per_weight,compression,"
          "test_error,float_test_error,epochs,seconds,test_flip,test_error_single,distill,delta,run")

# Gradual pruning schedules: strictly decreasing, ending at K.
SCHEDULES = {(4, 1): "2,1", (8, 1): "4,2,1", (8, 2): "4,3,2", (8, 3): "6,4,3",
             (16, 2): "8,4,2", (16, 4): "12,8,4"}
CODES = [(4, 1), (8, 1), (8, 2), (8, 3), (16, 2), (16, 4)]
VARIANTS = {  # column -> (normalize, gradual)
    "direct": ("none", False),
    "+norm": ("row", False),
    "+gradual": ("none", True),
    "+both": ("row", True),
    # beyond the paper: fan-in interleaving (docs/method.md section 8.1)
    "+interleave": ("interleave", False),
    "+both+interleave": ("row+interleave", True),
}
BASE_VARIANTS = ("direct", "+norm", "+gradual", "+both")
STAGE_EPOCHS = 1
RETRAIN_EPOCHS = 3


def run_spec(method, N, K, variant, seed, layers="all", stage_epochs=STAGE_EPOCHS, retrain_epochs=RETRAIN_EPOCHS):
    norm, gradual = VARIANTS[variant]
    sched = SCHEDULES.get((N, K), "") if gradual else ""
    # direct runs retrain for as many epochs as the gradual run of this code
    # spends in its pruning stages plus its final retraining
    # (plain ternary has no schedule: it gets the budget of the (8,2) runs)
    stages = len(SCHEDULES.get((N, K), SCHEDULES[(8, 2)]).split(","))
    retrain = retrain_epochs + (0 if gradual else stages * stage_epochs)
    name = "%s_%d_%d_%s_%s_s%d" % (method, N, K, norm, sched.replace(",", "-") if sched else "direct", seed)
    if layers != "all":
        name += "_" + layers.replace(",", "-")
    sets = ["compress.method=%s" % method, "compress.N=%d" % N, "compress.K=%d" % K,
            "compress.normalize=%s" % norm, "compress.stage_epochs=%d" % stage_epochs,
            "compress.retrain_epochs=%d" % retrain, "compress.layers=%s" % layers,
            "experiment.seed=%d" % seed]
    sets.append("compress.schedule=%s" % (sched or "direct"))
    return {"name": name, "sets": sets, "variant": variant, "method": method, "N": N, "K": K,
            "layers": layers}


def table_mnist():
    # In order of importance, so that an interrupted sweep has the main cells.
    runs = [run_spec("sst", 8, 2, v, 1) for v in BASE_VARIANTS]
    runs += [run_spec("ternary", 1, 1, v, 1) for v in ("direct", "+norm")]
    runs += [run_spec("sst", N, K, "+both", 1) for N, K in CODES if (N, K) != (8, 2)]
    runs += [run_spec("nm", 8, 2, "+gradual", 1)]
    runs += [run_spec("sst", 8, 2, "+both", seed) for seed in (2, 3)]
    runs += [run_spec("sst", N, K, "direct", 1) for N, K in CODES if (N, K) != (8, 2)]
    runs += [run_spec("sst", N, K, v, 1) for N, K in CODES if (N, K) != (8, 2) for v in ("+norm", "+gradual")]
    runs += [run_spec("nm", N, K, "+gradual", 1) for N, K in CODES if (N, K) != (8, 2)]
    runs += [run_spec("sst", 8, 2, v, 1) for v in ("+interleave", "+both+interleave")]
    return {"config": "configs/mnist_fc.ini", "float_run": "runs/mnist_fc", "runs": runs,
            "stage_epochs": STAGE_EPOCHS, "retrain_epochs": RETRAIN_EPOCHS}


def table_mnist_ablation():
    # The ablation of the two techniques over three seeds of the retraining (the
    # float network is the same): direct / +norm / +gradual / +both for (8,2).
    # Its runs live beside the mnist table's (same names, same settings), so
    # either table reuses the other's finished runs.
    runs = [run_spec("sst", 8, 2, v, seed) for seed in (1, 2, 3) for v in BASE_VARIANTS]
    return {"config": "configs/mnist_fc.ini", "float_run": "runs/mnist_fc", "runs": runs, "runs_dir": "mnist",
            "stage_epochs": STAGE_EPOCHS, "retrain_epochs": RETRAIN_EPOCHS, "ablation": True}


def table_fashion():
    runs = [run_spec("sst", 8, 2, v, 1) for v in BASE_VARIANTS]
    runs += [run_spec("ternary", 1, 1, "+norm", 1)]
    runs += [run_spec("sst", N, K, "+both", 1) for N, K in ((4, 1), (16, 2), (16, 4))]
    runs += [run_spec("ternary", 1, 1, "direct", 1), run_spec("nm", 8, 2, "+gradual", 1)]
    return {"config": "configs/fashion_fc.ini", "float_run": "runs/fashion_fc", "runs": runs,
            "stage_epochs": STAGE_EPOCHS, "retrain_epochs": RETRAIN_EPOCHS}


def table_cifar10():
    # A CIFAR-10 epoch costs ~3 minutes here: one epoch per pruning stage and two
    # epochs of final retraining (direct runs: five epochs of retraining).
    st, rt = 1, 2
    spec = lambda *a, **k: run_spec(*a, **dict(dict(stage_epochs=st, retrain_epochs=rt), **k))
    runs = [spec("sst", 8, 2, "+both", 1, layers="fc"), spec("sst", 8, 2, "+both", 1),
            spec("sst", 8, 2, "direct", 1, layers="fc"), spec("sst", 8, 2, "direct", 1),
            spec("ternary", 1, 1, "+norm", 1),
            spec("sst", 8, 2, "+norm", 1), spec("sst", 8, 2, "+gradual", 1),
            spec("sst", 8, 2, "+norm", 1, layers="fc"), spec("sst", 8, 2, "+gradual", 1, layers="fc"),
            spec("ternary", 1, 1, "direct", 1)]
    # Levers beyond the paper (docs/method.md section 8.4) for the all-layer target, each its own row.
    longer = lever(spec("sst", 8, 2, "+both", 1, retrain_epochs=6), "_r6",
                   "6 epochs of final retraining instead of 2", [])
    skip = lever(spec("sst", 8, 2, "+both", 1), "_skipfirst",
                 "first layer (conv1, 864 weights) kept in float", ["compress.skip_first=true"])
    # the matching control: direct coding with the same 9 epochs, all quantized
    longer_direct = lever(spec("sst", 8, 2, "direct", 1, retrain_epochs=6), "_r6",
                          "9 epochs of retraining instead of 5 (as long as the run above)", [])
    runs = runs[:2] + [longer, skip] + runs[2:] + [longer_direct]
    targets = [("(8,2) on the FC layers, both techniques", runs[0]["name"], 0.005),
               ("(8,2) on all layers, both techniques", runs[1]["name"], 0.02),
               ("(8,2) on all layers, both techniques, " + longer["lever"], longer["name"], 0.02),
               ("(8,2) on all layers but the first, both techniques", skip["name"], 0.02),
               ("(8,2) on all layers, normalization only (short budget)", "sst_8_2_row_direct_s1", 0.02)]
    return {"config": "configs/cifar10_cnn_small.ini", "float_run": "runs/cifar10_cnn_small", "runs": runs,
            "stage_epochs": st, "retrain_epochs": rt, "hist_layer": "fc1", "targets": targets, "csv": "cifar10"}


def table_cifar10_cnn():
    # The 11.48 % network (configs/cifar10_cnn.ini, 20 float epochs). Its [compress]
    # budget: one epoch per pruning stage, three of final retraining (6 epochs).
    st, rt = 1, 3
    spec = lambda *a, **k: run_spec(*a, **dict(dict(stage_epochs=st, retrain_epochs=rt), **k))
    fc = spec("sst", 8, 2, "+both", 1, layers="fc")
    base = spec("sst", 8, 2, "+both", 1)
    # The levers for the all-layer target, each its own row; the longest budget
    # is 2 epochs per stage + 12 of final retraining = 18 epochs (at most 20).
    long_ = lambda seed: spec("sst", 8, 2, "+both", seed, stage_epochs=2, retrain_epochs=12)
    distill = ["compress.distill=0.5", "compress.distill_temperature=4"]
    headline = [lever(long_(s), "_r12_d05", "2 epochs per stage, 12 of final retraining, distillation "
                      "from the float network (weight 0.5, temperature 4)", distill) for s in (1, 2, 3)]
    longer = lever(long_(1), "_r12", "2 epochs per stage, 12 of final retraining", [])
    short_distill = lever(spec("sst", 8, 2, "+both", 1), "_d05", "distillation (weight 0.5, temperature 4)",
                          distill)
    fc_distill = lever(fc, "_d05", "distillation (weight 0.5, temperature 4)", distill)
    skip = lever(long_(1), "_r12_d05_skipfirst", "as the headline row, first convolution (1,728 weights) kept "
                 "in float", distill + ["compress.skip_first=true"])
    constant = lever(long_(1), "_r12_d05_const", "as the headline row, constant retraining learning rate "
                     "instead of cosine", distill + ["compress.retrain_schedule=constant"])
    # one step size per row (docs/method.md section 2): the short budget, then the long one
    row = ["compress.delta=row"]
    short_row = lever(base, "_drow", "one step size per row (delta = row)", row)
    row_long = [lever(long_(s), "_r12_drow", "2 epochs per stage, 12 of final retraining, one step size per row "
                      "(delta = row)", row) for s in (1, 2, 3)]
    runs = [headline[0], fc, fc_distill, base, short_row] + row_long + [longer, short_distill] + headline[1:] + [
        skip, constant, spec("sst", 8, 2, "direct", 1), spec("sst", 8, 2, "+norm", 1),
        spec("sst", 8, 2, "+gradual", 1)]
    targets = [("(8,2) on the FC layers, both techniques", fc["name"], 0.002),
               ("(8,2) on the FC layers, both techniques, distillation", fc_distill["name"], 0.002),
               ("(8,2) on all layers, both techniques (short budget)", base["name"], 0.01)]
    targets += [("(8,2) on all layers, " + h["lever"] + ", seed %d" % (i + 1), h["name"], 0.01)
                for i, h in enumerate(headline)]
    targets.append(("(8,2) on all layers, the headline row, mean over seeds", [h["name"] for h in headline], 0.01))
    targets.append(("(8,2) on all layers, one step size per row (short budget)", short_row["name"], 0.01))
    targets.append(("(8,2) on all layers, " + row_long[0]["lever"] + ", mean over seeds",
                    [h["name"] for h in row_long], 0.01))
    notes = ["Runs whose summary.json is older than the change that keeps the trained delta for the final "
             "codes (docs/method.md section 5) refitted delta after their last epoch, with no retraining after "
             "it: for them `test error` is well above `last epoch`. Delete such a run's folder and run the "
             "table again to redo it with the current build."]
    return {"config": "configs/cifar10_cnn.ini", "float_run": "runs/cifar10_cnn", "runs": runs,
            "stage_epochs": st, "retrain_epochs": rt, "hist_layer": "fc1", "targets": targets, "csv": "cifar10",
            "notes": notes}


def last_epoch_error(run_dir):
    """The test error of the last row of a run's metrics.csv, or None."""
    try:
        with open(os.path.join(run_dir, "metrics.csv")) as f:
            lines = [l for l in f.read().splitlines() if l]
        head = lines[0].split(",")
        return float(lines[-1].split(",")[head.index("test_error")]) if len(lines) > 1 else None
    except (OSError, ValueError, IndexError):
        return None


def lever(r, suffix, what, sets):
    """A run that changes one setting beyond the table's columns: listed on its own."""
    return dict(r, name=r["name"] + suffix, sets=r["sets"] + sets, lever=what)


TABLES = {"mnist": table_mnist, "mnist_ablation": table_mnist_ablation, "fashion": table_fashion, "cifar10": table_cifar10,
          "cifar10_cnn": table_cifar10_cnn}


def sh(cmd, log, fatal=True):
    print("$ " + " ".join(cmd), flush=True)
    with open(log, "a") as f:
        r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        msg = "failed (%d), see %s" % (r.returncode, log)
        if fatal:
            sys.exit(msg)
        print("  " + msg, flush=True)
    return r.returncode


def load(path):
    with open(path) as f:
        return json.load(f)


def run_key(line):
    """The settings of a CSV row that tell runs apart: method, N, K,
    normalization, schedule, layers, seed, epochs, distillation, step size
    (one per layer or per row)."""
    c = line.split(",")
    return tuple(c[i] for i in (2, 3, 4, 5, 6, 7, 8, 13)) + (
        c[17] if len(c) > 17 and c[17] else "0", c[18] if len(c) > 18 and c[18] else "layer")


def run_name(line):
    """The run folder's name of a CSV row ('' in rows written before the column)."""
    c = line.split(",")
    return c[19] if len(c) > 19 else ""


def same_run(a, b):
    """Two CSV rows describe the same run: same settings and, where both rows
    name their run (levers such as skip_first change no other column), the same name."""
    return run_key(a) == run_key(b) and (not run_name(a) or not run_name(b) or run_name(a) == run_name(b))


def write_results(table, spec, rows, float_summary):
    os.makedirs(RESULTS, exist_ok=True)
    # Tables that share a CSV (the CIFAR-10 networks) keep each other's rows:
    # the rows of other configs are carried over, this table's are rewritten.
    csv_path = os.path.join(RESULTS, spec.get("csv", table) + ".csv")
    kept, earlier = [], []
    if os.path.exists(csv_path):
        with open(csv_path) as f:
            lines = f.read().splitlines()
        old_header = HEADER.rsplit(",", 2)[0]  # before the delta and run columns
        if lines and lines[0] == old_header:
            lines = [HEADER] + [l + ",," for l in lines[1:] if l]
        if lines and lines[0] == HEADER:
            kept = [l for l in lines[1:] if l and l.split(",", 1)[0] != spec["config"]]
            earlier = [l for l in lines[1:] if l and l.split(",", 1)[0] == spec["config"] and l.split(",")[2] != "float"]
        elif lines and lines[0].startswith("dataset,") and spec.get("csv", table) in TABLES:
            # a CSV from before the config column: its rows came from the table
            # of that name, which had no flip averaging and no distillation
            owner = TABLES[spec.get("csv", table)]()["config"]
            if owner != spec["config"]:
                kept = ["%s,%s,0,,0" % (owner, l) for l in lines[1:] if l]
    with open(csv_path + ".tmp", "w") as f:
        f.write(HEADER + "\n")
        for l in kept:
            f.write(l + "\n")
        fs = float_summary
        def flip(s):
            single = s.get("test_error_single")
            return "%d,%s" % (1 if s.get("test_flip") else 0, "%.6f" % single if single is not None else "")
        f.write("%s,%s,float,,,,,,%d,32,1,%.6f,%.6f,%d,%.1f,%s,,,%s\n" % (
            spec["config"], fs["dataset"], fs["seed"], fs["test_error"], fs["test_error"], fs["epochs"], fs["seconds"],
            flip(fs), os.path.basename(os.path.normpath(spec["float_run"]))))
        mine = []
        for r in rows:
            s = r["summary"]
            # summaries written before the "delta" field: the run's own settings tell
            delta = s.get("delta") or ("row" if "compress.delta=row" in r.get("sets", []) else "layer")
            mine.append("%s,%s,%s,%d,%d,%s,%s,%s,%d,%.4f,%.2f,%.6f,%.6f,%d,%.1f,%s,%g,%s,%s" % (
                spec["config"], s["dataset"], s["method"], s["N"], s["K"], s["normalize"], s["schedule"],
                s["layers"].replace(",", " "), s["seed"], s["bits_per_weight"], s["compression"],
                s["test_error"], s["float_test_error"], s["epochs"], s["seconds"], flip(s), s.get("distill", 0),
                delta, r["name"]))
        # Rows of runs whose folders are not here (made on another machine, or
        # removed) are carried over unless a run here has the same settings.
        carried = [l for l in earlier if not any(same_run(l, m) for m in mine)]
        for l in mine + carried:
            f.write(l + "\n")
    os.replace(csv_path + ".tmp", csv_path)
    md = [f"# {table}: structured sparse ternary coding", "",
          "Written by `experiments/compress_table.py %s` from the runs' summary.json files." % table,
          "Test error in %; every coded network codes all weight layers unless stated.", ""]
    md.append("Float network (`%s`): test error %.2f %% (seed %d, %d epochs, %.0f s)." % (
        spec["config"], 100 * float_summary["test_error"], float_summary["seed"], float_summary["epochs"],
        float_summary["seconds"]))
    if float_summary.get("test_flip"):
        md.append("")
        md.append("Its config asks for test-time flip averaging (`[data] test_flip`): every test error in this "
                  "table, float and coded, averages the class probabilities of each test image and its mirror "
                  "image, and coded figures are compared with the flip-averaged float figure. The one-view "
                  "figures are in the run list below and in the CSV (`test_error_single`; float: %.2f %%); the "
                  "coded networks' `model.sst` files record the averaging, so `sstc infer` of the file alone "
                  "reproduces the flip-averaged figure." % (100 * float_summary.get("test_error_single", float("nan"))))
    md.append("")
    by = {}
    for r in rows:
        if r.get("lever"):
            continue
        s = r["summary"]
        by.setdefault((s["method"], s["N"], s["K"], r["layers"]), {}).setdefault(r["variant"], []).append(s)
    cols = list(BASE_VARIANTS) + [v for v in VARIANTS if v not in BASE_VARIANTS and
                                  any(r["variant"] == v for r in rows)]
    md.append("| code | bits/weight | compression | " + " | ".join(cols) + " |")
    md.append("|---|---|---|" + "---|" * len(cols))
    order = [("ternary", 1, 1)] + [("sst", N, K) for N, K in CODES] + [("nm", N, K) for N, K in CODES]
    layer_sets = sorted({k[3] for k in by}, key=lambda l: (l != "fc", l))
    for key in [o + (l,) for o in order for l in layer_sets]:
        if key not in by:
            continue
        method, N, K, layers = key
        cells = by[key]
        any_s = next(iter(cells.values()))[0]
        label = {"ternary": "plain ternary", "sst": "(%d,%d)" % (N, K), "nm": "float %d:%d sparse" % (K, N)}[method]
        if len(layer_sets) > 1 or layers != "all":
            label += {"all": ", all layers", "fc": ", FC layers only", "conv": ", conv layers only"}.get(
                layers, ", layers " + layers)
        vals = []
        for c in cols:
            ss = cells.get(c)
            if not ss:
                planned = any(r["variant"] == c and not r.get("lever") and
                              (r["method"], r["N"], r["K"], r["layers"]) == key for r in spec["runs"])
                vals.append("not run" if planned else "-")
            elif len(ss) == 1:
                vals.append("%.2f" % (100 * ss[0]["test_error"]))
            else:
                e = [100 * x["test_error"] for x in ss]
                m = sum(e) / len(e)
                sd = (sum((x - m) ** 2 for x in e) / (len(e) - 1)) ** 0.5
                vals.append("%.2f ± %.2f (%d seeds)" % (m, sd, len(e)))
        md.append("| %s | %.3f | x%.1f | %s |" % (label, any_s["bits_per_weight"], any_s["compression"], " | ".join(vals)))
    md.append("")
    md.append("Columns: `direct` = one jump to the code, then retraining; `+norm` = row (output-neuron) "
              "weight normalization first; `+gradual` = staged pruning (schedules below) before "
              "ternarization; `+both` = both. Direct runs retrain for as many epochs as the gradual "
              "runs spend in pruning stages plus final retraining. For `nm` (float N:M sparsity, "
              "no ternarization) the column is gradual pruning without normalization; '-' marks cells "
              "that are not part of the sweep (plain ternary has no groups to prune gradually)." +
              (" `+interleave` (beyond the paper) renumbers the inputs of each coded layer so that "
               "every group mixes strong and weak inputs (docs/config.md, `normalize`); "
               "`+both+interleave` adds it to `+both`." if "+interleave" in cols else ""))
    md.append("")
    md.append("Every run starts from the same float network (seed 1); the seed of a coded run "
              "changes its retraining (shuffling, augmentation, dropout). Runs are listed with their "
              "wall time on a 2-core machine that was running other work at the same time, so the "
              "times vary. 'not run' cells are runs of the sweep that had not been made when the "
              "table was written; `experiments/compress_table.py %s` makes them (finished runs are skipped)." % table)
    md.append("")
    used = [c for c in CODES if any(r["method"] != "ternary" and (r["N"], r["K"]) == c for r in spec["runs"])]
    md.append("Schedules: " + ", ".join("(%d,%d): %s" % (N, K, SCHEDULES[(N, K)]) for N, K in used) +
              "; %d epoch per stage, %d epochs of final retraining." % (spec["stage_epochs"], spec["retrain_epochs"]))
    md.append("")
    levers = [r for r in rows if r.get("lever")]
    if levers:
        md.append("Levers beyond the paper (docs/method.md section 8.4), each changing one setting of a table run:")
        md.append("")
        md.append("| run | code | variant | what changes | epochs | test error % |")
        md.append("|---|---|---|---|---|---|")
        for r in levers:
            s = r["summary"]
            md.append("| %s | (%d,%d), %s | %s | %s | %d | %.2f |" % (
                r["name"], r["N"], r["K"], "all layers" if r["layers"] == "all" else r["layers"],
                r["variant"], r["lever"], s["epochs"], 100 * s["test_error"]))
        md.append("")
    if spec.get("ablation"):
        md += ablation_lines(rows)
    if spec.get("targets"):
        done = {r["name"]: r["summary"] for r in rows}
        # rows carried over from the CSV that name their run count too (marked)
        from_csv = set()
        for l in carried:
            c = l.split(",")
            if run_name(l) and run_name(l) not in done:
                done[run_name(l)] = {"test_error": float(c[11]), "float_test_error": float(c[12])}
                from_csv.add(run_name(l))
        md.append("Targets (test error at most the float network's plus a margin):")
        md.append("")
        for what, name, margin in spec["targets"]:
            if isinstance(name, list):  # the mean over seeds
                got = [done[n] for n in name if n in done]
                if not got:
                    md.append("- %s: not run yet" % what)
                    continue
                e = [100 * g["test_error"] for g in got]
                m = sum(e) / len(e)
                sd = (sum((x - m) ** 2 for x in e) / (len(e) - 1)) ** 0.5 if len(e) > 1 else 0.0
                f = 100 * got[0]["float_test_error"]
                spread = " ± %.2f" % sd if len(e) > 1 else ""
                md.append("- %s: %.2f%s %% over %d of %d seeds against float %.2f %% + %.1f = %.2f %%: %s" % (
                    what, m, spread, len(e), len(name), f, 100 * margin, f + 100 * margin,
                    ("met" if m <= f + 100 * margin else "not met") + ("" if len(e) == len(name) else " so far") +
                    (" (includes runs carried over from the CSV)" if any(n in from_csv for n in name) else "")))
                continue
            if name in done:
                e, f = done[name]["test_error"], done[name]["float_test_error"]
                md.append("- %s: %.2f %% against float %.2f %% + %.1f = %.2f %%: %s" % (
                    what, 100 * e, 100 * f, 100 * margin, 100 * (f + margin), ("met" if e <= f + margin else "not met") + (" (carried over from the CSV)" if name in from_csv else "")))
            else:
                md.append("- %s: not run yet" % what)
        md.append("")
    if carried:
        md.append("Runs carried over from the CSV (their folders are not on the machine that wrote this table, "
                  "so they are not in the cells above; each was made earlier, possibly by an earlier build, with its own float "
                  "reference):")
        md.append("")
        md.append("| code | layers | normalize | schedule | seed | epochs | distill | delta | run | test error % | float % |")
        md.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for l in carried:
            c = l.split(",")
            md.append("| %s (%s,%s) | %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %.2f |" % (
                c[2], c[3], c[4], c[7], c[5], c[6], c[8], c[13], c[17] or "0", c[18] or "layer",
                run_name(l) or "-", 100 * float(c[11]), 100 * float(c[12])))
        md.append("")
    flipped = any(r["summary"].get("test_flip") for r in rows)
    md.append("| run | seed | epochs | seconds | test error % |" + (" one view % |" if flipped else "") +
              " last epoch % |")
    md.append("|---|---|---|---|---|" + ("---|" if flipped else "") + "---|")
    for r in rows:
        s = r["summary"]
        one = s.get("test_error_single")
        last = r.get("last_epoch_error")
        md.append("| %s | %d | %d | %.0f | %.2f |" % (r["name"], s["seed"], s["epochs"], s["seconds"], 100 * s["test_error"]) +
                  ((" %.2f |" % (100 * one) if one is not None else " - |") if flipped else "") +
                  (" %.2f |" % (100 * last) if last is not None else " - |"))
    md.append("")
    md.append("`last epoch` is the test error measured at the end of the run's last training epoch "
              "(its metrics.csv), before the final codes are fixed and the batch-norm statistics re-estimated; "
              "`test error` is the stored network's.")
    for note in spec.get("notes", []):
        md.append("")
        md.append(note)
    total = sum(r["summary"]["seconds"] for r in rows)
    md.append("")
    md.append("Total wall time of the compression runs: %.0f s (%.1f h) on 2 threads." % (total, total / 3600))
    with open(os.path.join(RESULTS, table + ".md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("wrote", csv_path)
    plot(table, rows, float_summary)


def ablation_lines(rows):
    """What each technique changes, against the spread over seeds.

    For each comparison (a variant against the one without the technique) it
    gives the difference of the mean test errors and the two ranges over seeds;
    an effect is stated only where the ranges do not overlap (every seed of one
    variant beats every seed of the other), and said to be within the seed
    spread otherwise."""
    errs = {}
    for r in rows:
        if r.get("lever") or r["method"] != "sst":
            continue
        errs.setdefault(r["variant"], []).append(100 * r["summary"]["test_error"])
    pairs = [("+norm", "direct", "normalization"), ("+gradual", "direct", "gradual pruning"),
             ("+both", "direct", "both techniques"), ("+both", "+gradual", "normalization on top of gradual pruning"),
             ("+both", "+norm", "gradual pruning on top of normalization")]
    out = ["Effects over seeds (mean test error of each variant, its range over seeds in brackets; an "
           "effect is claimed only where the two ranges do not overlap):", ""]
    for a, b, what in pairs:
        ea, eb = errs.get(a, []), errs.get(b, [])
        if len(ea) < 2 or len(eb) < 2:
            out.append("- %s (%s against %s): fewer than 2 seeds of each so far" % (what, a, b))
            continue
        ma, mb = sum(ea) / len(ea), sum(eb) / len(eb)
        rng = lambda e: "[%.2f, %.2f]" % (min(e), max(e))
        if max(ea) < min(eb):
            verdict = "lowers the error by %.2f points, beyond the seed spread" % (mb - ma)
        elif min(ea) > max(eb):
            verdict = "raises the error by %.2f points, beyond the seed spread" % (ma - mb)
        else:
            verdict = "difference %+.2f points, within the seed spread: no effect shown" % (ma - mb)
        out.append("- %s: %s %.2f %s (%d seeds) against %s %.2f %s (%d seeds): %s" % (
            what, a, ma, rng(ea), len(ea), b, mb, rng(eb), len(eb), verdict))
    out.append("")
    return out


def effects_from_csv(table, spec):
    """Rewrite the effects-over-seeds lines of TABLE.md from the CSV rows of the
    table's ablation runs: its config, (N,K) and layers, the table's epoch
    budget, no distillation; the variant is read off the normalize and
    schedule columns."""
    if not spec.get("ablation"):
        sys.exit("%s is not an ablation table" % table)
    csv_path = os.path.join(RESULTS, spec.get("csv", table) + ".csv")
    md_path = os.path.join(RESULTS, table + ".md")
    with open(csv_path) as f:
        lines = f.read().splitlines()
    if lines and lines[0] == HEADER.rsplit(",", 2)[0]:  # before the delta and run columns
        lines = [HEADER] + [l + ",," for l in lines[1:] if l]
    if not lines or lines[0] != HEADER:
        sys.exit("%s: not a results CSV of this script (header differs)" % csv_path)
    wanted = {(r["method"], r["N"], r["K"], r["layers"]) for r in spec["runs"] if not r.get("lever")}
    by_setting = {v: k for k, v in VARIANTS.items()}
    rows = []
    for l in lines[1:]:
        c = l.split(",")
        if len(c) < 18 or c[0] != spec["config"] or c[2] == "float" or (c[17] or "0") != "0" or \
                (len(c) > 18 and c[18] not in ("", "layer")):
            continue
        N, K = int(c[3]), int(c[4])
        if (c[2], N, K, c[7]) not in wanted:
            continue
        gradual = c[6] != "direct"
        stages = len(SCHEDULES.get((N, K), SCHEDULES[(8, 2)]).split(","))
        if int(c[13]) != stages * spec["stage_epochs"] + spec["retrain_epochs"]:
            continue
        variant = by_setting.get((c[5], gradual))
        if variant:
            rows.append({"variant": variant, "method": c[2], "summary": {"test_error": float(c[11])}})
    if not rows:
        sys.exit("%s: no rows of the ablation runs" % csv_path)
    with open(md_path) as f:
        md = f.read().splitlines()
    # drop an earlier effects section (its heading line, the blank line, the list)
    if any(l.startswith("Effects over seeds") for l in md):
        i = next(i for i, l in enumerate(md) if l.startswith("Effects over seeds"))
        j = i + 2
        while j < len(md) and md[j].startswith("- "):
            j += 1
        del md[i:j + 1]
    at = next((i for i, l in enumerate(md) if l.startswith("Targets") or l.startswith("| run |")), len(md))
    md[at:at] = ablation_lines(rows)
    with open(md_path + ".tmp", "w") as f:
        f.write("\n".join(md) + "\n")
    os.replace(md_path + ".tmp", md_path)
    print("wrote the effects of %d runs from %s into %s" % (len(rows), csv_path, md_path))


def plot(table, rows, fs):
    if not shutil.which("gnuplot"):
        print("gnuplot not found (apt-get install gnuplot-nox): no plot")
        return
    dat = os.path.join(RESULTS, table + "_error_vs_bits.dat")
    variants = [v for v in VARIANTS if any(r["variant"] == v and r["method"] in ("sst", "ternary") for r in rows)]
    with open(dat, "w") as f:
        for v in variants:
            f.write("# %s\n" % v)
            pts = sorted((r["summary"]["bits_per_weight"], 100 * r["summary"]["test_error"],
                          "ternary" if r["method"] == "ternary" else "(%d,%d)" % (r["N"], r["K"])) for r in rows
                         if r["variant"] == v and r["method"] in ("sst", "ternary") and r["summary"]["seed"] == 1)
            for b, e, label in pts:
                f.write("%g %g %s\n" % (b, e, label))
            f.write("\n\n")
    png = os.path.join(RESULTS, table + "_error_vs_bits.png")
    script = """set terminal pngcairo size 800,500
set output '%s'
set xlabel 'bits per weight'
set ylabel 'test error (%%)'
set title '%s: test error against bits per weight (float: %.2f %%)'
set key top right
set grid
set xrange [0.5:2.1]
""" % (png, table, 100 * fs["test_error"])
    parts = []
    for i, v in enumerate(variants):
        parts.append("'%s' index %d using 1:2 with points pt %d ps 1.5 title '%s'" % (dat, i, 5 + 2 * i, v))
        parts.append("'%s' index %d using 1:2:3 with labels offset 0,%g font ',8' notitle" % (dat, i, 0.8 - 0.5 * i))
    parts.append("%g with lines dt 2 title 'float'" % (100 * fs["test_error"]))
    script += "plot " + ", ".join(parts) + "\n"
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if r.returncode != 0:
        print("gnuplot failed:", r.stderr)
    else:
        print("wrote", png)


def read_npz_array(path, name):
    """One float32 array of an .npz, without NumPy: (shape, flat list)."""
    with zipfile.ZipFile(path) as z:
        data = z.read(name + ".npy")
    hlen = data[8] | (data[9] << 8)
    header = ast.literal_eval(data[10:10 + hlen].decode("latin1"))
    a = array.array("f")
    a.frombytes(data[10 + hlen:])
    return header["shape"], a


def histogram_plot(table, float_run, run_dir, layer):
    """Weight histograms of one layer: float, after row normalization, after coding."""
    if not shutil.which("gnuplot"):
        return
    src = [("float", os.path.join(float_run, "weights.npz")),
           ("normalized", os.path.join(run_dir, "normalized.npz")),
           ("coded (delta*t)", os.path.join(run_dir, "model.npz"))]
    if not os.path.exists(src[0][1]):
        subprocess.run([SSTC, "export", os.path.join(float_run, "checkpoint.sstc"), "--npz", src[0][1]],
                       check=True, stdout=subprocess.DEVNULL)
    if not all(os.path.exists(p) for _, p in src):
        return
    dat = os.path.join(RESULTS, table + "_hist.dat")
    with open(dat, "w") as f:
        for label, path in src:
            _, w = read_npz_array(path, layer + ".weight")
            # scale each to its own RMS so the three shapes are comparable
            rms = (sum(x * x for x in w) / len(w)) ** 0.5 or 1.0
            bins = [0] * 121
            for x in w:
                k = int(round(x / rms * 20)) + 60
                if 0 <= k < 121:
                    bins[k] += 1
            f.write("# %s (rms %.4g)\n" % (label, rms))
            for k, c in enumerate(bins):
                f.write("%g %g\n" % ((k - 60) / 20.0, c / len(w)))
            f.write("\n\n")
    png = os.path.join(RESULTS, table + "_hist_" + layer + ".png")
    script = """set terminal pngcairo size 900,500
set output '%s'
set xlabel 'weight / RMS of the layer'
set ylabel 'fraction of weights'
set logscale y
set title '%s, layer %s: weights before and after normalization, and after (8,2) coding'
set grid
plot '%s' index 0 using 1:2 with steps title 'float', '%s' index 1 using 1:2 with steps title 'after row normalization', '%s' index 2 using 1:2 with impulses lw 3 title 'coded: delta*t'
""" % (png, table, layer, dat, dat, dat)
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    print("wrote", png if r.returncode == 0 else "nothing: " + r.stderr)


def emit(spec, outroot, float_dir, only):
    """One self-contained shell command per unfinished run (run from anywhere)."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `--emit | head` is fine
    q = shlex.quote
    rel = lambda p: os.path.relpath(p, ROOT)
    fck = os.path.join(float_dir, "checkpoint.sstc")
    fdone = os.path.join(float_dir, "summary.json")
    if not os.path.exists(fdone):
        print("cd %s && mkdir -p %s && build/sstc train %s --out %s --quiet%s > %s/train.log 2>&1" % (
            q(ROOT), q(rel(float_dir)), q(spec["config"]), q(rel(float_dir)),
            " --resume" if os.path.exists(fck) else "", q(rel(float_dir))))
    for r in spec["runs"]:
        if only and not fnmatch.fnmatch(r["name"], only):
            continue
        out = os.path.join(outroot, r["name"])
        if os.path.exists(os.path.join(out, "summary.json")):
            continue
        cmd = ["build/sstc", "compress", spec["config"], "--from", rel(fck), "--out", rel(out), "--quiet"]
        for s in r["sets"]:
            cmd += ["--set", s]
        # waits for the float network (a job array starts every task at once);
        # --resume continues a run that an earlier task left unfinished
        print("cd %s && until [ -f %s ]; do sleep 60; done && mkdir -p %s && "
              "{ [ -f %s/checkpoint.sstc ] && r=--resume || r=; } && %s $r > %s/compress.log 2>&1" % (
                  q(ROOT), q(rel(fdone)), q(rel(out)), q(rel(out)), " ".join(q(c) for c in cmd), q(rel(out))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", choices=sorted(TABLES))
    ap.add_argument("--only", help="run only runs whose name matches this glob")
    ap.add_argument("--list", action="store_true", help="list the runs and whether they are done")
    ap.add_argument("--collect", action="store_true", help="only collect finished runs into the table")
    ap.add_argument("--emit", action="store_true",
                    help="print the unfinished runs as shell commands, one per line, for GNU parallel or a Slurm "
                         "array (experiments/slurm_array.sh); the float network's training is the first line and "
                         "every other line waits for its checkpoint; then --collect builds the table")
    ap.add_argument("--effects", action="store_true",
                    help="recompute the effects-over-seeds section of an ablation table's Markdown from its CSV "
                         "rows (for when the run folders are no longer on the machine)")
    args = ap.parse_args()
    spec = TABLES[args.table]()
    if args.effects:
        effects_from_csv(args.table, spec)
        return
    outroot = os.path.join(ROOT, "runs", "tables", spec.get("runs_dir", args.table))
    float_dir = os.path.join(ROOT, spec["float_run"])
    if args.emit:
        emit(spec, outroot, float_dir, args.only)
        return
    if args.list:
        for r in spec["runs"]:
            done = os.path.exists(os.path.join(outroot, r["name"], "summary.json"))
            print("%-4s %s" % ("done" if done else "-", r["name"]))
        return
    if not os.path.exists(SSTC):
        sh(["make", "-j2", "all"], "/dev/null")
    if not args.collect:
        if not os.path.exists(os.path.join(float_dir, "summary.json")):
            os.makedirs(float_dir, exist_ok=True)
            sh([SSTC, "train", spec["config"], "--out", float_dir, "--quiet"], os.path.join(float_dir, "train.log"))
        for r in spec["runs"]:
            if args.only and not fnmatch.fnmatch(r["name"], args.only):
                continue
            out = os.path.join(outroot, r["name"])
            if os.path.exists(os.path.join(out, "summary.json")):
                continue
            os.makedirs(out, exist_ok=True)
            cmd = [SSTC, "compress", spec["config"], "--from", os.path.join(float_dir, "checkpoint.sstc"),
                   "--out", out, "--quiet"]
            resume = os.path.exists(os.path.join(out, "checkpoint.sstc"))
            if resume:
                cmd.append("--resume")
            for s in r["sets"]:
                cmd += ["--set", s]
            t0 = time.time()
            if sh(cmd, os.path.join(out, "compress.log"), fatal=False) == 0:
                print("  %s: %.0f s" % (r["name"], time.time() - t0), flush=True)
    rows = []
    for r in spec["runs"]:
        p = os.path.join(outroot, r["name"], "summary.json")
        if os.path.exists(p):
            rows.append(dict(r, summary=load(p), last_epoch_error=last_epoch_error(os.path.join(outroot, r["name"]))))
    write_results(args.table, spec, rows, load(os.path.join(float_dir, "summary.json")))
    best = [r for r in rows if r["method"] == "sst" and (r["N"], r["K"]) == (8, 2) and r["variant"] == "+both"]
    if best:
        histogram_plot(args.table, float_dir, os.path.join(outroot, best[0]["name"]), spec.get("hist_layer", "fc2"))


if __name__ == "__main__":
    main()
