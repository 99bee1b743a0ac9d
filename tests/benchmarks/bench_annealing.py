"""Benchmark (run by hand, not collected by pytest): attempted Metropolis moves per second of the annealing kernels.

    .venv/bin/python tests/benchmarks/bench_annealing.py                        # numba (1 thread, all threads), torch CPU, CUDA if present
    .venv/bin/python tests/benchmarks/bench_annealing.py --N 101 401 --B 16 256 --repeats 3

Every configuration runs a fixed number of sweeps of replicated SA (y replicas, moves of every replica counted) at a
low temperature and strong coupling, so that few instances are solved and the work is the same for every backend.
torch runs with one CPU thread by default (--torch-threads). Backends are interleaved within each repeat (timings on a shared machine are noisy; compare ratios, not absolutes),
and the numba and torch final states are checked to be identical. Writes a tidy table (default
figures/annealing_benchmark.csv).
"""
import argparse, os, time
import numpy as np, numba, torch
from entropic_ae.core import tidy, write_csv
from entropic_ae.experiments import machine_name
from entropic_ae.annealing import anneal, binary_perceptron

def run(prob, y, sweeps, backend, device=None):
    N = prob.A.shape[1]
    kw = dict(y=y, budget=y*N*sweeps, beta0=3., beta1=0., gamma0=1., gamma1=0., seed=1, backend=backend, device=device)
    if device and device.startswith('cuda'): torch.cuda.synchronize()
    t0 = time.perf_counter(); r = anneal(prob, **kw)
    if device and device.startswith('cuda'): torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    moves = np.where(r.solved, r.moves, y*N*r.sweeps).sum()            # attempted moves actually made
    return moves/dt, r

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--N', type=int, nargs='+', default=[101, 401])
    ap.add_argument('--B', type=int, nargs='+', default=[16, 256, 2048])
    ap.add_argument('--torch-threads', type=int, default=1, help='torch CPU threads (1: its ops are tiny, and spinning OpenMP threads on a shared machine were measured 2-10x slower)')
    ap.add_argument('--alpha', type=float, default=0.5)
    ap.add_argument('--y', type=int, default=3)
    ap.add_argument('--sweeps', type=int, default=4)
    ap.add_argument('--torch-sweeps', type=int, default=1)
    ap.add_argument('--repeats', type=int, default=2)
    ap.add_argument('--out', default='figures/annealing_benchmark.csv')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.torch_threads)
    load = round(os.getloadavg()[0], 1)     # the machine is shared: the load beside each row
    all_threads = numba.config.NUMBA_NUM_THREADS
    arms = [('numba', 1, None), ('numba', all_threads, None), ('torch', None, 'cpu')]
    if torch.cuda.is_available(): arms.append(('torch', None, 'cuda'))
    machine = {dev: machine_name(dev or 'cpu') for _, _, dev in arms}   # the table's name for what ran each arm
    anneal(binary_perceptron(11, 0.5, 2), y=a.y, budget=a.y*11)           # compile / load the cached kernel
    rows = []
    for N in a.N:
        for B in a.B:
            prob = binary_perceptron(N, a.alpha, B)
            rates = {}
            for rep in range(a.repeats):
                states = {}
                for backend, threads, dev in arms:
                    name = f'{backend}-{threads}t' if backend == 'numba' else f'torch-{dev}'
                    if threads: numba.set_num_threads(threads)
                    sweeps = a.sweeps if backend == 'numba' else a.torch_sweeps
                    rate, r = run(prob, a.y, sweeps, backend, dev)
                    rates.setdefault(name, []).append(rate)
                    states.setdefault(sweeps, []).append((name, r))
                    rows.append(tidy('bench_annealing', rep, 0, 'moves_per_s', rate, N=N, P=prob.A.shape[2], B=B, y=a.y,
                                     backend=name, machine=machine[dev], load=load))
                for sw, lst in states.items():                                  # same sweeps -> same trajectories
                    for name, r in lst[1:]: assert (r.w == lst[0][1].w).all(), f'{name} differs from {lst[0][0]}'
            numba.set_num_threads(all_threads)
            best = {k: max(v) for k, v in rates.items()}
            ref = best['torch-cpu']
            print(f'N={N:5d} P={prob.A.shape[2]:4d} B={B:4d} y={a.y}: ' + ', '.join(f'{k} {v:.2e}/s ({v/ref:.0f}x torch-cpu)' for k, v in best.items()), flush=True)
    print('table:', write_csv(rows, a.out))

if __name__ == '__main__': main()
