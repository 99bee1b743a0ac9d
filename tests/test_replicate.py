"Tests for the core redesign: any module replicated, grouped ensembles, the optimizer protocol, divergence and resume."
import math
from functools import partial
from types import SimpleNamespace
import pandas as pd
import pytest, torch
from torch import nn
from entropic_ae.data import random_features
from entropic_ae.models import recon_error, cross_entropy
from entropic_ae.replicas import replicate, replica, stack, barycentre, n_replicas, BACKENDS
from entropic_ae.optim import Replicated, EntropySGD, Exponential, fit_hooks
from entropic_ae.sam import SAM
from entropic_ae.train import fit, Checkpoint, Recorder

SEEDS = [3, 7, 11]

def mlp(): return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 12), nn.Sigmoid())
def bn_net(): return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3))

@pytest.fixture(scope='module')
def ae_data(): return random_features(N=12, D=3, P=48, P_test=24, seed=0, dtype=torch.float64)

@pytest.fixture(scope='module')
def img_data():
    g = torch.Generator().manual_seed(0)
    return SimpleNamespace(x_train=torch.randn(48, 2, 4, 4, generator=g, dtype=torch.float64), t_train=torch.randint(0, 3, (48,), generator=g),
                           x_test=torch.randn(24, 2, 4, 4, generator=g, dtype=torch.float64), t_test=torch.randint(0, 3, (24,), generator=g))

KW = dict(bs=12)                 # fit's default Recorder: train_loss and test_loss every epoch

@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('kind', ['mlp', 'bn_net'])
def test_stacked_training_equals_one_by_one(ae_data, img_data, backend, kind):
    "Any module, replicated and trained through fit, equals its replicas trained alone (float64), BN in train and eval mode."
    make, data, loss = (mlp, ae_data, recon_error) if kind == 'mlp' else (bn_net, img_data, cross_entropy)
    opt = partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    st = fit(replicate(make, 3, seeds=SEEDS, backend=backend).double(), data, epochs=2, opt_func=opt, loss_fn=loss, **KW)
    for r, s in enumerate(SEEDS):
        one = fit(replicate(make, 1, seeds=[s], backend=backend).double(), data, epochs=2, opt_func=opt, loss_fn=loss, **KW)
        for (n, a), b in zip(st.model.state_dict().items(), one.model.state_dict().values()):
            torch.testing.assert_close(a[r:r+1].double(), b.double(), rtol=1e-9, atol=1e-11, msg=n)
        x = data.x_test
        torch.testing.assert_close(st.model.eval()(x)[r:r+1], one.model.eval()(x), rtol=1e-9, atol=1e-11)
        pd.testing.assert_frame_equal(st.df[st.df.replica == r].drop(columns='replica').reset_index(drop=True),
                                      one.df.drop(columns='replica').reset_index(drop=True), rtol=1e-8, atol=1e-12)

def test_backends_agree(img_data):
    a, b = (replicate(bn_net, 3, seeds=SEEDS, backend=be).double() for be in BACKENDS)
    x = img_data.x_train[:8]
    for _ in range(2): torch.testing.assert_close(a(x), b(x))               # train mode: running statistics move
    torch.testing.assert_close(a.eval()(x), b.eval()(x))
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()): torch.testing.assert_close(p, q, msg=n)

@pytest.mark.parametrize('backend', BACKENDS)
def test_dropout_per_replica_in_distribution(backend):
    m = replicate(nn.Sequential(nn.Linear(4, 4000), nn.Dropout(0.3)), 6, backend=backend)
    out = m(torch.ones(2, 4))
    zero = (out == 0).float()
    assert zero.mean().item() == pytest.approx(0.3, abs=0.01)              # the right rate ...
    agree = (zero[0] == zero[1]).float().mean().item()
    assert agree == pytest.approx(0.3**2 + 0.7**2, abs=0.02)               # ... drawn independently per replica

def test_replica_stack_barycentre_carry_buffers():
    m = replicate(bn_net, 4, seeds=range(4))
    m(torch.randn(4, 5, 2, 4, 4))
    back = stack([replica(m, i) for i in range(4)])
    for (n, a), b in zip(m.state_dict().items(), back.state_dict().values()): assert torch.equal(a, b), n
    assert n_replicas(barycentre(m)) == 1 and back.seeds == [0, 1, 2, 3]

