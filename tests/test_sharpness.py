"""The flatness toolbox (entropic_ae.sharpness): curvature against the exact dense Hessian (float64), stacked = one by
one, closed forms for the worst-case losses, slices and barriers, the Langevin local entropy against the 1-D quadrature,
invariance under the ReLU rescaling, the batch-norm policy, resumable grids, bad inputs and the metric registry."""
import copy
import pytest
import torch
from torch import nn
from entropic_ae.models import MLP, shallow_ae, cross_entropy, recon_error
from entropic_ae.replicas import replica, replicate, stack, barycentre
from entropic_ae.flatness import dataset_loss, METRICS
from entropic_ae.landscape import toy_energy, local_free_entropy, local_mean
from entropic_ae import sharpness as S

f64 = torch.float64

@pytest.fixture(scope='module')
def clf():
    torch.manual_seed(0)
    x, t = torch.randn(32, 4, dtype=f64), torch.randint(0, 3, (32,))
    m = MLP([4, 5, 3], y=3, seeds=[0, 1, 2], dtype=f64)
    opt = torch.optim.Adam(m.parameters(), lr=3e-2)
    for _ in range(50): opt.zero_grad(); cross_entropy(m(x), t).sum().backward(); opt.step()
    Hs = [S.dense_hessian(m, x, cross_entropy, t, r) for r in range(3)]
    return m, x, t, Hs

def kw(t): return dict(loss_fn=cross_entropy, target=t)

def test_hvp_and_eigenvalues_match_dense_hessian(clf):
    m, x, t, Hs = clf
    F, mv = S.curvature_operator(m, x, cross_entropy, t, batch_size=5)          # chunked: the same product
    v = torch.randn(3, F.n, dtype=f64)
    torch.testing.assert_close(mv(v), torch.stack([H @ vr for H, vr in zip(Hs, v)]), rtol=1e-11, atol=1e-12)
    exact = torch.stack([torch.linalg.eigvalsh(H).flip(0) for H in Hs])
    torch.testing.assert_close(S.hessian_eigs(m, x, k=F.n, n_iter=F.n, **kw(t)), exact, rtol=1e-9, atol=1e-10)
    top, vecs = S.hessian_eigs(m, x, k=3, batch_size=7, vectors=True, **kw(t))
    torch.testing.assert_close(top, exact[:, :3], rtol=1e-8, atol=1e-10)
    u = F.flat([w[:, 0] for w in vecs])
    torch.testing.assert_close(torch.stack([H @ ur for H, ur in zip(Hs, u)]), top[:, :1] * u, rtol=1e-6, atol=1e-8)

def test_trace_within_its_standard_error(clf):
    m, x, t, Hs = clf
    tr, se = S.hessian_trace(m, x, n_probes=48, **kw(t))
    true = torch.stack([H.trace() for H in Hs])
    assert (se > 0).all() and ((tr - true).abs() < 3 * se).all()
    # the per-probe values are exactly v'Hv with the dense Hessian
    v = S._Noise(0, 3, 'cpu')((Hs[0].shape[0],), f64, 'rademacher')
    one, nan_se = S.hessian_trace(m, x, n_probes=1, **kw(t))
    torch.testing.assert_close(one, torch.stack([vr @ H @ vr for H, vr in zip(Hs, v)]), rtol=1e-11, atol=1e-12)
    assert nan_se.isnan().all()

def test_slq_moments_are_exact(clf):
    m, x, t, Hs = clf
    nodes, w = S.slq(m, x, n_probes=2, n_iter=5, **kw(t))
    draws = S._Noise(0, 3, 'cpu')
    for p_ in range(2):
        v = draws((Hs[0].shape[0],), f64)[0]; v = v / v.norm()
        for r in range(3):
            for p in range(10):                                # a 5-node Gauss rule is exact to degree 9
                ref = v @ torch.linalg.matrix_power(Hs[r], p) @ v
                torch.testing.assert_close((w[r, p_] * nodes[r, p_] ** p).sum(), ref, rtol=1e-9, atol=1e-12)
    grid = torch.linspace(nodes.min().item() - 0.5, nodes.max().item() + 0.5, 2001, dtype=f64)
    dens = S.spectral_density(nodes, w, grid, sigma=0.05)
    torch.testing.assert_close(torch.trapezoid(dens, grid), torch.ones(3, dtype=f64), rtol=1e-3, atol=1e-3)

def test_gauss_newton_is_psd_and_matches_dense(clf):
    m, x, t, _ = clf
    from torch.func import functional_call
    r0 = replica(m, 0)
    names, ps = zip(*r0.named_parameters()); sizes = [p.numel() for p in ps]
    w0 = torch.cat([p.detach().reshape(-1) for p in ps])
    out = lambda w: functional_call(r0, dict(zip(names, (c.view(p.shape) for c, p in zip(w.split(sizes), ps)))), (x,))
    J = torch.autograd.functional.jacobian(out, w0).reshape(-1, w0.numel())
    Ho = torch.autograd.functional.hessian(lambda o: cross_entropy(o.view(1, 32, 3), t)[0], out(w0).detach()).reshape(J.shape[0], -1)
    G = J.T @ Ho @ J
    got = S.hessian_eigs(m, x, k=G.shape[0], n_iter=G.shape[0], gauss_newton=True, **kw(t))[0]
    torch.testing.assert_close(got, torch.linalg.eigvalsh(G).flip(0), rtol=1e-8, atol=1e-10)
    assert got.min() > -1e-10

