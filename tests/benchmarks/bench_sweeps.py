"""What the sweep engine costs and gains: a grid of short cells run three ways, against `eae-run`'s sequential loop.

1. the sequential loop (`run_cells` without a client): the peer, what one would write by hand;
2. `run_sweep`'s default path: cells start in this process and a local cluster is started only once `pays_back` says
   the measured time per cell earns its start back (the summary's `engine` says which way it went);
3. the old default: always a fresh local Dask cluster of `--workers` workers (start included).

The cells are a generated notebook whose parameters cell takes `seed` and `work` (single-threaded float64 matmuls,
about `work` seconds of CPU), so what is measured is the engine, not an experiment. Each way runs the whole grid
(force: no skipping); the ways are run paired and interleaved (the order rotates every round) so that load drift on a
shared machine hits all alike, and the table gives per-round ratios' medians — only ratios, since the machine is shared.

    python tests/benchmarks/bench_sweeps.py --out figures/bench_sweeps_cpu.csv        # 4 cells of ~1 s, 3 rounds
    python tests/benchmarks/bench_sweeps.py --cells 8 --work 20 --rounds 1             # cells long enough for a cluster
"""
from __future__ import annotations
import argparse, os, statistics, tempfile, time
from pathlib import Path
import nbformat

BODY = '''
import time, numpy as np
from pathlib import Path
rng = np.random.default_rng(seed)
a = rng.standard_normal((256, 256))
t0 = time.process_time()
while time.process_time() - t0 < work: a = np.tanh(a @ a / 16)
Path(figures_dir, "done.csv").write_text(f"run,metric,value\\n{seed},cpu_s,{time.process_time() - t0}\\n")
'''

def make_notebook(folder) -> Path:
    cell = nbformat.v4.new_code_cell('profile = "quick"\nfigures_dir = "."\nseed = 0\nwork = 1.0')
    cell.metadata['tags'] = ['parameters']
    nb = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_code_cell(BODY)])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    path = Path(folder)/'bench_cell.ipynb'; nbformat.write(nb, path); return path

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--cells', type=int, default=4); ap.add_argument('--work', type=float, default=1.0)
    ap.add_argument('--workers', type=int, default=2); ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--out', default=None); ap.add_argument('--settle', type=float, default=3.)
    a = ap.parse_args()
    os.environ['OMP_NUM_THREADS'] = '1'; os.environ['OPENBLAS_NUM_THREADS'] = '1'; os.environ['MKL_NUM_THREADS'] = '1'
    from distributed import Client
    from entropic_ae.core import write_csv
    from entropic_ae.sweeps import plan_cells, run_cells, run_sweep, local_cluster
    tmp = Path(tempfile.mkdtemp(prefix='bench_sweeps_'))
    nb = make_notebook(tmp)
    cells = plan_cells([dict(notebooks=[str(nb)], params=dict(work=a.work), grid=dict(seed=list(range(a.cells))))], 'quick', tmp/'runs')
    engines = []
    def sequential():
        r = run_cells(cells, None, progress=False, force=True)
        assert all(v['status'] == 'done' for v in r.values())
    def default():
        s = run_sweep(cells, None, progress=False, force=True)
        assert len(s['done']) == len(cells); engines.append(s['engine'])
    def cluster():
        with local_cluster(a.workers) as cl, Client(cl) as client:
            r = run_cells(cells, client, progress=False, force=True)
        assert all(v['status'] == 'done' for v in r.values())
    ways = dict(sequential=sequential, default=default, cluster=cluster)
    times = {k: [] for k in ways}
    for i in range(a.rounds):
        order = list(ways)[i % 3:] + list(ways)[:i % 3]
        for k in order:
            time.sleep(a.settle)                 # let the processes of the previous way (a closed cluster's) exit
            t = time.perf_counter(); ways[k](); times[k].append(time.perf_counter() - t)
        print(f"round {i + 1}: " + ', '.join(f"{k} {times[k][-1]:.1f} s" for k in ways), flush=True)
    print(f"default path: {engines[-1]}")
    task = f'{a.cells} cells of ~{a.work:g} s CPU, {a.workers} workers'
    rows = []
    for k in ways:
        ratio = statistics.median(s / t for s, t in zip(times['sequential'], times[k]))   # speed relative to the loop, per round
        rows.append(dict(task=task, way=k, speed_vs_sequential=ratio, rounds=a.rounds,
                         engine=engines[-1] if k == 'default' else ('in this process' if k == 'sequential' else f'local cluster of {a.workers}')))
    print('\n| task | way | speed vs the sequential loop (median of per-round ratios) |\n|---|---|---|')
    for r in rows: print(f"| {r['task']} | {r['way']} | {r['speed_vs_sequential']:.2f}x |")
    if a.out: write_csv(rows, a.out); print('wrote', a.out)

if __name__ == '__main__': main()
