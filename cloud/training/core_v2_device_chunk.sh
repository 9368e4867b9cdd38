#!/bin/bash
# One chunk of core v2's training and of its α = 0 ablation on an accelerator, side by side, from the committed
# milestones (facelink.cloud.training.core_v2_device says how to prepare and continue). Run from the repository root
# on the device machine, with the kit (facelink core-v2 device-kit) at $KIT.
# Environment: MIN training minutes of each run (7.5), DEV torch device (cuda), KIT (runs/device-kit),
# OUT where the milestones, progress files and logs go (/tmp/facelink-chunk-out), W scratch folder (/tmp/facelink-chunk),
# V2_BATCH and A0_BATCH the two runs' batch sizes (32 each: core v2 took its first chunk's 11,432 steps at 32 and the
# ablation, now past core v2's step of that chunk's start, needs as many crops for the two to compare at equal budget),
# PRECISION the transforms' precision (the configurations' transform_precision, auto: bfloat16 where the GPU has it;
# float32 if the smoke run fails in bfloat16).
set -u
export PYTHONUNBUFFERED=1
R=$PWD; MIN=${MIN:-7.5}; DEV=${DEV:-cuda}; KIT=${KIT:-runs/device-kit}; V2_BATCH=${V2_BATCH:-32}; A0_BATCH=${A0_BATCH:-32}
PRECISION=${PRECISION:-auto}
OUT=${OUT:-/tmp/facelink-chunk-out}; W=${W:-/tmp/facelink-chunk}
[ -f "$KIT/core-v2-pack.npz" ] && [ -d "$KIT/site" ] || { echo "no device kit at $KIT: run facelink core-v2 device-kit"; exit 2; }
# facelink from this tree without installing it: the package folders as pyproject.toml maps them
mkdir -p "$OUT" "$W/pkg/facelink"
for d in shared edge cloud benchmarks; do ln -sfn "$R/$d" "$W/pkg/facelink/$d"; done
ln -sfn "$R/proto/facelink/v1" "$W/pkg/facelink/v1"
export PYTHONPATH="$W/pkg:$R/$KIT/site"
PY="python3 -m facelink.cloud.training.core_v2"; P=$KIT/core-v2-pack.npz
declare -A CFG=([v2]=cloud/training/configs/core-v2.yaml [a0]=cloud/training/configs/core-v2-a0.yaml)
declare -A SET=([v2]="batch_size=$V2_BATCH checkpoint_minutes=3 transform_precision=$PRECISION"
               [a0]="batch_size=$A0_BATCH checkpoint_minutes=3 transform_precision=$PRECISION")
nvidia-smi -L 2>/dev/null
python3 -c "import torch,numpy;print('torch',torch.__version__,'numpy',numpy.__version__,'cuda',torch.cuda.is_available())"
collect() {
  for r in v2 a0; do cp "$W/$r/log.csv" "$W/$r-log.csv" 2>/dev/null; done
  cp cloud/training/checkpoints/core-v2.safetensors cloud/training/checkpoints/core-v2.json "$OUT/" 2>/dev/null
  cp cloud/training/checkpoints/core-v2-a0.safetensors cloud/training/checkpoints/core-v2-a0.json "$OUT/" 2>/dev/null
  cp benchmarks/results/core-v2/progress.json "$OUT/progress-v2.json" 2>/dev/null
  cp benchmarks/results/core-v2-a0/progress.json "$OUT/progress-a0.json" 2>/dev/null
  (cd "$W" && tar czf "$OUT/logs.tgz" ./*.out ./*-log.csv 2>/dev/null)
}
train() {  # train RUN LOG ARGS...
  local r=$1 log=$2; shift 2
  $PY train --config "${CFG[$r]}" --set ${SET[$r]} --pack "$P" --run-dir "$W/$r" --device "$DEV" "$@" > "$W/$log" 2>&1
}
milestone() { $PY milestone --config "${CFG[$1]}" --set ${SET[$1]} --run-dir "$W/$1" >> "$W/$2" 2>&1; }
# 1. smoke: three steps of each, through validation, checkpoint and milestone export
step_of() { python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['step'])" "$1" 2>/dev/null || echo 0; }
S2=$(step_of cloud/training/checkpoints/core-v2.json); S0=$(step_of cloud/training/checkpoints/core-v2-a0.json)
train v2 v2-smoke.out --until-step $((S2 + 3)) & p1=$!
train a0 a0-smoke.out --until-step $((S0 + 3)) & p2=$!
wait $p1; r1=$?; wait $p2; r2=$?
[ $r1 = 0 ] && { milestone v2 v2-smoke.out || r1=4; }
[ $r2 = 0 ] && { milestone a0 a0-smoke.out || r2=4; }
echo "smoke: v2 rc $r1, a0 rc $r2"
if [ $r1 != 0 ] || [ $r2 != 0 ]; then tail -n 25 "$W/v2-smoke.out" "$W/a0-smoke.out"; collect; exit 3; fi
# 2. the chunk (a SIGTERM 36 s past MIN makes a trainer checkpoint and stop, should its start have been slow)
G=$(python3 -c "print(int(($MIN + 0.6) * 60))")
for r in v2 a0; do
  timeout -s TERM "$G" $PY train --config "${CFG[$r]}" --set ${SET[$r]} --pack "$P" --run-dir "$W/$r" --device "$DEV" \
    --max-minutes "$MIN" > "$W/$r.out" 2>&1 &
  [ $r = v2 ] && p1=$! || p2=$!
done
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv 2>/dev/null
wait $p1; r1=$?; wait $p2; r2=$?
echo "chunk: v2 rc $r1, a0 rc $r2"; grep -h "^step \|stopping" "$W/v2.out" "$W/a0.out" | tail -n 8
# 3. both milestones (their averaged weights) into the tree, then everything to $OUT
milestone v2 v2.out & milestone a0 a0.out & wait
collect; ls -la "$OUT"