def test_stacked_equals_each_replica_alone(clf):
    m, x, t, _ = clf
    alone = lambda fn: torch.cat([fn(replica(m, r)) for r in range(3)])
    cases = [lambda mm: S.hessian_eigs(mm, x, k=2, **kw(t)),
             lambda mm: torch.stack(S.hessian_trace(mm, x, n_probes=4, **kw(t)), 1),
             lambda mm: S.slq(mm, x, n_probes=2, n_iter=6, **kw(t))[0],
             lambda mm: S.worst_case_loss(mm, x, [0.1, 0.2], n_steps=3, **kw(t)),
             lambda mm: S.worst_case_loss(mm, x, [0.1], n_steps=3, adaptive=True, **kw(t)),
             lambda mm: S.keskar_sharpness(mm, x, [1e-2], n_steps=3, **kw(t)),
             lambda mm: S.delta_energy(mm, x, [0.1], n_draws=3, **kw(t)),
             lambda mm: S.loss_slice(mm, x, S.filter_directions(mm, 2, seed=3), ([-.5, 0, .5], [0., 1.]), points_per_pass=4, **kw(t))]
    for fn in cases: torch.testing.assert_close(fn(m), alone(fn), rtol=1e-10, atol=1e-12)

def test_worst_case_closed_forms():
    torch.manual_seed(1)
    x, t = torch.randn(30, 4, dtype=f64), torch.randn(30, 2, dtype=f64)
    mse = lambda o, tt: (o - tt).square().sum(-1).mean(-1)
    lin = MLP([4, 2], y=2, seeds=[3, 4], dtype=f64)
    base = mse(lin(x), t).detach()
    assert torch.equal(S.worst_case_loss(lin, x, [0.], loss_fn=mse, target=t)[:, 0], base)     # rho = 0: exactly
    assert torch.equal(S.rho_sharpness(lin, x, [0.], loss_fn=mse, target=t)[:, 0], torch.zeros(2, dtype=f64))
    g = torch.autograd.grad(mse(lin(x), t).sum(), list(lin.parameters()))
    for r in range(2):
        A = S.dense_hessian(lin, x, mse, t, r)
        gr = torch.cat([gi[r].reshape(-1) for gi in g]); d = torch.linalg.solve(A, gr)
        for j, rho in enumerate((0.05, 0.4)):
            lo, hi = torch.linalg.eigvalsh(A).max().item() * (1 + 1e-12), 1e6
            for _ in range(200):
                mu = (lo * hi) ** .5
                eps = torch.linalg.solve(mu * torch.eye(len(gr), dtype=f64) - A, A @ d)
                lo, hi = (mu, hi) if eps.norm() > rho else (lo, mu)
            want = base[r] + gr @ eps + 0.5 * eps @ A @ eps
            got = S.worst_case_loss(lin, x, [rho], n_steps=60, loss_fn=mse, target=t)[r, 0]
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    # Keskar on a loss linear in the weights: one sign step is exact
    ll = lambda o, tt: (o * tt).sum(-1).mean(-1)
    gl = torch.autograd.grad(ll(lin(x), t).sum(), list(lin.parameters()))
    L0 = ll(lin(x), t).detach()
    rise = sum(((p.detach().abs() + 1) * gi.abs()).flatten(1).sum(1) for p, gi in zip(lin.parameters(), gl))
    torch.testing.assert_close(S.keskar_sharpness(lin, x, [1e-2], n_steps=2, loss_fn=ll, target=t)[:, 0], 100 * 1e-2 * rise / (1 + L0))
    # the model's weights are left as they were
    torch.testing.assert_close(mse(lin(x), t).detach(), base, rtol=0, atol=0)

def relu_rescale(model, c):
    m = copy.deepcopy(model)
    with torch.no_grad(): m.layers[0].weight.mul_(c); m.layers[0].bias.mul_(c); m.layers[1].weight.div_(c)
    return m

def test_slices_origin_resume_and_rescaling(tmp_path):
    ae = shallow_ae(12, 4, y=2, seeds=[0, 1], bottleneck_relu=True, dtype=f64)
    x = torch.rand(40, 12, dtype=f64)
    d1, d2 = S.filter_directions(ae, 2, seed=5)
    a = torch.linspace(-1, 1, 5)
    s1 = S.loss_slice(ae, x, [d1], a, points_per_pass=3)
    torch.testing.assert_close(s1[:, 2], dataset_loss(ae, x), rtol=1e-13, atol=0)
    ae3 = relu_rescale(ae, 2.5)
    torch.testing.assert_close(S.loss_slice(ae3, x, S.filter_directions(ae3, 1, seed=5), a), s1, rtol=1e-10, atol=1e-12)
    # the invariant measures stay, the others move
    torch.testing.assert_close(S.worst_case_loss(ae3, x, [0.1], adaptive=True, eta=0.), S.worst_case_loss(ae, x, [0.1], adaptive=True, eta=0.), rtol=1e-9, atol=1e-12)
    assert not torch.allclose(S.hessian_eigs(ae3, x), S.hessian_eigs(ae, x), rtol=1e-2)
    # resumable 2-D grid
    fn = tmp_path / 'grid.pt'
    full = S.loss_slice(ae, x, [d1, d2], (a, a), path=fn, points_per_pass=4)
    st = torch.load(fn, weights_only=True); st['done'][3:11] = False; st['values'][3:11] = 0.; torch.save(st, fn)
    calls = []
    counting = lambda o, t: calls.append(o.shape[0]) or recon_error(o, t)
    torch.testing.assert_close(S.loss_slice(ae, x, [d1, d2], (a, a), loss_fn=counting, path=fn, points_per_pass=4), full)
    assert sum(calls) == 8 * 2
    with pytest.raises(ValueError, match='different weights or directions'): S.loss_slice(ae3, x, [d1, d2], (a, a), path=fn)
    # barrier: zero between a model and itself; end points are the two models' losses
    ts, path_ = S.interpolate(ae, ae, x, 7)
    assert torch.equal(S.barrier(ts, path_), torch.zeros(2, dtype=f64))
    ts, to_c = S.interpolate(ae, barycentre(ae), x, 5, points_per_pass=2)
    torch.testing.assert_close(to_c[:, -1], dataset_loss(barycentre(ae), x).expand(2))
    assert (S.barrier(ts, to_c) >= 0).all()

