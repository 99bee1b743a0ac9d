"""The flatness toolbox, batched vs looped: what stacking buys for the Hessian spectrum and for landscape slices.

1. Top-5 Hessian eigenvalues (Lanczos, `--n-iter` steps) of the deep autoencoder [N, N, B, N, N] (N = 800, B = 160,
   `models.deep_ae(800, 160, y=5)`) on P = 1000 random-feature patterns: the y = 5 stack in one batched Lanczos
   (one Hessian-vector product of the summed loss per step) vs a loop over the 5 replicas, each alone.
2. A 21 x 21 filter-normalised 2-D slice of the same kind of model (by default a smaller one, `--slice-N`, so that the
   CPU run stays in minutes): the grid points stacked as replicas, `--points` per pass, vs one point at a time.

The two ways of each task are timed round-robin (`--rounds` rounds, one run of each per round) so that drifting load
hits them alike; the table gives the minimum and median time and the ratio loop / batched of the minima. Results also
go to a CSV (`--out`). The batched and looped results are checked to agree before anything is timed.

Measured on the project's 2-core AMD EPYC CPU (torch 2.13, 2 threads, other jobs running; min over 2 rounds):

| task | batched | looped | ratio |
|---|---|---|---|
| top-5 eigenvalues, deep AE N=800, P=1000, y=5, 20 Lanczos steps (stacked vs loop of 5) | 154 s | 328 s | 2.1x |
| 21x21 slice, deep AE N=200, P=1000, y=5 (21 points per pass vs point by point) | 16 s | 77 s | 4.8x |

No GPU was lent to this task; the cuda command below has not been run.

    python tests/benchmarks/bench_sharpness.py --device cpu --out figures/sharpness_bench_cpu.csv
    python tests/benchmarks/bench_sharpness.py --device cuda --slice-N 800 --points 21 --out figures/sharpness_bench_cuda.csv
"""
from __future__ import annotations
import argparse, platform, statistics, time
import torch
from entropic_ae.core import default_device, write_csv
from entropic_ae.data import random_features
from entropic_ae.models import deep_ae
from entropic_ae.replicas import replica
from entropic_ae import sharpness as S

def timed(fn, device):
    if device.type == 'cuda': torch.cuda.synchronize()
    t = time.perf_counter(); out = fn()
    if device.type == 'cuda': torch.cuda.synchronize()
    return time.perf_counter() - t, out

def round_robin(tasks:dict, rounds:int, device) -> dict:
    times = {k: [] for k in tasks}
    for _ in range(rounds):
        for k, fn in tasks.items(): times[k].append(timed(fn, device)[0])
    return times

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default=None); ap.add_argument('--out', default=None)
    ap.add_argument('--N', type=int, default=800); ap.add_argument('--B', type=int, default=160)
    ap.add_argument('--P', type=int, default=1000); ap.add_argument('--y', type=int, default=5)
    ap.add_argument('--k', type=int, default=5); ap.add_argument('--n-iter', type=int, default=20)
    ap.add_argument('--slice-N', type=int, default=200); ap.add_argument('--slice-B', type=int, default=40)
    ap.add_argument('--grid', type=int, default=21); ap.add_argument('--points', type=int, default=21)
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--skip', choices=['eigs', 'slice'], default=None)
    a = ap.parse_args()
    dev = default_device(a.device)
    print(f"device {dev} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), torch {torch.__version__}")
    rows = []
    if a.skip != 'eigs':
        data = random_features(N=a.N, D=max(1, a.B // 2), P=a.P, P_test=1, seed=0, device=dev)
        model = deep_ae(a.N, a.B, y=a.y, device=dev)
        singles = [replica(model, r) for r in range(a.y)]
        stacked = lambda: S.hessian_eigs(model, data.x_train, k=a.k, n_iter=a.n_iter)
        loop = lambda: torch.cat([S.hessian_eigs(m, data.x_train, k=a.k, n_iter=a.n_iter) for m in singles])
        e1, e2 = stacked(), loop()
        print('top eigenvalues, replica 0:', e1[0].tolist())
        assert torch.allclose(e1, e2, rtol=1e-3, atol=1e-6), (e1, e2)
        t = round_robin({'stacked': stacked, 'loop': loop}, a.rounds, dev)
        rows += [dict(task=f'top-{a.k} eigenvalues, deep AE N={a.N}, P={a.P}, y={a.y}, {a.n_iter} Lanczos steps', way=w,
                      min_s=min(v), median_s=statistics.median(v), rounds=a.rounds, device=str(dev)) for w, v in t.items()]
    if a.skip != 'slice':
        data = random_features(N=a.slice_N, D=max(1, a.slice_B // 2), P=a.P, P_test=1, seed=0, device=dev)
        model = deep_ae(a.slice_N, a.slice_B, y=a.y, device=dev)
        dirs = S.filter_directions(model, 2, seed=0)
        ab = torch.linspace(-1, 1, a.grid)
        batched = lambda: S.loss_slice(model, data.x_train, dirs, (ab, ab), points_per_pass=a.points)
        one = lambda: S.loss_slice(model, data.x_train, dirs, (ab, ab), points_per_pass=1)
        s1, s2 = batched(), one()
        assert torch.allclose(s1, s2, rtol=1e-4, atol=1e-6)
        t = round_robin({'batched': batched, 'point by point': one}, a.rounds, dev)
        rows += [dict(task=f'{a.grid}x{a.grid} slice, deep AE N={a.slice_N}, P={a.P}, y={a.y}, {a.points} points per pass', way=w,
                      min_s=min(v), median_s=statistics.median(v), rounds=a.rounds, device=str(dev)) for w, v in t.items()]
    print('\n| task | way | min s | median s | ratio to the batched way |\n|---|---|---|---|---|')
    for task in dict.fromkeys(r['task'] for r in rows):
        rs = [r for r in rows if r['task'] == task]
        for r in rs:
            r['ratio'] = r['min_s'] / rs[0]['min_s']
            print(f"| {task} | {r['way']} | {r['min_s']:.2f} | {r['median_s']:.2f} | {r['ratio']:.2f}x |")
    if a.out: write_csv(rows, a.out); print('wrote', a.out)

if __name__ == '__main__': main()
