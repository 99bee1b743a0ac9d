"""Runs that cannot go wrong silently (issue 17): one active set checked on the weights after every step, resumes that
refuse what changed, batch-norm statistics updated once per step, schedulers that see the base optimizer's
hyperparameters, progress within an epoch, and bad input refused before any work."""
import math
from functools import partial
import pandas as pd
import pytest, torch
from torch import nn
from entropic_ae.data import random_features
from entropic_ae.models import shallow_ae, recon_error
from entropic_ae.replicas import barycentre
from entropic_ae.optim import Replicated, Exponential
from entropic_ae.train import fit, Recorder, Checkpoint, Progress

SEEDS = [3, 7, 11]
KW = dict(bs=12)    # 48 patterns, bs 12: 4 steps per epoch; fit's default Recorder: train and test loss

@pytest.fixture(scope='module')
def data(): return random_features(N=12, D=3, P=48, P_test=24, seed=0, dtype=torch.float64)

def ae(y=3, seeds=SEEDS): return shallow_ae(12, 3, y=y, seeds=seeds, dtype=torch.float64)

# ---------------------------------------------------------------- D1: one active set, checked on the weights
def inf_grad_at(base, at, who=1):
    "`base` (an optimizer class) whose gradient of replica `who` is inf in its step number `at`: the loss stays finite."
    class InfGrad(base):
        def __init__(self, params, **kw): super().__init__(params, **kw); self.n = 0
        def step(self, closure=None):
            self.n += 1
            if self.n != at: return super().step(closure)
            def poisoned():
                loss = None if closure is None else closure()
                for g in self.param_groups:
                    for p in g['params']:
                        if p.grad is not None: p.grad[who] = float('inf')
                return loss
            if closure is not None: return super().step(poisoned)
            poisoned(); return super().step()
    return InfGrad

