"Tests for entropic_ae.optim: parity with the loop reference, reductions to the base optimizer, schedules, state dicts, bad input."
import io, math
from functools import partial
import pytest
import torch
from entropic_ae.sam import SAM
from entropic_ae.vision import Accumulate
from torch import nn
from entropic_ae.optim import (Replicated, LoopReplicated, EntropySGD, Scoping, Constant, Exponential, Linear, Cosine,
                               scoping, as_scoping)
from entropic_ae.models import shallow_ae, deep_ae, recon_error

N, B, H = 12, 4, 8
DT = torch.float64

def data(P=64, seed=0):
    return torch.rand(P, N, generator=torch.Generator().manual_seed(seed), dtype=DT)

def batches(steps, y, bs=8, P=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, P, (y, bs), generator=g) for _ in range(steps)]

def stacked(y, seeds=None): return deep_ae(N, B, H=H, y=y, seeds=seeds or list(range(y)), dtype=DT)
def singles(y, seeds=None): return [deep_ae(N, B, H=H, y=1, seeds=[s], dtype=DT) for s in (seeds or range(y))]
def flat(models): return [torch.cat(ps).detach() for ps in zip(*[list(m.parameters()) for m in models])]
def maxdiff(a, b): return max((x - y).abs().max().item() for x, y in zip(a, b))

def train_stacked(model, opt, X, idx_list, epoch_len=None, sched=None):
    for t, idx in enumerate(idx_list):
        def closure():
            opt.zero_grad(); loss = recon_error(model(X[idx]), X[idx]).sum(); loss.backward(); return loss
        opt.step(closure)
        if sched is not None: sched.step()
        if epoch_len and (t+1) % epoch_len == 0: opt.epoch_end()

BASES = {'adam': (torch.optim.Adam, dict(lr=5e-3)),
         'sgd_momentum': (torch.optim.SGD, dict(lr=0.2, momentum=0.9))}

# ------------------------------------------------------------------ parity with the loop reference
@pytest.mark.parametrize('coupling', ['elastic', 'gradient'])
@pytest.mark.parametrize('base', list(BASES))
def test_vectorised_equals_loop(base, coupling):
    y, steps = 3, 120
    cls, kw = BASES[base]
    X, idx_list = data(), batches(steps, y)
    big, small = stacked(y), singles(y)
    test_start = maxdiff([p.detach() for p in big.parameters()], flat(small))
    assert test_start == 0, "models: stacked init must equal separate inits"
    vec = Replicated(big, base=cls, coupling=coupling, gamma=Exponential(0.5, 0.5, cap=4.), **kw)
    loop = LoopReplicated(small, base=cls, coupling=coupling, gamma=Exponential(0.5, 0.5, cap=4.), **kw)
    train_stacked(big, vec, X, idx_list, epoch_len=20)
    for t, idx in enumerate(idx_list):
        loop.zero_grad()
        for r, m in enumerate(small): recon_error(m(X[idx[r]]), X[idx[r]]).sum().backward()
        loop.step()
        if (t+1) % 20 == 0: loop.epoch_end()
    assert vec.gamma_history == loop.gamma_history and vec.gamma == 4.
    d = maxdiff([p.detach() for p in big.parameters()], flat(small))
    assert d < 1e-10, d
    # and the coupling did something: replicas are much closer than without it
    free = stacked(y); train_stacked(free, Replicated(free, base=cls, **kw), X, idx_list)
    spread = lambda m: sum(((p - p.mean(0))**2).sum().item() for p in m.parameters())
    assert spread(big) < 0.5*spread(free)

def test_vectorised_equals_loop_float32_default_adam():
    "Default base (fused Adam) in float32: agreement to float tolerance."
    y, steps = 3, 100
    X, idx_list = data().float(), batches(steps, y)
    big = deep_ae(N, B, H=H, y=y, seeds=[0, 1, 2])
    small = [deep_ae(N, B, H=H, y=1, seeds=[s]) for s in range(y)]
    vec, loop = Replicated(big, lr=5e-3, gamma=2.), LoopReplicated(small, lr=5e-3, gamma=2.)
    assert vec.base.defaults.get('fused') is True
    train_stacked(big, vec, X, idx_list)
    for idx in idx_list:
        loop.zero_grad()
        for r, m in enumerate(small): recon_error(m(X[idx[r]]), X[idx[r]]).sum().backward()
        loop.step()
    assert maxdiff([p.detach() for p in big.parameters()], flat(small)) < 1e-4