def test_replicate_bad_input():
    with pytest.raises(ValueError, match='distinct'): replicate(mlp, 2, seeds=[1, 1])
    with pytest.raises(ValueError, match='seeds'): replicate(mlp, 2, seeds=[1])
    with pytest.raises(ValueError, match='y must be'): replicate(mlp, 0)
    with pytest.raises(TypeError, match='module'): replicate(3, 2)
    with pytest.raises(TypeError, match='module'): replicate(lambda: 3, 2)
    with pytest.raises(ValueError, match='sample_dims'): replicate(lambda: nn.Sequential(nn.ReLU()), 2)
    with pytest.raises(ValueError, match='backend'): replicate(mlp, 2, backend='jit')

# ---------------------------------------------------------------- groups and the optimizer protocol
def test_grouped_fit_equals_separate_ensembles(ae_data):
    "k groups of y replicas in one stacked model train exactly as k separate Replicated ensembles."
    seeds = [1, 2, 3, 4, 5, 6]
    opt = lambda groups: partial(Replicated, gamma=Exponential(0.2, 0.5), lr=1e-2, groups=groups)
    build = lambda ss: replicate(mlp, len(ss), seeds=ss).double()
    both = fit(build(seeds), ae_data, epochs=3, opt_func=opt(2), **KW, cbs=[Recorder(on=('replicas', 'barycentre'))])
    for g in range(2):
        ss = seeds[3*g:3*g+3]
        one = fit(build(ss), ae_data, epochs=3, opt_func=opt(1), **KW, cbs=[Recorder(on=('replicas', 'barycentre'))])
        for a, b in zip(both.model.parameters(), one.model.parameters()):
            torch.testing.assert_close(a[3*g:3*g+3], b, rtol=1e-9, atol=1e-11)
        mine = both.df[(both.df.eval_on == 'barycentre') & (both.df.group == g)].value.to_numpy()
        theirs = one.df[one.df.eval_on == 'barycentre'].value.to_numpy()
        assert len(mine) == len(theirs) > 0 and mine == pytest.approx(theirs, rel=1e-9)

def test_sam_around_replicated_scopes_like_replicated(ae_data):
    "The bug this protocol fixes: SAM(Replicated) used to keep γ at its initial value and log no γ rows."
    base = partial(Replicated, base=torch.optim.SGD, gamma=Exponential(0.1, 1.0))
    sam = fit(replicate(mlp, 3, seeds=SEEDS).double(), ae_data, epochs=3, opt_func=partial(SAM, base=base, rho=0.05, per_replica=True, lr=0.1), **KW)
    alone = fit(replicate(mlp, 3, seeds=SEEDS).double(), ae_data, epochs=3, opt_func=partial(base, lr=0.1), **KW)
    g = lambda r: r.df[r.df.metric == 'gamma'].value.tolist()
    assert g(sam) == g(alone) == pytest.approx([0.1, 0.2, 0.4])
    assert sam.optimizer.gamma == alone.optimizer.gamma == pytest.approx(0.8)

def test_entropy_sgd_gamma_row_is_the_gamma_used_during_the_epoch(ae_data):
    "With per-step scoping, the row of epoch e is γ at the epoch's first step, not after its last."
    r = fit(replicate(mlp, 3, seeds=SEEDS).double(), ae_data, epochs=3,
            opt_func=partial(EntropySGD, lr=0.1, gamma=Exponential(0.01, 0.1), L=2, seed=0), **KW)
    steps = 48 // 12
    assert r.df[r.df.metric == 'gamma'].value.tolist() == pytest.approx([0.01 * 1.1 ** (steps * e) for e in range(3)])

def test_protocol_is_forwarded_and_plain_optimizers_get_defaults():
    w = nn.Parameter(torch.zeros(3, 2))
    rep = SAM([w], base=partial(Replicated, gamma=0.5), lr=0.1, per_replica=True)
    fit_hooks(rep).drop_replicas(torch.tensor([False, True, False]))
    assert rep.base.active.tolist() == [True, False, True]
    plain = fit_hooks(torch.optim.SGD([w], lr=0.1))
    assert (plain.gamma, plain.fresh_batches) == (None, False)
    with pytest.raises(TypeError, match='torch.optim.Optimizer'): fit_hooks(object())

