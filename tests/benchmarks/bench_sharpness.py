"""The flatness toolbox against the peers a user would pick instead, on a y = 5 stack of replicas.

1. Top Hessian eigenvalue and Hutchinson trace (8 Rademacher probes) of a BN conv net (`vision.small_convnet`, eval-mode
   batch norm) and of the deep autoencoder [N, N, B, N, N]: `sharpness.hessian_eigs` / `hessian_trace` on the stack
   vs PyHessian (`pip install pyhessian`, the package itself: `hessian(model, criterion, data).eigenvalues()` with its
   defaults maxIter=100, tol=1e-3, and `.trace(maxIter=8, tol=0)`) looping over the 5 replicas as plain torch models.
   Ours is timed three ways for the eigenvalue: the exact default (2k + 20 = 22 Lanczos steps, full reorthogonalisation)
   and with `tol=3e-2`, `1e-2` and `1e-3` (stop once the Ritz residual is below 3 % / 1 % / 0.1 % of the Ritz value). Accuracy is the largest
   relative error over the replicas against a 60-step Lanczos reference. The trace also by Hutch++ (`method='hutch++'`)
   with the same 8 products; accuracy as the RMS relative error over replicas and `--seeds` seeds against Hutch++ with
   `--ref-probes` products, and the time PyHessian would need to reach Hutch++'s error, from Hutchinson's 1/sqrt(m)
   law (`time_to_equal_error_vs_peer`: PyHessian's time for that error / ours; PyHessian's estimator is Hutchinson's,
   so its error at 8 probes is our Hutchinson's).
2. A 21 x 21 filter-normalised 2-D slice of the deep AE: `sharpness.loss_slice` (points per pass chosen by timing the
   first passes; the first layer's products computed once) vs the point loop as loss-landscape writes it (for each
   replica, a plain model; for each grid point, `p.data = w + a d1 + b d2`, then the loss in `torch.no_grad`), and vs
   `loss_slice` with the old 2^26-byte budget's points per pass. `flop_bound` is the speed-up the multiply-adds allow
   (the loop's forward against ours, whose first layer combines three precomputed products): the rest is overhead.

The script runs, like `bench_replicas`, under the allocator settings `eae-run` gives every kernel (`experiments.tune_allocator`,
called first thing, unless `--raw-allocator`): ours and the peer share the process, so both get them.

Every pair is timed paired and interleaved (the order of the ways rotates every round) and reported as the median
over rounds of the per-round ratio peer time / our time: the machine is shared, so only ratios mean anything. Results
go to three CSVs (`--out-dir`, default figures/): bench_curvature_<device>.csv (eigenvalue), bench_trace_<device>.csv
and bench_slice_<device>.csv. Each row names what ran it (`machine`: `experiments.machine_name`); a run replaces the rows of its own machine and
keeps the other machines' rows (`core.merge_csv`).

    python tests/benchmarks/bench_sharpness.py                      # CPU, 1 thread (OMP_NUM_THREADS=1)
    python tests/benchmarks/bench_sharpness.py --device cuda
"""
from __future__ import annotations
import argparse, statistics, time
from pathlib import Path
import torch
from torch import nn
from entropic_ae.core import default_device, merge_csv
from entropic_ae.experiments import tune_allocator, machine_name
from entropic_ae.data import random_features
from entropic_ae.models import deep_ae, recon_error, cross_entropy
from entropic_ae.vision import fake_images, image_classifier, small_convnet
from entropic_ae.flatness import dataset_loss, _max_points as F_max_points
from entropic_ae import sharpness as S

def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()

def interleaved(ways:dict, rounds:int, dev) -> dict:
    "Times [rounds] per way, the order rotating every round: wall-clock seconds, and CPU seconds (process time) under key (way, 'cpu')."
    names, times = list(ways), {**{k: [] for k in ways}, **{(k, 'cpu'): [] for k in ways}}
    for i in range(rounds):
        for k in names[i % len(names):] + names[:i % len(names)]:
            sync(dev); t, c = time.perf_counter(), time.process_time(); ways[k](); sync(dev)
            times[k].append(time.perf_counter() - t); times[k, 'cpu'].append(time.process_time() - c)
    return times

def ratio(times, peer, way, cpu=False) -> float:
    "Median over rounds of peer time / our time (wall clock, or CPU time with `cpu`)."
    p, w = ((peer, 'cpu'), (way, 'cpu')) if cpu else (peer, way)
    return statistics.median(a / b for a, b in zip(times[p], times[w]))

# ---- plain per-replica models, what a PyHessian or loss-landscape user has

