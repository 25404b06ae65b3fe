#!/usr/bin/env bash
# GPU figures of issues 3 and 4 in one prepared run (one lease of a lent GPU machine):
#   1. (modes) benchmarks/supernet_step.py, modes eval, weights, first, second at the DARTS search setting
#      (C=16, 8 cells, batch 64), each next to the PyTorch reference on the same GPU;
#   2. (variants) the weights step with other depthwise forms, without recomputed edges, and with
#      unrolled edges;
#   3. (epoch) one real search epoch of `nasjax search --method darts` at the paper setting (first order)
#      on a CIFAR-10-shaped array set (50,000 32x32x3 train images; the machine has no network, so the
#      pixels are random: the time per epoch does not depend on them).
# Every stage has a time cap under one deadline and appends JSON lines under $OUT as it goes, so a stage
# that runs out of time still leaves the earlier ones.
#
#   OUT=/tmp/out PYTHON=python3 REFERENCE=.devcarry/torch_darts_step.py bash benchmarks/device_supernet.sh
#   SMOKE=1 ...   # tiny sizes on any machine, reference on the CPU: checks the script itself
#   STAGES="second profile variants" ...   # a subset of the stages (modes, second, autotune, profile,
#                                          # variants, epoch)
# The lent machines' image has jax, flax, optax, chex, orbax and torch but not ml_collections: carry its
# wheel (`pip download --no-deps ml_collections` into an ignored .whl/, install it with --target).
set -u
OUT=${OUT:?set OUT to a folder for the results}
PYTHON=${PYTHON:-python3}
TORCH_PYTHON=${TORCH_PYTHON:-$PYTHON}
REFERENCE=${REFERENCE:-.devcarry/torch_darts_step.py}
DEADLINE=${DEADLINE:-560}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
LOG=$OUT/log.txt

if [ "${SMOKE:-0}" = 1 ]; then
  size=(--C 4 --layers 2 --batch 8) steps=(--steps 2 --warmup 1) refdev=cpu
  search_size=(--channels 4 --layers 2 --batch-size 8) n_train=64 n_test=16
else
  size=(--C 16 --layers 8 --batch 64) steps=(--steps 20 --warmup 3) refdev=cuda
  search_size=() n_train=50000 n_test=10000
fi

capped() {  # capped SECONDS cmd...: runs cmd for at most SECONDS, never past the deadline
  local cap=$1; shift
  local left=$((DEADLINE - SECONDS))
  [ "$left" -lt "$cap" ] && cap=$left
  if [ "$cap" -le 10 ]; then echo "skipped (deadline): $*" | tee -a "$LOG" >&2; return 124; fi
  echo "[$SECONDS s] cap ${cap}s: $*" | tee -a "$LOG" >&2
  timeout -k 5 "$cap" "$@"
  local rc=$?
  echo "[$SECONDS s] exit $rc" | tee -a "$LOG" >&2
  return $rc
}

{
  nvidia-smi -L 2>/dev/null || true
  $PYTHON -c 'import jax, flax, optax, chex, orbax.checkpoint as o, numpy, ml_collections, sys
print(sys.version.split()[0], "jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__,
      "chex", chex.__version__, "numpy", numpy.__version__, jax.devices())'
  $TORCH_PYTHON -c 'import torch; print("torch", torch.__version__, torch.cuda.is_available())'
} 2>&1 | tee "$OUT/versions.txt"

bench=(benchmarks/supernet_step.py "${size[@]}" "${steps[@]}")
beside_reference() {  # beside_reference CAP "MODES" [supernet_step.py options]: each mode, reference first
  local cap=$1 modes=$2; shift 2
  for mode in $modes; do
    capped "$cap" $PYTHON benchmarks/supernet_step.py "${size[@]}" "$@" --modes $mode \
      --torch-python "$TORCH_PYTHON" --reference "$REFERENCE" --reference-device $refdev 2>>"$LOG" \
      | tee -a "$OUT/supernet_step.jsonl"
  done
}

stage_modes() {  # every mode with the search defaults (recomputed edges, jvp_recompute)
  beside_reference 240 "eval weights first second" "${steps[@]}"
}

stage_second() {  # the second order next to the first, with fewer steps than "modes"
  # 240 s was too little for "second" on the H100 (2026-11-27: reference ~40 s, then nasjax's compile).
  beside_reference 330 "first second" --steps 10 --warmup 2
}

