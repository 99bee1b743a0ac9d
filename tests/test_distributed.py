"""Replicated training over ranks (`entropic_ae.distributed`) equals the stacked run, step by step.

Three gloo processes on the CPU (float64) train a tiny batch-norm net and record, after every step, their parameters,
BN buffers and active flags, and at the end the γ history; the single-process stacked run with the same seeds
(`train.fit` + `optim.Replicated`) records the same, and the same tidy rows. Both take their recording and
checkpoint settings as `fit`'s callbacks (`Recorder`, `Checkpoint` in `cbs`). Scenarios: elastic and gradient coupling,
each with a replica that dies mid-run; six replicas in two groups that span ranks, coupled every second step; the
same groups with the lagged coupling and one minibatch order per group (`batches='shared'`); six replicas in three
groups, so that a rank's two replicas are not a multiple of the groups; a run with `Checkpoint(path, resume=True)`
killed while saving (after every rank wrote its part, before the epoch was recorded), resumed, and started again once
finished (one rank without a replica left: it used to save alone and wait for the others); a rank that dies,
which must make the others stop with a clear error within the process group's timeout. One spawn runs them all.
Bad callbacks are refused before any work (one process, no spawn).
"""
import os, time
from functools import partial
import pytest
import torch
from torch import nn
import torch.multiprocessing as mp
from entropic_ae.optim import Replicated, Exponential
from entropic_ae.replicas import replicate
from entropic_ae.train import fit, Callback, Guard, Recorder, Checkpoint, Progress
from entropic_ae import distributed as D

WORLD, TIMEOUT, TOL = 3, 5., 1e-12

def make_model(seeds):
    f = lambda: nn.Sequential(nn.Linear(4, 3, bias=False), nn.BatchNorm1d(3), nn.Tanh(), nn.Linear(3, 4))
    return replicate(f, len(seeds), seeds=list(seeds), backend='loop').double()

