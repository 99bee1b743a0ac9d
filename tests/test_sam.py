"Tests for entropic_ae.sam: exactness at rho=0, the perturbation, per-replica equivalence, state dicts, and the BN / AMP / accumulation recipes."
import copy, functools, math, pickle, warnings
import pytest
import torch
from torch import nn
from entropic_ae.sam import SAM, asam_param_groups, frozen_running_stats, stats_once
from entropic_ae.optim import prepare_base

mse = nn.functional.mse_loss


def data(n=48, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    return x, torch.sin(x @ torch.randn(d, 1, generator=g, dtype=dtype))


def mlp(seed=1, dtype=torch.float64, bn=False):
    torch.manual_seed(seed)
    mid = [nn.BatchNorm1d(8)] if bn else []
    return nn.Sequential(nn.Linear(5, 8), *mid, nn.Tanh(), nn.Linear(8, 1)).to(dtype)


def params_equal(a, b): return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def closure_for(model, x, y):
    def closure():
        loss = mse(model(x), y); loss.backward(); return loss
    return closure


# ---------------------------------------------------------------- rho = 0 reproduces the base optimizer exactly
BASES = [
    (torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)),
    (torch.optim.Adam, dict(lr=1e-2)),
    (functools.partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.1), {}),
]

@pytest.mark.parametrize('base,kw', BASES)
def test_rho0_reproduces_base_exactly(base, kw):
    x, y = data()
    m1, m2, m3 = mlp(), mlp(), mlp()
    o1 = SAM(m1.parameters(), base=base, rho=0., **kw)
    o2 = SAM(m2.parameters(), base=base, rho=0., adaptive=True, **kw)
    ps3 = list(m3.parameters())
    o3 = base(ps3, **prepare_base(base, ps3, kw))            # the base exactly as SAM builds it (fused Adam)
    for _ in range(40):
        o1.step(closure_for(m1, x, y))
        mse(m2(x), y).backward(); o2.first_step(zero_grad=True)
        mse(m2(x), y).backward(); o2.second_step(zero_grad=True)
        o3.zero_grad(); mse(m3(x), y).backward(); o3.step()
    assert params_equal(m1, m3) and params_equal(m2, m3)


# ---------------------------------------------------------------- bad input
def test_bad_input_names_parameter():
    ps = list(mlp().parameters())
    cases = [(dict(rho=-0.1), 'rho'), (dict(rho=float('nan')), 'rho'), (dict(rho='0.1'), 'rho'), (dict(eta=-1e-3), 'eta'),
             (dict(adaptive=1), 'adaptive'), (dict(per_replica='yes'), 'per_replica'), (dict(base=nn.Linear), 'base'),
             (dict(base=torch.optim.SGD(ps, lr=0.1)), 'base'), (dict(base=3), 'base'), (dict(base=lambda p: 'nope'), 'base'),
             (dict(base=lambda p: torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)), 'base'),
             (dict(per_replica=True), 'per_replica')]
    for kw, name in cases:
        with pytest.raises((TypeError, ValueError), match=name): SAM(ps, **kw)
    for g, name in [(dict(rho=-1.), 'rho'), (dict(eta=-1.), 'eta'), (dict(adaptive='no'), 'adaptive')]:
        with pytest.raises((TypeError, ValueError), match=name): SAM([dict(params=ps, **g)])
    opt = SAM(ps[:2])
    with pytest.raises(ValueError, match='eta'): opt.add_param_group(dict(params=ps[2:], eta=-2.))
    with pytest.raises(TypeError, match='closure'): opt.step()
    with pytest.raises(TypeError, match='closure'): opt.step(3)


def test_call_order_errors():
    m = mlp(); x, y = data(); opt = SAM(m.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match='first_step'): opt.second_step()
    with pytest.raises(RuntimeError, match='first_step'): opt.restore()
    mse(m(x), y).backward(); opt.first_step()
    with pytest.raises(RuntimeError, match='twice'): opt.first_step()


