#!/usr/bin/env bash
# The pictures of docs/tutorial.md, drawn by sstc from a finished
# `sstc run configs/mnist_fc.ini` folder (make run's, by default):
#     experiments/tutorial_pictures.sh [RUN_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:-runs/mnist_fc-sst-8-2}
out=${2:-docs/tutorial}
mkdir -p "$out"
build/sstc data show mnist -o "$out/mnist.png" --per-class 12 --scale 2
build/sstc plot metrics "$run" --out "$out/errors.png" --ymax 3.5
build/sstc plot weights "$run/float/checkpoint.sstc" "$run/model.sst" --layer fc1 --out "$out/weights_fc1.png"
build/sstc plot rows "$run/float/checkpoint.sstc" "$run/model.sst" --rows 8 --out "$out/rows_fc1.png"
build/sstc plot codes "$run/model.sst" --out "$out/codes.png"
