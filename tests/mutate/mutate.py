#!/usr/bin/env python3
"""Mutation testing for sstc: how many small planted bugs does the suite catch?

    python3 tests/mutate/mutate.py [--only 3,7] [--filter 'sst*/*'] [--list]
    make mutate

Each entry of tests/mutate/mutants.txt replaces one line fragment of the code
(it must occur exactly once) with a plausible slip. For each, in a copy of the
repository (build/mutate/tree, its build folder seeded from build/ so only the
changed file recompiles), the script plants the change, rebuilds the test
program and sstc, runs the suite (--fail-fast: it stops at the first failing
test) and restores the file. A mutant is "killed" when some test fails,
"survived" when every test passes, "no build" when the change does not compile.
The report goes to stdout and build/mutate/report.md; the exit status is 1 if
any mutant survived. Standard library only (Python 3).
"""
import argparse, os, shutil, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORK = os.path.join(ROOT, "build", "mutate")
TREE = os.path.join(WORK, "tree")


def parse(path):
    """Entries of mutants.txt as dicts: file, old, new, why, line (of the entry)."""
    out, cur = [], None
    for n, raw in enumerate(open(path), 1):
        line = raw.rstrip("\n")
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                out.append(cur)
            cur = None
            continue
        if cur is None:
            cur = {"file": None, "old": [], "new": [], "why": "", "line": n}
        if line.startswith("file: "):
            cur["file"] = line[6:].strip()
        elif line.startswith("-"):
            cur["old"].append(line[1:])
        elif line.startswith("+"):
            cur["new"].append(line[1:])
        elif line.startswith("why: "):
            cur["why"] = line[5:].strip()
        else:
            sys.exit("%s:%d: expected 'file: ', '-', '+' or 'why: ', got %r" % (path, n, line))
    if cur:
        out.append(cur)
    for m in out:
        if not m["file"] or not m["old"] or not m["new"] or not m["why"]:
            sys.exit("%s:%d: an entry needs file:, - lines, + lines and why:" % (path, m["line"]))
        m["old"] = "\n".join(m["old"])
        m["new"] = "\n".join(m["new"])
    return out


def prepare_tree():
    """A copy of the sources with build/ seeded from the main build."""
    os.makedirs(TREE, exist_ok=True)
    skip = {"build", "runs", "datasets", ".git"}
    for d in sorted(os.listdir(ROOT)):
        src, dst = os.path.join(ROOT, d), os.path.join(TREE, d)
        if d in skip:
            continue
        if os.path.isdir(src):
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("corpus-work", "__pycache__"))
        else:
            shutil.copy2(src, dst)
    if os.path.isdir(os.path.join(ROOT, "datasets")) and not os.path.exists(os.path.join(TREE, "datasets")):
        os.symlink(os.path.join(ROOT, "datasets"), os.path.join(TREE, "datasets"))
    bsrc, bdst = os.path.join(ROOT, "build"), os.path.join(TREE, "build")
    if not os.path.isdir(bdst) and os.path.isdir(os.path.join(bsrc, "obj")):
        os.makedirs(bdst)
        shutil.copytree(os.path.join(bsrc, "obj"), os.path.join(bdst, "obj"))
        for f in ("libsstc.a", "sstc", "test_sstc"):
            if os.path.exists(os.path.join(bsrc, f)):
                shutil.copy2(os.path.join(bsrc, f), os.path.join(bdst, f))


def build():
    r = subprocess.run(["make", "-s", "-j2", "build/test_sstc", "build/sstc"], cwd=TREE, capture_output=True, text=True)
    return r.returncode == 0, r.stdout + r.stderr


def run_suite(filt, timeout):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    cmd = ["./build/test_sstc", "--jobs", "2", "--fail-fast"]
    if filt:
        cmd += ["--filter", filt]
    try:
        r = subprocess.run(cmd, cwd=TREE, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "killed (timeout)", ""
    out = r.stdout + r.stderr
    if r.returncode == 0:
        return "survived", out
    # the first failing test, for the report
    first = next((l for l in out.splitlines() if "[FAIL]" in l or "CRASH" in l), "")
    return "killed", first.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mutants", default=os.path.join(ROOT, "tests", "mutate", "mutants.txt"))
    ap.add_argument("--only", help="comma-separated entry numbers (from 1)")
    ap.add_argument("--filter", help="criterion test filter (default: the whole suite)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per suite run")
    ap.add_argument("--list", action="store_true", help="list the mutants and check that each applies")
    a = ap.parse_args()
    muts = parse(a.mutants)
    for i, m in enumerate(muts, 1):
        text = open(os.path.join(ROOT, m["file"])).read()
        n = text.count(m["old"])
        if n != 1:
            sys.exit("%s:%d: mutant %d: its '-' text occurs %d times in %s (expected once); update the entry"
                     % (a.mutants, m["line"], i, n, m["file"]))
        m["i"] = i
    if a.list:
        for m in muts:
            print("%2d  %-22s %s" % (m["i"], m["file"], m["why"]))
        return 0
    pick = set(int(x) for x in a.only.split(",")) if a.only else None
    muts = [m for m in muts if pick is None or m["i"] in pick]
    prepare_tree()
    ok, log = build()
    if not ok:
        sys.exit("the unmutated copy does not build:\n" + log[-3000:])
    status, out = run_suite(a.filter, a.timeout)
    if status != "survived":
        sys.exit("the unmutated copy fails its tests (%s); fix that first:\n%s" % (status, out[-3000:]))
    rows, t_all = [], time.time()
    for m in muts:
        path = os.path.join(TREE, m["file"])
        orig = open(path).read()
        t0 = time.time()
        try:
            open(path, "w").write(orig.replace(m["old"], m["new"], 1))
            ok, log = build()
            status, first = run_suite(a.filter, a.timeout) if ok else ("no build", log.strip().splitlines()[-1:])
        finally:
            open(path, "w").write(orig)
        if isinstance(first, list):
            first = first[0] if first else ""
        rows.append((m, status, first, time.time() - t0))
        print("%2d %-9s %-22s %s  (%.0f s)%s" % (m["i"], status.split()[0], m["file"], m["why"], time.time() - t0,
                                                  "" if status == "survived" else "\n      " + first[:150]), flush=True)
    build()  # leave the copy's objects matching its sources
    killed = sum(1 for r in rows if r[1].startswith("killed"))
    survived = [r for r in rows if r[1] == "survived"]
    nobuild = sum(1 for r in rows if r[1] == "no build")
    os.makedirs(WORK, exist_ok=True)
    with open(os.path.join(WORK, "report.md"), "w") as f:
        f.write("| # | file | planted bug | result |\n|---|---|---|---|\n")
        for m, status, first, secs in rows:
            f.write("| %d | %s | %s | %s |\n" % (m["i"], m["file"], m["why"], status))
    print("\n%d mutants: %d killed, %d survived, %d did not build (%.0f s)%s" % (
        len(rows), killed, len(survived), nobuild, time.time() - t_all,
        "" if not a.filter else " [suite filtered: %s]" % a.filter))
    for m, *_ in survived:
        print("  survived: %d %s: %s" % (m["i"], m["file"], m["why"]))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