# ---------------------------------------------------------------- the perturbation
def test_first_step_sam_and_asam_formulas():
    x, y = data()
    for adaptive in (False, True):
        m = mlp(); opt = SAM(m.parameters(), rho=0.3, adaptive=adaptive, eta=0.05, lr=0.1)
        mse(m(x), y).backward()
        w = [p.detach().clone() for p in m.parameters()]
        g = [p.grad.clone() for p in m.parameters()]
        T = [wi.abs() + 0.05 if adaptive else torch.ones_like(wi) for wi in w]
        n = torch.cat([(t * gi).flatten() for t, gi in zip(T, g)]).norm()
        norm = opt.first_step()
        torch.testing.assert_close(norm, n)
        for p, wi, gi, t in zip(m.parameters(), w, g, T):
            torch.testing.assert_close(p.detach() - wi, 0.3 * t * t * gi / n, rtol=1e-9, atol=1e-12)
        opt.restore()
        assert all(torch.equal(p, wi) for p, wi in zip(m.parameters(), w))   # bitwise restore


def test_group_rho_and_grad_none():
    x, y = data(); m = mlp()
    frozen = nn.Parameter(torch.ones(3, dtype=torch.float64))   # never used: grad stays None
    ps = list(m.parameters())
    opt = SAM([dict(params=ps[:2], rho=0.2), dict(params=ps[2:] + [frozen], rho=0.)],
              base=torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=0.1)
    w = [p.detach().clone() for p in ps]
    mse(m(x), y).backward(); opt.first_step(zero_grad=True)
    assert not torch.equal(ps[0], w[0]) and torch.equal(ps[2], w[2]) and torch.equal(frozen, torch.ones(3, dtype=torch.float64))
    mse(m(x), y).backward(); opt.second_step()
    assert torch.equal(frozen, torch.ones(3, dtype=torch.float64)) and frozen not in opt.base.state


def test_zero_gradient_gives_zero_perturbation():
    p = nn.Parameter(torch.tensor([1., -2.]))
    opt = SAM([p], rho=0.5, lr=0.1)
    p.grad = torch.zeros(2)
    torch.testing.assert_close(opt.first_step(), torch.tensor(0.))
    assert torch.equal(p, torch.tensor([1., -2.]))
    opt.second_step()


def test_low_precision_params():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(4, 3, dtype=torch.bfloat16))
    for per_replica in (False, True):
        opt = SAM([p], rho=0.1, adaptive=True, per_replica=per_replica, lr=0.1)
        w = p.detach().clone()
        (p.float() ** 2).sum().backward()
        norm = opt.first_step(zero_grad=True)
        assert norm.dtype == torch.float32 and torch.isfinite(norm).all() and not torch.equal(p, w)
        (p.float() ** 2).sum().backward(); opt.second_step(zero_grad=True)


def test_step_returns_loss_at_w_and_restores_on_error():
    x, y = data(); m = mlp(); opt = SAM(m.parameters(), rho=0.1, lr=0.1)
    with torch.no_grad(): before = mse(m(x), y)
    loss = opt.step(closure_for(m, x, y))
    torch.testing.assert_close(loss.detach(), before)
    w = [p.detach().clone() for p in m.parameters()]
    calls = []
    def flaky():
        calls.append(1)
        if len(calls) == 2: raise KeyboardInterrupt
        return closure_for(m, x, y)()
    with pytest.raises(KeyboardInterrupt): opt.step(flaky)
    assert all(torch.equal(p, wi) for p, wi in zip(m.parameters(), w))
    opt.step(closure_for(m, x, y))   # usable afterwards


# ---------------------------------------------------------------- shared groups, schedulers, state dicts
def test_scheduler_and_shared_groups():
    x, y = data(); m = mlp(); ps = list(m.parameters())
    opt = SAM(ps[:2], base=torch.optim.Adam, lr=1e-2)
    opt.add_param_group(dict(params=ps[2:], rho=0.3))
    assert opt.param_groups is opt.base.param_groups and len(opt.param_groups) == 2
    assert opt.param_groups[1]['betas'] == (0.9, 0.999) and opt.param_groups[1]['rho'] == 0.3
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter('error')   # no "lr_scheduler.step() before optimizer.step()" warning with the two-step API
        mse(m(x), y).backward(); opt.first_step(zero_grad=True)
        mse(m(x), y).backward(); opt.second_step(zero_grad=True)
        sched.step()
    assert [g['lr'] for g in opt.base.param_groups] == pytest.approx([1e-3, 1e-3])