# ------------------------------------------------------------------ reductions
@pytest.mark.parametrize('coupling', ['elastic', 'gradient'])
@pytest.mark.parametrize('base', list(BASES))
def test_y1_is_base_optimizer(base, coupling):
    cls, kw = BASES[base]
    X, idx_list = data(), batches(50, 1)
    a, b = stacked(1), stacked(1)
    ra = Replicated(a, base=cls, gamma=Exponential(1., 1.), coupling=coupling, **kw)
    extra = dict(fused=True) if cls is torch.optim.Adam else {}
    rb = cls(b.parameters(), **kw, **extra)
    train_stacked(a, ra, X, idx_list, epoch_len=5)
    train_stacked(b, rb, X, idx_list)
    assert ra.gamma > 100
    for p, q in zip(a.parameters(), b.parameters()): assert torch.equal(p, q)

@pytest.mark.parametrize('base', list(BASES))
def test_gamma0_is_independent_runs(base):
    cls, kw = BASES[base]
    y, X, idx_list = 3, data(), batches(60, 3)
    big = stacked(y); train_stacked(big, Replicated(big, base=cls, gamma=0., **kw), X, idx_list)
    for r in range(y):
        m = stacked(1, seeds=[r])
        extra = dict(fused=True) if cls is torch.optim.Adam else {}
        train_stacked(m, cls(m.parameters(), **kw, **extra), X, [idx[r:r+1] for idx in idx_list])
        assert maxdiff([p[r:r+1].detach() for p in big.parameters()], [p.detach() for p in m.parameters()]) < 1e-12

def test_partial_base_and_param_groups():
    m = stacked(2)
    opt = Replicated(m, base=partial(torch.optim.SGD, lr=0.1, momentum=0.9), gamma=1.)
    assert isinstance(opt.base, torch.optim.SGD) and opt.param_groups is opt.base.param_groups
    assert opt.param_groups[0]['momentum'] == 0.9 and opt.y == 2
    X = data(); train_stacked(m, opt, X, batches(3, 2))
    assert all('momentum_buffer' in opt.state[p] for p in m.parameters())

def test_elastic_contraction_is_lr_gamma():
    "With zero loss gradient and SGD, elastic coupling contracts the spread by (1 - lr*gamma) per step."
    w = nn.Parameter(torch.randn(4, 10, dtype=DT))
    d0 = w - w.mean(0)
    opt = Replicated([w], base=torch.optim.SGD, lr=0.1, gamma=2.)
    for _ in range(5): w.grad = torch.zeros_like(w); opt.step()
    torch.testing.assert_close(w - w.mean(0), d0*0.8**5)
    big = Replicated([w], base=torch.optim.SGD, lr=1., gamma=10.)      # weight clamped to 1: collapse, no overshoot
    w.grad = torch.zeros_like(w); big.step()
    torch.testing.assert_close(w - w.mean(0), torch.zeros_like(w))

# ------------------------------------------------------------------ schedules
def test_schedules():
    e = scoping('exponential', gamma0=0.01, gamma1=0.5)
    assert isinstance(e, Exponential) and e.value == 0.01
    for _ in range(3): e.step()
    assert e.history == pytest.approx([0.01, 0.015, 0.0225, 0.03375]) and e.t == 3
    assert Exponential(1., 1., cap=5.)(10) == 5.
    assert Linear(0.5, 0.25)(4) == 1.5 and Linear(0., 1., cap=2.)(9) == 2.
    c = Cosine(0.1, 1.1, steps=10)
    assert c(0) == pytest.approx(0.1) and c(5) == pytest.approx(0.6) and c(10) == c(50) == pytest.approx(1.1)
    assert Cosine(0., 4., steps=2, cap=1.)(2) == 1.
    assert as_scoping(0.3).value == 0.3 and as_scoping(e) is e
    sd = e.state_dict(); f = Exponential(0.01, 0.5); f.load_state_dict(sd)
    assert f.t == 3 and f.history == e.history and f.value == e.value
    with pytest.raises(ValueError, match='state_dict'): Linear(0., 1.).load_state_dict(sd)
    assert 'gamma=' in repr(e)

def test_replicated_epoch_end_scopes_gamma():
    opt = Replicated(stacked(2), gamma=scoping('linear', gamma0=1., rate=0.5), lr=1e-3)
    assert opt.gamma == 1.
    assert opt.epoch_end() == 1.5 and opt.epoch_end() == 2.
    assert opt.gamma_history == [1., 1.5, 2.]

def test_schedule_is_copied_per_optimizer():
    "A partial holding a schedule can build optimizers for several runs without them sharing one counter."
    make = partial(Replicated, gamma=Exponential(1., 1.), lr=1e-3)
    a, b = make(stacked(2)), make(stacked(2))
    a.epoch_end(); a.epoch_end()
    assert a.gamma == 4. and b.gamma == 1. and make.keywords['gamma'].t == 0
    e = EntropySGD([nn.Parameter(torch.zeros(2))], gamma=make.keywords['gamma'])
    assert e.schedule is not make.keywords['gamma']

