"Tests for entropic_ae.train.fit: stacked = one by one, divergence handling, checkpoints, tidy output, bad input."
import math
from functools import partial
import pandas as pd
import pytest, torch
from torch import nn
from entropic_ae.data import random_features
from entropic_ae.models import shallow_ae, deep_ae, recon_error
from entropic_ae.replicas import barycentre, replica
from entropic_ae.optim import Replicated, EntropySGD, Exponential
from entropic_ae.sam import SAM
from entropic_ae.train import fit, FitResult, Recorder, Checkpoint, StopAtLoss, Timer

SEEDS = [3, 7, 11]
# 48 patterns, bs 12: 4 steps per epoch
METRICS = {'train_loss': {}, 'test_loss': {}, 'local_energy': dict(sigmas=(0., 0.1, 0.3), n_draws=3),
           'denoising': dict(sigmas=(0., 0.2), n_draws=3)}
KW = dict(bs=12)
rec = lambda **kw: Recorder(METRICS, **kw)                         # the METRICS, every epoch
losses = lambda **kw: Recorder(('train_loss', 'test_loss'), **kw)

@pytest.fixture(scope='module')
def data():
    d = random_features(N=12, D=3, P=48, P_test=24, seed=0, dtype=torch.float64)
    return d

def ae(y=3, seeds=SEEDS, deep=False):
    return (deep_ae(12, 3, H=8, y=y, seeds=seeds, dtype=torch.float64) if deep else
            shallow_ae(12, 3, y=y, seeds=seeds, dtype=torch.float64))

def params(m): return [p.detach().clone() for p in m.parameters()]

@pytest.mark.parametrize('opt_func', [partial(torch.optim.Adam, lr=1e-2),
                                      partial(Replicated, base=torch.optim.Adam, gamma=0., lr=1e-2),
                                      partial(SAM, base=torch.optim.SGD, rho=0.05, per_replica=True, lr=0.5, momentum=0.9)],
                         ids=['adam', 'replicated-gamma0', 'sam-per-replica'])
def test_stacked_equals_one_by_one(data, opt_func):
    "THE key property: a stack of k independent replicas trains exactly like k separate runs with the same seeds."
    st = fit(ae(deep=True), data, epochs=3, opt_func=opt_func, seeds=SEEDS, **KW, cbs=[rec()])
    sdf = st.df
    for r, s in enumerate(SEEDS):
        one = fit(ae(1, [s], deep=True), data, epochs=3, opt_func=opt_func, seeds=[s], **KW, cbs=[rec()])
        for a, b in zip(st.model.parameters(), one.model.parameters()):
            torch.testing.assert_close(a[r], b[0], rtol=1e-9, atol=1e-11)
        mine = sdf[sdf.replica == r].drop(columns='replica').reset_index(drop=True)
        theirs = one.df[one.df.replica == 0].drop(columns='replica').reset_index(drop=True)
        assert len(mine) == len(theirs) > 0
        pd.testing.assert_frame_equal(mine, theirs, check_exact=False, rtol=1e-8, atol=1e-12)

def test_records(data):
    res = fit(ae(), data, epochs=2, opt_func=partial(torch.optim.Adam, lr=1e-2), seeds=SEEDS,
              **KW, cbs=[rec(on=('replicas', 'barycentre', 'ensemble'), histograms=True)])
    df = res.df
    assert isinstance(res, FitResult) and res.epochs == 2 and res.active.all()
    assert set(df.epoch) == {0, 1, 2}
    assert {'train_loss', 'test_loss', 'local_energy', 'denoising', 'weight_hist', 'grad_hist'} <= set(df.metric)
    assert 'local_energy' not in set(df[df.eval_on == 'ensemble'].metric)
    assert set(df[df.eval_on != 'replicas'].replica) == {-1}
    # σ = 0 of the local energy profile is exactly the recorded training loss
    le0 = df[(df.metric == 'local_energy') & (df.sigma == 0)].set_index(['eval_on', 'replica', 'epoch']).value
    tl = df[(df.metric == 'train_loss') & (df.eval_on != 'ensemble')].set_index(['eval_on', 'replica', 'epoch']).value
    assert le0.sort_index().equals(tl.sort_index())
    last = df[df.epoch == 2]
    x = data.x_train
    with torch.no_grad():
        bary = recon_error(barycentre(res.model)(x), x)[0].item()
        ens = recon_error(res.model(x).mean(0, keepdim=True), x)[0].item()
    get = lambda ev: last[(last.metric == 'train_loss') & (last.eval_on == ev)].value.item()
    assert get('barycentre') == pytest.approx(bary, rel=1e-12) and get('ensemble') == pytest.approx(ens, rel=1e-12)