def test_state_dict_round_trip():
    x, y = data()
    m1 = mlp(); o1 = SAM(m1.parameters(), base=torch.optim.Adam, rho=0.07, adaptive=True, lr=1e-2)
    for _ in range(5): o1.step(closure_for(m1, x, y))
    m2 = copy.deepcopy(m1); sd = copy.deepcopy(o1.state_dict())
    o2 = SAM(m2.parameters(), base=torch.optim.Adam, lr=0.5)   # different options: all overwritten by the load
    o2.load_state_dict(sd)
    assert o2.param_groups is o2.base.param_groups
    g = o2.param_groups[0]
    assert (g['rho'], g['adaptive'], g['lr']) == (0.07, True, 1e-2)
    for _ in range(5): o1.step(closure_for(m1, x, y)); o2.step(closure_for(m2, x, y))
    assert params_equal(m1, m2)
    # a plain Adam checkpoint loads too, with SAM's defaults filled in
    m3 = mlp(); adam = torch.optim.Adam(m3.parameters(), lr=1e-2)
    adam.zero_grad(); mse(m3(x), y).backward(); adam.step()
    o3 = SAM(m3.parameters(), base=torch.optim.Adam, rho=0.2, lr=1e-2)
    o3.load_state_dict(adam.state_dict())
    assert o3.param_groups[0]['rho'] == 0.2 and len(o3.base.state) == 4
    # deepcopy and pickle keep the sharing
    for o4 in (copy.deepcopy(o1), pickle.loads(pickle.dumps(o1))):
        assert o4.param_groups is o4.base.param_groups and o4.param_groups[0]['rho'] == 0.07
        assert len(o4.base.state) == 4
    # reloading the base optimizer on its own (as a training loop saving wrapped optimizers may do) keeps the sharing
    o1.base.load_state_dict(o1.base.state_dict())
    sched = torch.optim.lr_scheduler.ExponentialLR(o1, gamma=0.5)
    o1.step(closure_for(m1, x, y)); sched.step()
    assert o1.param_groups is o1.base.param_groups and o1.base.param_groups[0]['lr'] == 5e-3


