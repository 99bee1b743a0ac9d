"""What the sweep engine costs and gains: a grid of short cells on a 2-worker local Dask cluster vs `eae-run`'s
sequential loop, and the overhead per cell (kernel start, papermill, scheduler).

The cells are a generated notebook whose parameters cell takes `seed` and `work` (single-threaded float64 matmuls,
about `work` seconds on a quiet core), so what is measured is the engine, not an experiment. Each configuration runs
the whole grid (force=True: no skipping); the two are run in ABBA order so that load drift on a shared machine hits both.

    python tests/benchmarks/bench_sweeps.py                 # 8 cells of ~2 s, 2 workers, 2 rounds
    python tests/benchmarks/bench_sweeps.py --cells 16 --work 5 --workers 4
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
    ap.add_argument('--cells', type=int, default=8); ap.add_argument('--work', type=float, default=2.0)
    ap.add_argument('--workers', type=int, default=2); ap.add_argument('--rounds', type=int, default=2)
    a = ap.parse_args()
    os.environ['OMP_NUM_THREADS'] = '1'; os.environ['OPENBLAS_NUM_THREADS'] = '1'; os.environ['MKL_NUM_THREADS'] = '1'
    from distributed import Client
    from entropic_ae.sweeps import plan_cells, run_cells, local_cluster
    tmp = Path(tempfile.mkdtemp(prefix='bench_sweeps_'))
    nb = make_notebook(tmp)
    grid = lambda work, n: plan_cells([dict(notebooks=[str(nb)], params=dict(work=work), grid=dict(seed=list(range(n))))], 'quick', tmp/f'runs_{work}')
    cells, empty = grid(a.work, a.cells), grid(0.0, 4)

    def sequential(cs):
        t = time.perf_counter(); r = run_cells(cs, None, progress=False, force=True)
        assert all(v['status'] == 'done' for v in r.values()); return time.perf_counter() - t
    def on_cluster(cs, n):
        t = time.perf_counter()
        with local_cluster(n) as cluster, Client(cluster) as client:
            client.wait_for_workers(n)
            client.run(lambda: __import__('entropic_ae.sweeps'))   # each worker imports the package (and torch) once
            started = time.perf_counter() - t
            t1 = time.perf_counter(); r = run_cells(cs, client, progress=False, force=True); run = time.perf_counter() - t1
        assert all(v['status'] == 'done' for v in r.values())
        return started, run, time.perf_counter() - t

    # overhead per cell: empty cells (work=0) in the loop and on one worker; a no-op task round trip on the scheduler
    seq_empty = sequential(empty) / len(empty)
    start1, run1, _ = on_cluster(empty, 1)
    with local_cluster(1) as cluster, Client(cluster) as client:
        client.submit(int, 0, pure=False).result()
        t = time.perf_counter(); client.gather([client.submit(int, i, pure=False) for i in range(200)])
        task_ms = (time.perf_counter() - t) / 200 * 1e3
    print(f"overhead per cell (empty notebook): sequential loop {seq_empty:.2f} s/cell; one Dask worker {run1/len(empty):.2f} s/cell "
          f"(+{start1:.1f} s to start the cluster and import the package on it); a no-op Dask task {task_ms:.1f} ms", flush=True)

    seq, par = [], []
    for i in range(a.rounds):
        for which in (('seq', 'par') if i % 2 == 0 else ('par', 'seq')):
            if which == 'seq': seq.append(sequential(cells)); print(f"sequential loop: {seq[-1]:.1f} s", flush=True)
            else:
                s, r, total = on_cluster(cells, a.workers); par.append((s, r, total))
                print(f"{a.workers}-worker cluster: {total:.1f} s (start {s:.1f} s + grid {r:.1f} s)", flush=True)
    ms, mt, mr = statistics.median(seq), statistics.median(p[2] for p in par), statistics.median(p[1] for p in par)
    print(f"\n{a.cells} cells of ~{a.work:g} s CPU on {os.cpu_count()} cores, median of {a.rounds} rounds:")
    print(f"  sequential loop {ms:.1f} s; {a.workers}-worker local cluster {mt:.1f} s including its start ({mr:.1f} s without)")
    print(f"  speed-up {ms / mt:.2f}x including cluster start, {ms / mr:.2f}x without")

if __name__ == '__main__': main()
