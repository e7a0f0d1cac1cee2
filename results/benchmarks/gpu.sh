#!/usr/bin/env bash
# Every GPU measurement and check this project records, in one command, on one device:
#   bash results/benchmarks/gpu.sh [cuda|cuda:N] [STEP ...]
# Steps (default: all, in this order; each takes a few minutes on an H100-class GPU):
#   tests   tests/test_gpu.py: packs equal solo trials on the GPU, GPU matches CPU, masking
#   bench   `lrsweep bench`: the chapter's loop vs packs of 1, 8, 32 and 128 on the full data
#   target  results/benchmarks/gpu_target.toml: 100 trials × 30 epochs on the full data,
#           timed end to end with its SQLite store
#   profile results/benchmarks/epoch-profile.py: where an epoch goes (phases, top operators)
#   store   results/benchmarks/store-cost.py: the study's bookkeeping, training instant or paced
#   compile results/benchmarks/compile.py: eager vs torch.compile vs CUDA graphs
#   fusion  results/benchmarks/resnet-fusion.py: would fusing ResNet-18 packs pay here
#   device  a device index beyond the visible devices is refused with one line
#   formulations  results/benchmarks/formulations.py: a pack's training step as grouped
#           convolutions or batched GEMMs, eager or as a CUDA graph, FP32 or TF32; drift from
#           the same trial alone
#   invariance  results/benchmarks/invariance.py: does a trial's arithmetic depend on its pack
#           (convolution gradients by pack size and position; a trial alone and in packs)
#   exercises  exercises 1, 2 and 4 at the chapter's scale (their study files as they are),
#           each into its own store in the records folder (NAME.db), timed; and ex1's η = 0.3
#           seeds again as a pack of their own (ex1-pack5.db): how far a trial moves with its
#           company. (The chapter's runs are full-scale on a CPU already; 3 and 5 are not here.)
#   eager  `lrsweep bench` with CUDA graphs turned off (LRSWEEP_CUDA_GRAPHS=0): the eager
#           step beside bench's graphed one, same GPU, same run of this script
#   tf32   `lrsweep bench --precision tf32`: the packs with TF32 convolutions and matrix
#           products, as the H200 bench records before the precision setting ran their
#           convolutions (PyTorch's default), so that new and old records compare at one
#           precision
#   patches  `lrsweep bench` (no chapter loop) and the target study with
#           LRSWEEP_CONVOLUTIONS=patches: the convolutions as batched products over patches
#           (lrsweep/train/patches.py), beside the bench and target steps' grouped kernels
#   precision  results/benchmarks/precision.sh: studies/chapter.toml (9 runs × 5 seeds, the
#           chapter's scale) at fp32, tf32 and bf16, each timed into a store of its own; each
#           run's 5-seed interval at fp32, and the others' paired differences from it
#   joint  results/benchmarks/joint-compare.sh: studies/joint.toml at the chapter's scale with
#           slotted packs, and with BEFORE=DIR (an earlier commit's lrsweep/ package) with
#           that code; each study's best configuration re-run over 5 fresh seeds
# Records go to results/benchmarks/STEP-gpu-DATE.* (OUT_DIR to change); a step that fails
# leaves STEP-failed-gpu-DATE.txt, the steps after it still run, and the script exits 1.
# SCALE=smoke runs every step at a tiny size (any device, records to a temporary folder): a
# check of this script.
# PYTHON (default .venv/bin/python, else python3) must import lrsweep's requirements and pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
device=${1:-cuda}
shift || true
steps=${*:-tests bench eager target profile store compile fusion device formulations invariance}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
day=$(date +%F)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ "${SCALE:-full}" = smoke ]; then
  out=${OUT_DIR:-$work/records}
  bench_args=(--subset 2000 --epochs 2 --packs 1,2); images=2000; packs=(1 2); fusion_args=(2 8)
  target_args=(--set study.trials=4 --set train.epochs=2 --set train.subset=2000)
  store_args=(--repeat 1); formulation_packs=(1 2)
  joint_args=(--set study.trials=6 --set train.epochs=3 --set train.subset=1000
              --set train.validation=500 --set 'space.warmup_steps={ low = 0, high = 1 }')
  exercise_args=(--set train.epochs=1 --set train.subset=1000 --set train.validation=500
                 --set space.warmup_steps=0)
  chapter_args=(--set train.epochs=6 --set train.subset=512 --set train.test_subset=200
                --set 'space.seed=[0, 1]')
