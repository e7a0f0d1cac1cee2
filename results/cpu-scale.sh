#!/usr/bin/env bash
# The committed reports still made on the 2-core CPU, each into its own SQLite store beside
# its report (results/NAME/NAME.db), then the report: exercise 3 and the joint search at a
# reduced scale, the chapter's runs at its own. Re-running continues a study where it
# stopped; a finished one only gets its report rewritten.
#   bash results/cpu-scale.sh                     # every study below, in order
#   bash results/cpu-scale.sh chapter             # only the named ones
# Exercises 1, 2, 4 and 5 are committed at the chapter's scale (made on a GPU): their study
# files as they are, `lrsweep run studies/X.toml --storage sqlite:///results/NAME/NAME.db`.
set -euo pipefail
cd "$(dirname "$0")/.."
LRSWEEP=${LRSWEEP:-.venv/bin/lrsweep}
# 2 CPU cores: 12k training images (of 55k), 5k held out for validation, the full 10k test
# set, 30 epochs as the chapter. The chapter replication keeps the chapter's full scale.
CPU_SCALE=(--set train.subset=12000 --set train.validation=5000)

study() {
  local name=$1 file=$2; shift 2
  if [ ${#SELECTED[@]} -gt 0 ] && [[ ! " ${SELECTED[*]} " =~ " $name " ]]; then return; fi
  local store="sqlite:///results/$name/$name.db"
  mkdir -p "results/$name"
  "$LRSWEEP" run "$file" "$@" --storage "$store"
  "$LRSWEEP" report "$name" --storage "$store"
}

SELECTED=("$@")
# ResNet-18 trains at ~40 images/s on one core: 1k training images, 500 for validation, 1k
# test images, 10 epochs of batch 32 (320 steps), two rates. About 70 minutes on two cores
# (a second worker: `lrsweep worker ex3-cosine-large --storage …` beside this one).
study ex3-cosine-large studies/ex3_cosine_large.toml --set train.subset=1000 \
  --set train.validation=500 --set train.test_subset=1000 --set train.epochs=10 \
  --set train.batch_size=32 --set 'space.base_lr=[0.1,0.3]' --set 'space.milestones=[5,8]' \
  --pack 4
study chapter studies/chapter.toml
study joint studies/joint.toml "${CPU_SCALE[@]}" --set study.trials=40
# The search ranks configurations on one seed each: re-run its best three over three seeds.
if [ ${#SELECTED[@]} -eq 0 ] || [[ " ${SELECTED[*]} " =~ " joint-best " ]]; then
  [ -f results/joint/joint_best.toml ] || "$LRSWEEP" rerun joint --top 3 --seeds 3 \
    --storage sqlite:///results/joint/joint.db --out results/joint/joint_best.toml
  study joint-best results/joint/joint_best.toml
fi
