#!/usr/bin/env bash
# One GPU session's work in a fixed wall-clock budget, from the repository root:
#
#     bash tests/benchmarks/gpu_session.sh OUT_DIR [SECONDS]        # default 540 s
#
# 1. Fig. 4.2 under the thesis author's protocol (`replication_flatness`, profile `thesis`), trials 0-4: one process per
#    architecture x arm (the five trials stacked in one model, 25 replicas for replicated Adam), the six processes side
#    by side on the one GPU (under MPS when the driver allows it, so that their small kernels overlap).
# 2. Beside them, the speed benchmarks on the GPU: bench_replicas, bench_sharpness (PyHessian and the point loop),
#    bench_flatness and bench_hopfield. Their timings share the GPU with the training processes: ratios only.
# 3. With MNIST_SIZES="512 1024 ..." (and the files under $ENTROPIC_AE_DATA/MNIST/raw), the author's MNIST autoencoder
#    runs (`mnist_autoencoders`, profile `full`, MNIST_ARCH: shallow [784, 15] by default, or deep): one process per
#    size x arm of MNIST_ARMS (default "adamw sam"), ten seeds stacked in each.
# 4. With SWEEPS="nbs/experiments/sweeps/thesis_fig43.toml ..." each sweep file in turn, in one background process, its
#    cells on SWEEP_WORKERS (default 4) Dask workers that share the GPU (finished cells are skipped on a rerun, and the
#    tables of every finished cell are packed). SWEEP_ARGS adds options (e.g. "-p epochs 2" for a CPU check).
# Everything that finished goes into OUT_DIR/results.tar.gz (figures/tables of each cell, executed notebooks, benchmark
# CSVs, logs), and OUT_DIR/summary.txt says what ran, what finished and in how long. A process still running at the
# budget's end is stopped and reported, not waited for.
# THESIS=0 skips part 1; BENCHES="replicas sharpness flatness hopfield" (the default) names the benchmarks to run ("" for
# none); SMOKE="-p N 16 -p D 4 ..." and SMOKE_MNIST="-p max_epochs 2 ..." add notebook parameters to every thesis or
# MNIST cell (a CPU check of this script with tiny settings).
# The lent machine has torch but neither the Jupyter stack nor Dask, and sees only the checkout: `gpu_carry.sh pack`
# beside this file prepares what to carry (its header gives the device call), `gpu_carry.sh unpack` restores figures/.
# Four shallow MNIST cells at 16384 and 32768 images took 270-350 s side by side on one H100 under MPS (2026-12-06).
set -u
out=${1:?usage: gpu_session.sh OUT_DIR [SECONDS]}; budget=${2:-540}; t0=$(date +%s)
left() { echo $(( budget - $(date +%s) + t0 )); }
py=${PYTHON:-python3}; work=${WORK:-/tmp/eae_gpu}; smoke=${SMOKE:-}
rm -rf "$work"; mkdir -p "$out" "$work/logs" "$work/cells" "$work/bench"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
say() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$work/summary.txt"; }

{ nvidia-smi -L; $py -c "import torch, entropic_ae, entropic_ae.experiments as E; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '', '|', E.machine_name())"; } > "$work/logs/env.txt" 2>&1
say "environment: $(tail -1 "$work/logs/env.txt")"
if [ -n "$smoke" ] || ! command -v nvidia-cuda-mps-control > /dev/null; then say "MPS not used"
elif pgrep -f nvidia-cuda-mps-control > /dev/null; then say "MPS on (its daemon was already running)"   # -f: -x matches only 15 characters of a name
elif nvidia-cuda-mps-control -d >> "$work/logs/env.txt" 2>&1 &&
     timeout 60 $py -c "import torch; print(torch.ones(1, device='cuda').sum().item())" >> "$work/logs/env.txt" 2>&1; then say "MPS on"
else echo quit | nvidia-cuda-mps-control 2> /dev/null; say "MPS off (its daemon or a client under it did not start)"; fi

