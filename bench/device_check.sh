#!/usr/bin/env bash
# The test suite and the pretraining-step benchmark on an accelerator machine (GPU), with whatever
# JAX / Flax that machine has (the CPU CI pins the versions in pyproject's lower bounds).
#
#   OUT=/tmp/devout bash bench/device_check.sh
#
# 1. `pytest` over the whole suite with pytest-xdist (WORKERS processes sharing the GPU; no memory
#    preallocation), junit XML and the log to $OUT. Tests that need ../shared/data or the packaged
#    text-encoder weights skip there when those are missing, as in CI.
# 2. `bench/pretrain.py --no-torch` twice on the same machine: on the GPU, then with
#    JAX_PLATFORMS=cpu on the host's cores (the same synthetic domains when no data folder
#    travels), so the GPU/CPU ratio comes from one run: $OUT/pretrain_gpu.json, $OUT/pretrain_cpu.json.
# BENCH=0 skips step 2. Missing Python packages (grain and its array_record / portpicker) travel as wheels in .whl/.
set -u -o pipefail
OUT=${OUT:-/tmp/devout}; WORKERS=${WORKERS:-8}; BENCH=${BENCH:-1}; PY=${PY:-python3}; TEST_TIMEOUT=${TEST_TIMEOUT:-330}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
$PY - <<'EOF' | tee "$OUT/versions.txt" || exit 3
import importlib, jax
for m in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "grain", "numpy", "hypothesis"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:  # noqa: BLE001
        print(m, "MISSING", type(e).__name__, e)
print("devices", jax.devices())
EOF
t0=$(date +%s)
timeout "$TEST_TIMEOUT" $PY -m pytest -q -n "$WORKERS" -p no:cacheprovider --junitxml="$OUT/junit.xml" \
  > "$OUT/pytest.log" 2>&1
echo "pytest rc=$? in $(( $(date +%s) - t0 )) s"
tail -n 40 "$OUT/pytest.log"
[ "$BENCH" = 1 ] || exit 0
for where in gpu cpu; do
  t0=$(date +%s)
  if [ "$where" = cpu ]; then platforms=cpu; else platforms=${JAX_PLATFORMS:-}; fi
  JAX_PLATFORMS=$platforms timeout 100 $PY bench/pretrain.py --no-torch --steps 20 --out "$OUT/pretrain_$where.json" \
    > "$OUT/pretrain_$where.log" 2>&1
  echo "pretrain bench on $where rc=$? in $(( $(date +%s) - t0 )) s"; tail -n 8 "$OUT/pretrain_$where.log"
done