def test_bn_policy_on_a_replicated_module():
    torch.manual_seed(0)
    x = torch.randn(24, 5, dtype=f64)
    net = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.3), nn.Linear(6, 5)).double()
    for backend in ('loop', 'vmap'):
        m = replicate(net, 2, backend=backend)
        m.train()
        with torch.no_grad():                                   # non-trivial running statistics
            m(x)
        stats = [b.clone() for b in m.buffers()]
        mse = lambda o, t: (o - t).square().mean((-2, -1))
        exact = torch.stack([torch.linalg.eigvalsh(S.dense_hessian(m.eval(), x, mse, None, r)).flip(0)[:2] for r in range(2)])
        m.train()
        torch.testing.assert_close(S.hessian_eigs(m, x, k=2, n_iter=40, loss_fn=mse), exact, rtol=1e-8, atol=1e-10)
        S.hessian_eigs(m, x, k=2, loss_fn=mse, bn='train')
        S.loss_slice(m, x, S.filter_directions(m, 1), [0., 1.], loss_fn=mse, bn='train', points_per_pass=2)
        for b, s in zip(m.buffers(), stats): assert torch.equal(b, s)      # measuring never changes the model
        assert m.training and m.module[3].training
        d = S.filter_directions(m, 1, seed=0)[0]
        assert [float(t.abs().sum()) == 0 for t in d] == [False, True, True, True, False, True]   # biases and BN zero

def test_local_entropy_matches_quadrature():
    class OneWeight(nn.Module):
        def __init__(self, w): super().__init__(); self.y = len(w); self.w = nn.Parameter(torch.tensor(w, dtype=f64)[:, None])
        def forward(self, x): return self.w[:, None, :].expand(self.y, x.shape[0], 1)
    pts = [-1.5, -0.5, 0.3, 1.2]
    le = S.local_entropy(OneWeight(pts), torch.zeros(1, 1), 2., 2., n_steps=3000, lr=1e-3, n_chains=24, n_lambdas=10,
                         loss_fn=lambda o, t: toy_energy(o[:, 0, 0]), richardson=False)   # the plain estimator; its extrapolation: below
    exact = local_free_entropy(torch.tensor(pts), toy_energy, 2., 2., normalize=True)
    mean = local_mean(torch.tensor(pts), toy_energy, 2., 2.)
    assert ((le.phi - exact).abs() < 3 * le.se).all(), (le.phi, exact, le.se)
    assert ((le.mean[0][:, 0] - mean).abs() < 3 * le.mean_se[0][:, 0]).all()
    assert le.chains.shape == (4, 24) and le.energies.shape == (4, 10)

def test_bad_inputs_are_named(clf):
    m, x, t, _ = clf
    for call, msg in [(lambda: S.hessian_eigs(m, x, k=0), 'k must be'), (lambda: S.hessian_trace(m, x, n_probes=0), 'n_probes'),
                      (lambda: S.slq(m, x, n_iter=0), 'n_iter'), (lambda: S.hessian_eigs(m, x, bn='x'), 'bn must be one of'),
                      (lambda: S.hessian_eigs(m, x, seed=[1]), 'seed must have one entry per replica'),
                      (lambda: S.worst_case_loss(m, x, [-1.]), r'rhos\[0\]'), (lambda: S.keskar_sharpness(m, x, [0.1], n_steps=0), 'n_steps'),
                      (lambda: S.loss_slice(m, x, [], [0.]), 'directions'), (lambda: S.filter_directions(m, ignore='bias'), 'ignore'),
                      (lambda: S.interpolate(m, MLP([4, 5, 3], y=2, dtype=f64), x), 'model_b'),
                      (lambda: S.barrier([0., .5], torch.zeros(3, 2)), 'end at 1'),
                      (lambda: S.local_entropy(m, x, 0.), 'gamma must be > 0'), (lambda: S.hessian_eigs(m, x, subset=0), 'subset'),
                      (lambda: S.hessian_eigs(m, x, batch_size=0), 'batch_size')]:
        with pytest.raises((ValueError, TypeError), match=msg): call()

def test_registered_metrics_shapes(clf):
    m, x, t, _ = clf
    opts = {'hessian_max': {}, 'hessian_top': dict(ranks=[1, 3]), 'hessian_trace': dict(n_probes=2),
            'hessian_density': dict(grid=[0., 0.5, 1.], n_probes=1, n_iter=5), 'rho_sharpness': dict(rhos=[0., .1], n_steps=2),
            'asam_sharpness': dict(rhos=[.1], n_steps=1), 'keskar_sharpness': dict(epsilons=[1e-3], n_steps=1),
            'delta_loss': dict(sigmas=[0., .1], n_draws=2), 'loss_slice': dict(alphas=[0., .5]),
            'local_entropy': dict(gammas=[1.], n_steps=5, n_chains=2, n_lambdas=2)}
    for name, o in opts.items():
        met = METRICS[name]
        assert met.weights
        v = met.fn(m, x, t, cross_entropy, **o)
        assert v.shape == ((3,) if met.axis is None else (3, len(o[met.axis]))), name
    torch.testing.assert_close(METRICS['loss_slice'].fn(m, x, t, cross_entropy, alphas=[0.])[:, 0], dataset_loss(m, x, cross_entropy, target=t))