def test_record_every_and_last_epoch(data):
    res = fit(ae(), data, epochs=5, opt_func=partial(torch.optim.Adam, lr=1e-2), seeds=SEEDS,
              **KW, cbs=[losses(every=2)])
    assert sorted(set(res.df.epoch)) == [0, 2, 4, 5]
    assert set(res.df.metric) == {'train_loss', 'test_loss'}

def test_csv_roundtrip(data, tmp_path):
    res = fit(ae(), data, epochs=1, opt_func=partial(torch.optim.Adam, lr=1e-2), seeds=SEEDS,
              **KW, cbs=[rec(on=('replicas', 'barycentre'), histograms=True)])
    path = res.save_csv(tmp_path / 'sub' / 'run.csv')
    df = pd.read_csv(path)
    assert {'run', 'replica', 'epoch', 'metric', 'sigma', 'value', 'eval_on', 'layer', 'bin', 'lo', 'hi'} <= set(df.columns)
    assert len(df) == len(res.rows)
    assert df.value.dtype.kind == 'f' and df.epoch.dtype.kind == 'i'
    assert set(df.eval_on) == {'replicas', 'barycentre'}

class PoisonedAdam(torch.optim.Adam):
    "Adam that writes nan into the replicas `who` of every parameter right after its step number `at`."
    def __init__(self, params, at=5, who=(1,), **kw):
        super().__init__(params, **kw); self.at, self.who, self.n = at, list(who), 0
    def step(self, closure=None):
        out = super().step(closure); self.n += 1
        if self.n == self.at:
            with torch.no_grad():
                for g in self.param_groups:
                    for p in g['params']: p[self.who] = float('nan')
        return out

def test_divergence_freezes_one_replica(data):
    "Replica 1's weights are poisoned in step 5: it is dropped right after that step, frozen; the others never notice."
    clean = fit(ae(), data, epochs=3, opt_func=partial(torch.optim.Adam, lr=1e-2), seeds=SEEDS, **KW, cbs=[rec()])
    bad = fit(ae(), data, epochs=3, opt_func=partial(PoisonedAdam, lr=1e-2, at=5), seeds=SEEDS, **KW, cbs=[rec()])
    assert bad.active.tolist() == [True, False, True] and bad.epochs == 3
    st = bad.df[bad.df.metric == 'status']
    assert len(st) == 1 and st.replica.item() == 1 and st.epoch.item() == 2 and st.value.item() == 5
    assert st.status.item() == 'diverged'
    for a, b in zip(clean.model.parameters(), bad.model.parameters()):
        assert torch.equal(a[[0, 2]], b[[0, 2]])      # the others are untouched
    df = bad.df[(bad.df.replica == 1) & (bad.df.metric != 'status')]
    assert set(df.epoch) == {0, 1}                    # no metrics for the frozen replica after it diverged
    assert bad.df.value.map(math.isfinite).all()

class NanLossAfter:
    "recon_error, except that from the `at`-th training call on, replica `who`'s loss is nan (a forward overflow)."
    def __init__(self, at, who=1): self.at, self.who, self.n = at, who, 0
    def __call__(self, xhat, x):
        loss = recon_error(xhat, x)
        if x.dim() == 3:                                # training minibatch [y, b, N]; evaluation passes [b, N]
            self.n += 1
            if self.n >= self.at:
                bad = torch.zeros_like(loss); bad[self.who] = float('nan'); loss = loss + bad
        return loss

def test_divergence_with_coupling(data):
    "A replica whose loss overflows under γ > 0: dropped from the ensemble before that step's coupling, frozen (finite) from then on."
    opt = lambda ps: Replicated(ps, base=torch.optim.Adam, gamma=0.5, lr=1e-2)
    two = fit(ae(), data, epochs=2, opt_func=opt, seeds=SEEDS, loss_fn=NanLossAfter(at=6), **KW, cbs=[losses()])
    res = fit(ae(), data, epochs=3, opt_func=opt, seeds=SEEDS,
              loss_fn=NanLossAfter(at=6), **KW, cbs=[rec(on=('replicas', 'barycentre'))])
    assert res.active.tolist() == [True, False, True]
    assert res.optimizer.active.tolist() == [True, False, True]      # and out of the barycentre the others are pulled to
    st = res.df[res.df.metric == 'status']
    assert st.replica.tolist() == [1] and st.value.tolist() == [6]
    for a, b in zip(res.model.parameters(), two.model.parameters()): assert torch.equal(a[1], b[1])   # frozen
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    assert res.df.value.map(math.isfinite).all()
    moved = [not torch.equal(a[0], b[0]) for a, b in zip(res.model.parameters(), two.model.parameters())]
    assert all(moved)

