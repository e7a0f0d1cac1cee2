#!/usr/bin/env bash
# Rewrite every committed report from its committed store (results/DIR/NAME.db → results/DIR/),
# without training: what a change to the report code does to the committed answers.
#   bash results/regenerate.sh              # every report
#   bash results/regenerate.sh ex1-fixed-lr # only the named folders
set -euo pipefail
cd "$(dirname "$0")/.."
LRSWEEP=${LRSWEEP:-.venv/bin/lrsweep}
for report in results/*/report.md; do
  dir=$(dirname "$report")
  folder=$(basename "$dir")
  if [ $# -gt 0 ] && [[ ! " $* " =~ " $folder " ]]; then continue; fi
  for store in "$dir"/*.db; do
    name=$(basename "$store" .db)
    "$LRSWEEP" report "$name" --storage "sqlite:///$store" --out "$dir"
  done
done
