"""Local energy against the plain perturb-evaluate-restore loop, on a y = 5 stack of replicas.

`flatness.local_energy` (points (draw, σ) through the many-points engine: draws per pass by measurement, cache-sized
row chunks, the first layer multiplied once per draw) vs the loop a user writes on the same stacked model: for each
draw z (the same draws, so the numbers agree to rounding) and each σ, `p.mul_(1 + σ z)` on every parameter, the
training loss in `torch.no_grad`, then the weights restored. Deep autoencoder [N, N, B, N, N], N = 200, B = 40,
P = 8000 patterns, 10 σ × 20 draws (the issue's case; `--P 500` for the smaller one).

Timed paired and interleaved (the order alternates every round), reported as the median over rounds of the per-round
ratio our time / loop time (below 1: ours is faster); the machine is shared, so only ratios mean anything. Results go
to `--out-dir` (default figures/) as bench_local_energy_<device>.csv.

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_flatness.py
"""
from __future__ import annotations
import argparse, statistics, time
from pathlib import Path
import torch
from entropic_ae.core import default_device, write_csv, make_generator
from entropic_ae.data import random_features
from entropic_ae.models import deep_ae, recon_error
from entropic_ae.flatness import local_energy, dataset_loss

def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()

@torch.no_grad()
def loop(model, x, sigmas, n_draws, seed):
    "The plain recipe: per draw (one shared stream, as `seed=int`) and σ, perturb every parameter, evaluate, restore."
    ps = list(model.parameters()); g = make_generator(seed, x.device)
    out = torch.zeros(model.y, len(sigmas), dtype=ps[0].dtype, device=x.device)
    sizes = [p[0].numel() for p in ps]
    for _ in range(n_draws):
        z = torch.randn(sum(sizes), generator=g, device=x.device, dtype=ps[0].dtype).split(sizes)
        for j, s in enumerate(sigmas):
            w0 = [p.detach().clone() for p in ps]
            for p, zi in zip(ps, z): p.mul_(1 + s * zi.view(p.shape[1:]))
            out[:, j] += dataset_loss(model, x)
            for p, w in zip(ps, w0): p.copy_(w)
    return out / n_draws

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default=None); ap.add_argument('--out-dir', default='figures')
    ap.add_argument('--y', type=int, default=5); ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--N', type=int, default=200); ap.add_argument('--B', type=int, default=40)
    ap.add_argument('--P', type=int, nargs='+', default=[8000]); ap.add_argument('--draws', type=int, default=20)
    a = ap.parse_args()
    dev = default_device(a.device)
    print(f"device {dev}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    sigmas = [0.01 * i for i in range(1, 11)]
    rows = []
    for P in a.P:
        x = random_features(N=a.N, D=a.B // 2, P=P, P_test=1, seed=0, device=dev).x_train
        model = deep_ae(a.N, a.B, y=a.y, device=dev)
        res, times = {}, {'loop': [], 'ours': []}
        ways = {'loop': lambda: res.__setitem__('loop', loop(model, x, sigmas, a.draws, 0)),
                'ours': lambda: res.__setitem__('ours', local_energy(model, x, sigmas, n_draws=a.draws, seed=0))}
        for i in range(a.rounds):
            for k in (['loop', 'ours'] if i % 2 == 0 else ['ours', 'loop']):
                sync(dev); t = time.perf_counter(); ways[k](); sync(dev); times[k].append(time.perf_counter() - t)
            print(P, {k: round(v[-1], 2) for k, v in times.items()}, flush=True)
        diff = ((res['ours'] - res['loop']).abs() / res['loop'].abs()).max().item()
        assert diff < 1e-4, diff
        rows.append(dict(task=f'local energy, deep AE N={a.N}, B={a.B}, P={P}, y={a.y}, {len(sigmas)} sigmas x {a.draws} draws',
                         way='ours / plain perturb-evaluate-restore loop (time ratio, < 1: ours faster)',
                         time_ratio=statistics.median(o / l for o, l in zip(times['ours'], times['loop'])),
                         loop_s=statistics.median(times['loop']), ours_s=statistics.median(times['ours']),
                         max_rel_diff=diff, rounds=a.rounds, device=str(dev)))
        print(rows[-1], flush=True)
    tag = 'cuda' if dev.type == 'cuda' else 'cpu'
    write_csv(rows, Path(a.out_dir)/f'bench_local_energy_{tag}.csv'); print('wrote', Path(a.out_dir)/f'bench_local_energy_{tag}.csv')

if __name__ == '__main__': main()