# ------------------------------------------------------------------ state dicts and lr schedulers
def roundtrip(sd):
    buf = io.BytesIO(); torch.save(sd, buf); buf.seek(0)
    return torch.load(buf, weights_only=True)

@pytest.mark.parametrize('coupling', ['elastic', 'gradient'])
def test_replicated_state_dict_roundtrip(coupling):
    y, X = 3, data()
    idx_a, idx_b = batches(20, y, seed=1), batches(20, y, seed=2)
    make = lambda m: Replicated(m, gamma=Exponential(0.5, 1.), coupling=coupling, lr=1e-2)
    m1 = stacked(y); o1 = make(m1); s1 = torch.optim.lr_scheduler.StepLR(o1, step_size=7, gamma=0.5)
    train_stacked(m1, o1, X, idx_a, epoch_len=5, sched=s1)
    ckpt = roundtrip(dict(model=m1.state_dict(), opt=o1.state_dict(), sched=s1.state_dict()))
    m2 = stacked(y, seeds=[7, 8, 9]); m2.load_state_dict(ckpt['model'])
    o2 = make(m2); s2 = torch.optim.lr_scheduler.StepLR(o2, step_size=7, gamma=0.5)
    o2.load_state_dict(ckpt['opt']); s2.load_state_dict(ckpt['sched'])
    assert o2.gamma == o1.gamma == 8. and o2.gamma_history == o1.gamma_history
    assert o2.param_groups is o2.base.param_groups and o2.state is o2.base.state
    assert o2.param_groups[0]['lr'] == o1.param_groups[0]['lr'] == 1e-2*0.25
    train_stacked(m1, o1, X, idx_b, epoch_len=5, sched=s1)
    train_stacked(m2, o2, X, idx_b, epoch_len=5, sched=s2)
    for p, q in zip(m1.parameters(), m2.parameters()): assert torch.equal(p, q)
    assert o1.gamma_history == o2.gamma_history
    with pytest.raises(ValueError, match='coupling'):
        Replicated(stacked(y), coupling='gradient' if coupling == 'elastic' else 'elastic').load_state_dict(ckpt['opt'])
    with pytest.raises(ValueError, match='y='): Replicated(stacked(2)).load_state_dict(ckpt['opt'])

def test_step_lr_drives_base_and_coupling():
    w = nn.Parameter(torch.randn(3, 5, dtype=DT))
    opt = Replicated([w], base=torch.optim.SGD, lr=0.2, gamma=1.)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    lrs = []
    for _ in range(3):
        d0 = w - w.mean(0)
        w.grad = torch.zeros_like(w); opt.step(); sched.step()
        lrs.append(opt.base.param_groups[0]['lr'])
    torch.testing.assert_close(w - w.mean(0), d0*(1 - 0.05))       # third step ran at lr = 0.05
    assert lrs == pytest.approx([0.1, 0.05, 0.025])

# ------------------------------------------------------------------ Entropy-SGD
def esgd_reference(w, grad_fn, steps, lr, gammas, L, inner_lr, alpha, momentum, nesterov):
    "Algorithm 2 without noise, written out for one tensor (gradient γ(w − μ) in the outer step)."
    buf = None
    for t in range(steps):
        g = gammas[t]
        wp, mu = w.clone(), w.clone()
        for _ in range(L):
            wp = wp - inner_lr*(grad_fn(wp) + g*(wp - w))
            mu = alpha*mu + (1 - alpha)*wp
        d = g*(w - mu)
        if momentum:
            buf = d.clone() if buf is None else momentum*buf + d
            d = d + momentum*buf if nesterov else buf
        w = w - lr*d
    return w

@pytest.mark.parametrize('momentum,nesterov', [(0., False), (0.9, False), (0.9, True)])
def test_entropy_sgd_matches_algorithm(momentum, nesterov):
    A = torch.randn(6, 6, dtype=DT, generator=torch.Generator().manual_seed(0)); A = A@A.T/6 + torch.eye(6, dtype=DT)
    f = lambda v: 0.5*(v*(v@A)).sum(-1) + torch.cos(3*v).sum(-1)      # per-row loss
    grad = lambda v: v@A - 3*torch.sin(3*v)
    w0 = torch.randn(4, 6, dtype=DT, generator=torch.Generator().manual_seed(1))
    w = nn.Parameter(w0.clone())
    sched = Exponential(0.3, 0.1)
    opt = EntropySGD([w], lr=0.5, gamma=sched, L=4, inner_lr=0.05, noise=0., alpha=0.7, momentum=momentum, nesterov=nesterov)
    def closure():
        opt.zero_grad(); l = f(w).sum(); l.backward(); return l
    for _ in range(15): opt.step(closure)
    ref = esgd_reference(w0, grad, 15, 0.5, [0.3*1.1**t for t in range(15)], 4, 0.05, 0.7, momentum, nesterov)
    torch.testing.assert_close(w.detach(), ref)