else
  out=${OUT_DIR:-results/benchmarks}
  bench_args=(); images=60000; packs=(1 8 32 128); fusion_args=(8 128)
  target_args=()  # results/benchmarks/gpu_target.toml as it is
  store_args=(--repeat 3); formulation_packs=()
  joint_args=()  # studies/joint.toml as it is
  exercise_args=()  # the study files as they are: the chapter's scale
  chapter_args=()  # studies/chapter.toml as it is
fi
mkdir -p "$out"

tests() {
  "$PYTHON" -m pytest tests/test_gpu.py -q -rs -p no:cacheprovider | tee "$out/tests-gpu-$day.txt"
}

bench() {
  "$PYTHON" -m lrsweep bench --device "$device" "${bench_args[@]}" --out "$out/bench-gpu-$day.json" \
    | tee "$out/bench-gpu-$day.txt"
}

eager() {
  LRSWEEP_CUDA_GRAPHS=0 "$PYTHON" -m lrsweep bench --device "$device" "${bench_args[@]}" \
    --out "$out/bench-eager-gpu-$day.json" | tee "$out/bench-eager-gpu-$day.txt"
}

tf32() {
  "$PYTHON" -m lrsweep bench --device "$device" "${bench_args[@]}" --precision tf32 \
    --out "$out/bench-tf32-gpu-$day.json" | tee "$out/bench-tf32-gpu-$day.txt"
}

precision() {
  bash results/benchmarks/precision.sh "$device" "$out" fp32 tf32 bf16 -- "${chapter_args[@]}"
  mv "$out/precision.txt" "$out/precision-gpu-$day.txt"
}

target() {
  # $1: a label for the records of a variant (patches), none for the plain run.
  local start end label=${1:+-$1}
  start=$(date +%s.%N)
  "$PYTHON" -m lrsweep run results/benchmarks/gpu_target.toml --device "$device" \
    "${target_args[@]}" --storage "sqlite:///$work/target$label.db" \
    > "$work/target$label.log" 2>&1
  end=$(date +%s.%N)
  {
    echo "${LRSWEEP_CONVOLUTIONS:+LRSWEEP_CONVOLUTIONS=$LRSWEEP_CONVOLUTIONS }lrsweep run results/benchmarks/gpu_target.toml --device $device ${target_args[*]}"
    "$PYTHON" -c "from lrsweep.train import device as d; print(d.describe_device(d.resolve_device('$device')))"
    grep '^study ' "$work/target$label.log" | tail -n 1
    "$PYTHON" -c "print(f'wall time, process start to exit: {$end - $start:.1f} s')"
  } | tee "$out/target$label-gpu-$day.txt"
}

patches() {
  LRSWEEP_CONVOLUTIONS=patches "$PYTHON" -m lrsweep bench --device "$device" "${bench_args[@]}" \
    --no-chapter --out "$out/bench-patches-gpu-$day.json" | tee "$out/bench-patches-gpu-$day.txt"
  LRSWEEP_CONVOLUTIONS=patches target patches
}

profile() {
  "$PYTHON" results/benchmarks/epoch-profile.py "$device" "$images" "${packs[@]}" \
    2>"$work/profile.err" | tee "$out/profile-gpu-$day.txt"
}

store() {
  "$PYTHON" results/benchmarks/store-cost.py "${store_args[@]}" "sqlite:///$work/store-cost.db" \
    2>"$work/store.err" | tee "$out/store-cost-gpu-$day.txt"
}

compile() {
  "$PYTHON" results/benchmarks/compile.py "$device" "$images" "${packs[@]}" \
    2>"$work/compile.err" | tee "$out/compile-gpu-$day.txt"
}