def plain_ae(model, r):
    "Replica r of a stacked `deep_ae` as a plain nn.Sequential of nn.Linear (same weights)."
    N, H, B = model.sizes[0], model.sizes[1], model.sizes[2]
    net = nn.Sequential(nn.Linear(N, H), nn.ReLU(), nn.Linear(H, B), nn.Linear(B, H), nn.ReLU(), nn.Linear(H, N), nn.Sigmoid())
    with torch.no_grad():
        for m, l in zip([m for m in net if isinstance(m, nn.Linear)], model.layers):
            m.weight.copy_(l.weight[r].T); m.bias.copy_(l.bias[r, 0])
    return net.to(model.layers[0].weight.device)

def plain_conv(model, r, **kw):
    "Replica r of a stacked `small_convnet` (`image_classifier`) as a plain `small_convnet` (same weights and buffers)."
    net = small_convnet(**kw)
    net.load_state_dict({k: v[r] for k, v in model.model.module.state_dict().items()})
    return net.to(next(model.parameters()).device).eval()

def pyhessian_loop(nets, criterion, x, t, what):
    from pyhessian import hessian
    out = []
    for net in nets:
        for p in net.parameters(): p.grad = None          # PyHessian's backward accumulates into .grad
        h = hessian(net, criterion, data=(x, t), cuda=x.is_cuda)
        out.append(h.eigenvalues()[0][0] if what == 'eig' else sum(h.trace(maxIter=8, tol=0.)) / 8)
    return torch.tensor(out)

def train_briefly(model, x, t, loss_fn, steps:int, lr:float, seed:int=0):
    "`steps` full-batch Adam steps on the summed per-replica loss (seeded; batch norm in train mode), then eval mode."
    torch.manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad(); loss_fn(model(x), x if t is None else t).sum().backward(); opt.step()
    for p in model.parameters(): p.grad = None
    return model.eval()

def states(a):
    "The nets' states to measure: freshly initialised, then after `--train-steps` Adam steps (the minima a researcher measures)."
    return [s for s in ('untrained', 'trained') if s in a.states]