def test_nonfinite_weights_never_reach_the_others(data):
    "Weights of replica 1 become inf inside a coupled step: the survivors train exactly as a 2-replica ensemble from then on."
    class InfAt(torch.optim.SGD):
        def __init__(self, params, at=5, **kw): super().__init__(params, **kw); self.at, self.n = at, 0
        def step(self, closure=None):
            out = super().step(closure); self.n += 1
            if self.n == self.at:
                with torch.no_grad():
                    for g in self.param_groups:
                        for p in g['params']: p[1] = float('inf')
            return out
    opt = lambda ps: Replicated(ps, base=partial(InfAt, at=5), gamma=0.5, lr=0.05)
    res = fit(ae(), data, epochs=2, opt_func=opt, seeds=SEEDS, **KW, cbs=[losses()])
    assert res.optimizer.active.tolist() == [True, False, True] and res.active.tolist() == [True, False, True]
    for p in res.model.parameters(): assert torch.isfinite(p[[0, 2]]).all()

def test_all_diverge_stops_cleanly(data):
    res = fit(ae(), data, epochs=4, opt_func=partial(PoisonedAdam, lr=1e-2, at=2, who=(0, 1, 2)), seeds=SEEDS, **KW, cbs=[rec()])
    assert not res.active.any() and res.epochs == 1
    st = res.df[res.df.metric == 'status']
    assert sorted(st.replica) == [0, 1, 2] and set(st.value) == {2}              # poisoned in step 2, dropped right after it
    assert set(res.df.epoch) == {0, 1}

class CrashingAdam(torch.optim.Adam):
    def __init__(self, params, at=10, **kw): super().__init__(params, **kw); self.at, self.n = at, 0
    def step(self, closure=None):
        self.n += 1
        if self.n == self.at: raise RuntimeError('simulated crash')
        return super().step(closure)

@pytest.mark.parametrize('kind', ['adam', 'replicated-scoped', 'sam-momentum'])
def test_resume_equals_uninterrupted(data, tmp_path, kind):
    "Crash in epoch 3, resume from the epoch-2 checkpoint: same parameters, same rows, same γ history."
    def opt_func(crash):
        base = partial(CrashingAdam, at=10 if crash else 0)
        if kind == 'adam': return partial(base, lr=1e-2)
        if kind == 'replicated-scoped': return lambda ps: Replicated(ps, base=base, gamma=Exponential(0.05, 0.5), lr=1e-2)
        sgd = lambda ps, **kw: CrashingSGD(ps, at=10 if crash else 0, **kw)
        return lambda ps: SAM(ps, base=sgd, rho=0.05, per_replica=True, lr=0.3, momentum=0.9)
    run = lambda crash, *ck: fit(ae(), data, epochs=4, opt_func=opt_func(crash), seeds=SEEDS, **KW,
                                 cbs=[rec(on=('replicas', 'barycentre')), *ck])
    full = run(False)
    ck = tmp_path / 'ck.pt'
    with pytest.raises(RuntimeError, match='simulated crash'): run(True, Checkpoint(ck))
    saved = torch.load(ck, weights_only=True)
    assert saved['epoch'] == 2
    again = run(False, Checkpoint(ck, resume=True))
    for a, b in zip(full.model.parameters(), again.model.parameters()): assert torch.equal(a, b)
    pd.testing.assert_frame_equal(full.df, again.df)
    if kind == 'replicated-scoped':
        assert (full.df.metric == 'gamma').sum() == 4
        assert full.optimizer.gamma_history == again.optimizer.gamma_history
    assert torch.load(ck, weights_only=True)['epoch'] == 4

def test_timer_sums_the_seconds_of_a_resumed_run(data, tmp_path):
    "A Timer's clocks travel in the checkpoint: the resumed run reports the saved seconds plus its own; a new fit starts at 0."
    ck, t = tmp_path / 'ck.pt', Timer()
    with pytest.raises(RuntimeError, match='simulated crash'):
        fit(ae(), data, epochs=4, opt_func=partial(CrashingAdam, at=10, lr=1e-2), seeds=SEEDS, **KW, cbs=[Checkpoint(ck), t])
    saved = torch.load(ck, weights_only=True)
    assert list(saved['callbacks']) == ['Timer'] and saved['callbacks']['Timer']['wall'] > 0
    saved['callbacks']['Timer'] = dict(wall=500., cpu=700.); torch.save(saved, ck)
    fit(ae(), data, epochs=4, opt_func=partial(CrashingAdam, at=0, lr=1e-2), seeds=SEEDS, **KW, cbs=[Checkpoint(ck, resume=True), t])
    assert 500 < t.wall < 560 and 700 < t.cpu < 760
    fit(ae(), data, epochs=1, opt_func=partial(torch.optim.Adam, lr=1e-2), seeds=SEEDS, **KW, cbs=[t])
    assert 0 < t.wall < 60

