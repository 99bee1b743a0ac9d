"""One training step of y replicas, every way the library can run it, as ratios to one plain model; and `fit`'s overhead.

Models: the deep autoencoder [800, 800, 160, 800, 800] (batch 64 per replica, Adam, elastic coupling γ > 0) and a
small conv net with batch norm (CIFAR-sized 3×32×32 input, batch 32 per replica, SGD with momentum). Implementations:

- `plain`          one ordinary `nn.Module`, one fused Adam (y = 1 only): the reference;
- `stacked`        the hand-written `StackedLinear` autoencoder (`models.deep_ae`, one `baddbmm` per layer), `Replicated`;
- `replicate-loop` `replicas.replicate(module, y, backend='loop')` + `Replicated`;
- `replicate-vmap` `replicas.replicate(module, y, backend='vmap')` + `Replicated`;
- `models-loop`    y separate modules and optimizers (`optim.LoopReplicated`, the reference implementation);
- `stacked-shared` `stacked` with one minibatch shared by all replicas (`Replicated(batches='shared')`, the thesis's protocol).

For the autoencoder each row also gives the step's matrix-multiply rate, GFLOP/s = y · (forward 2bP + weight gradients
2bP + input gradients 2b(P − N·H), P the weights, the first layer needing no input gradient) / step time, and that rate
as a fraction of this machine's GEMM peak, measured first (best 2048² `torch.mm` on the same threads).

One step = zero_grad + forward + backward of the summed per-replica loss + optimizer step (+ coupling). Configurations
are timed round-robin (one step of each per round) so that drifting load hits them alike; the minimum and median
over rounds are reported. `--fit` also times `train.fit` for a few epochs against the same number of bare steps.

    python tests/benchmarks/bench_replicas.py --device cpu --threads 1 --out figures/bench_replicas_cpu.csv --fit --coupling --floor --first-layer

The script runs under the allocator settings `eae-run` gives every kernel (`experiments.tune_allocator`, called first
thing: large blocks stay in glibc's heap instead of fresh page-faulted `mmap`s) unless `--raw-allocator`.

`--floor` splits the y-replica step into its two kinds of work, each timed alone on the same stack: the memory-bound
passes over y × P numbers (the fused Adam step, the barycentre, the pull) and the rest (forward and backward: the
GEMMs). It prints the fraction of the GEMM peak the GEMM part reaches, the best fraction any step could reach
with the memory-bound passes at their measured speed (the step's roofline on this machine), and the lowest ratio to
the plain one-model step that any implementation could reach (`ratio_bound`: y times one model's arithmetic at peak
plus the measured memory-bound passes, over the plain step timed beside the y-replica ones, as in `ratio_vs_plain`).

`--first-layer` times the one layer a shared minibatch could turn into a single wide GEMM (forward and weight gradient
[b, N] × [N, y·N]) against the batched `baddbmm` over the batch expanded to [y, b, N] that `StackedLinear` runs.
"""
from __future__ import annotations
import argparse, statistics, time
from functools import partial
import torch
from torch import nn
from entropic_ae.core import default_device, write_csv
from entropic_ae.experiments import tune_allocator, machine_name
from entropic_ae.models import deep_ae, recon_error, cross_entropy
from entropic_ae.optim import Replicated, LoopReplicated
from entropic_ae.replicas import replicate
from entropic_ae.train import fit, Recorder

N, H, B = 800, 800, 160
WEIGHTS = N * H + H * B + B * H + H * N

def ae_flops(y:int, bs:int=64) -> float:
    "Multiply-add FLOPs of one deep-AE training step: forward, weight gradients, input gradients (none for the first layer)."
    return y * (2 * bs * WEIGHTS * 2 + 2 * bs * (WEIGHTS - N * H))

def gemm_peak(n:int=2048, reps:int=5) -> float:
    "GFLOP/s of the best of `reps` n×n float32 `torch.mm` on this machine's current threads."
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n**3 / best / 1e9

def _timed(f) -> float:
    t0 = CLOCK(); f(); return CLOCK() - t0