# ---------------------------------------------------------------- stacked replicas
def stacked(y, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shapes = [(y, 5, 6), (y, 1, 6), (y, 6, 1), (y, 1, 1)]
    return [torch.randn(*s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def stacked_loss(ps, x, t):
    W1, b1, W2, b2 = ps
    h = torch.relu(torch.baddbmm(b1, x.expand(W1.shape[0], *x.shape), W1))
    return ((torch.baddbmm(b2, h, W2) - t) ** 2).mean((1, 2)).sum()   # sum of per-replica losses


def train_stacked(ps, steps, x, t, **kw):
    opt = SAM(ps, **kw)
    for _ in range(steps):
        opt.step(lambda: stacked_loss(ps, x, t).backward())
    return ps


@pytest.mark.parametrize('adaptive', [False, True])
@pytest.mark.parametrize('base,kw', BASES[:2])
def test_per_replica_equals_independent_optimizers(adaptive, base, kw):
    x, t = data(); y = 4
    kw = dict(base=base, rho=0.2, adaptive=adaptive, **kw)
    together = train_stacked(stacked(y), 8, x, t, per_replica=True, **kw)
    apart = [train_stacked([p[r:r + 1].detach().clone().requires_grad_() for p in stacked(y)], 8, x, t, **kw) for r in range(y)]
    for i, p in enumerate(together):
        torch.testing.assert_close(p.detach(), torch.cat([a[i].detach() for a in apart]), rtol=1e-10, atol=1e-12)
    coupled = train_stacked(stacked(y), 8, x, t, **kw)   # the global norm couples replicas: different result
    assert not torch.allclose(coupled[0], together[0])


def test_per_replica_norm_shape():
    x, t = data(); ps = stacked(3); opt = SAM(ps, per_replica=True)
    stacked_loss(ps, x, t).backward()
    w = [p.detach().clone() for p in ps]
    norm = opt.first_step()
    assert norm.shape == (3,)
    moved = torch.stack([torch.cat([(p[r] - q[r]).flatten() for p, q in zip(ps, w)]).norm() for r in range(3)])
    torch.testing.assert_close(moved, torch.full((3,), 0.05, dtype=torch.float64))   # every replica moved by exactly rho


# ---------------------------------------------------------------- ASAM invariance, bias groups
def test_asam_perturbed_loss_invariant_under_relu_rescaling():
    x, y = data()
    def perturbed(alpha, **kw):
        g = torch.Generator().manual_seed(3)
        W1, b1, W2, b2 = (torch.randn(*s, generator=g, dtype=torch.float64) for s in [(5, 16), (16,), (16, 1), (1,)])
        ps = [t.requires_grad_() for t in (alpha * W1, alpha * b1, W2 / alpha, b2)]
        f = lambda: mse(torch.relu(x @ ps[0] + ps[1]) @ ps[2] + ps[3], y)
        opt = SAM(ps, **kw); f().backward(); opt.first_step()
        with torch.no_grad(): return f().item()
    asam = [perturbed(a, rho=0.1, adaptive=True, eta=0.) for a in (0.2, 1., 5.)]
    sam = [perturbed(a, rho=0.1) for a in (0.2, 1., 5.)]
    assert asam == pytest.approx([asam[1]] * 3, rel=1e-10)
    assert max(sam) - min(sam) > 1e-2


def test_asam_param_groups():
    m = mlp(bn=True)
    groups = asam_param_groups(m)
    names = {id(p): n for n, p in m.named_parameters()}
    assert all('weight' in names[id(p)] for p in groups[0]['params'])
    assert all('bias' in names[id(p)] for p in groups[1]['params']) and groups[1]['adaptive'] is False
    opt = SAM(groups, adaptive=True, rho=0.5)
    assert [g['adaptive'] for g in opt.param_groups] == [True, False]


# ---------------------------------------------------------------- (a) batch norm: running stats move once per step
def sam_step_bn(model, opt, x, y):
    mse(model(x), y).backward(); opt.first_step(zero_grad=True)
    with frozen_running_stats(model): mse(model(x), y).backward()
    opt.second_step(zero_grad=True)


@pytest.mark.parametrize('momentum', [0.1, None])
def test_bn_running_stats_updated_once(momentum):
    x, y = data()
    m, ref, naive = (mlp(bn=True) for _ in range(3))
    for mod in (m, ref, naive): mod[1].momentum = momentum
    for _ in range(2):   # twice, so that cumulative averaging (momentum=None) depends on num_batches_tracked
        sam_step_bn(m, SAM(m.parameters(), rho=0.5, lr=0.1), x, y)
        ref(x)
        SAM(naive.parameters(), rho=0.5, lr=0.1).step(closure_for(naive, x, y))
        # the reference only does plain forwards: keep its weights equal to the SAM model's so the batch statistics match
        with torch.no_grad():
            for p, q in zip(ref.parameters(), m.parameters()): p.copy_(q)
    for k in ('running_mean', 'running_var', 'num_batches_tracked'): assert torch.equal(getattr(m[1], k), getattr(ref[1], k))
    assert m[1].track_running_stats
    assert naive[1].num_batches_tracked.item() == 4 and not torch.equal(naive[1].running_mean, m[1].running_mean)


def test_running_stats_helpers_leave_untracked_layers_alone():
    m = nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False), nn.InstanceNorm1d(3), nn.BatchNorm1d(3))
    with frozen_running_stats(m):
        assert [l.track_running_stats for l in m] == [False, False, False]
    assert [l.track_running_stats for l in m] == [False, False, True]
    with pytest.raises(RuntimeError, match='inside'):
        with frozen_running_stats(m): raise RuntimeError('inside')
    assert [l.track_running_stats for l in m] == [False, False, True]      # restored after an exception too
    m.eval(); m(torch.randn(2, 3, 4))   # eval still works

def test_stats_once_updates_running_stats_once_per_step():
    x, y = data()
    m = mlp(bn=True)
    opt = SAM(m.parameters(), rho=0.5, lr=0.1)
    for _ in range(9): opt.step(stats_once(m, closure_for(m, x, y)))
    assert m[1].num_batches_tracked.item() == 9


# ---------------------------------------------------------------- (b) mixed precision with GradScaler
def sam_step_amp(model, opt, scaler, x, y, autocast=True):
    with torch.autocast('cpu', dtype=torch.float16, enabled=autocast):
        loss = mse(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    norm = opt.first_step(zero_grad=True)
    if torch.isfinite(norm).all():
        with torch.autocast('cpu', dtype=torch.float16, enabled=autocast):
            loss2 = mse(model(x).float(), y)
        scaler.scale(loss2).backward()
        opt.second_step(zero_grad=True, scaler=scaler)
    else:
        opt.restore(); opt.zero_grad()
    scaler.update()
    return loss.detach()


def snapshot(model, opt):
    return ([p.detach().clone() for p in model.parameters()],
            [{k: v.clone() for k, v in s.items()} for s in opt.base.state.values()])


def assert_same(snap, model, opt):
    ws, states = snap
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), ws))
    for s, s0 in zip(opt.base.state.values(), states):
        assert all(torch.equal(s[k], v) for k, v in s0.items())