@pytest.mark.parametrize('opt', ['adam', 'replicated'])
@pytest.mark.parametrize('at', [4, 6])                # the last step of epoch 1 (just before an evaluation), and one inside epoch 2
def test_nonfinite_weights_leave_at_once(data, opt, at):
    "An inf gradient in replica 1 (finite loss): one active set, one status row at that step, nothing non-finite evaluated."
    base = inf_grad_at(torch.optim.Adam if opt == 'adam' else torch.optim.SGD, at)
    opt_func = (partial(base, lr=1e-2) if opt == 'adam' else
                lambda ps: Replicated(ps, base=base, gamma=0.5, lr=0.05))
    res = fit(ae(), data, epochs=2, opt_func=opt_func, seeds=SEEDS, **KW, cbs=[Recorder(on=('replicas', 'barycentre', 'ensemble'))])
    assert res.active.tolist() == [True, False, True]
    if opt == 'replicated': assert res.optimizer.active.tolist() == res.active.tolist()
    st = res.df[res.df.metric == 'status']
    assert st.replica.tolist() == [1] and st.value.tolist() == [at] and st.epoch.tolist() == [(at - 1) // 4 + 1]
    assert res.df.value.map(math.isfinite).all()                       # no NaN row: not the barycentre's, not the ensemble's
    assert set(res.df[(res.df.replica == 1) & (res.df.metric != 'status')].epoch) <= set(range((at - 1) // 4 + 1))
    for p in res.model.parameters(): assert torch.isfinite(p[[0, 2]]).all()

def test_train_arms_barycentre_finite_when_last_step_diverges(data, monkeypatch):
    "compare.train_arms: a replica whose weights leave the reals in the very last step is not in the returned barycentre."
    from entropic_ae import compare
    class Late(compare.TracedReplicated):
        def __init__(self, ps, **kw): super().__init__(ps, **kw); self.n = 0
        def step(self, closure=None):
            self.n += 1
            if self.n == 8:                                # 2 epochs x 4 steps: the last step
                orig = closure
                def closure():
                    loss = orig()
                    for g in self.param_groups:
                        for p in g['params']: p.grad[1] = float('inf')
                    return loss
            return super().step(closure)
    monkeypatch.setattr(compare, 'TracedReplicated', Late)
    models, rows = compare.train_arms((data.x_train.float(), data.x_test.float()), compare.autoencoder_builder('shallow', 12, 3),
                                      trials=1, y=3, epochs=2, bs=12, lr=1e-2, gamma0=0.3, gamma1=0.5, arms=('replicated',))
    for p in models['replicated'].parameters(): assert torch.isfinite(p).all()
    df = pd.DataFrame(rows)
    assert df.value.map(math.isfinite).all() and len(df[(df.metric == 'dist_to_barycentre') & (df.epoch == 2)]) == 2

# ---------------------------------------------------------------- D2: resume refuses what changed, naming it
from entropic_ae.optim import EntropySGD, Linear
from entropic_ae.sam import SAM

RUNS = {'replicated': lambda: partial(Replicated, base=torch.optim.SGD, gamma=Exponential(0.05, 0.5), lr=0.05, momentum=0.9),
        'sam': lambda: partial(SAM, base=torch.optim.SGD, rho=0.05, per_replica=True, lr=0.1, momentum=0.9),
        'esgd': lambda: partial(EntropySGD, lr=0.5, gamma=0.03, L=2, inner_lr=0.05, seed=0),
        'adam': lambda: partial(torch.optim.Adam, lr=1e-2)}
CHANGES = [('replicated', partial(torch.optim.SGD, lr=0.05, momentum=0.9), "class: checkpoint 'Replicated', now 'SGD'"),
           ('replicated', partial(Replicated, base=torch.optim.SGD, gamma=Exponential(0.05, 0.6), lr=0.05, momentum=0.9), 'gamma.gamma1: checkpoint 0.5, now 0.6'),
           ('replicated', partial(Replicated, base=torch.optim.SGD, gamma=Linear(0.05, 0.5), lr=0.05, momentum=0.9), "gamma.schedule: checkpoint 'exponential', now 'linear'"),
           ('replicated', partial(Replicated, base=torch.optim.SGD, gamma=Exponential(0.05, 0.5), coupling='gradient', lr=0.05, momentum=0.9), "coupling: checkpoint 'elastic', now 'gradient'"),
           ('replicated', partial(Replicated, base=torch.optim.SGD, gamma=Exponential(0.05, 0.5), lr=0.05, momentum=0.5), 'base.param_groups[0].momentum: checkpoint 0.9, now 0.5'),
           ('replicated', partial(Replicated, base=torch.optim.Adam, gamma=Exponential(0.05, 0.5), lr=0.05), "base.class: checkpoint 'SGD', now 'Adam'"),
           ('sam', partial(SAM, base=torch.optim.SGD, rho=0.1, per_replica=True, lr=0.1, momentum=0.9), 'base.param_groups[0].rho: checkpoint 0.05, now 0.1'),
           ('sam', partial(SAM, base=torch.optim.SGD, rho=0.05, adaptive=True, per_replica=True, lr=0.1, momentum=0.9), 'adaptive: checkpoint False, now True'),
           ('sam', partial(SAM, base=torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9), 'per_replica: checkpoint True, now False'),
           ('esgd', partial(EntropySGD, lr=0.5, gamma=0.03, L=3, inner_lr=0.05, seed=0), 'L: checkpoint 2, now 3'),
           ('esgd', partial(EntropySGD, lr=0.5, gamma=0.03, L=2, inner_lr=0.05, noise=1e-3, seed=0), 'noise: checkpoint 0.0001, now 0.001'),
           ('adam', partial(torch.optim.Adam, lr=1e-2, betas=(0.8, 0.999)), 'betas: checkpoint [0.9, 0.999], now [0.8, 0.999]'),
           ('adam', partial(torch.optim.Adam, lr=2e-2), 'lr: checkpoint 0.01, now 0.02'),
           ('adam', partial(torch.optim.Adam, lr=1e-2, weight_decay=1e-4), 'weight_decay: checkpoint 0, now 0.0001')]

@pytest.mark.parametrize('kind, now, message', CHANGES, ids=[m.split(':')[0] for _, _, m in CHANGES])
def test_resume_refuses_a_changed_optimizer(data, tmp_path, kind, now, message):
    ck = tmp_path / 'ck.pt'
    fit(ae(), data, epochs=1, opt_func=RUNS[kind](), seeds=SEEDS, **KW, cbs=[Checkpoint(ck)])
    with pytest.raises(ValueError, match='resume') as e:
        fit(ae(), data, epochs=2, opt_func=now, seeds=SEEDS, **KW, cbs=[Checkpoint(ck, resume=True)])
    assert message in str(e.value)
    fit(ae(), data, epochs=2, opt_func=RUNS[kind](), seeds=SEEDS, **KW, cbs=[Checkpoint(ck, resume=True)])   # the same settings resume

@pytest.mark.parametrize('kind', ['replicated', 'esgd'])
def test_resume_extends_a_finished_run(data, tmp_path, kind):
    "A finished 2-epoch run resumed with epochs=3 is the 3-epoch run; epochs=1 is refused."
    ck = tmp_path / 'ck.pt'
    run = lambda epochs, *kw: fit(ae(), data, epochs=epochs, opt_func=RUNS[kind](), seeds=SEEDS, **KW,
                                   cbs=[Recorder(on=('replicas', 'barycentre')), *kw])
    whole = run(3)
    run(2, Checkpoint(ck))
    more = run(3, Checkpoint(ck, resume=True))
    for a, b in zip(whole.model.parameters(), more.model.parameters()): assert torch.equal(a, b)
    pd.testing.assert_frame_equal(whole.df, more.df)
    assert more.epochs == 3 and torch.load(ck, weights_only=True)['epoch'] == 3
    with pytest.raises(ValueError, match=r'epochs=3.*epochs=1'): run(1, Checkpoint(ck, resume=True))

@pytest.mark.parametrize('target', [0.02, 1e9], ids=['some not reached', 'all stopped'])
def test_rerun_of_a_finished_run_changes_nothing(data, tmp_path, target):
    "The same finished run started again with resume=True trains nothing: the same rows (no status row dated epoch 1), the same epochs and weights, and a checkpoint still at its last epoch (it was rewritten as epoch 1 when every replica had stopped)."
    from entropic_ae.train import StopAtLoss
    ck = tmp_path / 'ck.pt'
    run = lambda: fit(ae(), data, epochs=4, opt_func=partial(torch.optim.Adam, lr=1e-2), seeds=SEEDS, **KW,
                      cbs=[StopAtLoss(target), Checkpoint(ck, resume=True)])
    first = run()
    saved = torch.load(ck, weights_only=True)['epoch']
    st = first.df[first.df.metric == 'status']
    assert set(st.status) == ({'not reached'} if target < 1 else {'reached'}) and set(st.epoch) == {first.epochs}
    for _ in range(2):
        again = run()
        pd.testing.assert_frame_equal(first.df, again.df)
        assert again.epochs == first.epochs and torch.equal(again.active, first.active)
        for a, b in zip(first.model.parameters(), again.model.parameters()): assert torch.equal(a, b)
        assert torch.load(ck, weights_only=True)['epoch'] == saved == first.epochs

# ---------------------------------------------------------------- D3: batch-norm statistics move once per step under fit
from entropic_ae.replicas import replicate

def bn_net(): return replicate(lambda: nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 12)), 3,
                               seeds=SEEDS).double()

def bn_fit(data, opt_func, epochs=3):
    return fit(bn_net(), data, epochs=epochs, opt_func=opt_func, seeds=SEEDS, **{**KW, 'bs': 16})   # 3 steps per epoch

def test_sam_under_fit_updates_bn_statistics_once_per_step(data):
    "SAM with rho=0 under fit is its base optimizer bit for bit, running statistics included: 9 updates after 9 steps, not 18."
    sgd = bn_fit(data, partial(torch.optim.SGD, lr=0.1, momentum=0.9))
    sam = bn_fit(data, partial(SAM, base=torch.optim.SGD, rho=0., per_replica=True, lr=0.1, momentum=0.9))
    bufs = lambda r: dict(r.model.named_buffers())
    assert set(bufs(sam)['module.1.num_batches_tracked'].tolist()) == {9}
    for k, v in bufs(sgd).items(): assert torch.equal(v, bufs(sam)[k]), k
    for a, b in zip(sgd.model.parameters(), sam.model.parameters()): assert torch.equal(a, b)

def test_entropy_sgd_under_fit_updates_bn_statistics_once_per_step(data):
    "Entropy-SGD's L passes per step: only the first (at the anchor, on the step's minibatch) moves the running statistics."
    r = bn_fit(data, partial(EntropySGD, lr=0.5, gamma=0.03, L=3, inner_lr=0.05, seed=0))
    assert set(dict(r.model.named_buffers())['module.1.num_batches_tracked'].tolist()) == {9}
    assert all(l.track_running_stats for l in r.model.modules() if isinstance(l, nn.BatchNorm1d))

# ---------------------------------------------------------------- schedulers see the base optimizer's hyperparameters
def one_cycle(make, steps=6):
    "lr and momentum (or beta1) of group 0 over `steps` OneCycleLR steps with momentum cycling, on a toy quadratic."
    w = nn.Parameter(torch.linspace(-1, 1, 6, dtype=torch.float64).view(3, 2))
    opt = make([w])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps, cycle_momentum=True)
    seen = []
    for _ in range(steps):
        g = opt.param_groups[0]
        seen.append((g['lr'], g['betas'][0] if 'betas' in g else g['momentum']))
        def closure(): opt.zero_grad(); loss = w.square().sum(); loss.backward(); return loss
        opt.step(closure); sched.step()
    return seen

