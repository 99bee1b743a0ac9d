"""Benchmark (run by hand, not collected by pytest): exact fixed-point enumeration of one random network.

    .venv/bin/python tests/benchmarks/bench_hopfield.py                     # N = 32: numpy vs numba (CPU), CUDA when present
    .venv/bin/python tests/benchmarks/bench_hopfield.py --N 28 30 --backends numpy numba --repeats 3
    .venv/bin/python tests/benchmarks/bench_hopfield.py --N 28 30 --backends numba --couplings pm1 gauss   # ±1 vs Gaussian
    .venv/bin/python tests/benchmarks/bench_hopfield.py --backends cuda --minute    # GPU: largest N enumerated in 60 s

`--threads` sets numba's thread count (default: all); with `--threads 1` the CPU time is that of the one
thread doing the work, the cleanest measure on a machine shared with other jobs.

`--couplings` picks the families: 'pm1' (the int8 table kernel: histogram of min_i u_i) and 'gauss' (couplings
N(0, 1/(N-1)) on the grid 2^-24: the int32 kernel, counts for the 17 self-couplings D = 0, 0.25, ..., 4 plus a
huge D whose count must be 2^N).

Backends run interleaved (repeat 1 of every backend, then repeat 2, ...), so a shared, noisy machine
slows them alike; the table records the wall time, the CPU time of this process, enumerated states per
second (2^(N-1) states, thanks to the ± symmetry), covered states per second (2^N), enumerated states per
CPU-second (all threads together: on a machine shared with other jobs this, times the thread count, says
what an idle machine would do), CPU seconds per 2^31 enumerated states (N = 32) against the AVX-512 bound
of about 0.21 s (31 byte minima per 64 states at two 512-bit instructions per cycle, ~2.8 GHz, plus a little
counting) and, for every backend, the ratio of the numpy reference's best time to its own. The first call of each backend
(compilation or loading the compiled kernel from the cache) is timed separately. Every histogram must
add up to 2^N, and the backends must give identical histograms for the same network.

`--minute` (default when CUDA is present) enumerates N = 32, 34, ... with the fastest backend until a
run takes more than 60 s or the next one is predicted to (4x per step of 2), and reports the largest
N done within 60 s (goal on one H200: N = 40, 2^39 states).

The table (default figures/hopfield_benchmark.csv) is merged (`core.merge_csv`): rows of the same machine
(`experiments.machine_name`), backend, couplings, run and N are replaced, others kept, so CPU and GPU results live in
one file.
"""
import argparse, time
from pathlib import Path
import numba, numpy as np, torch
from entropic_ae.core import tidy, merge_csv
from entropic_ae.experiments import machine_name
from entropic_ae.hopfield import random_couplings, min_stability_histogram, counts_from_histogram, count_fixed_points, cuda

D_LIST = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]
BOUND_CPU_S = 0.21     # CPU seconds per 2^31 states: the AVX-512 bound of the int8 minima (see the docstring)
D_GAUSS = [0.25*k for k in range(17)] + [1e3]          # the experiment's grid, and one D at which every state is fixed
HAS_CUDA = torch.cuda.is_available()

def device_of(backend): return 'cuda' if backend in ('cuda', 'torch') and HAS_CUDA else 'cpu'

def run_one(N, backend, low_bits=None, seed=0, couplings='pm1'):
    "Wall and CPU seconds of one enumeration, and its result (±1: the histogram of min u; Gaussian: counts at D_GAUSS)."
    J = random_couplings(N, seed, couplings=couplings)
    dev = device_of(backend)
    if dev == 'cuda': torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    if couplings == 'pm1': h = min_stability_histogram(J, device=dev, low_bits=low_bits, backend=backend)   # host counts: synchronised
    else: h = count_fixed_points(J, D_GAUSS, device=dev, low_bits=low_bits, backend=backend, couplings='gauss')
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    total = h.sum() if couplings == 'pm1' else h[-1]
    assert total == 2**N, f'{backend}: {couplings} enumeration covers {total} states, not 2^{N}'
    return dt, dc, h

def first_call(backend, couplings='pm1'):
    "Time of the first call (compiles, or loads the compiled kernel from numba's cache); None if the backend fails."
    try:
        dt, _, _ = run_one(12, backend, couplings=couplings)
        return dt
    except Exception as e:
        print(f'{backend}: unavailable here ({type(e).__name__}: {str(e).splitlines()[0][:200]})')
        return None