def test_entropy_sgd_gamma_advances():
    w = nn.Parameter(torch.zeros(2, 3))
    opt = EntropySGD([w], gamma=Exponential(0.01, 0.5), L=2, seed=0)
    def closure():
        opt.zero_grad(); l = ((w - 1)**2).sum(); l.backward(); return l
    for _ in range(4): opt.step(closure)
    assert opt.gamma == pytest.approx(0.01*1.5**4) and len(opt.gamma_history) == 5
    assert opt.epoch_end() == opt.gamma                                  # scope='step': epoch_end leaves γ alone
    ep = EntropySGD([w], gamma=Exponential(0.01, 0.5), L=2, scope='epoch', seed=0)
    def closure2():
        ep.zero_grad(); l = ((w - 1)**2).sum(); l.backward(); return l
    for _ in range(3): ep.step(closure2)
    assert ep.gamma == 0.01
    assert ep.epoch_end() == pytest.approx(0.015) and ep.gamma == pytest.approx(0.015)

def test_entropy_sgd_stacked_equals_separate():
    "Elementwise: y stacked replicas (loss summed) run y independent Entropy-SGD chains (no noise)."
    X, idx_list = data(), batches(6, 2)
    big = stacked(2)
    ob = EntropySGD(big, lr=0.5, gamma=0.5, L=3, inner_lr=0.05, noise=0., momentum=0.5)
    train_stacked(big, ob, X, idx_list)
    for r in range(2):
        m = stacked(1, seeds=[r])
        train_stacked(m, EntropySGD(m, lr=0.5, gamma=0.5, L=3, inner_lr=0.05, noise=0., momentum=0.5),
                      X, [idx[r:r+1] for idx in idx_list])
        assert maxdiff([p[r:r+1].detach() for p in big.parameters()], [p.detach() for p in m.parameters()]) < 1e-12

def test_entropy_sgd_state_dict_roundtrip():
    X, y = data(), 2
    idx_a, idx_b = batches(5, y, seed=1), batches(5, y, seed=2)
    make = lambda m: EntropySGD(m, lr=0.3, gamma=Exponential(0.1, 0.2), L=3, inner_lr=0.05, noise=1e-2,
                                momentum=0.9, nesterov=True, seed=5)
    m1 = stacked(y); o1 = make(m1)
    train_stacked(m1, o1, X, idx_a)
    ckpt = roundtrip(dict(model=m1.state_dict(), opt=o1.state_dict()))
    m2 = stacked(y, seeds=[3, 4]); m2.load_state_dict(ckpt['model'])
    o2 = EntropySGD(m2, lr=0.3, gamma=Exponential(0.1, 0.2), L=3, inner_lr=0.05, noise=1e-2, momentum=0.9,
                    nesterov=True, seed=99)                    # seed is restored from the checkpoint
    o2.load_state_dict(ckpt['opt'])
    assert o2.gamma == o1.gamma and o2.t == 5 and o2.seed == 5
    train_stacked(m1, o1, X, idx_b); train_stacked(m2, o2, X, idx_b)
    for p, q in zip(m1.parameters(), m2.parameters()): assert torch.equal(p, q)

def test_entropy_sgd_loads_a_state_dict_saved_before_it_was_a_wrapper():
    "Up to 816a3e3 EntropySGD's groups held only its own options (no `dampening`, `maximize`, ...): such a checkpoint resumes exactly."
    X, y = data(), 2
    idx_a, idx_b = batches(4, y, seed=1), batches(4, y, seed=2)
    make = lambda m, seed: EntropySGD(m, lr=0.3, gamma=Exponential(0.1, 0.2), L=3, inner_lr=0.05, noise=1e-2,
                                      momentum=0.9, seed=seed)
    m1 = stacked(y); o1 = make(m1, 5)
    train_stacked(m1, o1, X, idx_a)
    sd = roundtrip(dict(model=m1.state_dict(), opt=o1.state_dict()))
    old_keys = {'lr', 'inner_lr', 'noise', 'alpha', 'momentum', 'nesterov', 'weight_decay', 'params'}
    sd['opt']['param_groups'] = [{k: v for k, v in g.items() if k in old_keys} for g in sd['opt']['param_groups']]
    m2 = stacked(y, seeds=[3, 4]); m2.load_state_dict(sd['model'])
    o2 = make(m2, 99); o2.load_state_dict(sd['opt'])
    g = o2.param_groups[0]
    assert g['dampening'] == 0 and g['maximize'] is False and g['momentum'] == 0.9 and o2.t == 4
    assert all('momentum_buffer' in o2.state[p] for p in m2.parameters())
    train_stacked(m1, o1, X, idx_b); train_stacked(m2, o2, X, idx_b)
    for p, q in zip(m1.parameters(), m2.parameters()): assert torch.equal(p, q)

