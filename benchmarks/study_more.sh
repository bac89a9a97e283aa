#!/usr/bin/env bash
# The zoo models the main grid leaves out (SRCNN, RCAN, NAFNet), so that the advisor's pick can be checked against
# training for every zoo model. Same settings as the main study; resumable (rerun to finish).
#   bash benchmarks/study_more.sh            # ~25 min with 2 workers on 2 CPU cores
set -euo pipefail
OUT=${OUT:-docs/evidence/more}
COMMON="--seeds 3 --batch-size 8 --lr 0.001 --eval-crop 96 --channels 1 --workers 2 --out $OUT --quiet"
initwise bench sr-x2 --models srcnn --steps 500 --patch-size 32 --eval-at 0,100,300,500 \
  --schemes default,kaiming_fan_in,kaiming_fan_out,kaiming_fan_avg,relu_fan_out,orthogonal,kaiming_fan_in_out0.1 $COMMON
initwise bench denoise-s25 --models nafnet --steps 300 --patch-size 32 --eval-at 0,100,300 \
  --schemes default,kaiming_fan_in,kaiming_fan_out,orthogonal,kaiming_fan_in_zero_res,kaiming_fan_in_out0.1 $COMMON
initwise bench sr-x2 --models rcan --steps 300 --patch-size 32 --eval-at 0,100,300 \
  --schemes default,kaiming_fan_in,kaiming_fan_out,relu_fan_out,kaiming_fan_in_res0.1,kaiming_fan_in_zero_res,kaiming_fan_in_out0.1 $COMMON