def test_flatness_toolbox_notebook_smoke(tmp_path):
    import pandas as pd
    import papermill as pm
    from pathlib import Path
    exp = Path(__file__).resolve().parent.parent / 'nbs' / 'experiments'
    params = dict(figures_dir=str(tmp_path), cache_dir=str(tmp_path / 'cache'), N=24, D=6, P=96, P_test=48, B=6, trials=2,
                  y=2, epochs=2, bs=32, slq_probes=2, slq_steps=4, lanczos_steps=4, grid=3, path_points=3)
    with pytest.raises(pm.PapermillExecutionError, match='span must be > 0'):
        pm.execute_notebook(str(exp / 'flatness_toolbox.ipynb'), str(tmp_path / 'bad.ipynb'), kernel_name='python3',
                            cwd=str(exp), progress_bar=False, parameters=dict(params, span=0.))
    assert not list(tmp_path.glob('*.png'))
    pm.execute_notebook(str(exp / 'flatness_toolbox.ipynb'), str(tmp_path / 'out.ipynb'), kernel_name='python3',
                        cwd=str(exp), progress_bar=False, parameters=params)
    for s in ('spectrum', 'slice', 'interpolation'):
        assert (tmp_path / f'flatness_toolbox_quick_{s}.png').read_bytes()[:4] == b'\x89PNG'
    df = pd.read_csv(tmp_path / 'flatness_toolbox_quick.csv')
    assert {'train_loss', 'spectrum', 'lambda_max', 'slice', 'path', 'barrier'} == set(df.kind)
    sl = df[(df.kind == 'slice') & (df.x == 0) & (df.y == 0)].set_index(['arm', 'trial']).value.sort_index()
    tl = df[df.kind == 'train_loss'].set_index(['arm', 'trial']).value.sort_index()
    pd.testing.assert_series_equal(sl, tl, check_names=False, rtol=1e-5)        # the slice's centre is the training loss
    vt = pd.read_csv(tmp_path / 'flatness_toolbox_quick_verdict.csv')
    assert len(vt[vt.kind == 'barrier']) == 4 and len(vt[vt.kind == 'lambda_max']) == 3
    assert len(list((tmp_path / 'cache').glob('*.pt'))) == 3                    # resumable grids were written

def test_subset_and_per_replica_seeds(clf):
    m, x, t, _ = clf
    idx = torch.randperm(32, generator=torch.Generator().manual_seed(0))[:12]
    torch.testing.assert_close(S.hessian_eigs(m, x, k=2, subset=12, **kw(t)), S.hessian_eigs(m, x[idx], k=2, loss_fn=cross_entropy, target=t[idx]))
    # a list of seeds gives each replica its own stream: replica r alone with [s_r] sees the same probes
    tr = S.hessian_trace(m, x, n_probes=3, seed=[7, 8, 9], **kw(t))[0]
    torch.testing.assert_close(tr[1:2], S.hessian_trace(replica(m, 1), x, n_probes=3, seed=[8], **kw(t))[0])
    from entropic_ae.train import evaluate
    from types import SimpleNamespace
    rows = evaluate(m, SimpleNamespace(x_train=x, x_test=x, t_train=t, t_test=t),
                    {'hessian_trace': dict(n_probes=2), 'local_entropy': dict(gammas=[1.], n_steps=3, n_chains=2, n_lambdas=1)},
                    loss_fn=cross_entropy, seed=[1, 2, 3])
    assert {r['metric'] for r in rows} == {'hessian_trace', 'local_entropy'} and len(rows) == 6

class Quad(nn.Module):
    "y replicas of a vector w [n] at 0 whose output is w itself: with `quad_loss` the loss is exactly g_r·w + w·H_r w/2."
    def __init__(self, y, n): super().__init__(); self.y = y; self.w = nn.Parameter(torch.zeros(y, n, dtype=f64))
    def forward(self, x): return self.w[:, None, :].expand(self.y, x.shape[0], -1)

def quad_loss(g, H): return lambda o, t: (o[:, 0] * g).sum(-1) + 0.5 * torch.einsum('yi,yij,yj->y', o[:, 0], H, o[:, 0])

def trust_region_max(g, H, rho):
    "max of g·e + e·He/2 over |e| <= rho in float64: (mu - H) e = g with mu >= max(lambda_max, 0) by bisection, or the hard case."
    lam, U = torch.linalg.eigh(H)
    return trust_region_max_eig(lam, U.T @ g, rho)

def trust_region_max_eig(lam, c, rho):
    "The same in H's eigenbasis: eigenvalues `lam` (ascending) and the gradient's coordinates `c` (a diagonal H needs no eigh)."
    l1 = lam[-1].item()
    if l1 < 0 and (c / lam).norm() <= rho: z = -c / lam; return (c @ z + 0.5 * (lam * z * z).sum()).item()
    top = lam >= l1 - 1e-12 * lam.abs().max()
    if l1 >= 0 and (c[top].abs() <= 1e-12 * c.norm()).all() and (c[~top] / (l1 - lam[~top])).norm() <= rho:
        z = torch.where(top, 0., c / (l1 - lam).clamp_min(1e-300)); z[-1] = (rho ** 2 - z.square().sum()).clamp_min(0).sqrt()
    else:
        lo, hi = max(l1, 0.), max(l1, 0.) + c.norm().item() / rho
        for _ in range(2000):
            mu = (lo + hi) / 2
            if mu in (lo, hi): break
            lo, hi = (mu, hi) if (c / (mu - lam)).norm() > rho else (lo, mu)
        z = c / (hi - lam)
    return (c @ z + 0.5 * (lam * z * z).sum()).item()

