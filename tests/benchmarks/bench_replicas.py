"""Time one training step of y replicas: stacked (vectorised `Replicated`) vs a loop over y models (`LoopReplicated`).

Deep autoencoder N=800, H=800, B=160 ([800, 800, 160, 800, 800]), batch 64 per replica, fp32, Adam (fused where
available), elastic coupling with γ > 0. One step = zero_grad + forward + backward of the summed per-replica loss +
optimizer step (+ coupling). Reports the median over `--steps` timed steps after `--warmup` untimed ones
(CUDA-synchronised around each step; configurations timed round-robin), and the ratio to the best single-model step, where "single model" means any
y=1 variant including a plain `nn.Linear` autoencoder with fused Adam.

    python tests/benchmarks/bench_replicas.py --device cpu --out bench_replicas_cpu.csv
    python tests/benchmarks/bench_replicas.py --device cuda --out bench_replicas_cuda.csv --steps 200
"""
from __future__ import annotations
import argparse, platform, statistics, time
import torch
from torch import nn
from entropic_ae.core import default_device, write_csv
from entropic_ae.models import deep_ae, recon_error
from entropic_ae.optim import Replicated, LoopReplicated

SIZES = dict(N=800, H=800, B=160)

def plain_ae(device):
    "The same architecture built from nn.Linear layers: what a single model costs without the replica axis."
    N, H, B = SIZES['N'], SIZES['H'], SIZES['B']
    return nn.Sequential(nn.Linear(N, H), nn.ReLU(), nn.Linear(H, B), nn.ReLU(), nn.Linear(B, H), nn.ReLU(),
                         nn.Linear(H, N), nn.Sigmoid()).to(device)

def make_step(impl, y, device, X, gamma, lr):
    "A zero-argument function doing one full training step; minibatch indices cycle through a fixed list."
    g = torch.Generator(device=device).manual_seed(0)
    idx = [torch.randint(0, len(X), (y, 64), generator=g, device=device) for _ in range(16)]
    it = iter(range(10**12))
    if impl == 'plain':
        model = plain_ae(device); opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
        def step():
            xb = X[idx[next(it) % 16][0]]
            opt.zero_grad(set_to_none=True); ((model(xb) - xb)**2).mean().backward(); opt.step()
        return step
    if impl == 'vectorised':
        model = deep_ae(SIZES['N'], SIZES['B'], H=SIZES['H'], y=y, device=device)
        opt = Replicated(model, lr=lr, gamma=gamma)
        def step():
            xb = X[idx[next(it) % 16]]
            opt.zero_grad(set_to_none=True); recon_error(model(xb), xb).sum().backward(); opt.step()
        return step
    models = [deep_ae(SIZES['N'], SIZES['B'], H=SIZES['H'], y=1, seeds=[r], device=device) for r in range(y)]
    opt = LoopReplicated(models, lr=lr, gamma=gamma)
    def step():
        i = idx[next(it) % 16]
        opt.zero_grad()
        for r, m in enumerate(models):
            xb = X[i[r]][None]
            recon_error(m(xb), xb).sum().backward()
        opt.step()
    return step

def time_steps(steps:dict, device, warmup:int, n:int) -> dict:
    """Median-ready step times for every configuration. After warm-up, the configurations are timed round-robin
    (one step of each per round) so that drifting load on a shared machine hits them all alike."""
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    for step in steps.values():
        for _ in range(warmup): step()
    sync()
    times = {k: [] for k in steps}
    for _ in range(n):
        for k, step in steps.items():
            t0 = time.perf_counter(); step(); sync(); times[k].append(time.perf_counter() - t0)
    return times

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument('--out', default='bench_replicas.csv', help="CSV file to write")
    ap.add_argument('--ys', default='1,3,5,7', help="comma-separated replica counts")
    ap.add_argument('--steps', type=int, default=50, help="timed steps per configuration")
    ap.add_argument('--warmup', type=int, default=10, help="untimed steps per configuration")
    ap.add_argument('--gamma', type=float, default=0.1, help="coupling strength (elastic)")
    ap.add_argument('--threads', type=int, default=None, help="torch.set_num_threads (CPU)")
    a = ap.parse_args(argv)
    device = default_device(a.device)
    if a.threads: torch.set_num_threads(a.threads)
    ys = [int(v) for v in a.ys.split(',')]
    torch.manual_seed(0)
    X = torch.rand(2048, SIZES['N'], device=device)
    configs = [('plain', 1)] + [(impl, y) for y in ys for impl in ('vectorised', 'loop')]
    steps = {(impl, y): make_step(impl, y, device, X, a.gamma, 1e-3) for impl, y in configs}
    times = time_steps(steps, device, a.warmup, a.steps)
    rows = []
    for (impl, y), t in times.items():
        rows.append(dict(impl=impl, y=y, median_ms=1e3*statistics.median(t), min_ms=1e3*min(t),
                         p90_ms=1e3*sorted(t)[int(0.9*(len(t)-1))], steps=a.steps, warmup=a.warmup))
    best = min(r['median_ms'] for r in rows if r['y'] == 1)
    info = dict(device=str(device) if device.type == 'cpu' else torch.cuda.get_device_name(device),
                threads=torch.get_num_threads(), torch=torch.__version__, machine=platform.machine(), gamma=a.gamma)
    for r in rows: r.update(ratio_vs_best_single=r['median_ms']/best, **info)
    print(f"\n{info['device']}, {info['threads']} threads, torch {info['torch']}; deep AE "
          f"[{SIZES['N']},{SIZES['H']},{SIZES['B']},{SIZES['H']},{SIZES['N']}], batch 64/replica, fp32, Adam, "
          f"elastic γ={a.gamma}; median of {a.steps} steps after {a.warmup} warm-up\n")
    print("| implementation | y | median ms/step | × best single step |\n|---|---|---|---|")
    for r in rows: print(f"| {r['impl']} | {r['y']} | {r['median_ms']:.2f} | {r['ratio_vs_best_single']:.2f} |")
    print(f"\nwrote {write_csv(rows, a.out)}")
    return rows

if __name__ == '__main__':
    main()