@pytest.mark.parametrize('wrapped, bare', [
    (partial(SAM, base=torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9), partial(torch.optim.SGD, lr=0.1, momentum=0.9)),
    (partial(SAM, base=torch.optim.Adam, rho=0.05, lr=0.1), partial(torch.optim.Adam, lr=0.1)),
    (partial(Replicated, base=torch.optim.SGD, gamma=0.5, lr=0.1, momentum=0.9), partial(torch.optim.SGD, lr=0.1, momentum=0.9)),
    (partial(SAM, base=partial(Replicated, base=torch.optim.SGD, gamma=0.5), rho=0.05, lr=0.1, momentum=0.9), partial(torch.optim.SGD, lr=0.1, momentum=0.9))],
    ids=['sam-sgd', 'sam-adam', 'replicated-sgd', 'sam-replicated-sgd'])
def test_one_cycle_sees_the_base_momentum(wrapped, bare):
    got, want = one_cycle(wrapped), one_cycle(bare)
    assert got == want and len({m for _, m in got}) > 2          # lr and momentum both cycle, exactly as on the bare base

# ---------------------------------------------------------------- progress within an epoch
class Bar:
    "Stands in for tqdm: records what the progress callback asks of it."
    made = []
    def __init__(self, total, initial=0, **kw): self.total, self.n, self.posts = total, initial, []; Bar.made.append(self)
    def update(self, k): self.n += k
    def set_postfix_str(self, s, refresh=True): self.posts.append(s)
    def close(self): pass