def curvature(a, dev, rows, trace_rows):
    torch.manual_seed(0)
    cases = {}
    im = fake_images(n_train=a.images, n_test=1, shape=(3, a.image_size, a.image_size), seed=0, device=dev)
    conv = image_classifier('small_convnet', y=a.y, shape=(3, a.image_size, a.image_size), width=a.width, device=dev).eval()
    cases[f'BN conv net (small_convnet width {a.width}, {a.images} images {a.image_size}x{a.image_size}), y={a.y}'] = (
        conv, im.x_train, im.t_train, cross_entropy, lambda m, r: plain_conv(m, r, in_channels=3, width=a.width), nn.CrossEntropyLoss())
    data = random_features(N=a.N, D=max(1, a.B // 2), P=a.P, P_test=1, seed=0, device=dev)
    ae = deep_ae(a.N, a.B, y=a.y, device=dev)
    cases[f'deep AE N={a.N}, B={a.B}, P={a.P}, y={a.y}'] = (ae, data.x_train, None, recon_error, plain_ae, nn.MSELoss())
    for state in states(a):
        for name, (model, x, t, loss_fn, plain, crit) in cases.items():
            if state == 'trained': train_briefly(model, x, t, loss_fn, a.train_steps, a.train_lr)
            label = f'{name}, {state}' + (f' ({a.train_steps} Adam steps)' if state == 'trained' else '')
            nets = [plain(model, r) for r in range(a.y)]
            kw = dict(loss_fn=loss_fn, target=t, progress=False)
            tt = x if t is None else t
            with torch.no_grad():          # the plain models compute the same losses as the stack
                ref_loss = S.dataset_loss(model, x, loss_fn, target=t)
                plain_loss = torch.stack([crit(n(x), tt) for n in nets])
            assert torch.allclose(ref_loss, plain_loss, rtol=1e-4), (ref_loss, plain_loss)
            print(f'{label}: loss per replica {ref_loss.tolist()}', flush=True)
            if 'eig' not in a.skip: top_eigenvalue(a, dev, rows, label, model, x, kw, nets, crit, tt)
            if 'trace' not in a.skip: trace(a, dev, trace_rows, label, model, x, kw, nets, crit, tt)

def top_eigenvalue(a, dev, rows, name, model, x, kw, nets, crit, tt):
    ref = S.hessian_eigs(model, x, n_iter=60, **kw)[:, 0]
    err = lambda e: ((e.cpu() - ref.cpu()).abs() / ref.cpu().abs()).max().item()
    res = {}
    ways = dict(pyhessian=lambda: res.__setitem__('pyhessian', pyhessian_loop(nets, crit, x, tt, 'eig')),
                exact=lambda: res.__setitem__('exact', S.hessian_eigs(model, x, **kw)[:, 0]),
                **{f'tol={tol:g}': (lambda tol=tol: res.__setitem__(f'tol={tol:g}', S.hessian_eigs(model, x, tol=tol, **kw)[:, 0])) for tol in a.tol})
    times = interleaved(ways, a.rounds, dev)
    for w, label in (('pyhessian', 'PyHessian loop over replicas (power iteration, maxIter=100, tol=1e-3)'),
                     ('exact', 'ours, 22 Lanczos steps (exact default)'), *[(f'tol={t:g}', f'ours, Lanczos with tol={t:g}') for t in a.tol]):
        rows.append(dict(task=f'top-1 Hessian eigenvalue, {name}', way=label, speed_vs_peer=ratio(times, 'pyhessian', w),
                         rel_error=err(res[w]), rounds=a.rounds, device=str(dev), speed_vs_peer_cpu=ratio(times, 'pyhessian', w, cpu=True)))
        print(rows[-1], flush=True)

def trace(a, dev, rows, name, model, x, kw, nets, crit, tt):
    "Hutchinson (ours and PyHessian's) and Hutch++ at 8 products: speed, RMS error, and time to Hutch++'s error."
    res = {}
    ways = dict(pyhessian=lambda: res.__setitem__('tr_py', pyhessian_loop(nets, crit, x, tt, 'trace')),
                ours=lambda: res.__setitem__('tr', S.hessian_trace(model, x, n_probes=8, **kw)),
                hutchpp=lambda: res.__setitem__('pp', S.hessian_trace(model, x, n_probes=8, method='hutch++', **kw)))
    times = interleaved(ways, a.rounds, dev)
    # accuracy at 8 products: RMS relative error over replicas and seeds, against Hutch++ with --ref-probes products
    true = S.hessian_trace(model, x, n_probes=a.ref_probes, method='hutch++', **kw)[0].cpu()
    rms = lambda m: torch.stack([(S.hessian_trace(model, x, n_probes=8, seed=s, method=m, **kw)[0].cpu() - true) / true.abs()
                                 for s in range(a.seeds)]).square().mean().sqrt().item()
    e_h, e_pp = rms('hutchinson'), rms('hutch++')
    m_eq = 8 * (e_h / e_pp) ** 2                      # Hutchinson's error falls as 1/sqrt(m): products it needs to match
    for w, label, e in (('pyhessian', 'PyHessian loop over replicas (Hutchinson, 8 probes; its error is that of Hutchinson)', e_h),
                        ('ours', 'ours, hessian_trace, Hutchinson, 8 probes', e_h), ('hutchpp', 'ours, hessian_trace, Hutch++, 8 products', e_pp)):
        rows.append(dict(task=f'Hessian trace 8 products, {name}', way=label, speed_vs_peer=ratio(times, 'pyhessian', w), rel_error=e,
                         time_to_equal_error_vs_peer=ratio(times, 'pyhessian', w) * (m_eq / 8 if w == 'hutchpp' else 1.),
                         rounds=a.rounds, device=str(dev), speed_vs_peer_cpu=ratio(times, 'pyhessian', w, cpu=True)))
        print(rows[-1], flush=True)
    print(f"  trace: reference {true.tolist()}; Hutchinson {res['tr'][0].tolist()}; Hutch++ {res['pp'][0].tolist()}; PyHessian {res['tr_py'].tolist()}; "
          f"PyHessian needs ~{m_eq:.0f} probes for Hutch++'s error at 8")

def point_loop(model, nets, dirs, ab, x):
    "The loss-landscape loop: per replica a plain model; per grid point set p.data = w + a d1 + b d2 and evaluate."
    out = torch.empty(len(nets), len(ab), len(ab))
    with torch.no_grad():
        for r, net in enumerate(nets):
            ps = list(net.parameters()); w0 = [p.data.clone() for p in ps]
            D = [[z for i in range(len(model.layers)) for z in (d[2 * i][r].T, d[2 * i + 1][r, 0])] for d in dirs]
            for i, a in enumerate(ab.tolist()):
                for j, b in enumerate(ab.tolist()):
                    for p, w, u, v in zip(ps, w0, *D): p.data = w + a * u + b * v
                    out[r, i, j] = nn.functional.mse_loss(net(x), x).item()
            for p, w in zip(ps, w0): p.data = w
    return out

def slice_bench(a, dev, rows):
    data = random_features(N=a.slice_N, D=max(1, a.slice_B // 2), P=a.slice_P, P_test=1, seed=0, device=dev)
    model = deep_ae(a.slice_N, a.slice_B, y=a.y, device=dev)
    for state in states(a):
        if state == 'trained': train_briefly(model, data.x_train, None, recon_error, a.train_steps, a.train_lr)
        one_slice(a, dev, rows, model, data.x_train, state)

def one_slice(a, dev, rows, model, x, state):
    nets = [plain_ae(model, r) for r in range(a.y)]
    dirs = S.filter_directions(model, 2, seed=0)
    ab = torch.linspace(-1, 1, a.grid)
    old = F_max_points(dev, a.y, S._Flat(model).n, x.shape[0], x.shape[1])      # the old default: a 2^26-byte budget on a CPU
    res = {}
    ways = {'point loop': lambda: res.__setitem__('loop', point_loop(model, nets, dirs, ab, x)),
            'ours': lambda: res.__setitem__('ours', S.loss_slice(model, x, dirs, (ab, ab), progress=False)),
            'old budget': lambda: res.__setitem__('old', S.loss_slice(model, x, dirs, (ab, ab), points_per_pass=old, progress=False))}
    times = interleaved(ways, a.rounds, dev)
    sz = model.sizes                        # multiply-adds per pattern: the loop runs every layer; ours combines the
    loop_macs = sum(i * o for i, o in zip(sz, sz[1:]))              # first layer's 3 basis products (3 per output)
    bound = loop_macs / (3 * sz[1] + sum(i * o for i, o in zip(sz[1:], sz[2:])))
    for k in ('ours', 'old'): assert torch.allclose(res[k].cpu(), res['loop'], rtol=1e-4, atol=1e-6), (res[k] - res['loop']).abs().max()
    task = f'{a.grid}x{a.grid} filter-normalised slice, deep AE N={a.slice_N}, B={a.slice_B}, P={a.slice_P}, y={a.y}, {state}' + (f' ({a.train_steps} Adam steps)' if state == 'trained' else '')
    for w, label in (('point loop', 'point loop as loss-landscape (plain model per replica, p.data = w + a d1 + b d2)'),
                     ('ours', 'ours, loss_slice (points per pass by timing, first layer once)'),
                     ('old budget', f'loss_slice with the old 2^26-byte budget ({old} points per pass)')):
        rows.append(dict(task=task, way=label, speed_vs_peer=ratio(times, 'point loop', w),
                         max_abs_diff_vs_loop=(res[{'point loop': 'loop', 'ours': 'ours', 'old budget': 'old'}[w]].cpu() - res['loop']).abs().max().item(),
                         rounds=a.rounds, device=str(dev), speed_vs_peer_cpu=ratio(times, 'point loop', w, cpu=True),
                         flop_bound=bound if w != 'point loop' else 1.))
        print(rows[-1], flush=True)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default=None); ap.add_argument('--out-dir', default='figures')
    ap.add_argument('--y', type=int, default=5); ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--N', type=int, default=200); ap.add_argument('--B', type=int, default=40); ap.add_argument('--P', type=int, default=500)
    ap.add_argument('--images', type=int, default=128); ap.add_argument('--image-size', type=int, default=16); ap.add_argument('--width', type=int, default=16)
    ap.add_argument('--tol', type=float, nargs='+', default=[3e-2, 1e-2, 1e-3])
    ap.add_argument('--slice-N', type=int, default=200); ap.add_argument('--slice-B', type=int, default=40)
    ap.add_argument('--slice-P', type=int, default=500); ap.add_argument('--grid', type=int, default=21)
    ap.add_argument('--skip', nargs='*', choices=['curvature', 'slice', 'eig', 'trace'], default=[])
    ap.add_argument('--states', nargs='+', choices=['untrained', 'trained'], default=['untrained', 'trained'])
    ap.add_argument('--raw-allocator', action='store_true', help="keep glibc's default allocator settings")
    ap.add_argument('--train-steps', type=int, default=300); ap.add_argument('--train-lr', type=float, default=1e-3)
    ap.add_argument('--seeds', type=int, default=5); ap.add_argument('--ref-probes', type=int, default=240)
    a = ap.parse_args()
    allocator = 'glibc default' if a.raw_allocator else 'tuned' if tune_allocator() else 'glibc default (mallopt refused)'
    dev = default_device(a.device)
    if dev.type == 'cuda':           # full float32 products on both sides (TF32 would split the stack from the plain models)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    print(f"device {dev}, {torch.get_num_threads()} thread(s), torch {torch.__version__}, allocator {allocator}")
    tag, here = ('cuda' if dev.type == 'cuda' else 'cpu'), machine_name(dev)
    def save(rows, what):       # this machine's rows replace its earlier ones; other machines' rows stay
        print('wrote', merge_csv([{**x, 'machine': here} for x in rows], Path(a.out_dir)/f'bench_{what}_{tag}.csv', key=['machine']))
    if 'curvature' not in a.skip:
        rows, trace_rows = [], []; curvature(a, dev, rows, trace_rows)
        for r, what in ((rows, 'curvature'), (trace_rows, 'trace')):
            if r: save(r, what)
    if 'slice' not in a.skip:
        rows = []; slice_bench(a, dev, rows); save(rows, 'slice')

if __name__ == '__main__': main()