def test_callback_states_are_keyed_by_class_not_place(data, tmp_path):
    "A resume with callbacks added before the Timer still gives it the saved clocks."
    from entropic_ae.train import _class_keys
    assert _class_keys(['StopAtLoss', 'Timer', 'StopAtLoss', 'StopAtLoss']) == ['StopAtLoss', 'Timer', 'StopAtLoss.1', 'StopAtLoss.2']
    ck = tmp_path / 'ck.pt'
    with pytest.raises(RuntimeError, match='simulated crash'):
        fit(ae(), data, epochs=4, opt_func=partial(CrashingAdam, at=10, lr=1e-2), seeds=SEEDS, **KW, cbs=[Checkpoint(ck), Timer()])
    saved = torch.load(ck, weights_only=True)
    torch.save({**saved, 'callbacks': {'Timer': dict(wall=500., cpu=700.)}}, ck)
    t = Timer()
    fit(ae(), data, epochs=4, opt_func=partial(CrashingAdam, at=0, lr=1e-2), seeds=SEEDS, **KW,
        cbs=[StopAtLoss(1e-9, stop=False), rec(), t, Checkpoint(ck, resume=True)])
    assert 500 < t.wall < 560
    assert list(torch.load(ck, weights_only=True)['callbacks']) == ['Timer', 'StopAtLoss']

class CrashingSGD(torch.optim.SGD):
    def __init__(self, params, at=10, **kw): super().__init__(params, **kw); self.at, self.n = at, 0
    def step(self, closure=None):
        self.n += 1
        if self.n == self.at: raise RuntimeError('simulated crash')
        return super().step(closure)

def test_resume_without_checkpoint_starts_fresh(data, tmp_path):
    a = fit(ae(), data, epochs=1, opt_func=partial(torch.optim.Adam, lr=1e-2), seeds=SEEDS, **KW, cbs=[rec()])
    b = fit(ae(), data, epochs=1, opt_func=partial(torch.optim.Adam, lr=1e-2), seeds=SEEDS,
            **KW, cbs=[rec(), Checkpoint(tmp_path / 'none.pt', resume=True)])
    pd.testing.assert_frame_equal(a.df, b.df)
    assert (tmp_path / 'none.pt').exists()

def test_gamma_and_entropy_sgd(data):
    res = fit(ae(), data, epochs=2, opt_func=lambda ps: EntropySGD(ps, lr=0.5, gamma=0.03, L=3, seed=0), seeds=SEEDS,
              **KW, cbs=[losses()])
    g = res.df[res.df.metric == 'gamma']
    assert list(g.epoch) == [1, 2] and (g.eval_on == 'optimizer').all()
    assert res.active.all() and res.df.value.map(math.isfinite).all()

def test_device_and_default_seeds(data):
    m = ae(2, [5, 6])
    res = fit(m, (data.x_train, None), epochs=1, **KW, cbs=[losses()])
    assert res.model is m and next(m.parameters()).device.type == 'cpu'      # fit trains where the model is
    assert 'test_loss' not in set(res.df.metric)

def test_bad_input(data):
    f = lambda **kw: fit(ae(), data, **{'epochs': 1, **kw})
    for kw, name in [(dict(epochs=0), 'epochs'), (dict(epochs=1.5), 'epochs'), (dict(bs=0), 'bs'),
                     (dict(seeds=[1, 1, 2]), 'seeds'), (dict(cbs=[Recorder(groups=2)]), 'groups'),
                     (dict(opt_func=lambda ps: None), 'opt_func'), (dict(cbs=Recorder()), 'cbs'), (dict(cbs=[Recorder(), Recorder()]), 'Recorder'),
                     (dict(seeds=[1, 2]), 'seeds'), (dict(opt_func=3), 'opt_func'),
                     (dict(learning_rate=1), 'learning_rate'),
                     (dict(cbs=[Recorder({'denoising': dict(sigmas=[float('nan')])})]), 'sigmas')]:   # at epoch 0, before any step
        with pytest.raises((ValueError, TypeError), match=name): f(**kw)
    for kw, name in [(dict(every=0), 'every'), (dict(metrics=['sharpest']), 'metrics'), (dict(metrics={'local_energy': {}}), 'sigmas'),
                     (dict(on='centroid'), 'on'), (dict(on=None), 'on'), (dict(on=('replicas', 'mean')), 'on'), (dict(batch_size=0), 'batch_size')]:
        with pytest.raises((ValueError, TypeError), match=name): Recorder(**kw)          # refused at construction
    with pytest.raises(ValueError, match='every'): Checkpoint('ck.pt', every=0)
    with pytest.raises(TypeError, match='data'): fit(ae(), 'data', epochs=1)