fusion() {
  for k_batch in "4 32" "${fusion_args[*]}"; do
    "$PYTHON" results/benchmarks/resnet-fusion.py "$device" $k_batch
  done | tee "$out/resnet-fusion-gpu-$day.txt"
}

device() {
  local visible code
  visible=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
  set +e
  "$PYTHON" -m lrsweep run studies/quickstart.toml --device "cuda:$visible" \
    --storage "sqlite:///$work/absent.db" > "$work/absent.log" 2>&1
  code=$?
  set -e
  { echo "--device cuda:$visible with $visible visible: exit $code"; cat "$work/absent.log"
    [ -e "$work/absent.db" ] && echo "a store was written" || echo "nothing written"; } \
    | tee "$out/device-check-gpu-$day.txt"
}

invariance() {
  "$PYTHON" results/benchmarks/invariance.py "$device" 2>"$work/invariance.err" \
    | tee "$out/invariance-gpu-$day.txt"
}

formulations() {
  "$PYTHON" results/benchmarks/formulations.py "$device" "${formulation_packs[@]}" \
    2>"$work/formulations.err" | tee "$out/formulations-gpu-$day.txt"
}

exercises() {
  # Checkpoints and weights stay outside the records folder: only the stores are kept.
  local log="$out/exercises-gpu-$day.txt" name file start
  export LRSWEEP_CHECKPOINTS="$work/checkpoints" LRSWEEP_ARTIFACTS="$work/artifacts"
  for file in studies/ex1_fixed_lr.toml probe studies/ex2_decay_exponent.toml \
      studies/ex4_warmup.toml; do
    local extra=()
    if [ "$file" = probe ]; then
      name=ex1-pack5; file=studies/ex1_fixed_lr.toml
      extra=(--set "study.name=$name" --set 'space.base_lr=[0.3]' --pack 5)
    else
      name=$("$PYTHON" -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['study']['name'])" "$file")
    fi
    start=$(date +%s.%N)
    "$PYTHON" -m lrsweep run "$file" --device "$device" "${exercise_args[@]}" "${extra[@]}" \
      --storage "sqlite:///$out/$name.db" > "$work/$name.log" 2>&1 || true
    { echo "lrsweep run $file --device $device ${exercise_args[*]} ${extra[*]}"
      grep '^study ' "$work/$name.log" | tail -n 1 || tail -n 3 "$work/$name.log"
      "$PYTHON" -c "print(f'$name: {$(date +%s.%N) - $start:.1f} s, process start to exit')"
    } | tee -a "$log"
  done
}

joint() {
  bash results/benchmarks/joint-compare.sh "$work/joint" "$device" "${joint_args[@]}"
  cp "$work/joint/joint-compare.txt" "$out/joint-gpu-$day.txt"
  [ "${SCALE:-full}" = smoke ] || cp "$work/joint/"*.db "$out/"
}

known=" tests bench eager tf32 target patches profile store compile fusion device formulations invariance exercises precision joint "
for step in $steps; do
  if [[ "$known" != *" $step "* ]]; then
    echo "gpu.sh: unknown step '$step' (${known# })" >&2
    exit 2
  fi
done
# A failed step does not cost the steps after it (a GPU session is short): it is said, with the
# logs it left in the temporary folder, in STEP-failed-gpu-DATE.txt, and the script exits 1.
failed=()
for step in $steps; do
  echo "== $step"
  rm -f "$work"/*.log "$work"/*.err
  set +e
  ( set -e; "$step" )
  code=$?
  set -e
  if [ "$code" -ne 0 ]; then
    failed+=("$step")
    { echo "gpu.sh: step $step failed (exit $code); the logs it left:"
      for log in "$work"/*.log "$work"/*.err; do
        if [ -s "$log" ]; then
          echo "-- $(basename "$log"), its last 40 lines"; tail -n 40 "$log"
        fi
      done
    } 2>/dev/null | tee "$out/$step-failed-gpu-$day.txt" >&2
  fi
done
case $out in
  "$work"/*) echo "smoke run: its records are discarded" ;;
  *) echo "records in $out" ;;
esac
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu.sh: failed: ${failed[*]}" >&2
  exit 1
fi