def test_progress_counts_steps(data, tmp_path, monkeypatch):
    from entropic_ae import train
    monkeypatch.setattr(train, 'tqdm', Bar)
    ck = tmp_path / 'ck.pt'
    fit(ae(), data, epochs=2, seeds=SEEDS, **KW, cbs=[Checkpoint(ck), Progress()])
    bar = Bar.made[-1]
    assert (bar.total, bar.n) == (8, 8) and bar.posts[0] == 'epoch 1/2' and bar.posts[-1].startswith('epoch 2/2, loss ')
    fit(ae(), data, epochs=3, seeds=SEEDS, **KW, cbs=[Checkpoint(ck, resume=True), Progress()])
    bar = Bar.made[-1]
    assert (bar.total, bar.n) == (12, 12)                              # a resumed run starts its bar where it stopped

def test_progress_is_masked_by_the_book_check():
    from entropic_ae.book import mask
    from tqdm import tqdm
    import io
    out = io.StringIO()
    with tqdm(total=12, desc='run', unit='step', file=out, mininterval=0) as b:
        b.set_postfix_str('epoch 1/3'); b.update(5)
    assert set(mask(out.getvalue().replace('\r', '\n')).split()) == {'<progress>'}

# ---------------------------------------------------------------- bad input: refused before any work, naming the parameter
from entropic_ae.train import evaluate

class Spy(torch.optim.SGD):
    "SGD that counts its steps: a refused run must not have taken one."
    steps = 0
    def step(self, closure=None): Spy.steps += 1; return super().step(closure)

@pytest.mark.parametrize('kw, name', [
    (dict(momentum=float('nan')), 'momentum'), (dict(weight_decay=float('inf')), 'weight_decay'),
    (dict(momentum=-0.5), 'momentum'), (dict(dampening=float('nan')), 'dampening')])