def _batches_seen(data, opt_func, **kw):
    "Per step, the batches (row sums per replica) that each closure call trained on."
    seen = []
    def loss_fn(xhat, x):
        if x.ndim == 3: seen.append(x.detach().sum(-1).clone())   # training batches [y, b, N]; not the evaluations
        return recon_error(xhat, x)
    res = fit(ae(), data, epochs=1, opt_func=opt_func, loss_fn=loss_fn, **KW, cbs=[losses()], **kw)
    return res, seen

def test_entropy_sgd_draws_a_minibatch_per_langevin_step(data):
    "Algorithm 2 samples a new minibatch at every inner step; SAM must see one batch twice."
    esgd = partial(EntropySGD, lr=0.1, gamma=0.5, L=3, inner_lr=0.05, noise=0., seed=0)
    _, seen = _batches_seen(data, esgd)
    assert len(seen) == 4 * 3                                  # 4 steps x L closure calls (the anchor's gradient is Langevin step 1)
    steps = torch.stack(seen).reshape(4, 3, 3, -1)             # [step, call, y, b]
    for s in steps:
        assert not torch.equal(s[1], s[0]) and not torch.equal(s[2], s[0]) and not torch.equal(s[2], s[1])
    class SameBatchESGD(EntropySGD): fresh_batches = False   # the protocol's switch, per optimizer class
    _, same = _batches_seen(data, partial(SameBatchESGD, lr=0.1, gamma=0.5, L=3, inner_lr=0.05, noise=0., seed=0))
    st = torch.stack(same).reshape(4, 3, 3, -1)
    assert all(torch.equal(s[l], s[0]) for s in st for l in range(3))
    _, sam = _batches_seen(data, partial(SAM, base=torch.optim.SGD, rho=0.05, lr=0.1))
    assert len(sam) == 4 * 2
    st = torch.stack(sam).reshape(4, 2, 3, -1)                 # SAM: two closure calls per step, on the same batch
    assert all(torch.equal(s[1], s[0]) for s in st)

# ------------------------------------------------------------------ supervised: targets next to the inputs
from types import SimpleNamespace
from entropic_ae.models import MLP, cross_entropy, error_rate
from entropic_ae.flatness import dataset_loss

def labelled(data):
    "Random-feature patterns labelled by their first hidden feature (c_0 = 0 or 1)."
    return SimpleNamespace(x_train=data.x_train, t_train=data.c_train[:, 0].long(),
                           x_test=data.x_test, t_test=data.c_test[:, 0].long())

def mlp(y=3, seeds=SEEDS): return MLP([12, 8, 2], y=y, seeds=seeds, dtype=torch.float64)

def test_supervised_stacked_equals_one_by_one(data):
    sup = labelled(data)
    kw = dict(KW, loss_fn=cross_entropy, opt_func=partial(torch.optim.Adam, lr=1e-2))
    st = fit(mlp(), sup, epochs=3, seeds=SEEDS, cbs=[rec(on=('replicas', 'barycentre'))], **kw)
    df = st.df
    for r, s in enumerate(SEEDS):
        one = fit(mlp(1, [s]), sup, epochs=3, seeds=[s], cbs=[rec()], **kw)
        for a, b in zip(st.model.parameters(), one.model.parameters()):
            torch.testing.assert_close(a[r], b[0], rtol=1e-9, atol=1e-11)
    last = df[(df.epoch == 3) & (df.eval_on == 'replicas')]
    with torch.no_grad():
        ce_train = cross_entropy(st.model(sup.x_train), sup.t_train)
        ce_test = dataset_loss(st.model, sup.x_test, cross_entropy, None, sup.t_test)
    torch.testing.assert_close(torch.tensor(last[last.metric == 'train_loss'].value.values), ce_train)
    torch.testing.assert_close(torch.tensor(last[last.metric == 'test_loss'].value.values), ce_test)
    for prof in ('local_energy', 'denoising'):                  # both profiles start at the training loss
        at0 = last[(last.metric == prof) & (last.sigma == 0)].value.values
        torch.testing.assert_close(torch.tensor(at0), ce_train)
    first = df[(df.epoch == 0) & (df.eval_on == 'replicas')]
    assert last[last.metric == 'train_loss'].value.mean() < first[first.metric == 'train_loss'].value.mean()

def test_supervised_fresh_batches_keep_targets_with_inputs(data):
    "Every batch the loss sees pairs each input row with its own label, also for Entropy-SGD's fresh Langevin batches."
    x = torch.rand(48, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)   # distinct rows
    sup = SimpleNamespace(x_train=x, t_train=torch.arange(48))  # the label is the row number
    x_of = {tuple(r.tolist()): i for i, r in enumerate(sup.x_train)}
    checked = []
    class Spy(MLP):
        def forward(self, x): self.last = x; return super().forward(x)
    model = Spy([12, 8, 48], y=3, seeds=SEEDS, dtype=torch.float64)
    def loss_fn(logits, t):
        if t.dim() == 2:                                        # a training batch [y, b]
            rows = torch.tensor([[x_of[tuple(r.tolist())] for r in rep] for rep in model.last])
            assert torch.equal(rows, t); checked.append(1)
        return cross_entropy(logits, t)
    fit(model, sup, epochs=1, loss_fn=loss_fn, opt_func=partial(EntropySGD, lr=0.1, gamma=0.5, L=3, inner_lr=0.05),
        seeds=SEEDS, **KW, cbs=[losses()])
    assert len(checked) == 4 * 3