def test_entropy_sgd_lr_scheduler_and_grad():
    w = nn.Parameter(torch.ones(3))
    opt = EntropySGD([w], lr=0.4, gamma=1., L=2, noise=0.)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    def closure():
        opt.zero_grad(); l = (w**2).sum(); l.backward(); return l
    loss = opt.step(closure); sched.step()
    assert loss.item() == pytest.approx(3.)        # loss at the anchor
    assert opt.param_groups[0]['lr'] == pytest.approx(0.2)
    assert (w.grad > 0).all()                      # p.grad holds the outer gradient γ(w − μ)

# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize('coupling', ['elastic', 'gradient'])
def test_dropped_replica_leaves_the_ensemble(coupling):
    "After `drop_replicas`, the members train exactly as a smaller ensemble and the dropped one as an uncoupled run."
    X, idx = data(), batches(15, 3)
    kw = dict(gamma=Exponential(0.5, 0.5), coupling=coupling, lr=1e-2)
    m3 = stacked(3); o3 = Replicated(m3, **kw); o3.drop_replicas(torch.tensor([False, False, True]))
    m2 = stacked(2); o2 = Replicated(m2, **kw)
    m1 = stacked(1, seeds=[2]); o1 = Replicated(m1, lr=1e-2)
    train_stacked(m3, o3, X, idx, epoch_len=5)
    train_stacked(m2, o2, X, [i[:2] for i in idx], epoch_len=5)
    train_stacked(m1, o1, X, [i[2:] for i in idx])
    assert maxdiff([p[:2] for p in m3.parameters()], list(m2.parameters())) < 1e-12
    assert maxdiff([p[2:] for p in m3.parameters()], list(m1.parameters())) < 1e-12
    o = Replicated(stacked(3), **kw); o.load_state_dict(roundtrip(o3.state_dict()))
    assert o.active.tolist() == [True, True, False]
    o.drop_replicas(torch.tensor([True, False, False]))      # one member left: no coupling at all
    assert o.active.tolist() == [False, True, False]
    with pytest.raises(ValueError, match='mask'): o.drop_replicas(torch.tensor([True, False]))
    with pytest.raises(ValueError, match='mask'): o.drop_replicas(torch.tensor([1, 0, 0]))

def test_bad_input_replicated():
    with pytest.raises(ValueError, match='params'):       # leading axes disagree: not stacked replicas
        Replicated(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).parameters())
    with pytest.raises(ValueError, match='params'):
        Replicated([nn.Parameter(torch.tensor(1.))])
    with pytest.raises(ValueError, match='groups=3'): Replicated(stacked(2).parameters(), groups=3)
    with pytest.raises(ValueError, match='groups must be >= 1'): Replicated(stacked(2).parameters(), groups=0)
    with pytest.raises(ValueError, match='lr'): SAM(stacked(2).parameters(), lr=float('nan'))
    with pytest.raises(ValueError, match='gamma'): Replicated(stacked(2), gamma=-0.1)
    with pytest.raises(TypeError, match='gamma'): Replicated(stacked(2), gamma='0.1')
    with pytest.raises(ValueError, match='lr'): Replicated(stacked(2), lr=-1e-3)
    with pytest.raises(ValueError, match='lr'): Replicated(stacked(2), base=partial(torch.optim.SGD, lr=-0.1))
    with pytest.raises(ValueError, match='lr'): LoopReplicated(singles(2), lr=-1e-3)
    with pytest.raises(ValueError, match='coupling'): Replicated(stacked(2), coupling='spring')
    with pytest.raises(ValueError, match='models'): LoopReplicated([])

def test_bad_input_schedules():
    with pytest.raises(ValueError, match="name must be one of"): scoping('warmup', gamma0=0.1)
    with pytest.raises(ValueError, match='gamma0'): Exponential(-1., 0.1)
    with pytest.raises(ValueError, match='gamma1'): Exponential(1., -0.5)
    with pytest.raises(ValueError, match='cap'): Linear(0., 1., cap=-1.)
    with pytest.raises(ValueError, match='steps'): Cosine(0., 1., steps=0)
    with pytest.raises(TypeError, match='steps'): Cosine(0., 1., steps=2.5)
    with pytest.raises(ValueError, match='gamma'): Constant(float('nan'))