def compare(a, backends, rows, couplings='pm1'):
    "Interleaved timing of every backend at every N; histograms (counts) must agree."
    for N in a.N:
        times = {b: [] for b in backends}; cpu = {b: [] for b in backends}; ref = None
        for r in range(a.repeats):
            for b in backends:
                dt, dc, h = run_one(N, b, a.low_bits, couplings=couplings)
                times[b].append(dt); cpu[b].append(dc)
                if ref is None: ref = h
                assert (h == ref).all(), f'N={N}: {b} {couplings} result differs from {backends[0]}'
        counts = counts_from_histogram(ref, N, D_LIST) if couplings == 'pm1' else ref[[0, 2, 4, 6, 8, 12]]
        for b in backends:
            best = min(times[b])
            threads = numba.get_num_threads() if b == 'numba' else 1 if b == 'numpy' else ''
            extra = dict(N=N, backend=b, device=device_of(b), machine=machine_name(device_of(b)), low_bits=a.low_bits or 'default', threads=threads, couplings=couplings)
            rows += [tidy('bench_hopfield', r, 0, 'seconds', t, **extra) for r, t in enumerate(times[b])]
            rows += [tidy('bench_hopfield', r, 0, 'cpu_seconds', t, **extra) for r, t in enumerate(cpu[b])]
            rows += [tidy('bench_hopfield', 0, 0, 'enumerated_states_per_s', 2**(N-1)/best, **extra),
                     tidy('bench_hopfield', 0, 0, 'covered_states_per_s', 2**N/best, **extra),
                     tidy('bench_hopfield', 0, 0, 'enumerated_states_per_cpu_s', 2**(N-1)/min(cpu[b]), **extra),
                     tidy('bench_hopfield', 0, 0, 'cpu_seconds_per_2^31_states', min(cpu[b])*2**31/2**(N-1), **extra)]
            per31 = min(cpu[b])*2**31/2**(N-1)
            line = (f'{couplings:5s} {b:6s} N={N:2d}: best {best:8.3f} s of {a.repeats} (cpu {min(cpu[b]):7.3f} s); {2**(N-1)/best:.3e} enumerated states/s, '
                    f'{2**(N-1)/min(cpu[b]):.3e} per CPU-s; {per31:.3f} CPU-s per 2^31 states = {per31/BOUND_CPU_S:.1f}x the bound')
            if 'numpy' in backends:
                ratio = min(times['numpy'])/best
                per_rep = np.median([tn/tb for tn, tb in zip(times['numpy'], times[b])])
                rows += [tidy('bench_hopfield', 0, 0, 'speedup_vs_numpy', ratio, **extra),
                         tidy('bench_hopfield', 0, 0, 'speedup_vs_numpy_interleaved_median', per_rep, **extra)]
                line += f'; {ratio:.2f}x numpy (interleaved median {per_rep:.2f}x)'
            print(line + f'  [{machine_name(device_of(b))}]', flush=True)
        print(f'       N={N:2d}: #FP at D={D_LIST}: {counts.tolist()}', flush=True)

def minute(a, backend, rows, limit=60.0):
    "Enumerate N = a.minute_from, +2, ... until a run exceeds `limit` s or the next is predicted to."
    best_N, N, last = None, a.minute_from, None
    while N <= 40:
        if last is not None and 4*last > limit:
            print(f'{backend}: N={N} predicted {4*last:.0f} s > {limit:.0f} s; stop'); break
        dt, _, h = run_one(N, backend, a.low_bits)
        extra = dict(N=N, backend=backend, device=device_of(backend), machine=machine_name(device_of(backend)), low_bits=a.low_bits or 'default', couplings='pm1')
        rows += [tidy('bench_hopfield_minute', 0, 0, 'seconds', dt, **extra),
                 tidy('bench_hopfield_minute', 0, 0, 'enumerated_states_per_s', 2**(N-1)/dt, **extra)]
        print(f'{backend} N={N}: {dt:.2f} s, {2**(N-1)/dt:.3e} enumerated states/s; #FP at D={D_LIST}: '
              f'{counts_from_histogram(h, N, D_LIST).tolist()}', flush=True)
        if dt > limit: break
        best_N, last, N = N, dt, N + 2
    extra = dict(backend=backend, device=device_of(backend), machine=machine_name(device_of(backend)), low_bits=a.low_bits or 'default', couplings='pm1')
    rows.append(tidy('bench_hopfield_minute', 0, 0, 'largest_N_in_60s', best_N if best_N else float('nan'), **extra))
    print(f'{backend}: largest N enumerated within {limit:.0f} s: {best_N}')

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--N', type=int, nargs='+', default=[32])
    ap.add_argument('--backends', nargs='+', default=['numpy', 'numba'] + (['cuda'] if HAS_CUDA else []))
    ap.add_argument('--repeats', type=int, default=2)
    ap.add_argument('--low-bits', type=int, default=None)
    ap.add_argument('--minute', action='store_true', default=HAS_CUDA)
    ap.add_argument('--minute-from', type=int, default=32)
    ap.add_argument('--couplings', nargs='+', default=['pm1'], choices=['pm1', 'gauss'])
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--out', default='figures/hopfield_benchmark.csv')
    a = ap.parse_args(argv)
    if a.threads: numba.set_num_threads(a.threads)
    rows = []
    firsts = {b: first_call(b) for b in a.backends}
    for c in a.couplings:
        if c != 'pm1':
            for b in a.backends: first_call(b, c)                       # compile / load the Gaussian kernels too
    for b, t in firsts.items():
        if t is not None:
            rows.append(tidy('bench_hopfield', 0, 0, 'first_call_seconds', t, N=12, backend=b, device=device_of(b), machine=machine_name(device_of(b)), couplings='pm1'))
            print(f'{b}: first call (compile or cache load) {t:.2f} s')
    backends = [b for b in a.backends if firsts[b] is not None]
    if HAS_CUDA and 'cuda' in a.backends and 'cuda' not in backends and 'torch' not in backends:
        print('falling back to the torch gather path on the GPU'); backends.append('torch')
    if a.N:
        for c in a.couplings: compare(a, backends, rows, c)
    if a.minute:
        gpu = [b for b in backends if device_of(b) == 'cuda']
        minute(a, (gpu or backends)[-1], rows)
    print('table:', merge_csv(rows, Path(a.out), key=['machine', 'backend', 'couplings', 'run', 'N']))

if __name__ == '__main__': main()