def test_supervised_bad_targets(data):
    sup = labelled(data)
    f = lambda d: fit(mlp(), d, epochs=1, loss_fn=cross_entropy)
    with pytest.raises(ValueError, match='t_train'): f(SimpleNamespace(**{**vars(sup), 't_train': sup.t_train[:-1]}))
    with pytest.raises(ValueError, match='t_test'): f(SimpleNamespace(**{**vars(sup), 't_test': None}))
    with pytest.raises(ValueError, match='t_train'): f(SimpleNamespace(**{**vars(sup), 't_train': None}))

# ------------------------------------------------------------------ learning-rate schedules
def test_lr_schedule_rows_and_scaled_keys(data):
    "The `lr` rows are the rates each epoch runs at (per parameter group); keys in `scale` follow lr in proportion."
    from entropic_ae.train import LRSchedule, cosine_lr as cosine, step_lr
    m = ae()
    groups = lambda ps: torch.optim.SGD([dict(params=ps[:2]), dict(params=ps[2:], lr=0.2)], lr=0.1)
    def opt_func(ps):
        o = groups(list(ps))
        for g in o.param_groups: g['inner_lr'] = 2 * g['lr']
        return o
    r = fit(m, data, epochs=4, opt_func=opt_func, cbs=[step_lr([1, 3], gamma=0.5), losses()], **KW)
    lr = r.df[r.df.metric == 'lr'].pivot_table(index='epoch', columns='param_group', values='value')
    assert lr[0].tolist() == pytest.approx([0.1, 0.05, 0.05, 0.025]) and lr[1].tolist() == pytest.approx([0.2, 0.1, 0.1, 0.05])
    assert [g['inner_lr'] for g in r.optimizer.param_groups] == pytest.approx([0.05, 0.1])     # twice the lr after the last step
    c = fit(ae(), data, epochs=2, opt_func=partial(torch.optim.SGD, lr=0.1), cbs=[cosine(2), losses()], **KW)
    assert c.df[c.df.metric == 'lr'].value.tolist() == pytest.approx([0.1, 0.05])
    with pytest.raises(TypeError, match='milestones'): step_lr(3)
    with pytest.raises(ValueError, match='milestones'): step_lr([0, 2])
    with pytest.raises(ValueError, match='eta_min'): cosine(3, eta_min=-1.)
    with pytest.raises(TypeError, match='make'): LRSchedule(None)

# ------------------------------------------------------------------ groups: one source (the optimizer's), a `group` column
def test_fit_takes_groups_from_the_optimizer(data):
    "Replicated(groups=2) trains two ensembles; fit, not told, evaluates their two barycentres (it refused, or averaged both, before)."
    seeds = [1, 2, 3, 4]
    opt = partial(Replicated, base=torch.optim.SGD, gamma=Exponential(0.2, 0.5), lr=0.05, groups=2)
    r = fit(ae(4, seeds), data, epochs=2, opt_func=opt, seeds=seeds, **KW, cbs=[losses(on=('barycentre', 'ensemble'))])
    for ev in ('barycentre', 'ensemble'):
        rows = r.df[r.df.eval_on == ev]
        assert sorted(rows.group.unique()) == [0, 1] and set(rows.replica) == {-1}
    want = recon_error(barycentre(r.model, 2)(data.x_train), data.x_train)      # [2]: each group's barycentre
    for g in range(2):
        got = r.df[(r.df.eval_on == 'barycentre') & (r.df.group == g) & (r.df.metric == 'train_loss') & (r.df.epoch == 2)].value.item()
        assert got == pytest.approx(want[g].item(), rel=1e-12)
    with pytest.raises(ValueError, match='groups=1'): fit(ae(4, seeds), data, epochs=1, opt_func=opt, seeds=seeds, **KW, cbs=[losses(groups=1)])