def test_survivors_train_as_the_smaller_ensemble_when_weights_go_non_finite():
    "Replica 1's weights become -inf in the base step of step t; from that step's coupling on, 0 and 2 are a 2-replica ensemble."
    w0 = torch.randn(3, 5, dtype=torch.float64)
    grad = lambda w: 2 * (w - torch.arange(5.).double())          # loss sum (w - c)^2 per replica
    def run(w_init, steps, blow_at=None, keep=None):
        w = nn.Parameter(w_init.clone()); opt = Replicated([w], base=torch.optim.SGD, gamma=1.0, lr=0.1)
        for t in range(steps):
            w.grad = grad(w.detach())
            if t == blow_at: w.grad[1] = math.inf
            opt.step()
        return w.detach(), opt
    hit, opt = run(w0, 8, blow_at=3)
    assert opt.active.tolist() == [True, False, True]
    before, _ = run(w0, 3)                                        # the common history: 3 steps of 3 replicas
    w = nn.Parameter(before.clone()); w.grad = grad(w.detach())
    with torch.no_grad(): w.add_(w.grad, alpha=-0.1)              # step 3's base step for everyone ...
    two = w.detach()[[0, 2]]
    two = two.lerp(two.mean(0, keepdim=True), 0.1)                # ... and its coupling among the two survivors
    rest, _ = run(two, 4)                                         # then 4 more steps as a 2-replica ensemble
    torch.testing.assert_close(hit[[0, 2]], rest, rtol=0, atol=1e-14)

# ---------------------------------------------------------------- divergence, checkpoints, resume
class PoisonedAdam(torch.optim.Adam):
    "Adam that writes a huge finite value into replica 1 after step `at` (its loss overflows; its weights stay finite); raises at `crash`."
    def __init__(self, params, at=5, crash=0, **kw): super().__init__(params, **kw); self.at, self.crash, self.n = at, crash, 0
    def step(self, closure=None):
        self.n += 1
        if self.n == self.crash: raise RuntimeError('simulated crash')
        out = super().step(closure)
        if self.n == self.at:
            with torch.no_grad():
                for g in self.param_groups:
                    for p in g['params']: p[1] = 1e200
        return out

def test_resume_is_bitwise_with_a_frozen_replica(ae_data, tmp_path):
    lin = lambda: nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 12))    # unbounded output: 1e200 weights overflow the loss
    run = lambda crash=0, cbs=(): fit(replicate(lin, 3, seeds=SEEDS).double(), ae_data, epochs=4,
                                      opt_func=partial(PoisonedAdam, lr=1e-2, crash=crash), **KW, cbs=[Recorder(on=('replicas', 'barycentre')), *cbs])
    full = run()
    assert full.active.tolist() == [True, False, True]
    assert all(torch.isfinite(p).all() for p in full.model.parameters())   # frozen at its (finite, huge) weights
    ck = tmp_path / 'ck.pt'
    with pytest.raises(RuntimeError, match='simulated crash'): run(crash=10, cbs=[Checkpoint(ck)])
    again = run(cbs=[Checkpoint(ck, resume=True)])
    for a, b in zip(full.model.state_dict().values(), again.model.state_dict().values()): assert torch.equal(a, b)
    pd.testing.assert_frame_equal(full.df, again.df)

def test_resume_refuses_a_different_run(ae_data, tmp_path):
    ck = tmp_path / 'ck.pt'
    base = dict(opt_func=partial(torch.optim.Adam, lr=1e-2), **KW)
    fit(replicate(mlp, 3, seeds=SEEDS).double(), ae_data, epochs=2, cbs=[Checkpoint(ck)], **base)
    other = random_features(N=12, D=3, P=48, P_test=24, seed=1, dtype=torch.float64)
    for kw, name in [(dict(epochs=1), 'epochs'), (dict(data=other), 'data'),       # more epochs extend the run: allowed
                     (dict(opt_func=partial(torch.optim.SGD, lr=0.1, momentum=0.9)), 'optimizer')]:
        args = {**base, 'epochs': 2, 'data': ae_data, **kw}
        with pytest.raises(ValueError, match=f'resume: .*{name}'):
            fit(replicate(mlp, 3, seeds=SEEDS).double(), args.pop('data'), args.pop('epochs'), cbs=[Checkpoint(ck, resume=True)], **args)