def test_bad_input_entropy_sgd():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match='closure'): EntropySGD(p).step()
    with pytest.raises(ValueError, match='L must be >= 1'): EntropySGD(p, L=0)
    with pytest.raises(TypeError, match='L'): EntropySGD(p, L=2.0)
    with pytest.raises(ValueError, match='lr'): EntropySGD(p, lr=-0.1)
    with pytest.raises(ValueError, match='inner_lr'): EntropySGD(p, inner_lr=-0.1)
    with pytest.raises(ValueError, match='gamma'): EntropySGD(p, gamma=-1.)
    with pytest.raises(ValueError, match='alpha'): EntropySGD(p, alpha=1.5)
    with pytest.raises(ValueError, match='noise'): EntropySGD(p, noise=-1.)
    with pytest.raises(ValueError, match='scope'): EntropySGD(p, scope='batch')
    with pytest.raises(ValueError, match='nesterov'): EntropySGD(p, nesterov=True)

# ------------------------------------------------------------------ fused Adam by default
def test_library_adam_is_fused_unless_told_otherwise():
    from entropic_ae.optim import adam, prepare_base
    from entropic_ae.train import fit, Recorder
    from entropic_ae.data import random_features
    ps = [nn.Parameter(torch.randn(3, 4))]
    assert adam(ps).defaults['fused'] is True
    assert Replicated(ps, gamma=0.1).base.defaults['fused'] is True
    assert SAM(ps, base=torch.optim.Adam, lr=1e-3).base.defaults['fused'] is True
    assert SAM(ps, base=partial(torch.optim.AdamW, lr=1e-3)).base.defaults['fused'] is True
    r = fit(shallow_ae(6, 2, y=2), random_features(N=6, D=2, P=8, seed=0), epochs=1, bs=4, cbs=[Recorder(metrics=[])])
    assert r.optimizer.defaults['fused'] is True
    # the caller's choice of kernel stands, and parameters the fused kernel cannot take keep torch's default
    assert not adam(ps, foreach=True).defaults['fused'] and not adam(ps, fused=False).defaults['fused']
    assert not Replicated(ps, base=partial(torch.optim.Adam, foreach=True)).base.defaults['fused']
    assert 'fused' not in prepare_base(torch.optim.Adam, [nn.Parameter(torch.randn(2, device='meta'))], {})
    assert 'fused' not in prepare_base(torch.optim.SGD, ps, {'lr': 0.1})
    with pytest.raises(ValueError, match='lr'): adam(ps, lr=-1.)

# ------------------------------------------------------------------ the wrapper protocol (optim.Wrapper), same checks for every wrapper
from entropic_ae import optim as O
from entropic_ae.compare import TracedReplicated
from entropic_ae.optim import FitHooks, fit_hooks

class Toy(FitHooks, torch.optim.SGD):
    "A base speaking the protocol, recording what reaches it."
    def __init__(self, params, **kw):
        super().__init__(params, **kw)
        self.calls, self.fresh_batches = [], False
    gamma = property(lambda self: 0.25)
    groups = property(lambda self: 2)
    def epoch_end(self): self.calls.append('epoch_end')
    def drop_replicas(self, mask): self.calls.append(('drop', mask.tolist()))
    def hyperparameters(self): return {**super().hyperparameters(), 'toy': 1}

WRAPPERS = {   # name -> build(params, base): one wrapper of each kind, with SGD-with-momentum options (so the state is not empty)
    'replicated': lambda ps, base: Replicated(ps, base=base, gamma=Exponential(0.1, 0.5), lr=0.05, momentum=0.9),
    'sam': lambda ps, base: SAM(ps, base=base, rho=0.05, per_replica=True, lr=0.05, momentum=0.9),
    'asam': lambda ps, base: SAM(ps, base=base, rho=0.5, adaptive=True, lr=0.05, momentum=0.9),
    'traced': lambda ps, base: TracedReplicated(ps, base=base, gamma=Exponential(0.1, 0.5), lr=0.05, momentum=0.9),
    'sam(replicated)': lambda ps, base: SAM(ps, base=partial(Replicated, base=base, gamma=Exponential(0.1, 0.5)), rho=0.05,
                                            per_replica=True, lr=0.05, momentum=0.9),
    'accumulate': lambda ps, base: Accumulate(ps, base=base, every=2, lr=0.05, momentum=0.9)}

def _innermost(w):
    while isinstance(w, O.Wrapper): w = w.base
    return w

def _stacked_ps(y=4): return [nn.Parameter(torch.randn(y, 3, 2, dtype=DT)), nn.Parameter(torch.randn(y, 2, dtype=DT))]

