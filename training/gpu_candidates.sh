#!/usr/bin/env bash
# Train candidate default models side by side on one lent GPU machine, each for a fixed number of
# seconds, then export each as a float16 model file. The exact job of the twenty-first session
# (docs/model-card.md, "Twenty-first session"); run from the repository root:
#
#   BUDGET=420 OUTDIR=$OUT bash training/gpu_candidates.sh
#
# BUDGET    seconds of training per candidate (the pool's generation comes first, ~1 min)
# OUTDIR    where the exported models (split in 15 MiB parts, `cat NAME.part* > NAME`) and a
#           tarball of the logs go
# POOL      the pool's options (default: the lineage's; a small one for a dry run on a CPU)
# PY        the Python that has torch (default python3)
# TESTS     1 (default): also run the engine tests on CUDA (`pytest tests/core --device cuda`),
#           on 2 CPU threads, beside the training
#
# Each candidate is a `training/train_default.py` run with 4 threads; a GPU step is the sampler's
# CPU work (docs/benchmarks.md, "On a GPU"); in the sixth session side-by-side processes with 16
# threads each ran 20x slower (oversubscribed threads the likely cause), so threads are capped.
# A candidate that fails leaves its log. Since that session pN and pNG batch-normalise anchors,
# copies and mined negatives together (core.train.branch_embeddings): rerun, they differ.
set -u
BUDGET=${BUDGET:-420}
OUTDIR=${OUTDIR:-runs/gpu-out}
TESTS=${TESTS:-1}
PY=${PY:-python3}
RUNS=runs/gpu
mkdir -p "$RUNS" "$OUTDIR"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 MKL_NUM_THREADS=4
INIT=src/napari_siamforensic/weights/default.safetensors
# the pool and options of the fine-tuning lineage since ft10 (docs/model-card.md)
POOL=${POOL:-"--size 640 --smooth 240 --shared 600 --shared-reference 384 --flat 800 --group-negatives 0.3 --hard-negatives 0.5"}
COMMON="--batch-size 128 --steps 100000 --workers 5 --threads 4 --eval-every 250 --checkpoint-every 2000"
declare -A OPTS
# pN: negatives trained in their closest of the 16 scoring poses (fourth session: 400 CPU
#     steps; twenty-first: 1,725 GPU steps, each branch normalised apart, which failed)
OPTS[pN]="$POOL --geometry mild --negative-poses dihedral+invert --lr 1e-4 --init $INIT"
# pG: the paper's geometry (rotation 45 degrees, scale 0.5-1.5, perspective 20 px), which the
#     protocol uses and the lineage has not trained on since ft4
OPTS[pG]="$POOL --geometry paper --lr 1e-4 --init $INIT"
# pNG: both
OPTS[pNG]="$POOL --geometry paper --negative-poses dihedral+invert --lr 1e-4 --init $INIT"
# pNs: pN at a third of the learning rate (twenty-second session), in case 1e-4 moves too far from
#      the shipped model in a few thousand GPU steps
OPTS[pNs]="$POOL --geometry mild --negative-poses dihedral+invert --lr 3e-5 --init $INIT"
NAMES="${NAMES:-pN pG pNG}"
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
for n in $NAMES; do
    timeout -s TERM $((BUDGET + 100)) "$PY" training/train_default.py --out "$RUNS/$n" $COMMON --max-seconds "$BUDGET" ${OPTS[$n]} \
        > "$RUNS/$n.log" 2>&1 &
done
if [ "$TESTS" = 1 ]; then
    (sleep 60; OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 timeout $((BUDGET - 30)) \
        "$PY" -m pytest tests/core --device cuda -q -p no:cacheprovider > "$RUNS/tests.log" 2>&1;
     echo "pytest exit $?" >> "$RUNS/tests.log") &
fi
wait
for n in $NAMES; do
    tail -3 "$RUNS/$n.log"
    if [ -f "$RUNS/$n/checkpoint.safetensors" ]; then
        "$PY" training/train_default.py --out "$RUNS/$n" ${OPTS[$n]} --export "$RUNS/$n/model.safetensors" \
            && split -b 15m "$RUNS/$n/model.safetensors" "$OUTDIR/$n.safetensors.part"
    fi
done
[ "$TESTS" = 1 ] && tail -5 "$RUNS/tests.log"
tar czf "$OUTDIR/logs.tgz" "$RUNS"/*.log "$RUNS"/*/log.jsonl "$RUNS"/*/config.json "$RUNS"/*/environment.json 2>/dev/null
ls -la "$OUTDIR"