# 1 and 3. the cells
cell() { local c=$1; shift   # one eae-run (python -m entropic_ae.sweeps: no installed script needed) in the background, stopped 40 s before the budget ends
  timeout $(( $(left) - 40 )) $py -m entropic_ae.sweeps "$@" \
    --runs-dir "$work/cells/$c/runs" --figures-dir "$work/cells/$c" > "$work/logs/$c.log" 2>&1 &
  pids+=("$!:$c:$(date +%s)"); }
pids=()
[ "${THESIS:-1}" = 1 ] && for arch in deep shallow; do for arm in replicated sam adam; do
  cell ${arch}_$arm --only replication_flatness --profile thesis -p archs "['$arch']" -p arms "['$arm']" -p trials 5 -p threads 2 $smoke
done; done
for size in ${MNIST_SIZES:-}; do for arm in ${MNIST_ARMS:-adamw sam}; do
  cell mnist_${MNIST_ARCH:-shallow}_${size}_$arm --only mnist_autoencoders --profile full -p arch "'${MNIST_ARCH:-shallow}'" -p sizes "[$size]" -p arms "['$arm']" \
    -p ckpt_dir "''" -p threads 2 ${SMOKE_MNIST:-}
done; done
if [ -n "${SWEEPS:-}" ]; then   # the sweep files one after another, in one background process, stopped with the cells
  ( for f in $SWEEPS; do [ "$(left)" -gt 60 ] || break
      timeout $(( $(left) - 40 )) $py -m entropic_ae.sweeps --sweep "$f" --workers "${SWEEP_WORKERS:-4}" --runs-dir "$work/sweeps" ${SWEEP_ARGS:-}
    done ) > "$work/logs/sweeps.log" 2>&1 &
  pids+=("$!:sweeps:$(date +%s)")
fi
say "started the cells: ${pids[*]}"

# 2. the benchmarks, one after another, each within what is left
bench() { local name=$1; shift; local t=$(date +%s)
  if [ "$(left)" -lt 60 ]; then say "$name skipped: too little time left"; return; fi
  timeout $(( $(left) - 45 )) $py "$@" > "$work/logs/$name.log" 2>&1; say "$name: exit $? after $(( $(date +%s) - t )) s"; }
for b in ${BENCHES-replicas sharpness flatness hopfield}; do case $b in
  replicas) bench bench_replicas tests/benchmarks/bench_replicas.py --device cuda --out "$work/bench/bench_replicas_cuda.csv" --coupling ;;
  sharpness) bench bench_sharpness tests/benchmarks/bench_sharpness.py --device cuda --out-dir "$work/bench" ;;
  flatness) bench bench_flatness tests/benchmarks/bench_flatness.py --device cuda --out-dir "$work/bench" ;;
  hopfield) cp figures/hopfield_benchmark.csv "$work/bench/" 2>/dev/null
            bench bench_hopfield tests/benchmarks/bench_hopfield.py --backends cuda torch --N 32 --repeats 2 --out "$work/bench/hopfield_benchmark.csv" ;;
esac; done

for p in "${pids[@]}"; do IFS=: read -r pid c ts <<< "$p"; wait "$pid"; rc=$?
  done_csv=$(ls "$work/cells/$c"/*.csv 2>/dev/null | head -1)
  say "$c: exit $rc after $(( $(date +%s) - ts )) s or less; ${done_csv:+finished: }$(find "$work/cells/$c/runs" -name '*.ipynb' -exec grep -hoE '(trained and evaluated|total|in) [0-9]+ s' {} + 2>/dev/null | head -1)"
done
[ -d runs/sweeps ] && cp -r runs/sweeps "$work/repo_sweeps"   # sweep files that name their own runs_dir write there
tar czf "$out/results.tar.gz" -C "$work" . && say "packed $(du -h "$out/results.tar.gz" | cut -f1)"
cp "$work/summary.txt" "$out/summary.txt"