def test_barycentre_rows_carry_the_group_not_the_replica(data):
    "One group: replica -1 and group 0; independent trials evaluated in groups (an optimizer without groups) take fit's."
    r = fit(ae(), data, epochs=1, seeds=SEEDS, **KW, cbs=[losses(on=('replicas', 'barycentre'))])
    b = r.df[r.df.eval_on == 'barycentre']
    assert set(b.replica) == {-1} and set(b.group) == {0}
    assert r.df[r.df.eval_on == 'replicas'].group.isna().all()        # a replica's row has no group
    seeds = [1, 2, 3, 4]
    r = fit(ae(4, seeds), data, epochs=1, seeds=seeds, **KW, cbs=[losses(groups=2, on='ensemble')])
    assert sorted(r.df[r.df.eval_on == 'ensemble'].group.unique()) == [0, 1]

def test_one_name_per_idea():
    "The callback that logs γ and advances the schedules is `Schedules`; `Scoping` is only the γ schedule (optim)."
    from entropic_ae import train, optim
    from entropic_ae.train import Schedules
    assert 'Scoping' not in train.__all__ and not hasattr(train, 'Scoping') and issubclass(optim.Exponential, optim.Scoping)
    assert issubclass(Schedules, train.Callback)

def test_stop_at_loss_freezes_each_replica_where_it_reached_the_target():
    "Issue 18/19: each replica stops at the first epoch its full training loss is below the target (the same epoch as in a run without the rule), keeps that loss; the others are reported 'not reached'."
    from entropic_ae.train import StopAtLoss
    from entropic_ae.flatness import dataset_loss
    d = random_features(N=16, D=3, P=64, P_test=16, seed=4)
    data = (d.x_train.double(), d.x_test.double())
    mk = lambda: shallow_ae(16, 4, y=4, seeds=[0, 1, 2, 3], dtype=torch.float64)
    ref = fit(mk(), data, 10, bs=16, cbs=[Recorder(['train_loss'])])
    curve = ref.df[ref.df.metric == 'train_loss'].pivot(index='epoch', columns='replica', values='value')
    target = float(curve.loc[10].sort_values().iloc[1:3].mean())          # two replicas below, two above at the end
    res = fit(mk(), data, 10, bs=16, cbs=[Recorder(['train_loss']), StopAtLoss(target)])
    st = res.df[res.df.metric == 'status'].set_index('replica')
    assert sorted(st.index) == [0, 1, 2, 3] and sorted(st.status) == ['not reached'] * 2 + ['reached'] * 2
    loss = dataset_loss(res.model, data[0])
    for r in range(4):
        below = curve.index[(curve[r] < target) & (curve.index > 0)]
        if st.status[r] == 'reached':
            assert st.epoch[r] == below[0]
            assert abs(loss[r].item() - curve.loc[below[0], r]) < 1e-12
        else: assert len(below) == 0 and st.epoch[r] == 10
    assert res.active.tolist() == [st.status[r] == 'not reached' for r in range(4)]

def test_stop_at_loss_ends_the_run_and_refuses_bad_options():
    from entropic_ae.train import StopAtLoss
    d = random_features(N=16, D=3, P=64, P_test=16, seed=4)
    res = fit(shallow_ae(16, 4, y=2, seeds=[0, 1]), d, 5, cbs=[StopAtLoss(1e9)])
    assert res.epochs == 1 and not res.active.any()
    for kw, name in ((dict(targets=-0.1), 'target'), (dict(targets=0.1, on='ensemble'), 'on'), (dict(targets=0.1, every=0), 'every'),
                     (dict(targets=[]), 'targets'), (dict(targets=[0.1, 0.1]), 'distinct')):
        with pytest.raises((TypeError, ValueError), match=name): StopAtLoss(**kw)

# ------------------------------------------------------------------ one StopAtLoss for every target (issue 18)
TARGETS5 = [0.12, 0.1, 0.08, 0.06, 0.05]

def _deep_run(cbs, epochs=6, **kw):
    d = random_features(N=12, D=3, P=48, P_test=24, seed=1)
    m = deep_ae(12, 3, H=8, y=3, seeds=SEEDS)
    return fit(m, d, epochs, bs=12, opt_func=partial(torch.optim.Adam, lr=2e-2), seeds=SEEDS, cbs=cbs, **kw)

def test_one_stop_at_loss_equals_one_per_target():
    "Every target's snapshot, reached mask and status rows are bit for bit those of five one-target callbacks, whether it reuses the Recorder's loss or measures its own."
    one = StopAtLoss(TARGETS5, stop=False)
    a = _deep_run([one])
    many = [StopAtLoss(t, stop=False) for t in TARGETS5]
    b = _deep_run(many)
    alone = StopAtLoss(TARGETS5, stop=False)
    c = _deep_run([Recorder(metrics=()), alone])                        # nothing recorded: it measures the loss itself
    assert 0 < int(one.reached.sum()) < one.reached.numel()             # some targets reached by some replicas, not all
    for k, (t, s) in enumerate(zip(TARGETS5, many)):
        assert torch.equal(one.reached[k], s.reached[0]) and torch.equal(alone.reached[k], s.reached[0])
        for ma, mb, mc in zip(one.at_target(a.model, t).state_dict().values(), s.at_target(b.model).state_dict().values(),
                              alone.at_target(c.model, t).state_dict().values()):
            assert torch.equal(ma, mb) and torch.equal(mc, mb)
    key = ['replica', 'epoch', 'target', 'status']
    st = lambda r: r.df[r.df.metric == 'status'].sort_values(key)[key + ['value']].reset_index(drop=True)
    pd.testing.assert_frame_equal(st(a), st(b)); pd.testing.assert_frame_equal(st(c), st(b))
    with pytest.raises(ValueError, match='name one'): one.at_target(a.model)
    with pytest.raises(ValueError, match='targets'): one.at_target(a.model, 0.07)