def data(): return torch.rand(24, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

# name: (y, optimizer options, replica that dies, at which step (completed steps), checkpointed)
SCENARIOS = dict(
    elastic=(3, dict(gamma=Exponential(0.5, 0.5), coupling='elastic', lr=0.05), 1, 4, False),
    gradient=(3, dict(gamma=Exponential(0.2, 1.), coupling='gradient', base=partial(torch.optim.SGD, momentum=0.9), lr=0.05), 2, 5, False),
    span=(6, dict(gamma=2., coupling='elastic', groups=2, every=2, lr=0.05), 2, 3, False),
    shared=(6, dict(gamma=0.3, coupling='lagged', groups=2, batches='shared', lr=0.05), 4, 2, False),
    thirds=(6, dict(gamma=1., coupling='gradient', groups=3, lr=0.05), 3, 2, False),
    resume=(3, dict(gamma=Exponential(0.5, 0.5), coupling='elastic', lr=0.05), 0, 1, True))

class Die(Callback):
    "Replica `replica` (on the whole axis) leaves the ensemble during the step after `at` completed steps."
    order = -20
    def __init__(self, replica, at, first=0): self.replica, self.at, self.first = replica, at, first
    def after_loss(self, L):
        r = self.replica - self.first
        if L.step == self.at and 0 <= r < L.y:
            next(c for c in L.cbs if isinstance(c, Guard)).drop(L, torch.arange(L.y) == r, L.step, status='killed')

class Trace(Callback):
    "Parameters, buffers and active flags after every step, by step number."
    order = 50
    def __init__(self): self.steps = {}
    def after_step(self, L):
        self.steps[L.step] = dict(params=[p.detach().clone() for p in L.model.parameters()],
                                  buffers=[b.clone() for b in L.model.buffers()], active=L.active.clone(),
                                  active_all=getattr(L, 'active_all', L.active).clone())

def run_stacked(name):
    y, kw, dies, at, _ = SCENARIOS[name]
    opt = partial(D.DistributedReplicated if kw.get('every', 1) > 1 else Replicated, **{k: v for k, v in kw.items() if k != 'every' or v > 1})
    tr = Trace()
    res = fit(make_model(range(y)), data(), 3, 8, opt, cbs=[Die(dies, at), tr, Recorder(metrics=('train_loss',))])
    return tr.steps, res.optimizer.gamma_history, res.active, res.rows

class _Crash(Exception): pass

def run_ranks(name, tmp):
    y, kw, dies, at, ckpt = SCENARIOS[name]
    first = D.replica_slice(y).start
    go = lambda tr, *cbs: D.fit_ranks(make_model, data(), y, 3, 8, partial(D.DistributedReplicated, **kw),
                                      cbs=[Recorder(metrics=('train_loss',)), Die(dies, at, first), tr, *cbs], timeout=TIMEOUT)
    tr, ck = Trace(), lambda: Checkpoint(tmp/'ckpt.pt', resume=True)   # fit's callback; the parts go to tmp/ckpt.ranks
    if not ckpt: res = go(tr)
    else:                                      # killed while saving epoch 2: every part written, LATEST not yet moved
        commit = D.RankCheckpoint.commit
        def crash(self, epoch):
            if epoch == 2: raise _Crash()
            commit(self, epoch)
        D.RankCheckpoint.commit = crash
        try: go(Trace(), ck())                 # nothing to resume yet: starts afresh
        except _Crash: pass
        finally: D.RankCheckpoint.commit = commit
        latest, parts = (tmp/'ckpt.ranks'/'LATEST').read_text(), sorted(p.name for p in (tmp/'ckpt.ranks'/'epoch-2').glob('*.pt'))
        D.barrier('test: before resuming')
        res = go(tr, ck())
        tr.steps['latest_after_kill'], tr.steps['parts_after_kill'] = latest, parts
        again = go(Trace(), ck())              # the finished run started again; rank 0 has no replica left, the others have
        tr.steps['rerun'] = (repr(again.rows) == repr(res.rows), again.epochs, again.active.tolist(), (tmp/'ckpt.ranks'/'LATEST').read_text())
    return tr.steps, res.optimizer.gamma_history, res.active, res.rows

def worker(rank, tmp):
    torch.set_num_threads(1)
    D.setup('gloo', TIMEOUT, init_method=f'file://{tmp}/store', rank=rank, world_size=WORLD)
    torch.save({n: run_ranks(n, tmp) for n in SCENARIOS}, tmp/f'rank{rank}.pt')
    # a rank dies: the others must stop with a clear error, not hang
    class Exit(Callback):
        def after_loss(self, L):
            if rank == 2 and L.step == 2: os._exit(3)
    t0 = time.monotonic()
    try:
        D.fit_ranks(make_model, data(), 3, 3, 8, partial(D.DistributedReplicated, gamma=1., lr=0.05), cbs=[Recorder(metrics=()), Exit()])
        msg = 'no error'
    except RuntimeError as e: msg = str(e)
    (tmp/f'fault{rank}.txt').write_text(f'{time.monotonic() - t0:.3f}\n{msg}')
    os._exit(0)                                 # no teardown of the broken group

@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('dist')
    refs = {n: run_stacked(n) for n in SCENARIOS}    # first: the ranks fork a warm process (the first optimizer imports torch._dynamo)
    ctx = mp.get_context('fork')            # the parent's imports are inherited: no 3x torch import
    ps = [ctx.Process(target=worker, args=(r, tmp)) for r in range(WORLD)]
    for p in ps: p.start()
    for p in ps: p.join(60)
    alive = [r for r, p in enumerate(ps) if p.is_alive()]
    for p in ps:
        if p.is_alive(): p.kill()
    assert not alive, f"ranks {alive} hung"
    assert [p.exitcode for p in ps] == [0, 0, 3], [p.exitcode for p in ps]
    return tmp, refs, [torch.load(tmp/f'rank{r}.pt', weights_only=False) for r in range(WORLD)]

def max_dev(ref, got, first, n):
    "Largest deviation of the ranks' slices from the stacked run, over steps, parameters and buffers."
    dev = 0.
    for s, st in ref.items():
        g = got[s]
        for k in ('params', 'buffers'):
            for a, b in zip(st[k], g[k]):
                if a.is_floating_point(): dev = max(dev, (a[first:first + n] - b).abs().max().item())
                else: assert torch.equal(a[first:first + n], b)
        assert torch.equal(st['active'][first:first + n], g['active']), s
        assert torch.equal(st['active'], g['active_all']), s
    return dev

@pytest.mark.parametrize('name', list(SCENARIOS))
def test_ranks_equal_the_stacked_run(ranks, name):
    tmp, refs, out = ranks
    ref, gammas, active, ref_rows = refs[name]
    y = SCENARIOS[name][0]
    devs = []
    for r, res in enumerate(out):
        steps, g, act, rows = res[name]
        got = {s: v for s, v in steps.items() if isinstance(s, int)}
        expect = {s: v for s, v in ref.items() if s in got} if name == 'resume' else ref
        assert sorted(got) == sorted(expect) and len(got) >= (6 if name == 'resume' else 9), sorted(got)
        devs.append(max_dev(expect, got, r * (y // WORLD), y // WORLD))
        assert g == gammas and torch.equal(act, active)
        if r == 0:                               # the gathered rows: every replica's, on the whole axis, as the stacked run's
            key = lambda row: repr(sorted((k, v) for k, v in row.items() if k != 'value'))
            a, b = sorted(ref_rows, key=key), sorted(rows, key=key)
            assert [key(x) for x in a] == [key(x) for x in b] and any(x['metric'] == 'train_loss' for x in a)
            assert max(abs(x['value'] - z['value']) for x, z in zip(a, b)) <= TOL
    print(f"{name}: max |ranks - stacked| = {max(devs):.3g}")
    assert max(devs) <= TOL
    dead = SCENARIOS[name][2]
    assert not active[dead] and int(active.sum()) == y - 1        # the death happened and was seen
    if name == 'resume':                          # all or none: the half-written epoch 2 did not count
        assert out[0][name][0]['latest_after_kill'] == 'epoch 1\n'
        assert out[0][name][0]['parts_after_kill'] == ['rank-0.pt', 'rank-1.pt', 'rank-2.pt']
        assert min(s for s in out[0][name][0] if isinstance(s, int)) == 4    # resumed after epoch 1 (3 steps)
        for r in range(WORLD):                    # started again when finished: the same result on every rank, no hang, no new save
            assert out[r][name][0]['rerun'] == (True, 3, active.tolist(), 'epoch 3\n'), out[r][name][0]['rerun']

def test_rank_death_stops_the_others_with_a_clear_error(ranks):
    tmp = ranks[0]
    for r in (0, 1):
        secs, msg = (tmp/f'fault{r}.txt').read_text().split('\n', 1)
        assert 'a peer rank died or did not answer' in msg, msg
        assert float(secs) < TIMEOUT + 5, secs

def test_bad_callbacks_are_refused_before_any_work(tmp_path):
    "fit_ranks checks fit's callbacks as fit does, naming the parameter, before it builds the model."
    built = []
    go = lambda cbs, **k: D.fit_ranks(lambda seeds: built.append(seeds), data(), 3, 1, 8, cbs=cbs, **k)
    class MyCheckpoint(Checkpoint): pass
    for cbs, err, msg in (([Recorder(), Recorder(metrics=())], ValueError, 'at most one Recorder'),
                          ([Recorder(), 'Progress'], TypeError, 'cbs[1] must be a train.Callback'),
                          (Progress(), TypeError, 'cbs must be a list'),
                          ([Recorder(on='barycentre')], ValueError, "on: on ranks only the replicas"),
                          ([MyCheckpoint(tmp_path/'a.pt')], TypeError, 'cbs[0]: fit_ranks makes a Checkpoint rank-aware')):
        with pytest.raises(err, match=None) as e: go(cbs)
        assert msg in str(e.value), str(e.value)
    with pytest.raises(ValueError, match='timeout'): go([], timeout=-1.)
    assert built == []
