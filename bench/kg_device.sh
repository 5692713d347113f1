#!/usr/bin/env bash
# Accelerator-scale KG runs for issue 8, all at once on one GPU (each job is small for an H100/H200,
# so they share it), each under a wall-clock training budget (train.max_seconds): FB15k-237 AttH/RotH
# d=32 reproductions, CAT and its E/H/S variants on both datasets, and the large ComplEx-N3 best-model
# candidates (WN18RR with and without text-initialised entities; FB15k-237 with and without the
# relation-prediction term, and the FB15k-237 text member).
#
#   OUT=/tmp/kgout BUDGET=380 bash bench/kg_device.sh      # JOBS="atth_fb15k237 ..." picks a subset
#
# Data: $GEOFM_DATA (a copy of ../shared/data/kg laid out as kg/<NAME>/...). WN18RR text init reads
# $WN_TEXT, a [40943, 384] .npy from `geofm encode --dataset WN18RR --out FILE`, and the FB15k-237
# text member $FB_TEXT, from `geofm encode --dataset FB15k-237 --entity-text
# entity2text_firstsentence.txt --out FILE` (so the accelerator machine needs no text-encoder
# weights). FUSE="complex_rp_fb15k237,atth_fb15k237,text_fb15k237" fuses those finished runs
# afterwards (`geofm kg-ensemble RUN ...`, weights on validation; skipped if one has no results.json),
# as configs/kg/ensemble_fb15k237.yaml does; a member written "a|b" is whichever of the finished runs
# a, b has the higher validation MRR. The fusion is cut at T_END seconds after the start (default
# BUDGET + 190), uses weight-grid step STEP (default 0.1) and is written to $RUNS/$FUSE_NAME (default:
# ensemble). Writes $OUT/kg_device_runs.tgz
# (results.json, metrics.jsonl, logs, router plots; no checkpoints) once the jobs end and again after
# the fusion, and prints a one-line summary per job.
set -u
OUT=${OUT:-/tmp/kgout}; RUNS=${RUNS:-/tmp/kgruns}; BUDGET=${BUDGET:-380}; HARD=${HARD:-$((BUDGET + 150))}
DATA=${GEOFM_DATA:-.device/data}; WN_TEXT=${WN_TEXT:-.device/wn18rr_entity_minilm_f16.npy}
FB_TEXT=${FB_TEXT:-.device/fb15k237_entity_firstsentence_minilm_f16.npy}; FUSE=${FUSE:-}; FUSE_NAME=${FUSE_NAME:-ensemble}; T_END=${T_END:-$((BUDGET + 190))}
PY=${PY:-python3}; EXTRA=${EXTRA:-}
mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
$PY -c "import jax, flax, optax, orbax.checkpoint; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" || exit 3

declare -A ARGS=(
  [atth_fb15k237]="--config configs/kg/atth_fb15k237.yaml"
  [roth_fb15k237]="--config configs/kg/roth_fb15k237.yaml"
  [complex_big_fb15k237]="--config configs/kg/complex_big_fb15k237.yaml"
  [complex_rp_fb15k237]="--config configs/kg/complex_rp_fb15k237.yaml"
  [complex_b1000_fb15k237]="--config configs/kg/complex_b1000_fb15k237.yaml"
  [complex_big_wn18rr]="--config configs/kg/complex_big_wn18rr.yaml"
  [complex_big_text_wn18rr]="--config configs/kg/complex_big_text_wn18rr.yaml --set init.embeddings=$WN_TEXT"
  [text_fb15k237]="--config configs/kg/text_fb15k237.yaml --set init.embeddings=$FB_TEXT"
  [cat_fb15k237]="--config configs/kg/cat_fb15k237.yaml"
  [cat_e_fb15k237]="--config configs/kg/cat_e_fb15k237.yaml"
  [cat_h_fb15k237]="--config configs/kg/cat_h_fb15k237.yaml"
  [cat_s_fb15k237]="--config configs/kg/cat_s_fb15k237.yaml"
  [cat_wn18rr]="--config configs/kg/cat_wn18rr.yaml"
  [cat_e_wn18rr]="--config configs/kg/cat_e_wn18rr.yaml"
  [cat_h_wn18rr]="--config configs/kg/cat_h_wn18rr.yaml"
  [cat_s_wn18rr]="--config configs/kg/cat_s_wn18rr.yaml"
)
JOBS=${JOBS:-${!ARGS[*]}}
save_runs() {  # the run folders without checkpoints; replaced whole, so a kill mid-write keeps the last archive
  tar czf "$OUT/.kg_device_runs.tgz.tmp" -C "$RUNS" --exclude=checkpoints . && mv "$OUT/.kg_device_runs.tgz.tmp" "$OUT/kg_device_runs.tgz"
}
t0=$(date +%s)
for name in $JOBS; do
  # shellcheck disable=SC2086
  timeout "$HARD" $PY -m geofm kg ${ARGS[$name]} --data-dir "$DATA" --out "$RUNS/$name" --json --quiet \
    --set train.max_seconds="$BUDGET" $EXTRA > "$RUNS/$name.log" 2>&1 &
done
tick=0
while [ -n "$(jobs -r)" ]; do
  sleep 5; tick=$((tick + 1)); [ $((tick % 12)) -eq 0 ] || continue
  echo "[$(( $(date +%s) - t0 )) s] $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null)"
  for name in $JOBS; do
    last=$(tail -n 1 "$RUNS/$name/metrics.jsonl" 2>/dev/null | cut -c1-90); echo "  $name: ${last:-starting}"
  done
done
for name in $JOBS; do
  echo "== $name: $(tail -n 1 "$RUNS/$name.log" | cut -c1-200)"
done
save_runs
if [ -n "$FUSE" ]; then  # late fusion of finished member runs (each rebuilt from its own config)
  members=(); missing=""
  for m in ${FUSE//,/ }; do
    pick=$($PY - "$RUNS" ${m//|/ } <<'PICK'
import json, sys
from pathlib import Path
best = max(((json.loads(p.read_text())["valid"]["mrr"], name) for name in sys.argv[2:]
            if (p := Path(sys.argv[1]) / name / "results.json").exists()), default=(None, ""))
print(best[1])
PICK
)
    if [ -n "$pick" ]; then members+=("$RUNS/$pick"); else missing="$missing $m"; fi
  done
  left=$(( T_END - ($(date +%s) - t0) ))
  if [ -n "$missing" ]; then
    echo "== fusion skipped, unfinished:$missing"
  elif [ "$left" -lt 30 ]; then
    echo "== fusion skipped, $left s left before T_END"
  else
    echo "== fusion of ${members[*]} ($left s left)"
    timeout "$left" $PY -m geofm kg-ensemble "${members[@]}" --step "${STEP:-0.1}" --data-dir "$DATA" --out "$RUNS/$FUSE_NAME" \
      --json --quiet > "$RUNS/$FUSE_NAME.log" 2>&1
    echo "== fusion: $(tail -n 1 "$RUNS/$FUSE_NAME.log" | cut -c1-200)"
  fi
  save_runs
fi
echo "done in $(( $(date +%s) - t0 )) s"