def plain_ae():
    return nn.Sequential(nn.Linear(N, H), nn.ReLU(), nn.Linear(H, B), nn.ReLU(), nn.Linear(B, H), nn.ReLU(),
                         nn.Linear(H, N), nn.Sigmoid())

def bn_convnet():
    "A small CIFAR conv net with batch norm: 3 conv-BN-ReLU blocks, global pooling, a linear head."
    block = lambda a, b: [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

def make_step(model_name, impl, y, device, data):
    "A zero-argument function doing one full training step on minibatches cycling through a fixed list."
    X, T = data
    bs = 64 if model_name == 'ae' else 32
    g = torch.Generator(device=device).manual_seed(0)
    idx = [torch.randint(0, len(X), (y, bs), generator=g, device=device) for _ in range(8)]
    it = iter(range(10**12))
    factory = plain_ae if model_name == 'ae' else bn_convnet
    loss_of = (lambda out, i: recon_error(out, X[i])) if model_name == 'ae' else (lambda out, i: cross_entropy(out, T[i]))
    opt_kw = dict(lr=1e-3) if model_name == 'ae' else dict(base=partial(torch.optim.SGD, momentum=0.9), lr=0.05)
    if impl == 'plain':
        model = factory().to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True) if model_name == 'ae' else torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        def step():
            i = idx[next(it) % 8][0]
            opt.zero_grad(set_to_none=True); loss_of(model(X[i])[None], i[None]).sum().backward(); opt.step()
        return step
    if impl == 'models-loop':
        models = [factory().to(device) for _ in range(y)]
        opt = LoopReplicated(models, gamma=0.1, **({'lr': 1e-3} if model_name == 'ae' else dict(base=torch.optim.SGD, lr=0.05, momentum=0.9)))
        def step():
            i = idx[next(it) % 8]
            opt.zero_grad()
            for r, m in enumerate(models): loss_of(m(X[i[r]])[None], i[r][None]).sum().backward()
            opt.step()
        return step
    if impl == 'stacked-shared':
        model = deep_ae(N, B, H=H, y=y, device=device); opt = Replicated(model, gamma=0.1, batches='shared', **opt_kw)
        def step():
            i = idx[next(it) % 8][0]                                   # one minibatch [bs] for every replica
            opt.zero_grad(set_to_none=True); loss_of(model(X[i]), i).sum().backward(); opt.step()
        return step
    if impl == 'stacked': model = deep_ae(N, B, H=H, y=y, device=device)
    else: model = replicate(factory, y, backend=impl.split('-')[1], device=device)
    opt = Replicated(model, gamma=0.1, **opt_kw)
    def step():
        i = idx[next(it) % 8]
        opt.zero_grad(set_to_none=True); loss_of(model(X[i]), i).sum().backward(); opt.step()
    return step

CLOCK = time.perf_counter

def time_round_robin(steps:dict, device, warmup:int, n:int) -> dict:
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    perf_counter = CLOCK
    for s in steps.values():
        for _ in range(warmup): s()
    sync()
    times = {k: [] for k in steps}
    for _ in range(n):
        for k, s in steps.items():
            t0 = perf_counter(); s(); sync(); times[k].append(perf_counter() - t0)
    return times

def fit_overhead(device, y:int, epochs:int=3, P:int=1024, rounds:int=3) -> dict:
    "Seconds per step of `fit` (no evaluation, no progress bar) against the same steps written bare, best of `rounds`."
    X = torch.rand(P, N, device=device)
    bare, looped = [], []
    for _ in range(rounds):
        model = deep_ae(N, B, H=H, y=y, device=device); opt = Replicated(model, gamma=0.1, lr=1e-3)
        gens = [torch.Generator().manual_seed(s) for s in range(y)]
        t0 = CLOCK()
        for _ in range(epochs):
            perms = torch.stack([torch.randperm(P, generator=g) for g in gens]).to(device)
            for i in perms.split(64, dim=1):
                xb = X[i]; opt.zero_grad(); recon_error(model(xb), xb).sum().backward(); opt.step()
        bare.append(CLOCK() - t0)
        model = deep_ae(N, B, H=H, y=y, device=device)
        t0 = CLOCK()
        fit(model.to(device), X, epochs, bs=64, opt_func=partial(Replicated, gamma=0.1, lr=1e-3), cbs=[Recorder(metrics=())])
        looped.append(CLOCK() - t0)
    return dict(y=y, epochs=epochs, P=P, bare_s=min(bare), fit_s=min(looped), fit_over_bare=min(looped) / min(bare))