def test_rho_sharpness_reaches_the_trust_region_maximum():
    "Stationary point, gradient along a flat direction, generic gradient, negative-definite H (interior maximum): the exact value."
    n, rho = 12, 0.3
    Q = torch.linalg.qr(torch.randn(n, n, dtype=f64, generator=torch.Generator().manual_seed(3)))[0]
    lam = torch.tensor([1., .6, .3, 0., -.2, -.5] + [.01] * 6, dtype=f64)
    H = Q @ torch.diag(lam) @ Q.T
    Hneg = Q @ torch.diag(-lam.abs() - .5) @ Q.T
    gs = torch.stack([torch.zeros(n, dtype=f64), Q[:, 3] * rho / 5, torch.randn(n, dtype=f64, generator=torch.Generator().manual_seed(4)) * .05,
                      Q[:, 0] * 1e-3, torch.randn(n, dtype=f64, generator=torch.Generator().manual_seed(5)) * .05])
    Hs = torch.stack([H, H, H, H, Hneg])
    exact = torch.tensor([trust_region_max(g, Hr, rho) for g, Hr in zip(gs, Hs)], dtype=f64)
    torch.testing.assert_close(exact[0], torch.tensor(rho ** 2 / 2, dtype=f64))           # rho^2 lambda_max / 2
    m, x = Quad(5, n), torch.zeros(1, 1)
    got = S.rho_sharpness(m, x, [0., rho], loss_fn=quad_loss(gs, Hs))
    assert torch.equal(got[:, 0], torch.zeros(5, dtype=f64))
    torch.testing.assert_close(got[:, 1], exact, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(S.worst_case_loss(m, x, [rho], seed=[1, 2, 3, 4, 5], loss_fn=quad_loss(gs, Hs))[:, 0], exact, rtol=1e-9, atol=1e-12)
    # stacked = alone (the shared random vector gives every replica the same start)
    alone = torch.cat([S.rho_sharpness(Quad(1, n), x, [rho], loss_fn=quad_loss(gs[r:r+1], Hs[r:r+1])) for r in range(5)])
    torch.testing.assert_close(alone[:, 0], got[:, 1], rtol=1e-12, atol=1e-14)
    # ascent from epsilon = 0 (the former default) misses the first two
    old = S.rho_sharpness(m, x, [rho], n_krylov=0, loss_fn=quad_loss(gs, Hs))[:, 0]
    assert old[0] == 0 and old[1] < 0.4 * exact[1]
    # a 5000-parameter quadratic with a few outliers over a bulk at zero: 16 products are enough
    n = 5000
    g = torch.zeros(2, n, dtype=f64); g[1, 10] = 0.02                                     # stationary; flat gradient
    d = torch.cat([torch.tensor([1., .8, .5], dtype=f64), 0.01 * torch.randn(n - 3, dtype=f64, generator=torch.Generator().manual_seed(6))])
    d[10] = 0.
    big = lambda o, t: (o[:, 0] * g).sum(-1) + 0.5 * (d * o[:, 0] ** 2).sum(-1)
    order = d.argsort()                                                                  # diagonal H: its eigenbasis is a permutation
    exact = torch.tensor([trust_region_max_eig(d[order], g[r][order], 0.1) for r in range(2)], dtype=f64)
    torch.testing.assert_close(S.rho_sharpness(Quad(2, n), x, [0.1], loss_fn=big)[:, 0], exact, rtol=1e-6, atol=1e-12)

def test_asam_and_keskar_leave_a_stationary_point():
    m, x = Quad(2, 4), torch.zeros(1, 1)
    Hd = torch.diag_embed(torch.tensor([[1., .5, .2, .1], [2., 0., 0., -1.]], dtype=f64))
    q = quad_loss(torch.zeros(2, 4, dtype=f64), Hd)
    # ASAM at w = 0 with eta: the ball is |eps| <= rho * eta, so the maximum is (rho eta)^2 lambda_max / 2
    torch.testing.assert_close(S.rho_sharpness(m, x, [0.5], adaptive=True, eta=0.1, loss_fn=q)[:, 0],
                               torch.tensor([1., 2.], dtype=f64) * 0.05 ** 2 / 2, rtol=1e-9, atol=1e-14)
    # Keskar: box |z_i| <= eps; replica 0 (H positive diagonal): every corner is a maximum; replica 1: at least lambda_max eps^2 / 2
    ks = S.keskar_sharpness(m, x, [0.1], loss_fn=q)[:, 0]
    torch.testing.assert_close(ks[0], torch.tensor(100 * 0.5 * 0.01 * 1.8, dtype=f64))
    assert ks[1] >= 100 * 0.5 * 0.01 * 2 - 1e-12
    assert (S.keskar_sharpness(m, x, [0.1], n_steps=1, loss_fn=q)[:, 0] > 0).all()

class OneWeight(nn.Module):
    def __init__(self, w): super().__init__(); self.y = len(w); self.w = nn.Parameter(torch.tensor(w, dtype=f64)[:, None])
    def forward(self, x): return self.w[:, None, :].expand(self.y, x.shape[0], 1)

def test_local_entropy_reports_its_step_size_bias():
    "At lr = 1e-2 the plain SGLD estimate next to the narrow well is biased by many standard errors; the extrapolation is not, and `bias` says by how much."
    pts = [-1.5, -0.5, 0.3, 1.2]
    toy = lambda o, t: toy_energy(o[:, 0, 0])
    le = S.local_entropy(OneWeight(pts), torch.zeros(1, 1), 2., 2., n_steps=600, lr=1e-2, n_chains=32, n_lambdas=10, loss_fn=toy)
    exact = local_free_entropy(torch.tensor(pts), toy_energy, 2., 2., normalize=True)
    plain = S.local_entropy(OneWeight(pts), torch.zeros(1, 1), 2., 2., n_steps=600, lr=1e-2, n_chains=32, n_lambdas=10, loss_fn=toy, richardson=False)
    assert ((plain.phi - exact).abs() > 10 * plain.se).any() and plain.bias.isnan().all()
    assert ((le.phi - exact).abs() < 3 * le.se).all(), (le.phi, exact, le.se)
    torch.testing.assert_close(le.bias, le.chains.mean(1) - le.phi)
    assert le.bias[3] < -5 * le.se[3]                                # the bias it found is the one that is there
    assert ((le.mean[0][:, 0] - local_mean(torch.tensor(pts), toy_energy, 2., 2.)).abs() < 3 * le.mean_se[0][:, 0]).all()

def _bad_calls():
    "Every public function of entropic_ae.sharpness with one bad argument: (label, call, error type, message naming the parameter)."
    torch.manual_seed(0)
    x, t = torch.randn(8, 4, dtype=f64), torch.randint(0, 3, (8,))
    m = MLP([4, 3, 3], y=2, seeds=[0, 1], dtype=f64)
    xn = x.clone(); xn[0, 0] = float('nan')
    tn = torch.randn(8, 3, dtype=f64); tn[1, 1] = float('inf')
    k = dict(loss_fn=cross_entropy, target=t)
    d1, d2 = S.filter_directions(m, 2)
    mv = lambda v: v
    return [
        ('bn_mode bn', lambda: S.bn_mode(m, 'test').__enter__(), ValueError, 'bn must be one of'),
        ('curvature_operator x nan', lambda: S.curvature_operator(m, xn, **k), ValueError, 'x must be finite'),
        ('curvature_operator x list', lambda: S.curvature_operator(m, [[1., 2.]], **k), TypeError, 'x must be a tensor'),
        ('curvature_operator target rows', lambda: S.curvature_operator(m, x, cross_entropy, t[:3]), ValueError, 'target must have one row per row of x'),
        ('curvature_operator model', lambda: S.curvature_operator('net', x, **k), TypeError, 'model must be an nn.Module'),
        ('lanczos n_iter', lambda: S.lanczos(mv, torch.ones(2, 3, dtype=f64), 0), ValueError, 'n_iter must be >= 1'),
        ('hessian_eigs x nan', lambda: S.hessian_eigs(m, xn, **k), ValueError, 'x must be finite'),
        ('hessian_eigs target inf', lambda: S.hessian_eigs(m, x, loss_fn=lambda o, tt: (o - tt).square().mean((1, 2)), target=tn), ValueError, 'target must be finite'),
        ('hessian_eigs k', lambda: S.hessian_eigs(m, x, k=0, **k), ValueError, 'k must be >= 1'),
        ('hessian_eigs k too big', lambda: S.hessian_eigs(m, x, k=10**6, **k), ValueError, 'k must be <= the number of parameters'),
        ('hessian_eigs vectors', lambda: S.hessian_eigs(m, x, vectors=1, **k), TypeError, 'vectors must be a bool'),
        ('hessian_eigs progress', lambda: S.hessian_eigs(m, x, progress='yes', **k), TypeError, 'progress must be a bool'),
        ('hessian_eigs gauss_newton', lambda: S.hessian_eigs(m, x, gauss_newton='no', **k), TypeError, 'gauss_newton must be a bool'),
        ('hessian_eigs seed', lambda: S.hessian_eigs(m, x, seed=-1, **k), ValueError, 'seed must be >= 0'),
        ('hessian_trace n_probes', lambda: S.hessian_trace(m, x, n_probes=0, **k), ValueError, 'n_probes must be >= 1'),
        ('hessian_trace x nan', lambda: S.hessian_trace(m, xn, **k), ValueError, 'x must be finite'),
        ('slq n_iter', lambda: S.slq(m, x, n_iter=0, **k), ValueError, 'n_iter must be >= 1'),
        ('slq x nan', lambda: S.slq(m, xn, **k), ValueError, 'x must be finite'),
        ('spectral_density sigma', lambda: S.spectral_density(torch.zeros(1, 1, 2), torch.ones(1, 1, 2), [0.], sigma=0.), ValueError, 'sigma must be > 0'),
        ('worst_case_loss rhos', lambda: S.worst_case_loss(m, x, [-0.1], **k), ValueError, r'rhos\[0\] must be >= 0'),
        ('worst_case_loss rhos nan', lambda: S.worst_case_loss(m, x, [float('nan')], **k), ValueError, r'rhos\[0\] must be finite'),
        ('worst_case_loss x nan', lambda: S.worst_case_loss(m, xn, [0.1], **k), ValueError, 'x must be finite'),
        ('rho_sharpness n_krylov', lambda: S.rho_sharpness(m, x, [0.1], n_krylov=-1, **k), ValueError, 'n_krylov must be >= 0'),
        ('rho_sharpness n_steps', lambda: S.rho_sharpness(m, x, [0.1], n_steps=0, **k), ValueError, 'n_steps must be >= 1'),
        ('rho_sharpness eta', lambda: S.rho_sharpness(m, x, [0.1], adaptive=True, eta=-1., **k), ValueError, 'eta must be >= 0'),
        ('rho_sharpness adaptive', lambda: S.rho_sharpness(m, x, [0.1], adaptive='yes', **k), TypeError, 'adaptive must be a bool'),
        ('rho_sharpness seed', lambda: S.rho_sharpness(m, x, [0.1], seed=[1], **k), ValueError, 'seed must have one entry per replica'),
        ('keskar_sharpness epsilons', lambda: S.keskar_sharpness(m, x, [], **k), ValueError, 'epsilons must not be empty'),
        ('keskar_sharpness n_steps', lambda: S.keskar_sharpness(m, x, [0.1], n_steps=0, **k), ValueError, 'n_steps must be >= 1'),
        ('keskar_sharpness x nan', lambda: S.keskar_sharpness(m, xn, [0.1], **k), ValueError, 'x must be finite'),
        ('delta_energy x nan', lambda: S.delta_energy(m, xn, [0.1], **k), ValueError, 'x must be finite'),
        ('delta_energy subset', lambda: S.delta_energy(m, x, [0.1], subset=0, **k), ValueError, 'subset must be >= 1'),
        ('filter_directions n', lambda: S.filter_directions(m, 0), ValueError, 'n must be >= 1'),
        ('filter_directions ignore', lambda: S.filter_directions(m, ignore='bias'), ValueError, 'ignore must be one of'),
        ('loss_slice directions', lambda: S.loss_slice(m, x, [d1, d2, d1], ([0.], [0.], [0.]), **k), ValueError, 'directions must be a list of one or two'),
        ('loss_slice 2 directions 1-D coords', lambda: S.loss_slice(m, x, [d1, d2], [0., 0.5], **k), ValueError, r'coords must be a pair \(as, bs\)'),
        ('loss_slice 1 direction 2-D coords', lambda: S.loss_slice(m, x, [d1], [[0., 0.5], [0., 1.]], **k), ValueError, 'coords must be one sequence'),
        ('loss_slice coords nan', lambda: S.loss_slice(m, x, [d1], [0., float('nan')], **k), ValueError, 'coords must be a non-empty sequence of finite'),
        ('loss_slice coords str', lambda: S.loss_slice(m, x, [d1], 'ab', **k), TypeError, 'coords must be a sequence of numbers'),
        ('loss_slice direction shape', lambda: S.loss_slice(m, x, [d1[:1]], [0.], **k), ValueError, r'directions\[0\] must have one tensor per trainable parameter'),
        ('loss_slice points_per_pass', lambda: S.loss_slice(m, x, [d1], [0.], points_per_pass=0, **k), ValueError, 'points_per_pass must be >= 1'),
        ('loss_slice x nan', lambda: S.loss_slice(m, xn, [d1], [0.], **k), ValueError, 'x must be finite'),
        ('interpolate ts', lambda: S.interpolate(m, m, x, 1, **k), ValueError, 'ts must be >= 2'),
        ('interpolate model_b', lambda: S.interpolate(m, MLP([4, 3, 3], y=3, dtype=f64), x, **k), ValueError, 'model_b must have 1 replica'),
        ('interpolate architecture', lambda: S.interpolate(m, MLP([4, 5, 3], y=2, dtype=f64), x, **k), ValueError, 'model_b must have the same architecture'),
        ('interpolate x nan', lambda: S.interpolate(m, m, xn, **k), ValueError, 'x must be finite'),
        ('barrier ends', lambda: S.barrier([0., 0.5], torch.zeros(2, 2)), ValueError, 'ts must start at 0 and end at 1'),
        ('barrier shape', lambda: S.barrier([0., 1.], torch.zeros(2, 3)), ValueError, 'losses must have shape'),
        ('local_entropy gamma', lambda: S.local_entropy(m, x, 0., **k), ValueError, 'gamma must be > 0'),
        ('local_entropy lr', lambda: S.local_entropy(m, x, 1., lr=float('inf'), **k), ValueError, 'lr must be finite'),
        ('local_entropy burn_in', lambda: S.local_entropy(m, x, 1., burn_in=1.5, **k), ValueError, 'burn_in must be <= 1'),
        ('local_entropy n_chains', lambda: S.local_entropy(m, x, 1., n_chains=0, **k), ValueError, 'n_chains must be >= 1'),
        ('local_entropy richardson', lambda: S.local_entropy(m, x, 1., richardson=None, **k), TypeError, 'richardson must be a bool'),
        ('local_entropy x nan', lambda: S.local_entropy(m, xn, 1., **k), ValueError, 'x must be finite'),
        ('metric rho_sharpness n_krylov', lambda: METRICS['rho_sharpness'].fn(m, x, t, cross_entropy, rhos=[0.1], n_krylov=-2), ValueError, 'n_krylov must be >= 0'),
        ('metric local_entropy gammas', lambda: METRICS['local_entropy'].fn(m, x, t, cross_entropy, gammas=[-1.]), ValueError, r'gammas\[0\] must be >= 0'),
        ('metric hessian_top ranks', lambda: METRICS['hessian_top'].fn(m, x, t, cross_entropy, ranks=[]), ValueError, 'ranks must not be empty'),
    ]

@pytest.mark.parametrize('case', _bad_calls(), ids=lambda c: c[0])
def test_every_bad_input_is_refused_naming_it(case):
    label, call, exc, msg = case
    with pytest.raises(exc, match=msg): call()

def test_curvature_graph_is_built_once_per_chunk_and_reused(clf):
    "One forward per chunk however many products (it was one per chunk per product), Hessian and Gauss–Newton alike; the kept graph gives the rebuilt graph's products."
    m, x, t, Hs = clf
    calls = []
    class Counting(nn.Module):
        def __init__(self, m): super().__init__(); self.m, self.y = m, m.y
        def forward(self, x): calls.append(1); return self.m(x)
    v = torch.randn(3, S._Flat(m).n, dtype=f64)
    for gn in (False, True):
        calls.clear()
        _, mv = S.curvature_operator(Counting(m), x, cross_entropy, t, batch_size=11, gauss_newton=gn)     # 3 chunks
        kept = [mv(v), mv(2 * v), mv(v)]
        assert len(calls) == 3
        _, mv2 = S.curvature_operator(m, x, cross_entropy, t, batch_size=11, gauss_newton=gn, keep_graph=False)
        torch.testing.assert_close(kept[0], mv2(v), rtol=1e-13, atol=1e-14)
        torch.testing.assert_close(kept[1], 2 * kept[2], rtol=1e-13, atol=1e-14)
        if not gn: torch.testing.assert_close(kept[0], torch.stack([H @ vr for H, vr in zip(Hs, v)]), rtol=1e-11, atol=1e-12)

def test_lanczos_tolerance_is_a_guarantee(clf):
    "With tol, every replica's top-k Ritz values are within tol·|θ| of a dense eigenvalue, after fewer steps than parameters."
    m, x, t, Hs = clf
    exact = torch.stack([torch.linalg.eigvalsh(H).flip(0) for H in Hs])
    F, mv = S.curvature_operator(m, x, cross_entropy, t)
    for tol, k in ((1e-2, 1), (1e-5, 2)):
        steps = []
        T, _ = S.lanczos(lambda v: steps.append(1) or mv(v), S._Noise(0, 3, 'cpu')((F.n,), f64), F.n, tol=tol, k=k)
        theta = torch.linalg.eigvalsh(T).flip(-1)[:, :k]
        assert T.shape[-1] == len(steps) < F.n
        assert ((theta[..., None] - exact[:, None, :]).abs().amin(-1) <= tol * theta.abs()).all()
    top = S.hessian_eigs(m, x, k=2, tol=1e-6, **kw(t))
    torch.testing.assert_close(top, exact[:, :2], rtol=1e-5, atol=0)

def _points_ref(model, basis, coef, x, loss_fn=recon_error, target=None, batch_size=None):
    "One point at a time: the weights Σ_j coef[g, j]·basis[j] written into a copy, then `dataset_loss`."
    m = copy.deepcopy(model); ps = [p for p in m.parameters() if p.requires_grad]
    out = []
    with torch.no_grad():
        for c in coef.tolist():
            for i, p in enumerate(ps): p.copy_(sum(cj * B[i] for cj, B in zip(c, basis)))
            out.append(dataset_loss(m, x, loss_fn, batch_size, target))
    return torch.stack(out, 1)

def test_slice_first_layer_shortcut_matches_the_point_loop(monkeypatch):
    "The layers reading the data are not multiplied again at each pass; the values are those of the point loop, chunked or not, for any points per pass."
    from entropic_ae.models import StackedLinear, deep_ae
    torch.manual_seed(0)
    ae, x = deep_ae(10, 3, y=2, seeds=[0, 1], dtype=f64), torch.rand(30, 10, dtype=f64)
    d1, d2 = S.filter_directions(ae, 2, seed=1)
    a, b = torch.linspace(-1, 1, 5, dtype=f64), torch.tensor([-.5, .5], dtype=f64)
    grid = torch.cartesian_prod(a, b)
    ref = _points_ref(ae, [[p.detach() for p in ae.parameters()], d1, d2], torch.cat([torch.ones(len(grid), 1, dtype=f64), grid], 1), x)
    data_calls, fwd = [], StackedLinear.forward
    monkeypatch.setattr(StackedLinear, 'forward', lambda self, inp: data_calls.append(inp.dim() == 2) or fwd(self, inp))
    for k, bs in ((None, None), (3, 7), (10, None)):
        data_calls.clear()
        s = S.loss_slice(ae, x, [d1, d2], (a, b), points_per_pass=k, batch_size=bs)
        torch.testing.assert_close(s.reshape(2, -1), ref, rtol=1e-12, atol=1e-14)
        assert data_calls and not any(data_calls)          # the first layer never ran on the data as a layer
    mlp = MLP([6, 5, 3], y=2, seeds=[0, 1], dtype=f64)
    xc, tc = torch.randn(20, 6, dtype=f64), torch.randint(0, 3, (20,))
    other = MLP([6, 5, 3], y=1, seeds=[7], dtype=f64)
    ts, path = S.interpolate(mlp, other, xc, 6, loss_fn=cross_entropy, target=tc, batch_size=8)
    wb = [p.detach().expand(2, *p.shape[1:]) for p in other.parameters()]
    ref = _points_ref(mlp, [[p.detach() for p in mlp.parameters()], wb], torch.stack([1 - ts, ts], 1), xc, cross_entropy, tc, 8)
    torch.testing.assert_close(path, ref, rtol=1e-12, atol=1e-14)

def test_one_home_for_noise_chunks_norms_and_points():
    "Issue 20: the noise streams, row chunks, per-replica norm/broadcast and the many-points engine live in one place each."
    from entropic_ae import flatness as Fl, replicas as R
    assert S._Noise is Fl._Noise and S._chunks is Fl._chunks and S._Points is Fl._Points
    assert S.replica_norm is R.replica_norm and S.per_replica is R.per_replica
    for gone in ('_Draws', '_rnorm', '_per', '_eval_points', '_FirstLayers', '_cache_bytes', '_max_points'): assert not hasattr(S, gone), gone

def test_hutch_pp_exact_and_more_accurate(clf):
    "Hutch++ with 3n products is the exact trace; on this trained net, at 24 products its RMS error beats Hutchinson's."
    m, x, t, Hs = clf
    true = torch.stack([H.trace() for H in Hs])
    tr, se = S.hessian_trace(m, x, n_probes=3 * Hs[0].shape[0], method='hutch++', **kw(t))
    torch.testing.assert_close(tr, true, rtol=1e-9, atol=1e-9)
    rms = lambda meth: torch.stack([S.hessian_trace(m, x, n_probes=24, seed=s, method=meth, **kw(t))[0] - true for s in range(4)]).square().mean()
    assert rms('hutch++') < rms('hutchinson')