stage_profile() {  # device time per XLA op of the weights step, edges recomputed and not
  for remat in 1 0; do
    capped 150 $PYTHON "${bench[@]}" --modes weights --remat-edges $remat --profile "/tmp/profile_weights_$remat" \
      2>>"$LOG" | tee -a "$OUT/supernet_step_profile.jsonl" | cut -c1-300
    cp "/tmp/profile_weights_$remat/summary.json" "$OUT/profile_weights_remat$remat.json" 2>/dev/null
    cp "/tmp/profile_weights_$remat/module.hlo.txt.gz" "$OUT/module_weights_remat$remat.hlo.txt.gz" 2>/dev/null
  done
}

stage_variants() {  # other forms of the weights step (2026-11-27, H100: grouped depthwise 0.69 s, dense
  # 0.37 s, shifted slices 0.28 s, the default since; PyTorch 0.44 s)
  for variant in "--pool-impl shift" "--dw-impl grouped" "--edge-loop unroll" "--dw-impl dense" \
                 "--remat-edges 0"; do
    capped 150 $PYTHON "${bench[@]}" --modes weights $variant 2>>"$LOG" \
      | sed "s/^{/{\"variant\": \"$variant\", /" | tee -a "$OUT/supernet_step_variants.jsonl"
  done
}

stage_autotune() {  # the second-order step's compile without XLA:GPU autotuning (2026-11-28, H200: 219 s
  # with it), with both exact products; nasjax only, the reference's figures are in the "second" stage
  for hessian in jvp_recompute jvp; do
    capped 300 env XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_autotune_level=0" $PYTHON \
      benchmarks/supernet_step.py "${size[@]}" --steps 10 --warmup 2 --modes second --hessian $hessian \
      2>>"$LOG" | sed 's/^{/{"variant": "xla_gpu_autotune_level=0", /' | tee -a "$OUT/supernet_step_autotune.jsonl"
  done
}

stage_epoch() {  # one search epoch at the paper setting, timed by the search's own per-epoch record
  $PYTHON - "$n_train" "$n_test" <<'EOF'
import sys, numpy as np
n, m = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
np.savez("/tmp/cifar_shaped.npz", x_train=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
         y_train=rng.integers(0, 10, n).astype(np.int64), x_test=rng.integers(0, 256, (m, 32, 32, 3), dtype=np.uint8),
         y_test=rng.integers(0, 10, m).astype(np.int64))
EOF
  rm -rf /tmp/search_epoch
  # One epoch takes whatever time is left: its record's "seconds" holds the first step's compilation
  # ("steady_s_per_step" leaves it out), and the progress bar (kept in search_epoch_progress.txt) gives the
  # steady rate even when the cap cuts the epoch short: 390 steps at that rate is the epoch without compilation.
  capped 600 $PYTHON -c 'import sys; from nasjax.cli import main; sys.exit(main(sys.argv[1:]))' search \
    --method darts --order ${EPOCH_ORDER:-1} --epochs 1 --data /tmp/cifar_shaped.npz --out /tmp/search_epoch \
    "${search_size[@]}" 2>&1 | tr '\r' '\n' | grep -v '^ *$' >"$OUT/search_epoch_progress.txt"
  cp /tmp/search_epoch/metrics.jsonl "$OUT/search_epoch_metrics.jsonl" 2>/dev/null
  grep -E 'it/s|s/it' "$OUT/search_epoch_progress.txt" | sed -n '1p;$p' | tee -a "$LOG"
}

# STAGES picks and orders the stages: a 15-minute lease fits about two of them.
for stage in ${STAGES:-modes variants epoch}; do
  "stage_$stage"
done
echo "[$SECONDS s] done" | tee -a "$LOG"
$PYTHON - "$OUT" <<'EOF'
import glob, json, os, sys
keys = ("variant", "hessian", "impl", "mode", "dw_impl", "edge_loop", "remat_edges", "median_s_per_step",
        "min_s_per_step", "compile_s", "peak_device_mib", "peak_rss_mib", "speedup_vs_reference", "error",
        "epoch", "seconds", "steady_s_per_step", "train_loss")
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.jsonl"))):
  print(os.path.basename(path))
  for line in open(path):
    if line.strip().startswith("{"):
      rec = json.loads(line)
      print(" ", {k: rec[k] for k in keys if k in rec})
for path in sorted(glob.glob(os.path.join(sys.argv[1], "profile_*.json"))):
  rec = json.load(open(path))
  print(os.path.basename(path), "busy ms/step", rec.get("device_busy_ms_per_step"), "kernels/step",
        rec.get("kernels_per_step"))
  for g in rec.get("top_sources", [])[:12]:
    print("  ", g["ms_per_step"], g["source"][:110])
EOF
