#!/usr/bin/env bash
# Train every family's CIFAR-10 checkpoint in one time-boxed call on one GPU (a lent slice is <= 10 minutes).
#
# All models train side by side on the one device, each with `--fit-minutes $MINUTES` (the cosine schedule is
# cut to what its measured step rate allows), so the call ends in about MINUTES plus decoding and evaluation.
# Each run is resumable (state under $STATE_DIR); checkpoints land in $CKPT_DIR, records in benchmarks/results/.
#
#   cp ../shared/data/cifar10-*.tar.gz ../shared/data/weights/deit_tiny_patch16_224.safetensors device_data/
#   MINUTES=7 bash benchmarks/gpu_train_all.sh             # on the GPU machine
#
# Settings (environment): DATA (folder with the two CIFAR-10 archives, default device_data), DEVICE (cuda),
# MINUTES (7), BATCH (256), MODELS (all six), CKPT_DIR (assets/cifar10), RESULTS_DIR (benchmarks/results),
# STATE_DIR (device_data/state), LOG_DIR (device_data/logs), CACHE_DIR (.cache: decoded images), DEIT_WEIGHTS
# (the ImageNet DeiT-Tiny weights DeiT is fine-tuned from, default $DATA/deit_tiny_patch16_224.safetensors),
# EXTRA (more train_cifar10.py options). On CPU with a tiny MINUTES it checks the whole chain in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-device_data}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-7}
BATCH=${BATCH:-256}
MODELS=${MODELS:-"mobilevit_xxs mobilevitv2_050 efficientformerv2_s0 mobile_former_26m swin_tiny_patch4_window7_224 deit_tiny_patch16_224"}
CKPT_DIR=${CKPT_DIR:-assets/cifar10}
RESULTS_DIR=${RESULTS_DIR:-benchmarks/results}
STATE_DIR=${STATE_DIR:-device_data/state}
CACHE_DIR=${CACHE_DIR:-.cache}
LOG_DIR=${LOG_DIR:-device_data/logs}
DEIT_WEIGHTS=${DEIT_WEIGHTS:-$DATA/deit_tiny_patch16_224.safetensors}
EXTRA=${EXTRA:-}

for f in cifar10-train.tar.gz cifar10-test.tar.gz; do
    [ -f "$DATA/$f" ] || { echo "gpu_train_all.sh: $DATA/$f is missing (copy ../shared/data/$f there)" >&2; exit 2; }
done
if [[ " $MODELS " == *" deit_tiny_patch16_224 "* ]] && [ ! -f "$DEIT_WEIGHTS" ]; then
    echo "gpu_train_all.sh: $DEIT_WEIGHTS is missing (copy ../shared/data/weights/deit_tiny_patch16_224.safetensors there)" >&2
    exit 2
fi
mkdir -p "$STATE_DIR" "$LOG_DIR"
# decode once before the runs start side by side (each would otherwise decode the same 60,000 images)
python -c "
from pathlib import Path; from calib.cifar10 import decode_split
for split in ('train', 'test'): decode_split(Path('$DATA') / f'cifar10-{split}.tar.gz', 64, Path('$CACHE_DIR'))"

pids=()
for model in $MODELS; do
    # Swin needs more epochs than the hybrids to converge on CIFAR-10 from scratch; DeiT is fine-tuned
    case $model in
        deit_*) schedule="--epochs 30 --lr 5e-4 --transfer $DEIT_WEIGHTS" ;;
        swin_*) schedule="--epochs 300" ;;
        *) schedule="--epochs 150" ;;
    esac
    # shellcheck disable=SC2086
    python benchmarks/train_cifar10.py --model "$model" --device "$DEVICE" --data "$DATA" $schedule \
        --batch-size "$BATCH" --fit-minutes "$MINUTES" --state "$STATE_DIR/$model.pt" --out-dir "$CKPT_DIR" \
        --out "$RESULTS_DIR/train_cifar10_$model.json" --cache-dir "$CACHE_DIR" $EXTRA \
        >"$LOG_DIR/$model.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for model in $MODELS; do tail -n 1 "$LOG_DIR/$model.log"; done
exit $status