def coupling_share(device, ys, steps:int, warmup:int) -> list[dict]:
    "Median step time of the stacked deep AE with γ = 0.1 against γ = 0 (no coupling), paired and interleaved, for each coupling."
    X = torch.rand(2048, N, device=device)
    out = []
    for y in ys:
        g = torch.Generator(device=device).manual_seed(0)
        idx = [torch.randint(0, len(X), (y, 64), generator=g, device=device) for _ in range(8)]
        def make(gamma, coupling):
            model = deep_ae(N, B, H=H, y=y, device=device); opt = Replicated(model, gamma=gamma, coupling=coupling, lr=1e-3)
            it = iter(range(10**12))
            def step():
                i = idx[next(it) % 8]; xb = X[i]
                opt.zero_grad(set_to_none=True); recon_error(model(xb), xb).sum().backward(); opt.step()
            return step
        steps_ = {('off', c): make(0., c) for c in ('elastic',)}
        steps_.update({('on', c): make(0.1, c) for c in ('elastic', 'gradient', 'lagged')})
        times = time_round_robin(steps_, device, warmup, steps)
        off = statistics.median(times[('off', 'elastic')])
        for c in ('elastic', 'gradient', 'lagged'):
            on = statistics.median(times[('on', c)])
            out.append(dict(y=y, coupling=c, on_ms=1e3*on, off_ms=1e3*off, share=(on - off) / on))
            print(f"coupling {c}, y={y}: {1e3*(on - off):.1f} ms of {1e3*on:.1f} ms ({100*(on - off)/on:.0f} %)", flush=True)
    return out

def floor_split(device, ys, steps:int, warmup:int, peak:float) -> list[dict]:
    "Median ms of each part of the elastic-coupled stacked step (forward+backward, fused Adam, barycentre, pull), each timed alone, round robin."
    X = torch.rand(2048, N, device=device)
    out = []
    for y in ys:
        model = deep_ae(N, B, H=H, y=y, device=device); opt = Replicated(model, gamma=0.1, lr=1e-3)
        xb = X[torch.randint(0, len(X), (y, 64), generator=torch.Generator(device=device).manual_seed(0), device=device)]
        def fwd_bwd(): opt.zero_grad(set_to_none=True); recon_error(model(xb), xb).sum().backward()
        fwd_bwd(); opt.step()
        ps = opt._coupled()
        cs = torch.no_grad()(opt._centres)(ps)
        parts = dict(fwd_bwd=fwd_bwd, adam=torch.no_grad()(opt.base.step), centre=torch.no_grad()(lambda: opt._centres(ps)),
                     pull=torch.no_grad()(lambda: opt._pull(ps, cs, 0.1)))
        times = {k: statistics.median(v) for k, v in time_round_robin(parts, device, warmup, steps).items()}
        mem = times['adam'] + times['centre'] + times['pull']
        gf = ae_flops(y) / times['fwd_bwd'] / 1e9
        best = ae_flops(y) / (ae_flops(y) / (peak * 1e9) + mem) / 1e9
        out.append(dict(y=y, **{f'{k}_ms': 1e3 * v for k, v in times.items()}, memory_bound_ms=1e3 * mem,
                        gemm_part_gflops=gf, gemm_part_frac=gf / peak, roofline_frac=best / peak))
        print(f"floor, y={y}: forward+backward {1e3*times['fwd_bwd']:.1f} ms ({gf:.0f} GFLOP/s, {gf/peak:.0%} of peak); "
              f"Adam {1e3*times['adam']:.1f} + barycentre {1e3*times['centre']:.1f} + pull {1e3*times['pull']:.1f} ms memory-bound; "
              f"a step with GEMMs at peak would reach {best/peak:.0%} of peak", flush=True)
    return out