def test_one_stop_at_loss_resumes(tmp_path):
    "A run stopped after 3 epochs and resumed has the uninterrupted run's snapshots."
    full = StopAtLoss(TARGETS5, stop=False)
    a = _deep_run([full])
    first = StopAtLoss(TARGETS5, stop=False)
    _deep_run([first, Checkpoint(tmp_path / 'ck.pt')], epochs=3)
    again = StopAtLoss(TARGETS5, stop=False)
    b = _deep_run([again, Checkpoint(tmp_path / 'ck.pt', resume=True)])
    assert torch.equal(again.reached, full.reached)
    for t in TARGETS5:
        for x, y in zip(full.at_target(a.model, t).state_dict().values(), again.at_target(b.model, t).state_dict().values()):
            assert torch.equal(x, y)
    with pytest.raises(ValueError, match='targets'):
        _deep_run([StopAtLoss(TARGETS5[:2], stop=False), Checkpoint(tmp_path / 'ck.pt', resume=True)])

def test_stop_at_loss_stops_at_the_lowest_target_and_keeps_the_others():
    stop = StopAtLoss([0.08, 1e9])                                      # everyone is below 1e9 at the first check
    r = _deep_run([stop], epochs=6)
    st = r.df[r.df.metric == 'status']
    assert set(st[st.target == 1e9].epoch) == {1} and len(st[st.target == 1e9]) == 3      # kept at 1e9, trained on
    assert not r.active.any() and stop.reached.all() and r.epochs == st[st.target == 0.08].epoch.max() > 1
    x = random_features(N=12, D=3, P=48, P_test=24, seed=1).x_train
    assert (dataset_loss(r.model, x) < 0.08).all()                      # frozen at the lowest: the model holds those weights

def test_stop_at_loss_measures_in_eval_mode():
    "Its loss pass neither moves batch-norm statistics nor draws dropout masks: training is the same with it as without (before, it ran the net in training mode)."
    from entropic_ae.replicas import replicate
    net = lambda: nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 12))
    d = random_features(N=12, D=3, P=48, P_test=24, seed=1)
    def run(cbs):
        torch.manual_seed(0)                                            # the dropout masks
        return fit(replicate(net, 2, seeds=[0, 1]), d, 3, bs=12, seeds=[0, 1], opt_func=partial(torch.optim.SGD, lr=0.1),
                   cbs=[Recorder(metrics=()), *cbs]).model
    a, b = run([]), run([StopAtLoss(0., stop=False)])
    for x, y in zip(a.state_dict().values(), b.state_dict().values()): assert torch.equal(x, y)

def test_barycentre_view_of_an_augmented_image_model_is_bn_barycentre():
    "evaluate's barycentre of an ImageModel with augmentation recomputes BN on the bare net, as vision.bn_barycentre does (before: on augmented images)."
    from types import SimpleNamespace
    from entropic_ae.vision import image_classifier, bn_barycentre
    from entropic_ae.train import evaluate
    g = torch.Generator().manual_seed(0)
    im = SimpleNamespace(x_train=torch.randn(32, 3, 8, 8, generator=g), t_train=torch.randint(0, 4, (32,), generator=g),
                         x_test=torch.randn(16, 3, 8, 8, generator=g), t_test=torch.randint(0, 4, (16,), generator=g))
    m = image_classifier('small_convnet', 2, seeds=[0, 1], shape=(3, 8, 8), classes=4, augment=True)
    with torch.no_grad():
        for mod in m.modules():                     # BN statistics far from the recomputed ones, so that a recompute shows
            if isinstance(mod, nn.BatchNorm2d): mod.running_mean.fill_(3.)
    via_evaluate = evaluate(m, im, ['train_loss', 'test_loss'], on='barycentre', loss_fn=cross_entropy)
    direct = evaluate(bn_barycentre(m, im.x_train), im, ['train_loss', 'test_loss'], loss_fn=cross_entropy, recompute_bn=False)
    assert [r['value'] for r in via_evaluate] == [r['value'] for r in direct]