def test_amp_scaler_without_autocast_matches_plain_sam():
    # scales are powers of two, so scaling and unscaling fp32 gradients is exact
    x, y = data(dtype=torch.float32)
    m1, m2 = mlp(dtype=torch.float32), mlp(dtype=torch.float32)
    o1 = SAM(m1.parameters(), base=torch.optim.Adam, rho=0.1, lr=1e-2)
    o2 = SAM(m2.parameters(), base=torch.optim.Adam, rho=0.1, lr=1e-2)
    scaler = torch.amp.GradScaler('cpu')
    for _ in range(5):
        sam_step_amp(m1, o1, scaler, x, y, autocast=False)
        o2.step(closure_for(m2, x, y))
    assert params_equal(m1, m2)


def test_amp_fp16_autocast_trains_and_skips_overflows():
    x, y = data(dtype=torch.float32)
    m = mlp(dtype=torch.float32)
    opt = SAM(m.parameters(), base=torch.optim.Adam, rho=0.05, lr=1e-2)
    scaler = torch.amp.GradScaler('cpu', init_scale=2.**10)
    losses = [sam_step_amp(m, opt, scaler, x, y).item() for _ in range(15)]
    assert all(map(math.isfinite, losses)) and losses[-1] < losses[0]
    # overflow in the first pass: inf in the inputs
    snap, scale = snapshot(m, opt), scaler.get_scale()
    bad = x.clone(); bad[0, 0] = float('inf')
    sam_step_amp(m, opt, scaler, bad, y)
    assert_same(snap, m, opt); assert scaler.get_scale() == scale / 2
    assert all(p.grad is None for p in m.parameters())
    # overflow in the second pass only: a hook poisons every second gradient of the first layer's weight
    calls = []
    def poison(g):
        calls.append(1)
        return g * float('inf') if len(calls) % 2 == 0 else g
    h = m[0].weight.register_hook(poison)
    snap, scale = snapshot(m, opt), scaler.get_scale()
    sam_step_amp(m, opt, scaler, x, y)
    h.remove()
    assert len(calls) == 2
    assert_same(snap, m, opt); assert scaler.get_scale() == scale / 2   # w restored (not left at w + eps), no base step
    sam_step_amp(m, opt, scaler, x, y)   # and training goes on
    assert not torch.equal(m[0].weight, snap[0][0])


# ---------------------------------------------------------------- (c) gradient accumulation
def sam_step_accumulated(loss_fn, opt, chunks):
    n = sum(len(c[0]) for c in chunks)
    def accumulate():
        for xc, tc in chunks: (loss_fn(xc, tc) * (len(xc) / n)).backward()
    accumulate(); opt.first_step(zero_grad=True)
    accumulate(); opt.second_step(zero_grad=True)


@pytest.mark.parametrize('adaptive', [False, True])
@pytest.mark.parametrize('base,kw', BASES[:2])
def test_accumulation_equals_big_batch(adaptive, base, kw):
    x, y = data(n=60)
    m1, m2 = mlp(), mlp()
    o1 = SAM(m1.parameters(), base=base, rho=0.1, adaptive=adaptive, **kw)
    o2 = SAM(m2.parameters(), base=base, rho=0.1, adaptive=adaptive, **kw)
    chunks = list(zip(x.split(16), y.split(16)))   # uneven: 16, 16, 16, 12
    for _ in range(5):
        sam_step_accumulated(lambda a, b: mse(m1(a), b), o1, chunks)
        sam_step_accumulated(lambda a, b: mse(m2(a), b), o2, [(x, y)])
    for p, q in zip(m1.parameters(), m2.parameters()): torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_accumulation_per_replica():
    x, t = data(n=40)
    p1, p2 = stacked(3), stacked(3)
    o1, o2 = SAM(p1, rho=0.1, per_replica=True, lr=0.1), SAM(p2, rho=0.1, per_replica=True, lr=0.1)
    for _ in range(3):
        sam_step_accumulated(lambda a, b: stacked_loss(p1, a, b), o1, list(zip(x.split(10), t.split(10))))
        sam_step_accumulated(lambda a, b: stacked_loss(p2, a, b), o2, [(x, t)])
    for a, b in zip(p1, p2): torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
