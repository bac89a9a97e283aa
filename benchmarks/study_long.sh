#!/usr/bin/env bash
# The long regime of docs/evidence.md: EDSR, VDSR and DnCNN trained ~3-7x longer than in the main study, so that
# every healthy start has clearly passed the bicubic / noisy-input baseline. Resumable (rerun to finish).
#   bash benchmarks/study_long.sh            # ~45 min with 2 workers on 2 CPU cores
set -euo pipefail
OUT=${OUT:-docs/evidence/long}
COMMON="--seeds 3 --batch-size 8 --lr 0.001 --eval-crop 96 --channels 1 --workers 2 --out $OUT --quiet"
initwise bench denoise-s25 --models dncnn --steps 600 --patch-size 24 --eval-at 0,100,300,600 \
  --schemes default,kaiming_fan_in,kaiming_fan_out,linear_gain_fan_in,kaiming_fan_in_out0.1,kaiming_fan_in_zero_res $COMMON
initwise bench sr-x2 --models vdsr --steps 600 --patch-size 24 --eval-at 0,100,300,600 \
  --schemes default,kaiming_fan_in,kaiming_fan_out,relu_fan_out,kaiming_fan_in_out0.1,kaiming_fan_in_zero_res $COMMON
initwise bench sr-x2 --models edsr --steps 1000 --patch-size 32 --eval-at 0,100,300,600,1000 \
  --schemes default,kaiming_fan_in,kaiming_fan_out,relu_fan_out,kaiming_fan_in_res0.1,kaiming_fan_in_zero_res $COMMON
