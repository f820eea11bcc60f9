#!/bin/bash
# The media_conv pilots of results_multimodal.md ("Convolution features of media bytes"), five
# multimodal_pilot.py runs at once on one GPU, each with its own --out. Run from the repository
# root on the GPU machine with the Fashion-MNIST idx files in .gpu/fmnist (the Debian package's
# /usr/share/datasets/fashion-mnist) and omnibyte importable:
#     bash benchmarks/media_conv_gpu_pilots.sh 1 $OUT    # first sweep
#     bash benchmarks/media_conv_gpu_pilots.sh 2 $OUT    # second sweep
set -u
SWEEP=$1 OUT=$2
P="python3 -m benchmarks.multimodal_pilot"
C='{"adapters": {"media_conv": {"channels": 32}}}'
T='{"device": "cuda"}'
F='{"root": ".gpu/fmnist"}'
SH='{"size": 24, "max_shapes": 4, "point": 0, "min_radius": 0.14, "max_radius": 0.2}'
CL='{"size": 24, "mode": "gray"}'
if [ "$SWEEP" = 1 ]; then
  $P fashion --steps 2000 --media-loss-weight 0 --opts "$F" --model "$C" --train "$T" --out /tmp/p1 > $OUT/fa20conv.log 2>&1 &
  $P fashion --steps 2000 --media-loss-weight 0 --opts "$F" --model "$C" --train "$T" --n-train 60000 --out /tmp/p2 > $OUT/fa60conv.log 2>&1 &
  $P fashion --steps 2000 --media-loss-weight 0 --opts "$F" --train "$T" --n-train 60000 --out /tmp/p3 > $OUT/fa60base.log 2>&1 &
  $P clocks --steps 2000 --media-loss-weight 0 --opts "$CL" --model "$C" --train "$T" --out /tmp/p4 > $OUT/clocksconv.log 2>&1 &
  $P shapes --steps 2000 --media-loss-weight 0 --opts "$SH" --model "$C" --train "$T" --out /tmp/p5 > $OUT/shapesconv.log 2>&1 &
else
  $P fashion --steps 3000 --media-loss-weight 0 --opts "$F" --model "$C" --train "$T" --n-train 60000 --out /tmp/q1 > $OUT/fa60conv3000.log 2>&1 &
  $P fashion --steps 2000 --media-loss-weight 0 --opts "$F" --model '{"adapters": {"media_conv": {"channels": 32}}, "patcher": {"kind": "static", "patch_size": 4, "image_rows": 1}}' --train "$T" --n-train 60000 --out /tmp/q2 > $OUT/fa60convrows.log 2>&1 &
  $P fashion --steps 2000 --media-loss-weight 0 --opts "$F" --model '{"adapters": {"media_conv": {"channels": 32, "kernel": 7}}}' --train "$T" --n-train 60000 --out /tmp/q3 > $OUT/fa60conv7.log 2>&1 &
  $P shapes --steps 2000 --media-loss-weight 0.1 --opts "$SH" --model "$C" --train "$T" --out /tmp/q4 > $OUT/shapesw01.log 2>&1 &
  $P clocks --steps 2000 --media-loss-weight 0.1 --opts "$CL" --model "$C" --train "$T" --out /tmp/q5 > $OUT/clocksw01.log 2>&1 &
fi
wait