@pytest.mark.parametrize('name', list(WRAPPERS))
def test_wrapper_shares_groups_state_and_defaults(name):
    ps = _stacked_ps()
    w = WRAPPERS[name](ps, torch.optim.SGD)
    assert isinstance(w, O.Wrapper) and isinstance(w, torch.optim.Optimizer)
    assert w.param_groups is w.base.param_groups and w.state is w.base.state
    assert w.defaults['momentum'] == 0.9                  # schedulers (OneCycleLR) read the base's options here
    def closure():                                       # a gradient of ones, at whatever weights the wrapper asks
        for p in ps: p.grad = torch.ones_like(p)
        return torch.zeros(())
    for _ in range(2): w.step(closure)                   # two calls: also a step of a wrapper that steps every second call
    sd = w.state_dict()
    assert len(sd['state']) == len(ps)                   # the momentum buffers, and nothing of the wrapper's scratch
    w2 = WRAPPERS[name]([nn.Parameter(p.detach().clone()) for p in ps], torch.optim.SGD)
    w2.load_state_dict(sd)
    assert w2.param_groups is w2.base.param_groups and w2.state is w2.base.state   # still one list, one dict after a load
    w2.param_groups[0]['lr'] = 0.125                     # lr set on the wrapper reaches the base
    assert _innermost(w2).param_groups[0]['lr'] == 0.125
    torch.testing.assert_close(list(w2.state.values())[0]['momentum_buffer'], list(w.state.values())[0]['momentum_buffer'], rtol=0, atol=0)

@pytest.mark.parametrize('name', list(WRAPPERS))
def test_wrapper_forwards_the_fit_protocol(name):
    w = WRAPPERS[name](_stacked_ps(), Toy)
    toy = _innermost(w)
    toy.fresh_batches = True
    assert fit_hooks(w).fresh_batches is True
    mask = torch.tensor([False, True, False, False])
    w.drop_replicas(mask); w.epoch_end()
    assert toy.calls == [('drop', mask.tolist()), 'epoch_end']
    rep = w if isinstance(w, Replicated) else w.base if isinstance(w.base, Replicated) else None
    assert (w.gamma, w.groups) == ((0.25, 2) if rep is None else (rep.schedule.value, rep.groups))
    hp = w.hyperparameters()
    assert hp['class'] == type(w).__name__ and [k for k in hp if k.endswith('.toy')] == ['base.' * (2 if rep is not None and rep is not w else 1) + 'toy']

@pytest.mark.parametrize('name', list(WRAPPERS))
def test_wrapper_resumes_bitwise_under_fit(name, tmp_path):
    "Stopped after 2 of 4 epochs with a cosine schedule and resumed: the same weights, bit for bit, as the uninterrupted run."
    from entropic_ae.train import fit, cosine_lr as cosine, Callback, CancelFit, Checkpoint
    from entropic_ae.data import random_features
    class Stop(Callback):
        order = 25                                       # after the checkpoint is written
        def after_epoch(self, L):
            if L.epoch + 1 == 2: raise CancelFit()
    d = random_features(N=8, D=3, P=32, P_test=16, seed=0)
    model = lambda: shallow_ae(8, 3, y=4, seeds=[0, 1, 2, 3], dtype=DT)
    kw = dict(epochs=4, bs=8, opt_func=lambda ps: WRAPPERS[name](ps, torch.optim.SGD))
    whole = fit(model(), d, cbs=[cosine(4)], **kw)
    fit(model(), d, cbs=[cosine(4), Stop(), Checkpoint(tmp_path / 'ck.pt')], **kw)
    back = fit(model(), d, cbs=[cosine(4), Checkpoint(tmp_path / 'ck.pt', resume=True)], **kw)
    for a, b in zip(whole.model.parameters(), back.model.parameters()): assert torch.equal(a, b)
    assert whole.df.equals(back.df)
    if isinstance(whole.optimizer, TracedReplicated):
        assert all(torch.equal(a, b) for a, b in zip(whole.optimizer.dist_log, back.optimizer.dist_log)) and len(back.optimizer.dist_log) == 4

@pytest.mark.parametrize('name', list(WRAPPERS))
def test_wrapper_refuses_a_base_that_needs_its_closure(name):
    "A wrapper steps its base on the gradient in .grad: a base whose step evaluates the loss itself is refused at construction."
    lbfgs = lambda ps, lr=1., **kw: torch.optim.LBFGS(ps, lr=lr)             # it takes no momentum
    for base in (partial(EntropySGD, L=2), partial(SAM, base=torch.optim.SGD), lbfgs):
        with pytest.raises(TypeError, match='needs_closure'): WRAPPERS[name](_stacked_ps(), base)

