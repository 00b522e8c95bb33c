#!/bin/bash
# A Slurm job array that runs a results table's runs, one run per task:
#
#   experiments/compress_table.py cifar10 --emit > runs/cifar10.cmds
#   sbatch --array=1-$(wc -l < runs/cifar10.cmds) experiments/slurm_array.sh runs/cifar10.cmds
#   ...                                          # when the tasks are done:
#   experiments/compress_table.py cifar10 --collect
#
# Task i runs line i of the command file. The first line trains the float
# network; the other lines wait for its checkpoint, then compress from it (a
# task that is cut off and started again resumes where it stopped). Each run
# uses the config's [experiment] threads; match --cpus-per-task to it.
#
# Without a scheduler, GNU parallel does the same on one machine:
#   experiments/compress_table.py cifar10 --emit | parallel -j 2
#SBATCH --job-name=sstc-table
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=04:00:00
#SBATCH --output=runs/slurm-%A_%a.log
set -euo pipefail
cmds=${1:?usage: sbatch --array=1-N experiments/slurm_array.sh COMMAND_FILE}
line=$(sed -n "${SLURM_ARRAY_TASK_ID:?not inside a Slurm array job}p" "$cmds")
[ -n "$line" ] || { echo "no command on line $SLURM_ARRAY_TASK_ID of $cmds" >&2; exit 1; }
eval "$line"