def test_replicated_refuses_bad_base_options(kw, name):
    with pytest.raises(ValueError, match=name): Replicated(ae().parameters(), base=torch.optim.SGD, lr=0.1, **kw)
    with pytest.raises(ValueError, match=name): SAM(ae().parameters(), base=torch.optim.SGD, lr=0.1, **kw)

@pytest.mark.parametrize('kw, name', [(dict(betas=(float('nan'), 0.999)), 'betas'), (dict(betas=(0.9, 1.5)), 'betas'),
                                      (dict(eps=float('nan')), 'eps'), (dict(betas=0.9), 'betas')])
def test_adam_bases_refuse_bad_options(kw, name):
    with pytest.raises((ValueError, TypeError), match=name): Replicated(ae().parameters(), base=torch.optim.Adam, lr=0.1, **kw)

def test_replicated_add_param_group_checks_the_replica_axis():
    m = ae()
    opt = Replicated([m.encoder.weight] if hasattr(m, 'encoder') else list(m.parameters())[:1], base=torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match='param_group'): opt.add_param_group(dict(params=[nn.Parameter(torch.zeros(2, 4))]))
    opt.add_param_group(dict(params=[nn.Parameter(torch.zeros(3, 4))], lr=0.01))
    assert len(opt.param_groups) == len(opt.base.param_groups) == 2 and opt.param_groups[1]['lr'] == 0.01
    assert opt.param_groups[1]['momentum'] == 0                         # the base's defaults filled in

@pytest.mark.parametrize('make, name', [
    (lambda d, p: dict(cbs=[Recorder(groups=2)], opt_func=partial(Replicated, base=Spy, groups=3, lr=0.1), model=ae(6, list(range(6)))), 'groups'),
    (lambda d, p: dict(cbs=[Recorder(groups=1)], opt_func=partial(Replicated, base=Spy, groups=3, lr=0.1), model=ae(6, list(range(6)))), 'groups'),
    (lambda d, p: dict(cbs=[3]), 'cbs'),
    (lambda d, p: dict(cbs=3), 'cbs'),
    (lambda d, p: dict(data=(d.x_train.long(), d.x_test)), 'x_train'),
    (lambda d, p: dict(data=(d.x_train, d.x_test.int())), 'x_test')])
def test_fit_refuses_before_any_step(data, tmp_path, make, name):
    (tmp_path / 'a_file').write_text('not a folder')
    kw = dict(model=ae(), data=data, epochs=1, opt_func=partial(Spy, lr=0.1), **KW)
    kw.update(make(data, tmp_path))
    Spy.steps = 0
    with pytest.raises((ValueError, TypeError), match=name): fit(**kw)
    assert Spy.steps == 0

@pytest.mark.parametrize('where, name', [(lambda p: p / 'a_file' / 'ck.pt', 'path'), (lambda p: p, 'path'), (lambda p: 3, 'path')])
def test_checkpoint_refuses_a_path_it_cannot_write_at_construction(tmp_path, where, name):
    (tmp_path / 'a_file').write_text('not a folder')
    with pytest.raises((ValueError, TypeError), match=name): Checkpoint(where(tmp_path))

def test_fit_refuses_a_folder_it_cannot_write(data, tmp_path):
    import os
    ro = tmp_path / 'ro'; ro.mkdir(); ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK): pytest.skip('running as a user who may write anywhere')
        with pytest.raises(ValueError, match='path'): Checkpoint(ro / 'ck.pt')
    finally: ro.chmod(0o700)

def test_evaluate_refuses_a_wrong_active_mask(data):
    m = ae()
    for bad, exc in [(torch.tensor([True, False]), ValueError), (torch.tensor([1, 0, 1]), TypeError), ([True, True, True], TypeError)]:
        with pytest.raises(exc, match='active'): evaluate(m, data, ['train_loss'], active=bad)

def test_finite_replicas_is_exact_when_sums_overflow():
    from entropic_ae.optim import finite_replicas
    w, big = torch.zeros(3, 4), torch.full((3, 2), 3e38)             # big: finite, but its row sums overflow
    w[1, 2] = float('nan')
    assert finite_replicas([w, big], 3).tolist() == [True, False, True]
    assert finite_replicas([big], 3).tolist() == [True, True, True]
    assert finite_replicas([w], 3, among=torch.tensor([True, False, True])).tolist() == [True, True, True]