def first_layer(device, ys, steps:int, warmup:int) -> list[dict]:
    "Median ms of the shared-minibatch first layer (forward + backward), y replicas: one `baddbmm` over the batch expanded to [y, b, N] (what `StackedLinear` does) against one wide GEMM [b, N] x [N, y·N] on weights kept in nn.Linear's layout [y·N, N]."
    out = []
    for y in ys:
        x, g = torch.rand(64, N, device=device), torch.randn(y, 64, N, device=device)
        W, bias = torch.randn(y, N, N, device=device, requires_grad=True), torch.zeros(y, 1, N, device=device, requires_grad=True)
        Wt = torch.randn(y * N, N, device=device, requires_grad=True)
        def bmm(): torch.baddbmm(bias, x.expand(y, *x.shape), W).backward(g)
        def wide(): torch.addmm(bias.reshape(1, -1), x, Wt.t()).view(64, y, N).transpose(0, 1).backward(g)
        times = {k: statistics.median(v) for k, v in time_round_robin(dict(bmm=bmm, wide=wide), device, warmup, steps).items()}
        out.append(dict(y=y, **{f'{k}_ms': 1e3 * v for k, v in times.items()}))
        print(f"shared first layer, y={y}: baddbmm over the expanded batch {1e3*times['bmm']:.1f} ms, one wide GEMM {1e3*times['wide']:.1f} ms", flush=True)
    return out

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default=None)
    ap.add_argument('--out', default='bench_replicas.csv')
    ap.add_argument('--ys', default='1,5,25')
    ap.add_argument('--conv-ys', default='1,5')
    ap.add_argument('--steps', type=int, default=15)
    ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--fit', action='store_true', help='also measure fit over bare steps (y=25)')
    ap.add_argument('--coupling', action='store_true', help="also measure the coupling's share of the stacked step (γ > 0 against γ = 0)")
    ap.add_argument('--floor', action='store_true', help='also split the stacked step into GEMM work and memory-bound passes (roofline)')
    ap.add_argument('--first-layer', action='store_true', help='also time the shared first layer as one baddbmm against one wide GEMM')
    ap.add_argument('--raw-allocator', action='store_true', help="keep glibc's default allocator settings")
    ap.add_argument('--threads', type=int, default=None, help='torch threads; with 1 on a CPU, steps are timed in thread CPU time')
    a = ap.parse_args(argv)
    allocator = 'glibc default' if a.raw_allocator else 'tuned' if tune_allocator() else 'glibc default (mallopt refused)'
    global CLOCK
    if a.threads: torch.set_num_threads(a.threads)
    if a.threads == 1 and (a.device or 'cpu') == 'cpu':   # CPU time of this thread: robust to other processes on a shared machine
        CLOCK = time.thread_time
    device = default_device(a.device)
    peak = gemm_peak() if device.type == 'cpu' else float('nan')
    if device.type == 'cpu': print(f"GEMM peak (2048² torch.mm, {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s", flush=True)
    torch.manual_seed(0)
    ae_data = (torch.rand(2048, N, device=device), None)
    conv_data = (torch.randn(1024, 3, 32, 32, device=device), torch.randint(0, 10, (1024,), device=device))
    rows, info = [], dict(device=str(device) if device.type == 'cpu' else torch.cuda.get_device_name(device),
                          threads=torch.get_num_threads(), torch=torch.__version__, machine=machine_name(device),
                          allocator=allocator, clock=CLOCK.__name__)
    plain_ms = {}                                       # the plain one-model step timed beside each y, for the floor's ratio bound
    for model_name, ys, impls in [('ae', a.ys, ('stacked', 'stacked-shared', 'replicate-loop', 'replicate-vmap', 'models-loop')),
                                  ('bn_convnet', a.conv_ys, ('replicate-loop', 'replicate-vmap', 'models-loop'))]:
        data = ae_data if model_name == 'ae' else conv_data
        for y in [int(v) for v in ys.split(',') if v]:
            steps = {('plain', 1): make_step(model_name, 'plain', 1, device, data)}
            steps.update({(impl, y): make_step(model_name, impl, y, device, data) for impl in impls})
            times = time_round_robin(steps, device, a.warmup, a.steps)
            base, base_med = min(times[('plain', 1)]), statistics.median(times[('plain', 1)])
            if model_name == 'ae': plain_ms[y] = 1e3 * base
            for (impl, yy), t in times.items():
                if impl == 'plain' and y != 1: continue
                med = statistics.median(t)
                gf = ae_flops(yy) / med / 1e9 if model_name == 'ae' else float('nan')
                rows.append(dict(model=model_name, impl=impl, y=yy, min_ms=1e3*min(t), median_ms=1e3*med,
                                 ratio_vs_plain=min(t) / base, median_ratio_vs_plain=med / base_med,
                                 gflops=gf, frac_of_peak=gf / peak, gemm_peak_gflops=peak, steps=a.steps, **info))
                print(f"| {model_name} | {impl} | {yy} | {1e3*min(t):.1f} | {1e3*med:.1f} | {min(t)/base:.2f} | {med/base_med:.2f} "
                      f"| {gf:.1f} | {gf/peak:.2f} |", flush=True)
    if a.coupling:
        for r in coupling_share(device, [int(v) for v in a.ys.split(',') if v and int(v) > 1], a.steps, a.warmup):
            rows.append(dict(model='ae', impl=f"coupling_share_{r['coupling']}", y=r['y'], min_ms=r['on_ms'] - r['off_ms'],
                             median_ms=r['on_ms'] - r['off_ms'], ratio_vs_plain=float('nan'), median_ratio_vs_plain=r['share'],
                             gflops=float('nan'), frac_of_peak=float('nan'), gemm_peak_gflops=peak, steps=a.steps, **info))
    if a.first_layer:
        for r in first_layer(device, [int(v) for v in a.ys.split(',') if v and int(v) > 1], a.steps, a.warmup):
            for way in ('bmm', 'wide'):
                rows.append(dict(model='ae', impl=f'first_layer_{way}', y=r['y'], min_ms=r[f'{way}_ms'], median_ms=r[f'{way}_ms'],
                                 ratio_vs_plain=float('nan'), median_ratio_vs_plain=r[f'{way}_ms'] / r['bmm_ms'], gflops=float('nan'),
                                 frac_of_peak=float('nan'), gemm_peak_gflops=peak, steps=a.steps, **info))
    if a.floor:
        for r in floor_split(device, [int(v) for v in a.ys.split(',') if v and int(v) > 1], a.steps, a.warmup, peak):
            rows.append(dict(model='ae', impl='floor_split', y=r['y'], min_ms=float('nan'), median_ms=r['fwd_bwd_ms'] + r['memory_bound_ms'],
                             ratio_vs_plain=float('nan'), median_ratio_vs_plain=float('nan'), gflops=r['gemm_part_gflops'],
                             frac_of_peak=r['gemm_part_frac'], gemm_peak_gflops=peak, steps=a.steps, **info,
                             **{k: v for k, v in r.items() if k.endswith('_ms') or k == 'roofline_frac'},
                             ratio_bound=(1e3 * ae_flops(r['y']) / (peak * 1e9) + r['memory_bound_ms']) / plain_ms.get(r['y'], float('nan'))))
            print(f"floor, y={r['y']}: no implementation of this step can cost less than {rows[-1]['ratio_bound']:.2f}x the plain "
                  f"one-model step on this machine (every product at peak, the memory-bound passes as measured)", flush=True)
    if a.fit:
        fo = fit_overhead(device, 25)
        print(f"fit over bare steps, y=25: {fo['fit_over_bare']:.3f} ({fo['fit_s']:.2f} s vs {fo['bare_s']:.2f} s)")
        rows.append(dict(model='ae', impl='fit_over_bare', y=25, min_ms=1e3*fo['fit_s'], median_ms=float('nan'),
                         ratio_vs_plain=fo['fit_over_bare'], steps=fo['epochs'] * (fo['P'] // 64), **info))
    print(f"wrote {write_csv(rows, a.out)}")
    return rows

if __name__ == '__main__':
    main()