def test_orphaned_checkpoint_temporaries_are_removed(ae_data, tmp_path):
    ck = tmp_path / 'ck.pt'
    orphan = tmp_path / '.ck.abc123.pt'; orphan.write_bytes(b'half a checkpoint')
    keep = tmp_path / 'other.pt'; keep.write_bytes(b'x')
    fit(replicate(mlp, 3, seeds=SEEDS).double(), ae_data, epochs=1, **KW, cbs=[Checkpoint(ck)])
    assert ck.exists() and not orphan.exists() and keep.exists()

def test_bad_data_and_seeds_are_named(ae_data):
    nan = SimpleNamespace(x_train=ae_data.x_train.clone(), x_test=ae_data.x_test)
    nan.x_train[5, 3] = math.nan
    with pytest.raises(ValueError, match='data.x_train'): fit(replicate(mlp, 3, seeds=SEEDS).double(), nan, 1, **KW)
    with pytest.raises(ValueError, match='distinct'): fit(replicate(mlp, 3, seeds=SEEDS).double(), ae_data, 1, seeds=[1, 1, 2], **KW)
    with pytest.raises(TypeError, match='torch.optim.Optimizer'): fit(replicate(mlp, 3, seeds=SEEDS).double(), ae_data, 1, opt_func=lambda ps: None, **KW)

def test_every_part_of_the_library_accepts_a_replicated_module(img_data):
    "local_energy, denoising, SAM(per_replica), EntropySGD, evaluate on barycentre and ensemble: all on a replicated BN net."
    from entropic_ae.flatness import local_energy, denoising, dataset_loss
    from entropic_ae.train import evaluate
    m = replicate(bn_net, 4, seeds=range(4)).double()
    for opt in (partial(SAM, base=torch.optim.SGD, rho=0.05, per_replica=True, lr=0.1),
                partial(EntropySGD, lr=0.1, gamma=0.1, L=2, seed=0)):
        r = fit(m, img_data, epochs=1, opt_func=opt, loss_fn=cross_entropy, **KW, cbs=[Recorder(on=('replicas', 'barycentre', 'ensemble'), groups=2)])
        assert r.active.all() and r.df.value.map(math.isfinite).all()
    m.eval()
    x, t = img_data.x_train, img_data.t_train
    base = dataset_loss(m, x, cross_entropy, target=t)
    torch.testing.assert_close(local_energy(m, x, [0., 0.1], n_draws=2, loss_fn=cross_entropy, target=t)[:, 0], base)
    torch.testing.assert_close(denoising(m, x, [0., 0.1], n_draws=2, loss_fn=cross_entropy, target=t)[:, 0], base)
    rows = pd.DataFrame(evaluate(m, img_data, {'train_loss': {}, 'local_energy': dict(sigmas=[0.1], n_draws=2)},
                                 on=('barycentre', 'ensemble'), loss_fn=cross_entropy, groups=2))
    assert set(zip(rows.eval_on, rows.metric)) == {('barycentre', 'train_loss'), ('barycentre', 'local_energy'), ('ensemble', 'train_loss')}

class _WithY(nn.Module):
    "A user's module that happens to own an attribute named `y` (a buffer or a float): not the replica count."
    def __init__(self, buffer:bool):
        super().__init__(); self.lin = nn.Linear(3, 2)
        if buffer: self.register_buffer('y', torch.tensor(10.))
        else: self.y = 10.0
    def forward(self, x): return self.lin(x) * self.y

@pytest.mark.parametrize('buffer', [True, False])
def test_rebuild_leaves_a_users_y_alone(buffer):
    "Issue 20: `replica`/`barycentre`/`stack` rewrote every submodule's `y`; a buffer `y` raised, a float became 1."
    m = replicate(_WithY(buffer), 3, seeds=[0, 1, 2])
    x = torch.randn(4, 3)
    for r in (replica(m, 1), barycentre(m), stack([replica(m, 0), replica(m, 2)])):
        inner = r.module
        assert (inner.y.shape == (n_replicas(r),) and torch.all(inner.y == 10.)) if buffer else inner.y == 10.0
    torch.testing.assert_close(replica(m, 1)(x)[0], m(x)[1])