def test_base_options_have_one_name():
    "Every optimizer that builds a base takes the base's options as **base_kw (SAM said base_kwargs)."
    import inspect
    for cls in (Replicated, SAM, TracedReplicated, LoopReplicated):
        ps = inspect.signature(cls).parameters
        assert 'base_kw' in ps and ps['base_kw'].kind is inspect.Parameter.VAR_KEYWORD, cls

# ------------------------------------------------------------------ the coupled step, written out
def _written_out(ws, grads, bufs, coupling, gamma, lr, mu, groups, active):
    "One replicated SGD-momentum step as the algorithm reads, replica by replica (float64 lists of [y, ...] tensors)."
    y = ws[0].shape[0]; n = y // groups
    def centres(ps):
        out = []
        for p in ps:
            c = torch.empty_like(p)
            for g in range(groups):
                members = [r for r in range(g * n, (g + 1) * n) if active[r]]
                c[g * n:(g + 1) * n] = sum(p[r] for r in members) / len(members)
            out.append(c)
        return out
    a = [torch.tensor(float(active[r]), dtype=DT) for r in range(y)]
    grads = [g.clone() for g in grads]
    if coupling == 'gradient':
        for p, g, c in zip(ws, grads, centres(ws)):
            for r in range(y): g[r] += gamma * a[r] * (p[r] - c[r])
    before = centres(ws) if coupling == 'lagged' else None
    for i, (p, g) in enumerate(zip(ws, grads)):
        bufs[i] = g.clone() if bufs[i] is None else mu * bufs[i] + g
        p -= lr * bufs[i]
    if coupling != 'gradient':
        w = min((lr if coupling == 'elastic' else 1.) * gamma, 1.)
        for p, c in zip(ws, before or centres(ws)):
            for r in range(y): p[r] += w * a[r] * (c[r] - p[r])

@pytest.mark.parametrize('coupling', ['elastic', 'gradient', 'lagged'])
def test_coupled_step_is_the_written_out_algorithm(coupling, tmp_path):
    "Replicated(SGD with momentum) with two groups and a dropped replica, 6 steps, equals the algorithm to 1e-15; resuming at step 3 is bitwise."
    g = torch.Generator().manual_seed(3)
    w0 = [torch.randn(6, 4, 3, generator=g, dtype=DT), torch.randn(6, 1, 3, generator=g, dtype=DT)]
    grads = [[torch.randn(w.shape, generator=g, dtype=DT) for w in w0] for _ in range(6)]
    active = [True, True, False, True, True, True]
    kw = dict(base=torch.optim.SGD, gamma=0.7, coupling=coupling, groups=2, lr=0.3, momentum=0.5)
    def run(ps, opt, steps):
        for gs in steps:
            for p, gr in zip(ps, gs): p.grad = gr.clone()
            opt.step()
    ps = [nn.Parameter(w.clone()) for w in w0]
    opt = Replicated(ps, **kw); opt.drop_replicas(torch.tensor([not a for a in active]))
    run(ps, opt, grads[:3])
    torch.save(opt.state_dict(), tmp_path / 'o.pt'); saved = [p.detach().clone() for p in ps]
    run(ps, opt, grads[3:])
    ref, bufs = [w.clone() for w in w0], [None, None]
    for gs in grads: _written_out(ref, gs, bufs, coupling, 0.7, 0.3, 0.5, 2, active)
    assert maxdiff(ps, ref) < 1e-15 * max(1., max(r.abs().max().item() for r in ref))
    again = [nn.Parameter(s) for s in saved]
    o2 = Replicated(again, **kw); o2.load_state_dict(torch.load(tmp_path / 'o.pt'))
    run(again, o2, grads[3:])
    assert all(torch.equal(a, b) for a, b in zip(again, ps))


def test_entropy_sgd_counts_a_coupled_weight_decay_once():
    "The L2 term is in the energy the chain samples; the outer SGD step is −η·γ(w − μ) alone (it was also −η·λ·w: 1/γ times the decay)."
    lam, gamma, eta, inner, L = 0.5, 0.1, 10., 0.1, 2
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = EntropySGD([w], lr=eta, gamma=gamma, L=L, inner_lr=inner, noise=0., weight_decay=lam)
    def closure():
        opt.zero_grad(); loss = (w ** 2).sum() / 2; loss.backward(); return loss
    w0 = w.detach().clone()
    x, mu = w0.clone(), w0.clone()                      # the chain by hand: E = |w|²/2, plus λ|w|²/2, plus the coupling
    for _ in range(L):
        x = x - inner * (x + gamma * (x - w0) + lam * x)
        mu = 0.75 * mu + 0.25 * x
    opt.step(closure)
    torch.testing.assert_close(w.detach(), w0 - eta * gamma * (w0 - mu), rtol=0, atol=1e-12)
    assert opt.param_groups[0]['weight_decay'] == lam
