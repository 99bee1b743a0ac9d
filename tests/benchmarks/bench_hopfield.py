"""Benchmark (run by hand, not collected by pytest): exact fixed-point enumeration of one random ±1 network.

    .venv/bin/python tests/benchmarks/bench_hopfield.py                  # N = 32 on CPU, and on CUDA when present
    .venv/bin/python tests/benchmarks/bench_hopfield.py --N 24 28 --devices cpu --repeats 3

Prints one line per (device, N) and writes a tidy table (default figures/hopfield_benchmark.csv) with the
wall time, enumerated states per second (2^(N-1) states, thanks to the ± symmetry) and covered states per
second (2^N). Every run checks that the histogram adds up to 2^N; with CUDA the counts are compared to
the CPU counts for the smaller sizes.
"""
import argparse, os, platform, time
import numpy as np, torch
from entropic_ae.core import tidy, write_csv
from entropic_ae.hopfield import random_couplings, min_stability_histogram, counts_from_histogram

D_LIST = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]

def run_one(N, device, low_bits=None, seed=0):
    J = random_couplings(N, seed)
    if device.startswith('cuda'): torch.cuda.synchronize()
    t0 = time.perf_counter()
    h = min_stability_histogram(J, device=device, low_bits=low_bits)
    if device.startswith('cuda'): torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    assert h.sum() == 2**N, f'histogram adds up to {h.sum()}, not 2^{N}'
    return dt, counts_from_histogram(h, N, D_LIST)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--N', type=int, nargs='+', default=[32])
    ap.add_argument('--devices', nargs='+', default=['cpu'] + (['cuda'] if torch.cuda.is_available() else []))
    ap.add_argument('--repeats', type=int, default=1)
    ap.add_argument('--low-bits', type=int, default=None)
    ap.add_argument('--out', default='figures/hopfield_benchmark.csv')
    a = ap.parse_args(argv)
    host = f'{platform.processor() or platform.machine()}, {os.cpu_count()} cpus'
    rows, ref = [], {}
    for dev in a.devices:
        name = torch.cuda.get_device_name() if dev.startswith('cuda') else host
        if dev.startswith('cuda'): run_one(12, dev)   # warm-up: CUDA context, kernels
        for N in a.N:
            times = []
            for r in range(a.repeats):
                dt, counts = run_one(N, dev, a.low_bits)
                times.append(dt)
            if N in ref: assert (ref[N] == counts).all(), f'{dev} counts {counts} differ from {ref[N]}'
            else: ref[N] = counts
            best = min(times)
            print(f'{dev:5s} N={N:2d}: best {best:8.3f} s of {a.repeats}; {2**(N-1)/best:.3e} enumerated states/s '
                  f'({2**N/best:.3e} covered states/s); #FP at D={D_LIST}: {counts.tolist()}  [{name}]', flush=True)
            extra = dict(N=N, device=dev, hardware=name, low_bits=a.low_bits or 'default')
            rows += [tidy('bench_hopfield', r, 0, 'seconds', t, **extra) for r, t in enumerate(times)]
            rows += [tidy('bench_hopfield', 0, 0, 'enumerated_states_per_s', 2**(N-1)/best, **extra),
                     tidy('bench_hopfield', 0, 0, 'covered_states_per_s', 2**N/best, **extra)]
    print('table:', write_csv(rows, a.out))

if __name__ == '__main__': main()
