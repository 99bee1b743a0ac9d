"""A battery of bad inputs over the public API (the `__all__` of every module): each must raise a clear error before any
work: a `TypeError` or `ValueError` (or a documented library error) whose message names the parameter.

Each case is `(callable, args, kwargs, expected exception types, substring the message must contain)`. Arguments
wrapped in `Lazy` are built when the case runs (tiny models and data), so collecting the battery costs nothing. Cases
in modules owned by other chapters that fail today are strict `xfail`s naming what is wrong: they turn red as soon as
the module is fixed, and the marker goes then.
"""
import math, pickle, tempfile, time
from functools import partial
from pathlib import Path
import numpy as np
import pytest
import torch
from torch import nn

from entropic_ae import core, landscape as LS, data as DA, models as MO, replicas as RE, flatness as FL
from entropic_ae import hopfield as HO, vision as VI

NAN, INF = float('nan'), float('inf')
ERR = (TypeError, ValueError)

class Lazy:
    "An argument built when the case runs."
    def __init__(self, fn): self.fn = fn
    def __repr__(self): return getattr(self.fn, '__name__', 'lazy')

def _build(v): return v.fn() if isinstance(v, Lazy) else v

CASES, IDS = [], {}
def _short(v) -> str:
    r = repr(v).replace(str(TMP), "<tmp>")
    return r if len(r) <= 24 else r[:21] + '...'

def case(fn, *args, match:str, exc=ERR, xfail:str|None=None, **kw):
    "File one bad call: `fn(*args, **kw)` must raise `exc` with `match` in its message (`xfail`: owner and what is wrong)."
    name = getattr(fn, '__qualname__', type(fn).__name__)
    mod = getattr(fn, '__module__', None) or type(fn).__module__
    k = match if match in kw else list(kw)[-1] if kw else None
    bad = f'{k}={_short(kw[k])}' if k else _short(args[-1]) if args else ''
    cid = f"{mod.rpartition('.')[2]}.{name}[{match}]({bad})"
    IDS[cid] = IDS.get(cid, 0) + 1
    if IDS[cid] > 1: cid += f'#{IDS[cid]}'
    CASES.append((cid, fn, args, kw, exc, match, xfail))

def numbers(fn_, arg_, *args, lo_bad=None, hi_bad=None, integer=False, xfail=None, **kw):
    "The standard bad values of the numeric argument `arg_`: a string, (a fraction for an integer), nan and inf, below and above its range."
    bad = ['x', 2.5] if integer else ['x', NAN, INF]
    for v in bad + [v for v in (lo_bad, hi_bad) if v is not None]: case(fn_, *args, match=arg_, xfail=xfail, **{**kw, arg_: v})

def _params():
    "The cases as pytest params; those failing in modules owned elsewhere (`XFAIL`, at the end) are strict xfails."
    for cid, fn, args, kw, exc, match, xfail in CASES:
        why = xfail or XFAIL.get(cid)
        yield pytest.param(fn, args, kw, exc, match, id=cid, marks=[pytest.mark.xfail(strict=True, reason=why)] if why else [])

def test_bad_input(fn, args, kw, exc, match):
    args, kw = [_build(a) for a in args], {k: _build(v) for k, v in kw.items()}
    t0 = time.perf_counter()
    with pytest.raises(exc) as e: fn(*args, **kw)
    assert match in str(e.value), f"{type(e.value).__name__}: {e.value}"
    assert time.perf_counter() - t0 < 10, "the error came after heavy work"

# ---------------------------------------------------------------------------------------------------------------------
# Tiny inputs shared by the cases
def ae(y=2): return MO.shallow_ae(4, 2, y=y)
AE, AE3 = Lazy(ae), Lazy(partial(ae, 3))
X = Lazy(lambda: torch.rand(5, 4))
X_NAN = Lazy(lambda: torch.rand(5, 4).index_put_((torch.tensor(1), torch.tensor(2)), torch.tensor(NAN)))
X_INF = Lazy(lambda: torch.rand(5, 4).index_put_((torch.tensor(0), torch.tensor(0)), torch.tensor(INF)))
X_INT = Lazy(lambda: torch.ones(5, 4, dtype=torch.int64))
X_1D = Lazy(lambda: torch.rand(4))
X_EMPTY = Lazy(lambda: torch.rand(0, 4))
def convnet(y=2): return VI.image_classifier('small_convnet', y, shape=(1, 8, 8), width=2, classes=3)
CONV = Lazy(convnet)
IMG = Lazy(lambda: torch.rand(6, 1, 8, 8))
IMG_NAN = Lazy(lambda: torch.rand(6, 1, 8, 8).index_put_((torch.tensor(0),), torch.tensor(NAN)))
LAB = Lazy(lambda: torch.tensor([0, 1, 2, 0, 1, 2]))
FAKE = Lazy(lambda: VI.fake_images(8, 6, shape=(1, 8, 8), classes=3))
TMP = Path(tempfile.mkdtemp(prefix='bad_inputs_'))
def _pickle(name, obj):
    p = TMP/name
    with open(p, 'wb') as f: pickle.dump(obj, f, protocol=2)
    return p

# ---------------------------------------------------------------------------------------------------------------------
# 01 landscape
E, G = LS.toy_energy, LS.toy_energy.grad
case(LS.TwoWells, match='wide', wide=(0., 1.))
case(LS.TwoWells, match='wide', wide='abc')
case(LS.TwoWells, match='width', narrow=(1., -0.1, 1.))
case(LS.TwoWells, match='depth', narrow=(1., 0.1, NAN))
case(LS.TwoWells, match='centre', narrow=('a', 0.1, 1.))
numbers(LS.TwoWells, 'wall', lo_bad=-1.)
case(E, 'abc', match='x')
case(E, [1, 'a'], match='x')
case(E.grad, 'abc', match='x')
case(E.in_wide, 'abc', match='x')
numbers(E.barrier, 'n', integer=True, lo_bad=1)
for f in (LS.local_free_entropy, LS.local_mean):
    base = dict(x=0., energy=E, beta=1., gamma=1.)
    numbers(f, 'beta', lo_bad=0., **{k: v for k, v in base.items() if k != 'beta'})
    numbers(f, 'gamma', lo_bad=-1., **{k: v for k, v in base.items() if k != 'gamma'})
    numbers(f, 'lo', **{k: v for k, v in base.items()})
    numbers(f, 'hi', lo_bad=-5., **{k: v for k, v in base.items()})
    numbers(f, 'n', integer=True, lo_bad=1, **base)
    numbers(f, 'chunk', integer=True, lo_bad=0, **base)
    case(f, match='energy', **{**base, 'energy': 3})
    case(f, match='energy', **{**base, 'energy': lambda x: x.sum()})
    case(f, match='x', **{**base, 'x': 'abc'})
    case(f, match='x', **{**base, 'x': NAN})
    case(f, match='x', **{**base, 'x': [0., INF]})
    case(f, match='dtype', **{**base, 'dtype': torch.int64})
    case(f, match='dtype', **{**base, 'dtype': 'float64'})
    case(f, match='device', **{**base, 'device': 'nodevice'})
case(LS.local_free_entropy, 0., E, 1., 0., match='gamma', normalize=True)
case(LS.local_free_entropy, 0., E, 1., 1., match='normalize', normalize='yes')
PL = dict(energy=E, gammas=[1.], beta=1.)
case(LS.plot_landscape, match='energy', **{**PL, 'energy': 'E'})
case(LS.plot_landscape, match='gammas', **{**PL, 'gammas': None})
case(LS.plot_landscape, match='gammas', **{**PL, 'gammas': [NAN]})
case(LS.plot_landscape, match='gammas', **{**PL, 'gammas': [-1.]})
case(LS.plot_landscape, match='gammas', **{**PL, 'gammas': ['a']})
numbers(LS.plot_landscape, 'beta', lo_bad=0., **{k: v for k, v in PL.items() if k != 'beta'})
case(LS.plot_landscape, match='x', **{**PL, 'x': [[0., 1.]]})
case(LS.plot_landscape, match='x', **{**PL, 'x': [0., NAN]})
case(LS.plot_landscape, match='ax', **{**PL, 'ax': 3})
case(LS.plot_landscape, match='nn', **{**PL, 'nn': 5})
RL = dict(x0=torch.zeros(3), grad=G, gammas=[0.1, 0.2])
case(LS.replicated_langevin, match='x0', **{**RL, 'x0': torch.tensor(0.)})
case(LS.replicated_langevin, match='x0', **{**RL, 'x0': 'abc'})
case(LS.replicated_langevin, match='x0', **{**RL, 'x0': torch.tensor([0., NAN])})
case(LS.replicated_langevin, match='grad', **{**RL, 'grad': 3})
case(LS.replicated_langevin, match='gammas', **{**RL, 'gammas': []})
case(LS.replicated_langevin, match='gammas', **{**RL, 'gammas': [-1.]})
case(LS.replicated_langevin, match='gammas', **{**RL, 'gammas': [NAN]})
case(LS.replicated_langevin, match='gammas', **{**RL, 'gammas': 'ab'})
numbers(LS.replicated_langevin, 'lr', lo_bad=0., **RL)
numbers(LS.replicated_langevin, 'beta', lo_bad=-1., **RL)
numbers(LS.replicated_langevin, 'quench', integer=True, lo_bad=-1, **RL)
numbers(LS.replicated_langevin, 'record_every', integer=True, lo_bad=-1, **RL)
numbers(LS.replicated_langevin, 'seed', integer=True, lo_bad=-1, **RL)
SG = dict(x=0., grad=G, beta=1., gamma=1., n_steps=2, n_chains=2)
numbers(LS.sgld_local_mean, 'beta', lo_bad=0., **{k: v for k, v in SG.items() if k != 'beta'})
numbers(LS.sgld_local_mean, 'gamma', lo_bad=-1., **{k: v for k, v in SG.items() if k != 'gamma'})
numbers(LS.sgld_local_mean, 'lr', lo_bad=0., **SG)
numbers(LS.sgld_local_mean, 'n_steps', integer=True, lo_bad=0, **{k: v for k, v in SG.items() if k != 'n_steps'})
numbers(LS.sgld_local_mean, 'n_chains', integer=True, lo_bad=0, **{k: v for k, v in SG.items() if k != 'n_chains'})
numbers(LS.sgld_local_mean, 'burn_in', lo_bad=-0.1, hi_bad=1.5, **SG)
numbers(LS.sgld_local_mean, 'seed', integer=True, lo_bad=-1, **SG)
case(LS.sgld_local_mean, match='x', **{**SG, 'x': NAN})
case(LS.sgld_local_mean, match='x', **{**SG, 'x': 'abc'})
case(LS.sgld_local_mean, match='grad', **{**SG, 'grad': None})
case(LS.sgld_local_mean, match='dtype', **{**SG, 'dtype': torch.int32})

# ---------------------------------------------------------------------------------------------------------------------
# 02 data
numbers(DA.sigmoid, 'gain')
RF = dict(N=4, D=2, P=3)
for k in ('N', 'D', 'P'): numbers(DA.random_features, k, integer=True, lo_bad=0, **{n: v for n, v in RF.items() if n != k})
numbers(DA.random_features, 'P_test', integer=True, lo_bad=0, **RF)
numbers(DA.random_features, 'gain', **RF)
numbers(DA.random_features, 'seed', integer=True, lo_bad=-1, **RF)
case(DA.random_features, match='f', f=3, **RF)
case(DA.random_features, match='dtype', dtype=torch.int64, **RF)
case(DA.random_features, match='dtype', dtype='float32', **RF)
case(DA.random_features, match='device', device='nodevice', **RF)
case(DA.random_features, match='gian', gian=3., **RF)
RFD = lambda **kw: {**dict(F=torch.rand(2, 4), x_train=torch.rand(3, 4), x_test=torch.rand(2, 4), c_train=torch.rand(3, 2), c_test=torch.rand(2, 2)), **kw}
case(DA.RandomFeatureData, match='F', **RFD(F=3))
case(DA.RandomFeatureData, match='F', **RFD(F=torch.rand(4)))
case(DA.RandomFeatureData, match='x_train', **RFD(x_train=torch.rand(3, 5)))
case(DA.RandomFeatureData, match='x_test', **RFD(x_test=np.zeros((2, 4))))
case(DA.RandomFeatureData, match='c_train', **RFD(c_train=torch.rand(4, 2)))
case(DA.RandomFeatureData, match='c_test', **RFD(c_test=torch.rand(2, 3)))
case(DA.split_data, 3, match='data')
case(DA.split_data, (1, 2, 3), match='data')
case(DA.split_data, [X], match='data')
case(DA.split_data, (torch.zeros(2, 2), 'abc'), match='data[1]')
case(DA.split_data, ([[1.]], None), match='data[0]')
class _D:
    def __init__(self, **kw): self.__dict__.update(kw)
case(DA.split_data, Lazy(lambda: _D(x_train=torch.rand(3, 2), t_train=torch.zeros(2))), match='t_train')
case(DA.split_data, Lazy(lambda: _D(x_train=torch.rand(3, 2), x_test=torch.rand(2, 2), t_test=torch.zeros(2))), match='t_train')
case(DA.split_data, Lazy(lambda: _D(x_train=torch.rand(3, 2), x_test=torch.rand(2, 2), t_train=torch.zeros(3), t_test=torch.zeros(1))), match='t_test')
case(DA.split_data, Lazy(lambda: _D(x_train=[[1, 2]], x_test=None)), match='x_train')
numbers(DA.corrupt, 'sigma', X, lo_bad=-0.1)
case(DA.corrupt, 'abc', 0.1, match='x')
case(DA.corrupt, X_INT, 0.1, match='x')
case(DA.corrupt, X, 0.1, match='generator', generator=3)
case(DA.explained_variance, X_1D, match='x')
case(DA.explained_variance, X_INT, match='x')
case(DA.explained_variance, X_NAN, match='x')
case(DA.explained_variance, [[1., 2.], [3., 4.]], match='x')

# ---------------------------------------------------------------------------------------------------------------------
# 03 models
SL = dict(n_in=3, n_out=2)
numbers(MO.StackedLinear, 'n_in', integer=True, lo_bad=0, n_out=2)
numbers(MO.StackedLinear, 'n_out', integer=True, lo_bad=0, n_in=3)
numbers(MO.StackedLinear, 'y', integer=True, lo_bad=0, **SL)
case(MO.StackedLinear, match='seeds', seeds=[0, 1], **SL)
case(MO.StackedLinear, match='seeds', seeds='a', **SL)
case(MO.StackedLinear, match='seeds', seeds=[-1], **SL)
case(MO.StackedLinear, match='generators', generators=[], **SL)
case(MO.StackedLinear, match='generators', generators=[3], **SL)
case(MO.StackedLinear, match='dtype', dtype=torch.int64, **SL)
case(MO.StackedLinear, match='dtype', dtype='float32', **SL)
case(Lazy(lambda: MO.StackedLinear(3, 2)).fn().forward, Lazy(lambda: torch.rand(2, 4)), match='x')
case(MO.AutoEncoder, [4, 2], match='sizes')
case(MO.AutoEncoder, 'abc', match='sizes')
case(MO.AutoEncoder, [4, 2, 3], match='sizes')
case(MO.AutoEncoder, [4, 0, 4], match='sizes')
case(MO.AutoEncoder, [4, 2.5, 4], match='sizes')
numbers(MO.AutoEncoder, 'y', [4, 2, 4], integer=True, lo_bad=0)
case(MO.AutoEncoder, [4, 2, 4], match='seeds', y=2, seeds=[0])
case(MO.AutoEncoder, [4, 2, 4], match='dtype', dtype=torch.int64)
case(MO.AutoEncoder, [4, 2, 4], match='bottleneck_relu', bottleneck_relu='no')
case(MO.AutoEncoder, [4, 2, 4], match='sead', sead=3)
for f in (MO.shallow_ae, MO.deep_ae):
    numbers(f, 'N', integer=True, lo_bad=0, B=1)
    numbers(f, 'B', integer=True, lo_bad=0, hi_bad=5, N=4)
    case(f, 4, 2, match='widht', widht=3)
numbers(MO.deep_ae, 'H', integer=True, lo_bad=1, N=4, B=2)
case(Lazy(lambda: MO.shallow_ae(4, 2)).fn(), Lazy(lambda: torch.rand(3, 5)), match='x')
case(MO.recon_error, Lazy(lambda: torch.rand(2, 3)), Lazy(lambda: torch.rand(2, 3)), match='xhat')
case(MO.recon_error, Lazy(lambda: torch.rand(1, 2, 3)), Lazy(lambda: torch.rand(2, 4)), match='x')
case(MO.recon_error, Lazy(lambda: torch.rand(1, 2, 3)), 'abc', match='x')
for f in (MO.cross_entropy, MO.error_rate):
    case(f, Lazy(lambda: torch.rand(2, 3)), Lazy(lambda: torch.zeros(2, dtype=torch.long)), match='logits')
    case(f, Lazy(lambda: torch.rand(1, 2, 3)), Lazy(lambda: torch.zeros(3, dtype=torch.long)), match='labels')
    case(f, Lazy(lambda: torch.rand(1, 2, 3)), Lazy(lambda: torch.zeros(2)), match='labels')
    case(f, Lazy(lambda: torch.rand(1, 2, 3)), Lazy(lambda: torch.tensor([0, 3])), match='labels')
    case(f, Lazy(lambda: torch.rand(1, 2, 3)), [0, 1], match='labels')
case(MO.MLP, [4], match='sizes')
case(MO.MLP, [4, 0], match='sizes')
numbers(MO.MLP, 'y', [4, 2], integer=True, lo_bad=0)
case(MO.MLP, [4, 2], match='seeds', seeds=[0, 0, 1])

# ---------------------------------------------------------------------------------------------------------------------
# 04 replicas
case(RE.replica_axis, [], match='params')
case(RE.replica_axis, Lazy(lambda: [torch.rand(2, 3), torch.rand(3)]), match='params')
case(RE.replica_axis, Lazy(lambda: [torch.rand(2, 3)]), match='y', y=3)
case(RE.replica_axis, Lazy(lambda: [torch.rand(2, 3)]), match='y', y='a')
case(RE.replica_axis, 3, match='tensors')
case(RE.n_replicas, Lazy(lambda: nn.Linear(2, 2)), match='model')
case(RE.n_replicas, 3, match='model')
case(RE.EnsembleOutput, AE3, match='groups', groups=2)
case(RE.EnsembleOutput, AE, match='active', active=torch.ones(3, dtype=torch.bool))
case(RE.default_backend, 'nodevice', match='device')
case(RE.sample_dims_of, 3, match='module')
case(RE.Stacked, [], match='copies')
case(RE.Stacked, [3, 4], match='copies')
case(RE.Stacked, Lazy(lambda: [nn.Linear(2, 2)]), match='backend', backend='jit')
case(RE.Stacked, Lazy(lambda: [nn.Linear(2, 2)]), match='sample_dims', sample_dims=-1)
case(RE.Stacked, Lazy(lambda: [nn.ReLU()]), match='sample_dims')
case(RE.Stacked, Lazy(lambda: [nn.Linear(2, 2), nn.Linear(2, 3)]), match='copies')
case(RE.Stacked, Lazy(lambda: [nn.Linear(2, 2)]), match='seeds', seeds=[0, 1])
R = lambda **kw: {'module': Lazy(lambda: nn.Linear(2, 2)), 'y': 2, **kw}
numbers(RE.replicate, 'y', integer=True, lo_bad=0, module=Lazy(lambda: nn.Linear(2, 2)))
case(RE.replicate, match='module', **R(module=3))
case(RE.replicate, match='module', **R(module=lambda: 3))
case(RE.replicate, match='seeds', **R(seeds=[0, 0]))
case(RE.replicate, match='seeds', **R(seeds=[0]))
case(RE.replicate, match='seeds', **R(seeds=[0, -1]))
case(RE.replicate, match='seeds', **R(seeds=3))
case(RE.replicate, match='backend', **R(backend='jit'))
case(RE.replicate, match='sample_dims', **R(sample_dims=-2))
case(RE.replicate, match='device', **R(device='nodevice'))
case(RE.per_replica, Lazy(lambda: torch.rand(3)), Lazy(lambda: torch.rand(2, 4)), match='v')
case(RE.per_replica, [1., 2.], Lazy(lambda: torch.rand(2, 4)), match='v')
case(RE.replica, AE, 2, match='i')
case(RE.replica, AE, -1, match='i')
case(RE.replica, AE, 'a', match='i')
case(RE.replica, Lazy(lambda: nn.Linear(2, 2)), 0, match='model')
case(RE.stack, [], match='models')
case(RE.stack, Lazy(lambda: [ae(), nn.Linear(2, 2)]), match='models[1]')
case(RE.stack, Lazy(lambda: [ae(), MO.shallow_ae(5, 2)]), match='models[1]')
case(RE.stack, Lazy(lambda: [ae(), MO.MLP([4, 2, 4])]), match='models[1]')
case(RE.stack, 3, match='models')
numbers(RE.check_groups, 'groups', 4, integer=True, lo_bad=0, hi_bad=3)
numbers(RE.check_groups, 'y', integer=True, lo_bad=0, groups=1)
T6 = Lazy(lambda: torch.rand(6, 2))
numbers(RE.centre, 'groups', T6, integer=True, lo_bad=0, hi_bad=4)
case(RE.centre, T6, match='active', active=torch.ones(5, dtype=torch.bool))
case(RE.centre, T6, match='active', active=torch.ones(6))
case(RE.centre, T6, match='active', active=[True]*6)
case(RE.centre, [1., 2.], match='t')
for f in (RE.barycentre, RE.same_start):
    numbers(f, 'groups', AE3, integer=True, lo_bad=0, hi_bad=2)
    case(f, Lazy(lambda: nn.Linear(2, 2)), match='model')
case(RE.barycentre, AE, match='active', active=torch.ones(3, dtype=torch.bool))
case(RE.ensemble_forward, AE, Lazy(lambda: torch.rand(3, 5)), match='x')
case(RE.ensemble_forward, AE3, X, match='groups', groups=2)
case(RE.ensemble_forward, AE, X, match='active', active=torch.ones(3, dtype=torch.bool))
case(RE.distance_to_barycentre, [], match='params')
case(RE.distance_to_barycentre, AE3, match='groups', groups=2)
case(RE.distance_to_barycentre, AE, match='active', active=torch.ones(1, dtype=torch.bool))
case(RE.distance_to_barycentre, 3, match='params')
numbers(RE.recompute_bn, 'batch_size', CONV, IMG, integer=True, lo_bad=0)
numbers(RE.recompute_bn, 'batch_size', AE, X, integer=True, lo_bad=0)
case(RE.recompute_bn, CONV, IMG_NAN, match='x')
case(RE.recompute_bn, CONV, Lazy(lambda: torch.rand(0, 1, 8, 8)), match='x')
case(RE.recompute_bn, CONV, 'abc', match='x')
case(RE.recompute_bn, 3, IMG, match='model')

# ---------------------------------------------------------------------------------------------------------------------
# 07 flatness
case(FL.model_device, 3, match='model')
DL = dict(model=AE, x=X)
case(FL.dataset_loss, match='model', **{**DL, 'model': 3})
case(FL.dataset_loss, match='x', **{**DL, 'x': 'abc'})
case(FL.dataset_loss, match='x', **{**DL, 'x': X_NAN})
case(FL.dataset_loss, match='x', **{**DL, 'x': X_INF})
case(FL.dataset_loss, match='x', **{**DL, 'x': X_INT})
case(FL.dataset_loss, match='x', **{**DL, 'x': X_EMPTY})
case(FL.dataset_loss, match='loss_fn', loss_fn=3, **DL)
numbers(FL.dataset_loss, 'batch_size', integer=True, lo_bad=0, **DL)
case(FL.dataset_loss, match='target', target=Lazy(lambda: torch.rand(4, 4)), **DL)
case(FL.dataset_loss, match='target', target=X_NAN, **DL)
case(FL.dataset_loss, match='target', target='abc', **DL)
case(FL.replica_generators, 'a', 2, 'cpu', match='seed')
case(FL.replica_generators, -1, 2, 'cpu', match='seed')
case(FL.replica_generators, [0], 2, 'cpu', match='seed')
case(FL.replica_generators, [0, -1], 2, 'cpu', match='seed')
case(FL.replica_generators, 0.5, 2, 'cpu', match='seed')
case(FL.replica_generators, [0, 1], 0, 'cpu', match='y')
case(FL.replica_generators, 0, 2, 'nodevice', match='device')
for f in (FL.local_energy, FL.denoising):
    LE = dict(model=AE, x=X, sigmas=[0., 0.1], n_draws=2)
    case(f, match='sigmas', **{**LE, 'sigmas': [-0.1]})
    case(f, match='sigmas', **{**LE, 'sigmas': [NAN]})
    case(f, match='sigmas', **{**LE, 'sigmas': []})
    case(f, match='sigmas', **{**LE, 'sigmas': 'ab'})
    numbers(f, 'n_draws', integer=True, lo_bad=0, **{k: v for k, v in LE.items() if k != 'n_draws'})
    numbers(f, 'batch_size', integer=True, lo_bad=0, **LE)
    case(f, match='seed', seed=-1, **LE)
    case(f, match='seed', seed=[0], **LE)
    case(f, match='seed', seed='a', **LE)
    case(f, match='x', **{**LE, 'x': X_NAN})
    case(f, match='x', **{**LE, 'x': X_INF})
    case(f, match='x', **{**LE, 'x': X_INT})
    case(f, match='x', **{**LE, 'x': X_EMPTY})
    case(f, match='x', **{**LE, 'x': [[0.5]*4]})
    case(f, match='target', target=X_NAN, **LE)
    case(f, match='target', target=Lazy(lambda: torch.rand(3, 4)), **LE)
    case(f, match='loss_fn', loss_fn='mse', **LE)
    case(f, match='model', **{**LE, 'model': Lazy(lambda: nn.Linear(4, 4))})
    case(f, match='n_drwas', n_drwas=3, **LE)
numbers(FL.local_energy, 'draws_per_pass', integer=True, lo_bad=0, model=AE, x=X, sigmas=[0.1], n_draws=2)
numbers(FL.log_bins, 'lo', lo_bad=0.)
numbers(FL.log_bins, 'hi', lo_bad=1e-10)
numbers(FL.log_bins, 'per_decade', integer=True, lo_bad=0)
PH = dict(model=AE)
case(FL.param_histograms, AE, match='bins', bins=[1.])
case(FL.param_histograms, AE, match='bins', bins=[0., 1.])
case(FL.param_histograms, AE, match='bins', bins=[2., 1.])
case(FL.param_histograms, AE, match='bins', bins=[1., NAN])
case(FL.param_histograms, AE, match='bins', bins='ab')
case(FL.param_histograms, match='replicas', replicas=[2], **PH)
case(FL.param_histograms, match='replicas', replicas=3, **PH)
case(FL.param_histograms, match='epoch', epoch='a', **PH)
case(FL.param_histograms, match='model', model=Lazy(lambda: nn.Linear(2, 2)))
case(FL.Metric, 3, match='fn')
case(FL.Metric, FL.dataset_loss, match='split', split='val')
case(FL.Metric, FL.dataset_loss, match='axis', axis='sigmas')
case(FL.register_metric, 3, FL.dataset_loss, match='name')
case(FL.register_metric, 'm', 3, match='fn')
case(FL.register_metric, 'm', FL.dataset_loss, match='axis', axis='sigmas')
case(FL.register_metric, 'm', FL.dataset_loss, match='split', split='val')
case(FL.register_metric, 'm', FL.dataset_loss, match='axis', axis=3, column='sigma')
case(FL.register_metric, 'm', FL.dataset_loss, match='column', axis='sigmas', column=3)

# ---------------------------------------------------------------------------------------------------------------------
# 12 hopfield
J4 = Lazy(lambda: HO.random_couplings(4))
for f in (HO.fixed_point_entropy,):
    case(f, 'a', match='D'); case(f, NAN, match='D'); case(f, [0., INF], match='D'); case(f, [], match='D')
    case(f, [[0.]], match='D'); case(f, None, match='D')
numbers(HO.stability_cut, 'N', integer=True, lo_bad=0, D=0.5)
numbers(HO.stability_cut, 'D', N=4)
for f in (HO.log_p_stable, HO.annealed_entropy, HO.expected_fixed_points):
    numbers(f, 'N', integer=True, lo_bad=1, D=0.5)
    numbers(f, 'D', N=4)
    case(f, 4, 0.5, match='couplings', couplings='gaussian')
    case(f, 4, [], match='D')
numbers(HO.pair_orthant, 'D', rho=0.5)
case(HO.pair_orthant, 0.5, 2., match='rho')
case(HO.pair_orthant, 0.5, -1.5, match='rho')
case(HO.pair_orthant, 0.5, [0., NAN], match='rho')
case(HO.pair_orthant, 0.5, 'a', match='rho')
numbers(HO.pair_orthant, 'n', integer=True, lo_bad=1, D=0.5, rho=0.5)
numbers(HO.pair_exponent, 'D', q=0.5)
case(HO.pair_exponent, 0.5, 1.5, match='q')
case(HO.pair_exponent, 0.5, [NAN], match='q')
case(HO.pair_exponent, 0.5, 'a', match='q')
numbers(HO.random_couplings, 'N', integer=True, lo_bad=1)
numbers(HO.random_couplings, 'seed', integer=True, lo_bad=-1, N=4)
numbers(HO.random_couplings, 'sample', integer=True, lo_bad=-1, N=4)
for f in (HO.min_stability_histogram, HO.count_fixed_points, HO.count_fixed_points_brute):
    args = () if f is HO.min_stability_histogram else (0.5,)
    case(f, Lazy(lambda: np.ones((4, 3))), *args, match='J')
    case(f, Lazy(lambda: np.ones((4, 4))), *args, match='J')
    case(f, Lazy(lambda: HO.random_couplings(4) * 2), *args, match='J')
    case(f, Lazy(lambda: HO.random_couplings(4).astype(float) / 2), *args, match='J')
    case(f, 'abcd', *args, match='J')
    case(f, Lazy(lambda: np.zeros((1, 1))), *args, match='J')
case(HO.count_fixed_points_brute, Lazy(lambda: HO.random_couplings(21)), 0.5, match='J')
numbers(HO.count_fixed_points_brute, 'D', J4)
for f in (HO.min_stability_histogram, HO.count_fixed_points):
    args = () if f is HO.min_stability_histogram else (0.5,)
    case(f, J4, *args, match='backend', backend='gpu')
    numbers(f, 'low_bits', J4, *args, integer=True, lo_bad=0)
    case(f, J4, *args, match='device', device='nodevice')
numbers(HO.count_fixed_points, 'D', J4)
case(HO.count_fixed_points, J4, [], match='D')
H4 = Lazy(lambda: HO.min_stability_histogram(HO.random_couplings(4), backend='numpy'))
case(HO.counts_from_histogram, Lazy(lambda: np.ones(5)), 4, 0.5, match='hist')
case(HO.counts_from_histogram, Lazy(lambda: -np.ones(7)), 4, 0.5, match='hist')
case(HO.counts_from_histogram, Lazy(lambda: np.full(7, 0.5)), 4, 0.5, match='hist')
case(HO.counts_from_histogram, 'abcdefg', 4, 0.5, match='hist')
numbers(HO.counts_from_histogram, 'N', H4, integer=True, lo_bad=1, D=0.5)
numbers(HO.counts_from_histogram, 'D', H4, N=4)
SF = dict(Ns=4, D=0.5, n_samples=1, progress=False)
case(HO.sample_fixed_points, match='Ns', **{**SF, 'Ns': 1})
case(HO.sample_fixed_points, match='Ns', **{**SF, 'Ns': 41})
case(HO.sample_fixed_points, match='Ns', **{**SF, 'Ns': 'a'})
case(HO.sample_fixed_points, match='Ns', **{**SF, 'Ns': []})
case(HO.sample_fixed_points, match='Ns', **{**SF, 'Ns': 4.0})
case(HO.sample_fixed_points, match='D', **{**SF, 'D': NAN})
case(HO.sample_fixed_points, match='D', **{**SF, 'D': []})
case(HO.sample_fixed_points, match='n_samples', **{**SF, 'n_samples': 0})
case(HO.sample_fixed_points, match='n_samples', **{**SF, 'n_samples': [1, 1]})
case(HO.sample_fixed_points, match='n_samples', **{**SF, 'n_samples': 'a'})
case(HO.sample_fixed_points, match='n_samples', **{**SF, 'n_samples': 1.5})
case(HO.sample_fixed_points, match='seed', **{**SF, 'seed': -1})
case(HO.sample_fixed_points, match='device', **{**SF, 'device': 'nodevice'})
numbers(HO.fixed_point_explorer, 'n_samples', integer=True, lo_bad=0)
numbers(HO.fixed_point_explorer, 'seed', integer=True, lo_bad=-1)
numbers(HO.fixed_point_explorer, 'D')
case(HO.fixed_point_explorer, match='N_range', N_range=(8,))
case(HO.fixed_point_explorer, match='N_range', N_range=(20, 8))
case(HO.fixed_point_explorer, match='N_range', N_range=(8, 30))
case(HO.fixed_point_explorer, match='N_range', N_range=8)

# ---------------------------------------------------------------------------------------------------------------------
# 11 vision
case(VI.data_root, 3, match='root')
case(VI.find_files, 'imagenet', match='name')
case(VI.find_files, 'mnist', 3, match='root')
case(VI.find_files, 'mnist', TMP/'nothing', exc=VI.DataMissing, match='MNIST')
case(VI.read_idx, 3, match='path')
case(VI.read_idx, TMP/'missing.idx', exc=VI.DataMissing, match='missing.idx')
case(VI.read_idx, Lazy(lambda: VI.write_idx(np.zeros((2, 3), np.uint8), TMP/'short.idx').write_bytes(b'\0\0\x08\x02\0\0\0\x02')
                       and TMP/'short.idx'), exc=VI.DataCorrupt, match='short.idx')
case(VI.write_idx, Lazy(lambda: np.array([1.5, 2.])), TMP/'a.idx', match='a')
case(VI.write_idx, Lazy(lambda: np.array([300, 2])), TMP/'a.idx', match='a')
case(VI.write_idx, Lazy(lambda: np.array([-1, 2])), TMP/'a.idx', match='a')
case(VI.write_idx, Lazy(lambda: np.array(['a'])), TMP/'a.idx', match='a')
case(VI.write_idx, Lazy(lambda: np.zeros(2, np.uint8)), 3, match='path')
CIF = lambda labels, data=None: Lazy(lambda: _pickle('c.pkl', {b'data': np.zeros((2, 3072), np.uint8) if data is None else data, b'labels': labels}))
case(VI.read_cifar, CIF(['1', '2']), exc=VI.DataCorrupt, match='labels')
case(VI.read_cifar, CIF(['cat', 'dog']), exc=VI.DataCorrupt, match='labels')
case(VI.read_cifar, CIF([0.5, 1.5]), exc=VI.DataCorrupt, match='labels')
case(VI.read_cifar, CIF([0]), exc=VI.DataCorrupt, match='labels')
case(VI.read_cifar, CIF([0, 1], np.zeros((2, 3072))), exc=VI.DataCorrupt, match='data')
case(VI.read_cifar, CIF([0, 1]), match='label_key', label_key='labels')
case(VI.read_cifar, 3, match='path')
case(VI.read_cifar, TMP/'missing.pkl', exc=VI.DataMissing, match='missing.pkl')
case(VI.write_cifar, Lazy(lambda: np.zeros((2, 3, 32, 32), np.uint8)), [0], TMP/'w.pkl', match='t')
case(VI.write_cifar, Lazy(lambda: np.zeros((2, 3, 32, 32), np.uint8)), ['cat', 'dog'], TMP/'w.pkl', match='t')
case(VI.write_cifar, Lazy(lambda: np.zeros((2, 3, 16, 16), np.uint8)), [0, 1], TMP/'w.pkl', match='x')
case(VI.write_cifar, Lazy(lambda: np.full((2, 3, 32, 32), 1.5)), [0, 1], TMP/'w.pkl', match='x')
case(VI.write_cifar, Lazy(lambda: np.zeros((2, 3, 32, 32), np.uint8)), [0, 1], TMP/'w.pkl', match='label_key', label_key='labels')
LI = dict(name='mnist', root=TMP/'nothing')
case(VI.load_images, match='name', **{**LI, 'name': 'imagenet'})
case(VI.load_images, match='dtype', dtype=torch.int64, **LI)
case(VI.load_images, match='device', device='nodevice', **LI)
case(VI.load_images, exc=VI.DataMissing, match='MNIST', **LI)
case(VI.load_images, match='normalise', normalise=False, **LI)
numbers(VI.load_digits, 'test_fraction', lo_bad=0., hi_bad=1.)
numbers(VI.load_digits, 'seed', integer=True, lo_bad=-1)
case(VI.load_digits, match='dtype', dtype=torch.int64)
case(VI.load_digits, match='device', device='nodevice')
FI = dict(n_train=4, n_test=2, shape=(1, 4, 4), classes=2)
for k, lo in (('n_train', 0), ('n_test', 0), ('classes', 1), ('seed', -1)):
    numbers(VI.fake_images, k, integer=True, lo_bad=lo, **{n: v for n, v in FI.items() if n != k})
numbers(VI.fake_images, 'noise', lo_bad=-1., **FI)
case(VI.fake_images, match='shape', **{**FI, 'shape': (4, 4)})
case(VI.fake_images, match='shape', **{**FI, 'shape': 4})
case(VI.fake_images, match='shape', **{**FI, 'shape': (1, 0, 4)})
case(VI.fake_images, match='dtype', dtype=torch.int64, **FI)
case(VI.fake_images, match='device', device='nodevice', **FI)
numbers(VI.crop_flip, 'pad', IMG, integer=True, lo_bad=-1)
case(VI.crop_flip, Lazy(lambda: torch.rand(8, 8)), match='x')
case(VI.crop_flip, 'abc', match='x')
case(VI.crop_flip, IMG, match='fill', fill=[0., 0.])
case(VI.crop_flip, IMG, match='fill', fill='a')
case(VI.crop_flip, IMG, match='fill', fill=NAN)
case(VI.crop_flip, IMG, match='generator', generator=3)
DLd = dict(x=IMG, t=LAB)
numbers(VI.DeviceLoader, 'bs', integer=True, lo_bad=0, **DLd)
case(VI.DeviceLoader, match='t', x=IMG, t=Lazy(lambda: torch.zeros(5, dtype=torch.long)))
case(VI.DeviceLoader, match='seeds', seeds=[], **DLd)
case(VI.DeviceLoader, match='seeds', seeds=[-1], **DLd)
case(VI.DeviceLoader, match='seeds', seeds=3, **DLd)
case(VI.DeviceLoader, match='augment', augment=3, **DLd)
case(VI.DeviceLoader, match='x', x='abc')
case(VI.DeviceLoader, match='x', x=Lazy(lambda: torch.rand(0, 3)))
numbers(VI.BasicBlock, 'c_in', integer=True, lo_bad=0, c_out=2)
numbers(VI.BasicBlock, 'c_out', integer=True, lo_bad=0, c_in=2)
numbers(VI.BasicBlock, 'stride', integer=True, lo_bad=0, c_in=2, c_out=2)
RN = dict(width=2)
case(VI.ResNet, match='layers', layers=(2, 2), **RN)
case(VI.ResNet, match='layers', layers=(1, 0, 1, 1), **RN)
case(VI.ResNet, match='layers', layers=3, **RN)
for k, lo in (('num_classes', 0), ('in_channels', 0), ('width', 0)):
    numbers(VI.ResNet, k, integer=True, lo_bad=lo, **({} if k == 'width' else RN))
for f, kw in ((VI.resnet18, dict(width=2)), (VI.vgg16_bn, dict(width=2, image_size=8)), (VI.small_convnet, dict(width=2))):
    case(f, match='widht', widht=8)
    for k, lo in (('num_classes', 0), ('in_channels', 0), ('width', 0)):
        numbers(f, k, integer=True, lo_bad=lo, **{n: v for n, v in kw.items() if n != k})
numbers(VI.vgg16_bn, 'image_size', integer=True, lo_bad=0, width=2)
VG = dict(width=2, image_size=8)
case(VI.VGG, match='cfg', cfg=(8, 'X'), **VG)
case(VI.VGG, match='cfg', cfg=(), **VG)
case(VI.VGG, match='cfg', cfg=3, **VG)
numbers(VI.VGG, 'hidden', integer=True, lo_bad=0, **VG)
numbers(VI.VGG, 'dropout', lo_bad=-0.1, hi_bad=1.5, **VG)
CA = dict(shape=(1, 8, 8), B=2, widths=(2, 2))
case(VI.ConvAE, match='shape', **{**CA, 'shape': (1, 8)})
case(VI.ConvAE, match='shape', **{**CA, 'shape': (1, 6, 8)})
case(VI.ConvAE, match='shape', **{**CA, 'shape': 8})
case(VI.ConvAE, match='widths', **{**CA, 'widths': (2,)})
case(VI.ConvAE, match='widths', **{**CA, 'widths': (2, 0)})
numbers(VI.ConvAE, 'B', integer=True, lo_bad=0, **{k: v for k, v in CA.items() if k != 'B'})
case(VI.ConvAE, match='bottleneck_relu', bottleneck_relu='no', **CA)
case(VI.channels_last_, 3, match='model')
case(VI.ImageModel, Lazy(lambda: nn.Linear(2, 2)), match='model')
numbers(VI.ImageModel, 'pad', Lazy(lambda: RE.replicate(nn.Linear(2, 2), 2)), integer=True, lo_bad=-1)
case(VI.ImageModel, Lazy(lambda: RE.replicate(nn.Linear(2, 2), 2)), match='fill', fill='a')
IC = dict(arch='small_convnet', y=2, shape=(1, 8, 8), width=2)
case(VI.image_classifier, match='arch', **{**IC, 'arch': 'resnet50'})
numbers(VI.image_classifier, 'y', integer=True, lo_bad=0, **{k: v for k, v in IC.items() if k != 'y'})
case(VI.image_classifier, match='shape', **{**IC, 'shape': (3, 32)})
case(VI.image_classifier, match='shape', **{**IC, 'shape': 32})
case(VI.image_classifier, match='shape', **{**IC, 'shape': (1, 0, 8)})
numbers(VI.image_classifier, 'classes', integer=True, lo_bad=1, **IC)
numbers(VI.image_classifier, 'width', integer=True, lo_bad=0, **{k: v for k, v in IC.items() if k != 'width'})
case(VI.image_classifier, match='seeds', seeds=[0], **IC)
case(VI.image_classifier, match='backend', backend='jit', **IC)
case(VI.image_classifier, match='fill', fill='a', **IC)
case(VI.image_classifier, match='device', device='nodevice', **IC)
case(VI.image_classifier, match='widht', widht=3, **{k: v for k, v in IC.items() if k != 'width'})
numbers(VI.bn_barycentre, 'groups', CONV, IMG, integer=True, lo_bad=0, hi_bad=3)
numbers(VI.bn_barycentre, 'batch_size', CONV, IMG, integer=True, lo_bad=0)
case(VI.bn_barycentre, CONV, IMG_NAN, match='x')
case(VI.bn_barycentre, CONV, 'abc', match='x')
case(VI.classifier_errors, CONV, 3, match='data')
numbers(VI.classifier_errors, 'groups', CONV, FAKE, integer=True, lo_bad=0, hi_bad=3)
numbers(VI.classifier_errors, 'batch_size', CONV, FAKE, integer=True, lo_bad=0)
numbers(VI.classifier_errors, 'bn_batch_size', CONV, FAKE, integer=True, lo_bad=0)
DE = dict(model=CONV, x=IMG, target=LAB, sigmas=[0.1], n_draws=1)
case(VI.delta_error, match='sigmas', **{**DE, 'sigmas': [-1.]})
case(VI.delta_error, match='n_draws', **{**DE, 'n_draws': 0})
case(VI.delta_error, match='x', **{**DE, 'x': IMG_NAN})
case(VI.delta_error, match='target', **{**DE, 'target': Lazy(lambda: torch.zeros(5, dtype=torch.long))})
case(VI.delta_error, match='target', **{**DE, 'target': None})
case(VI.delta_error, match='batch_size', **{**DE, 'batch_size': 0})
GS = dict(model=CONV, x=IMG, target=LAB, loss_fn=MO.cross_entropy)
numbers(VI.grad_sharpness, 'rho', lo_bad=-0.1, **GS)
numbers(VI.grad_sharpness, 'batch_size', integer=True, lo_bad=0, **GS)
case(VI.grad_sharpness, match='loss_fn', **{**GS, 'loss_fn': 3})
case(VI.grad_sharpness, match='x', **{**GS, 'x': IMG_NAN})
case(VI.grad_sharpness, match='target', **{**GS, 'target': Lazy(lambda: torch.zeros(5, dtype=torch.long))})
RC = dict(name='sgd', lr=0.1, epochs=2)
case(VI.recipe, match='name', **{**RC, 'name': 'lamb'})
numbers(VI.recipe, 'lr', lo_bad=-0.1, **{k: v for k, v in RC.items() if k != 'lr'})
numbers(VI.recipe, 'epochs', integer=True, lo_bad=0, **{k: v for k, v in RC.items() if k != 'epochs'})
case(VI.recipe, match='schedule', schedule='linear', **RC)
numbers(VI.recipe, 'momentum', lo_bad=-0.1, hi_bad=1., **RC)
numbers(VI.recipe, 'weight_decay', lo_bad=-1e-4, **RC)
for k in ('gamma0', 'gamma1'): numbers(VI.recipe, k, lo_bad=-0.1, **{**RC, 'name': 'rsgd'})
numbers(VI.recipe, 'groups', integer=True, lo_bad=0, **{**RC, 'name': 'rsgd'})
numbers(VI.recipe, 'L', integer=True, lo_bad=0, **{**RC, 'name': 'esgd'})
numbers(VI.recipe, 'gamma', lo_bad=0., **{**RC, 'name': 'esgd'})
numbers(VI.recipe, 'noise', lo_bad=-1., **{**RC, 'name': 'esgd'})
numbers(VI.recipe, 'rho', lo_bad=-0.1, **{**RC, 'name': 'sgd_sam'})
numbers(VI.recipe, 'asam_rho', lo_bad=-0.1, **{**RC, 'name': 'asam'})
numbers(VI.recipe, 'weight_decay', lo_bad=-1., **{**RC, 'name': 'adam'})   # checked whatever the recipe
numbers(VI.recipe, 'L', integer=True, lo_bad=0, **RC)
case(VI.recipe, match='wieght_decay', wieght_decay=0.1, **RC)
GE = dict(name='rsgd', epochs=2, steps_per_epoch=3)
case(VI.grad_evals, match='name', **{**GE, 'name': 'lamb'})
numbers(VI.grad_evals, 'epochs', integer=True, lo_bad=-1, **{k: v for k, v in GE.items() if k != 'epochs'})
numbers(VI.grad_evals, 'steps_per_epoch', integer=True, lo_bad=0, **{k: v for k, v in GE.items() if k != 'steps_per_epoch'})
numbers(VI.grad_evals, 'y', integer=True, lo_bad=0, **GE)
numbers(VI.grad_evals, 'L', integer=True, lo_bad=0, **{**GE, 'name': 'esgd'})
AC = dict(params=Lazy(lambda: [nn.Parameter(torch.zeros(2))]), lr=0.1)
numbers(VI.Accumulate, 'every', integer=True, lo_bad=0, **AC)
case(VI.Accumulate, match='base', base=3, **AC)
case(VI.Accumulate, match='base', base=partial(VI.SAM, base=torch.optim.SGD), **AC)
case(VI.Accumulate, match='learning rate', **{**AC, 'lr': -1.})   # torch's documented error
case(VI.Accumulate, match='lrr', lrr=0.1, params=AC['params'])

# =====================================================================================================================
# Modules owned by other chapters. A case that fails today is a strict xfail naming its owner and what is wrong.
# =====================================================================================================================
import contextlib, io
from entropic_ae import optim as OP, sam as SA, sharpness as SH, train as TR, compare as CO, perceptron as PE
from entropic_ae import annealing as AN, experiments as EX, sweeps as SW, book as BK

def cli(main, *argv):
    "Run a command-line `main`; a non-zero exit becomes a ValueError carrying what it printed (argparse's usage errors included)."
    out = io.StringIO()
    with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
        try: rc = main(list(argv))
        except SystemExit as e:
            rc = e.code
            if isinstance(rc, str): print(rc, file=out)           # sys.exit(message): the interpreter would print it
    if rc not in (0, None): raise ValueError(out.getvalue())
    return rc
cli.__qualname__ = 'cli'

PS = Lazy(lambda: [nn.Parameter(torch.zeros(2, 3))])
# ---- core
case(core.check_int, 'n', 'x', match='n'); case(core.check_int, 'n', True, match='n'); case(core.check_int, 'n', 0, match='n', lo=1)
case(core.check_float, 'f', NAN, match='f'); case(core.check_float, 'f', 'x', match='f'); case(core.check_float, 'f', 2., match='f', hi=1.)
case(core.check_sigmas, 's', [-1.], match='s'); case(core.check_sigmas, 's', [], match='s'); case(core.check_sigmas, 's', None, match='s')
case(core.check_choice, 'c', 'z', 'ab' and ('a', 'b'), match='c')
case(core.default_device, 'nodevice', match='device')
case(core.make_generator, -1, match='seed'); case(core.make_generator, 'a', match='seed')
case(core.make_generator, 0, 'nodevice', match='device')
case(core.write_csv, 'abc', TMP/'a.csv', match='rows')
case(core.write_csv, [{'a': 1}], 3, match='path')

# ---- optim
case(OP.fit_hooks, 3, match='opt')
case(OP.Constant, -1., match='gamma'); case(OP.Constant, NAN, match='gamma')
numbers(OP.Exponential, 'gamma0', gamma1=0.1, lo_bad=-1.)
numbers(OP.Exponential, 'gamma1', gamma0=0.1, lo_bad=-1.)
numbers(OP.Exponential, 'cap', gamma0=0.1, gamma1=0.1, lo_bad=-1.)
numbers(OP.Linear, 'rate', gamma0=0.1, lo_bad=-1.)
numbers(OP.Cosine, 'steps', gamma0=0.1, gamma1=1., integer=True, lo_bad=0)
case(OP.scoping, 'exp', match='name')
case(OP.scoping, 'exponential', match='gamm0', gamm0=0.1, gamma1=0.1)
case(OP.as_scoping, 'a', match='gamma'); case(OP.as_scoping, NAN, match='gamma'); case(OP.as_scoping, -1., match='gamma')
case(OP.prepare_base, 3, PS, {}, match='base')
case(OP.prepare_base, torch.optim.SGD, PS, 3, match='base_kw')
case(OP.adam, PS, match='lr', lr=NAN); case(OP.adam, PS, match='lr', lr=-1.); case(OP.adam, PS, match='lr', lr='x')
case(OP.adam, PS, match='betas', betas=(0.9, 1.5))
case(OP.adam, PS, match='weight_decay', weight_decay=NAN)
case(OP.adam, PS, match='wieght_decay', wieght_decay=0.1)
RP = dict(params=PS, lr=0.1)
case(OP.Replicated, match='momentum', base=torch.optim.SGD, momentum=NAN, **RP)
case(OP.Replicated, match='lr', **{**RP, 'lr': NAN})
case(OP.Replicated, match='gamma', gamma=-1., **RP)
case(OP.Replicated, match='gamma', gamma='x', **RP)
case(OP.Replicated, match='coupling', coupling='spring', **RP)
numbers(OP.Replicated, 'groups', integer=True, lo_bad=0, hi_bad=3, **RP)
case(OP.Replicated, match='base', base=3, **RP)
case(OP.Replicated, match='params', params=Lazy(lambda: [nn.Parameter(torch.zeros(2, 3)), nn.Parameter(torch.zeros(3, 3))]), lr=0.1)
case(OP.Replicated, match='momentm', base=torch.optim.SGD, momentm=0.9, **RP)
case(Lazy(lambda: OP.Replicated([nn.Parameter(torch.zeros(2, 3))], lr=0.1)).fn().add_param_group,
     Lazy(lambda: {'params': [nn.Parameter(torch.zeros(3, 3))]}), match='param_group')
case(OP.LoopReplicated, 3, match='models')
case(OP.LoopReplicated, [], match='models')
case(OP.LoopReplicated, Lazy(lambda: [nn.Linear(2, 2), nn.Linear(2, 2)]), match='gamma', gamma=-1.)
ES = dict(params=PS)
for k, lo in (('lr', -1.), ('gamma', -1.), ('inner_lr', -1.), ('noise', -1.), ('alpha', -0.1), ('momentum', -0.1), ('weight_decay', -1.)):
    numbers(OP.EntropySGD, k, lo_bad=lo, **ES)
numbers(OP.EntropySGD, 'alpha', hi_bad=1.5, **ES)
numbers(OP.EntropySGD, 'L', integer=True, lo_bad=0, **ES)
case(OP.EntropySGD, match='scope', scope='epochs', **ES)
case(OP.EntropySGD, match='seed', seed=-1, **ES)
case(OP.EntropySGD, match='nesterov', nesterov=True, **ES)

# ---- sam
SM = dict(params=PS, lr=0.1)
numbers(SA.SAM, 'rho', lo_bad=-0.1, **SM)
numbers(SA.SAM, 'eta', lo_bad=-1., **SM)
case(SA.SAM, match='lr', **{**SM, 'lr': NAN})
case(SA.SAM, match='momentum', momentum=NAN, **SM)
case(SA.SAM, match='base', base=3, **SM)
case(SA.SAM, match='adaptive', adaptive='yes', **SM)
case(SA.SAM, match='per_replica', per_replica='yes', **SM)
case(SA.SAM, match='rhoo', rhoo=0.1, **SM)
case(SA.asam_param_groups, 3, match='model')
def enter_frozen_running_stats(model):
    with SA.frozen_running_stats(model): pass
case(enter_frozen_running_stats, 3, match='model')
case(SA.stats_once, 3, lambda: 0., match='model')
case(SA.stats_once, AE, 3, match='closure')

# ---- sharpness
case(SH.bn_mode, AE, 'frozen', match='bn')
case(SH.bn_mode, 3, 'eval', match='model')
for f in (SH.curvature_operator, SH.dense_hessian):
    case(f, AE, X_NAN, match='x')
    case(f, AE, X_EMPTY, match='x')
    case(f, AE, 'abc', match='x')
    case(f, AE, X, match='target', target=Lazy(lambda: torch.rand(3, 4)))
    case(f, AE, X, match='loss_fn', loss_fn=3)
    case(f, Lazy(lambda: nn.Linear(4, 4)), X, match='model')
numbers(SH.curvature_operator, 'batch_size', AE, X, integer=True, lo_bad=0)
numbers(SH.curvature_operator, 'subset', AE, X, integer=True, lo_bad=0)
numbers(SH.dense_hessian, 'r', AE, X, integer=True, lo_bad=-1, hi_bad=2)
case(SH.lanczos, lambda v: v, Lazy(lambda: torch.zeros(1, 3)), 2, match='v0')
case(SH.lanczos, lambda v: v, Lazy(lambda: torch.rand(1, 3)), 0, match='n_iter')
case(SH.lanczos, lambda v: v, Lazy(lambda: torch.rand(3)), 2, match='v0')
case(SH.lanczos, 3, Lazy(lambda: torch.rand(1, 3)), 2, match='matvec')
case(SH.lanczos, lambda v: v, Lazy(lambda: torch.tensor([[1., NAN]])), 2, match='v0')
HE = dict(model=AE, x=X)
for f in (SH.hessian_eigs, SH.hessian_trace, SH.slq):
    case(f, match='x', **{**HE, 'x': X_NAN})
    case(f, match='x', **{**HE, 'x': X_INF})
    case(f, match='bn', bn='frozen', **HE)
    case(f, match='seed', seed=-1, **HE)
    case(f, match='subset', subset=0, **HE)
    case(f, match='batch_size', batch_size=0, **HE)
    case(f, match='target', target=Lazy(lambda: torch.rand(3, 4)), **HE)
numbers(SH.hessian_eigs, 'k', integer=True, lo_bad=0, **HE)
numbers(SH.hessian_eigs, 'n_iter', integer=True, lo_bad=0, **HE)
numbers(SH.hessian_trace, 'n_probes', integer=True, lo_bad=0, **HE)
numbers(SH.slq, 'n_iter', integer=True, lo_bad=0, **HE)
NW = dict(nodes=Lazy(lambda: torch.rand(2, 3)), weights=Lazy(lambda: torch.full((2, 3), 1/3)), grid=[0., 1.])
case(SH.spectral_density, match='sigma', sigma=-1., **NW)
case(SH.spectral_density, match='sigma', sigma=NAN, **NW)
case(SH.spectral_density, match='weights', **{**NW, 'weights': Lazy(lambda: torch.rand(2, 4))})
case(SH.spectral_density, match='grid', **{**NW, 'grid': 'ab'})
case(SH.spectral_density, match='nodes', **{**NW, 'nodes': Lazy(lambda: torch.tensor([[NAN, 1., 2.], [0., 1., 2.]]))})
for f in (SH.worst_case_loss, SH.rho_sharpness):
    case(f, AE, X, [-0.1], match='rhos'); case(f, AE, X, [NAN], match='rhos'); case(f, AE, X, [], match='rhos')
    case(f, AE, X_NAN, [0.1], match='x')
    case(f, AE, X, [0.1], match='n_steps', n_steps=0)
    case(f, AE, X, [0.1], match='eta', eta=-1.)
    case(f, AE, X, [0.1], match='bn', bn='frozen')
case(SH.keskar_sharpness, AE, X, [-0.1], match='epsilons'); case(SH.keskar_sharpness, AE, X, [NAN], match='epsilons')
case(SH.keskar_sharpness, AE, X_NAN, [0.1], match='x')
case(SH.keskar_sharpness, AE, X, [0.1], match='n_steps', n_steps=0)
case(SH.delta_energy, AE, X, [-0.1], match='sigmas'); case(SH.delta_energy, AE, X_NAN, [0.1], match='x')
case(SH.delta_energy, AE, X, [0.1], match='n_draws', n_draws=0)
numbers(SH.filter_directions, 'n', AE, integer=True, lo_bad=0)
case(SH.filter_directions, AE, match='ignore', ignore='weights')
case(SH.filter_directions, AE, match='seed', seed=-1)
DIRS1 = Lazy(lambda: SH.filter_directions(ae(), 1)); DIRS2 = Lazy(lambda: SH.filter_directions(ae(), 2))
case(SH.loss_slice, AE, X, DIRS2, Lazy(lambda: torch.linspace(-1, 1, 3)), match='coords')
case(SH.loss_slice, AE, X, DIRS1, Lazy(lambda: torch.rand(3, 2)), match='coords')
case(SH.loss_slice, AE, X, DIRS1, Lazy(lambda: torch.tensor([0., NAN])), match='coords')
case(SH.loss_slice, AE, X_NAN, DIRS1, Lazy(lambda: torch.linspace(-1, 1, 3)), match='x')
case(SH.loss_slice, AE, X, 3, Lazy(lambda: torch.linspace(-1, 1, 3)), match='directions')
case(SH.loss_slice, AE, X, DIRS1, Lazy(lambda: torch.linspace(-1, 1, 3)), match='points_per_pass', points_per_pass=0)
case(SH.interpolate, AE, AE3, X, match='model_b')
case(SH.interpolate, AE, AE, X, 1, match='ts')
case(SH.interpolate, AE, AE, X, [0., NAN], match='ts')
case(SH.interpolate, AE, AE, X_NAN, match='x')
case(SH.barrier, [0., 1.], Lazy(lambda: torch.rand(2, 3)), match='losses')
case(SH.barrier, [0., 1.], Lazy(lambda: torch.tensor([[0., NAN]])), match='losses')
LEn = dict(model=AE, x=X, gamma=1., n_steps=2, n_chains=2, n_lambdas=2)
numbers(SH.local_entropy, 'gamma', lo_bad=0., **{k: v for k, v in LEn.items() if k != 'gamma'})
numbers(SH.local_entropy, 'beta', lo_bad=0., **LEn)
numbers(SH.local_entropy, 'lr', lo_bad=0., **LEn)
numbers(SH.local_entropy, 'burn_in', lo_bad=-0.1, hi_bad=1., **LEn)
numbers(SH.local_entropy, 'n_chains', integer=True, lo_bad=0, **{k: v for k, v in LEn.items() if k != 'n_chains'})
case(SH.local_entropy, match='x', **{**LEn, 'x': X_NAN})

# ---- train
FD = Lazy(lambda: DA.random_features(4, 2, 6, P_test=3))
case(TR.check_metrics, 'nope', match='metrics'); case(TR.check_metrics, 3, match='metrics')
case(TR.check_metrics, {'local_energy': {}}, match='sigmas')
case(TR.check_eval_on, 'everyone', match='eval_on'); case(TR.check_eval_on, [], match='eval_on')
EV = dict(model=AE, data=FD, metrics=['train_loss'])
case(TR.evaluate, match='data', **{**EV, 'data': Lazy(lambda: DA.RandomFeatureData(*[t.index_fill(0, torch.tensor(0), NAN) if i in (1, 2) else t for i, t in enumerate(DA.random_features(4, 2, 6, P_test=3).__dict__.values())]))})
case(TR.evaluate, match='active', active=torch.ones(3, dtype=torch.bool), **EV)
case(TR.evaluate, match='active', active=[True, True], **EV)
case(TR.evaluate, match='groups', groups=3, **EV)
case(TR.evaluate, match='batch_size', batch_size=0, **EV)
case(TR.evaluate, match='seed', seed=-1, **EV)
case(TR.evaluate, match='metrics', **{**EV, 'metrics': ['nope']})
case(TR.evaluate, match='loss_fn', loss_fn=3, **EV)
case(TR.evaluate, match='epoch', epoch='a', **EV)
case(TR.evaluate, match='data', **{**EV, 'data': 3})
FT = dict(model=AE, data=FD, epochs=1, bs=2, progress=False)
for k, lo in (('epochs', 0), ('bs', 0), ('record_every', 0), ('ckpt_every', 0)):
    numbers(TR.fit, k, integer=True, lo_bad=lo, **{n: v for n, v in FT.items() if n != k})
case(TR.fit, match='groups', groups=3, **FT)
case(TR.fit, match='groups', groups=2, opt_func=partial(OP.Replicated, lr=0.1, groups=1), **FT)
case(TR.fit, match='cbs', cbs=[3], **FT)
case(TR.fit, match='cbs', cbs=3, **FT)
case(TR.fit, match='opt_func', opt_func=3, **FT)
case(TR.fit, match='loss_fn', loss_fn=3, **FT)
case(TR.fit, match='seeds', seeds=[0], **FT)
case(TR.fit, match='data', **{**FT, 'data': Lazy(lambda: torch.ones(6, 4, dtype=torch.int64))})
case(TR.fit, match='data', **{**FT, 'data': X_NAN})
case(TR.fit, match='data', **{**FT, 'data': 3})
case(TR.fit, match='metrics', metrics=['nope'], **FT)
case(TR.fit, match='eval_on', eval_on=['everyone'], **FT)
case(TR.fit, match='eval_bs', eval_bs=0, **FT)
case(TR.fit, match='ckpt_path', ckpt_path='/proc/no/such/ck.pt', **FT)
case(TR.fit, match='ckpt_path', ckpt_path=3, **FT)
case(TR.fit, match='resume', resume=True, **FT)
case(TR.fit, match='device', device='nodevice', **FT)
case(TR.fit, match='epoch', epoch=3, **FT)
case(TR.Recorder, FD, ['nope'], ['replicas'], match='metrics')
case(TR.Recorder, FD, ['train_loss'], ['replicas'], match='every', every=0)
case(TR.cosine, 0, match='epochs'); case(TR.cosine, 2, match='eta_min', eta_min=-1.); case(TR.cosine, 2, match='eta_min', eta_min=NAN)
case(TR.step_lr, [3, 1], match='milestones'); case(TR.step_lr, [-1], match='milestones'); case(TR.step_lr, 3, match='milestones')
case(TR.step_lr, [1], match='gamma', gamma=NAN); case(TR.step_lr, [1], match='gamma', gamma=-0.1)
case(TR.LRSchedule, 3, match='make')
case(TR.Checkpoint, 3, match='path'); case(TR.Checkpoint, TMP/'c.pt', match='every', every=0)
case(TR.Loop, match='bs', model=AE, opt=Lazy(lambda: torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)), x=X, t=None,
     seeds=[0, 1], bs=0, epochs=1, loss_fn=MO.recon_error)

# ---- compare
numbers(CO.arm_seeds, 'trials', integer=True, lo_bad=0, y=2)
numbers(CO.arm_seeds, 'y', integer=True, lo_bad=0, trials=2)
numbers(CO.arm_seeds, 'seed', integer=True, lo_bad=-1, trials=2, y=2)
case(CO.autoencoder_builder, 'wide', 4, 2, match='arch')
numbers(CO.autoencoder_builder, 'N', arch='shallow', B=2, integer=True, lo_bad=0)
numbers(CO.autoencoder_builder, 'B', arch='shallow', N=4, integer=True, lo_bad=0, hi_bad=5)
TA = dict(data=FD, build=Lazy(lambda: CO.autoencoder_builder('shallow', 4, 2)), trials=1, y=2, epochs=1, lr=0.01, gamma0=0.1, gamma1=0.1)
for k, lo in (('trials', 0), ('y', 0), ('epochs', 0), ('bs', 0), ('record_every', 0), ('seed', -1)):
    numbers(CO.train_arms, k, integer=True, lo_bad=lo, **{n: v for n, v in TA.items() if n != k})
for k, lo in (('lr', -1.), ('gamma0', -1.), ('gamma1', -1.), ('rho', -0.1)):
    numbers(CO.train_arms, k, lo_bad=lo, **{n: v for n, v in TA.items() if n != k})
case(CO.train_arms, match='arms', arms=['adam', 'sgd'], **TA)
case(CO.train_arms, match='arms', arms=[], **TA)
case(CO.train_arms, match='build', **{**TA, 'build': 3})
case(CO.train_arms, match='data', **{**TA, 'data': X_NAN})
case(CO.train_arms, match='columns', columns=3, **TA)
case(CO.dead_bottleneck_units, 3, X, None, MO.recon_error, match='encode')
FR = dict(models=Lazy(lambda: {'adam': ae()}), data=FD, epoch=1)
case(CO.final_rows, match='models', **{**FR, 'models': 3})
case(CO.final_rows, match='energy_sigmas', energy_sigmas=[-1.], **FR)
case(CO.final_rows, match='n_draws', n_draws=0, **FR)
case(CO.final_rows, match='epoch', **{**FR, 'epoch': 'a'})
import pandas as pd
DF = Lazy(lambda: pd.DataFrame(dict(metric=['m'], value=[1.], trial=[0], epoch=[0], arm=['a'], target=['a'], sigma=[NAN], replica=[0], run=['r'])))
case(CO.per_trial, DF, 'nope', match='metric')
case(CO.per_trial, 3, 'm', match='df')
case(CO.mean_se, [], match='x'); case(CO.mean_se, [1., NAN], match='x'); case(CO.mean_se, 'ab', match='x')
case(CO.paired_diff, [1., 2.], [1.], match='b'); case(CO.paired_diff, [1., NAN], [1., 2.], match='a')
case(CO.verdict_status, NAN, match='z'); case(CO.verdict_status, 'a', match='z'); case(CO.verdict_status, 1., match='threshold', threshold=-1.)
case(CO.paired_verdict, [1., 2.], [1., 2.], match='names', names=('a',))
case(CO.paired_verdict, [1., 2.], [1., 2.], match='threshold', threshold=NAN)

# ---- perceptron
MX = Lazy(lambda: PE.gaussian_mixture(4, 6, 0.5))
numbers(PE.gaussian_mixture, 'N', P=3, Delta=0.5, integer=True, lo_bad=0)
numbers(PE.gaussian_mixture, 'P', N=3, Delta=0.5, integer=True, lo_bad=-1)
numbers(PE.gaussian_mixture, 'Delta', N=3, P=3, lo_bad=-1.)
case(PE.gaussian_mixture, 3, 3, 0.5, match='dtype', dtype=torch.int64)
case(PE.gaussian_mixture, 3, 3, 0.5, match='seed', seed=-1)
case(PE.generalisation_error, Lazy(lambda: torch.rand(2, 5)), MX, match='W')
case(PE.generalisation_error, Lazy(lambda: torch.zeros(2, 4)), MX, match='W')
case(PE.generalisation_error, Lazy(lambda: torch.rand(2, 4)), 3, match='data')
case(PE.train_errors, Lazy(lambda: torch.rand(2, 5, dtype=torch.float64)), Lazy(lambda: torch.rand(6, 4, dtype=torch.float64)), Lazy(lambda: torch.ones(6, dtype=torch.float64)), match='W')
case(PE.train_errors, Lazy(lambda: torch.rand(2, 4)), Lazy(lambda: torch.rand(6, 4)), Lazy(lambda: torch.ones(5)), match='sigma')
case(PE.hebb, Lazy(lambda: torch.rand(6, 4)), Lazy(lambda: torch.ones(5)), match='sigma')
case(PE.hebb, Lazy(lambda: torch.rand(6, 4)), Lazy(lambda: torch.full((6,), 0.5)), match='sigma')
numbers(PE.bayes_error, 'alpha', Delta=0.5, lo_bad=-1.)
numbers(PE.bayes_error, 'Delta', alpha=1., lo_bad=-1.)
numbers(PE.bayes_error_finite, 'n', N=4, P=4, Delta=0.5, integer=True, lo_bad=1)
XP = dict(X=Lazy(lambda: torch.rand(6, 4, dtype=torch.float64)), sigma=Lazy(lambda: torch.ones(6, dtype=torch.float64)), lambdas=[1.])
case(PE.fit_minimisers, match='max_iter', max_iter=-1, **XP)
case(PE.fit_minimisers, match='max_iter', max_iter=2.5, **XP)
case(PE.fit_minimisers, match='tol', tol=NAN, **XP)
case(PE.fit_minimisers, match='tol', tol=-1., **XP)
case(PE.fit_minimisers, match='loss', loss='hinge', **XP)
case(PE.fit_minimisers, match='lambdas', **{**XP, 'lambdas': [0.]})
case(PE.fit_minimisers, match='X', **{**XP, 'X': Lazy(lambda: torch.rand(6, 4, dtype=torch.float64).index_fill(0, torch.tensor(0), NAN))})
case(PE.fit_minimisers, match='sigma', **{**XP, 'sigma': Lazy(lambda: torch.ones(5, dtype=torch.float64))})
case(PE.fit_minimisers, match='X', **{**XP, 'X': 'abc'})
case(PE.cap_distances, 4, [0.5], 0, match='n')
case(PE.cap_distances, 4, [5.], 3, match='d')
case(PE.cap_distances, 4, [NAN], 3, match='d')
case(PE.cap_distances, 0, [0.5], 3, match='N')
case(PE.sample_cap, Lazy(lambda: torch.full((1, 4), 0.5)), [0.5], 0, match='n')
case(PE.sample_cap, Lazy(lambda: torch.full((1, 4), 0.4)), [0.5], 2, match='W')
case(PE.violation_score, Lazy(lambda: torch.ones(2, 4)), Lazy(lambda: torch.rand(6, 4)), Lazy(lambda: torch.ones(6)), -1, match='e0')
LP = dict(W=Lazy(lambda: torch.full((1, 4), 0.5)), X=Lazy(lambda: torch.rand(6, 4)), sigma=Lazy(lambda: torch.ones(6)), d=[0.5])
for k, lo in (('n', 1), ('reps', 0), ('mcmc_steps', -1), ('max_levels', 0), ('seed', -1)):
    numbers(PE.local_entropy, k, integer=True, lo_bad=lo, **LP)
numbers(PE.local_entropy, 'p0', lo_bad=0., hi_bad=1., **LP)

# ---- annealing
PB = Lazy(lambda: AN.binary_perceptron(9, 0.3, 2))
numbers(AN.binary_perceptron, 'N', alpha=0.3, instances=2, integer=True, lo_bad=0)
numbers(AN.binary_perceptron, 'alpha', N=9, instances=2, lo_bad=0.)
numbers(AN.binary_perceptron, 'instances', N=9, alpha=0.3, integer=True, lo_bad=0)
case(AN.stabilities, Lazy(lambda: np.ones((2, 3, 9))), Lazy(lambda: np.ones((2, 8))), match='w')
case(AN.energies, Lazy(lambda: np.ones((2, 3, 9))), Lazy(lambda: np.full((2, 9), 0.5)), match='w')
numbers(AN.chain_keys, 'instances', seed=0, y=2, integer=True, lo_bad=0)
numbers(AN.chain_keys, 'y', seed=0, instances=2, integer=True, lo_bad=0)
case(AN.chain_keys, -1, 2, 2, match='seed')
case(AN.initial_weights, Lazy(lambda: AN.chain_keys(0, 2, 2)), 0, match='N')
case(AN.initial_weights, 'abc', 4, match='keys')
case(AN.anneal, 3, match='problem')
for k, lo in (('y', 0), ('budget', 0), ('seed', -1)):
    numbers(AN.anneal, k, PB, integer=True, lo_bad=lo, backend='numpy' if 'numpy' in getattr(AN, '__doc__', '') else 'torch')
for k, lo in (('beta0', 0.), ('beta1', -1.), ('gamma0', -1.), ('gamma1', -1.)):
    numbers(AN.anneal, k, PB, lo_bad=lo, backend='torch')
case(AN.anneal, PB, match='backend', backend='gpu')
case(AN.anneal, PB, match='keys', keys='abc', backend='torch')
case(AN.neighbour_solution_fraction, Lazy(lambda: np.ones((3, 9))), Lazy(lambda: np.ones(9)), 0, match='k')
case(AN.neighbour_solution_fraction, Lazy(lambda: np.ones((3, 9))), Lazy(lambda: np.ones(9)), 10, match='k')
case(AN.neighbour_solution_fraction, Lazy(lambda: np.ones((3, 9))), Lazy(lambda: np.ones(9)), 1, match='n_samples', n_samples=0)
case(AN.neighbour_solution_fraction, Lazy(lambda: np.ones((3, 9))), Lazy(lambda: np.ones(8)), 1, match='w')

# ---- experiments
PROF = {'quick': {'trials': 2, 'lr': 0.1}, 'full': {'trials': 5, 'lr': 0.1}}
case(EX.parse_value, 3, match='s')
case(EX.resolve_params, PROF, 'medium', match='profile')
case(EX.resolve_params, PROF, 'quick', match='trails', trails=3)
case(EX.resolve_params, PROF, 'quick', match='trials', trials='many')
case(EX.resolve_params, 3, 'quick', match='profiles')
case(EX.save_figure, 3, TMP/'f.png', match='fig')
case(EX.save_figure, Lazy(lambda: __import__('matplotlib.pyplot').pyplot.figure()), TMP/'f.png', match='dpi', dpi=0)
case(EX.elbow, [1, 2, 3], [1., 0.5], match='errors')
case(EX.elbow, [1, 2, 3], [1., NAN, 0.2], match='errors')
case(EX.elbow, [3, 2, 1], [1., 0.5, 0.2], match='widths')
case(EX.experiment_notebooks, TMP/'none', match='folder')
case(EX.find_notebook, 'no_such_notebook', match='no_such_notebook')
case(EX.find_notebook, 3, match='notebook')
case(EX.notebook_parameters, TMP/'none.ipynb', match='none.ipynb')
nbbad = TMP/'bad.ipynb'; nbbad.write_bytes(b'\xff\xfe not json')
case(EX.notebook_parameters, nbbad, match='bad.ipynb')
case(EX.notebook_profiles, nbbad, match='bad.ipynb')
case(EX.check_writable, match='runs_dir', runs_dir='/proc/no/such')
case(EX.write_json, {'a': object()}, TMP/'a.json', match='obj')
case(EX.run_experiments, 'medium', match='profile', progress=False)
case(EX.run_experiments, 'quick', match='no_such_notebook', only=['no_such_notebook'], progress=False)
case(EX.run_experiments, 'quick', match='retries', retries=-1, only=['no_such_notebook'], progress=False)
case(EX.run_experiments, 'quick', match='params', params=3, progress=False)
case(cli, EX.main, '--profile', 'medium', '--only', 'no_such_notebook', '--runs-dir', str(TMP/'runs'), match='medium')
case(cli, EX.main, '--only', 'no_such_notebook', '--runs-dir', str(TMP/'runs'), match='no_such_notebook')
case(cli, EX.main, '--retries', '-1', '--only', 'no_such_notebook', '--runs-dir', str(TMP/'runs'), match='retries')
case(cli, EX.main, '--workers', 'two', match='workers')
case(cli, EX.main, '--sweep', str(TMP/'none.toml'), match='none.toml')
tomlbad = TMP/'bad.toml'; tomlbad.write_bytes(b'\xff\xfe= 1')
case(cli, EX.main, '--sweep', str(tomlbad), match='bad.toml')

# ---- sweeps
case(SW.expand_grid, 3, match='grid'); case(SW.expand_grid, {'a': []}, match='a')
case(SW.load_sweep, TMP/'none.toml', match='none.toml')
case(SW.load_sweep, tomlbad, match='bad.toml')
case(SW.cell_slug, {'a': 1}, match='limit', limit=0)
case(SW.plan_cells, 3, match='blocks')
case(SW.plan_cells, [{'notebooks': ['no_such_notebook'], 'grid': {'trials': [1]}}], match='no_such_notebook', profile='quick')
case(SW.plain_cells, ['no_such_notebook'], 'quick', {}, match='no_such_notebook')
case(SW.local_cluster, 0, match='workers')
case(SW.run_cells, [], match='retries', retries=-1)
case(SW.run_sweep, [], match='workers', workers=0)
case(SW.run_sweep, [], match='retries', retries=-1)

# ---- book
case(BK.chapters, TMP/'none', match='none')
case(BK.close_numbers, '1', '1', match='rtol', rtol=-1.)
case(BK.same_text, 'a', 'a', match='rtol', rtol=NAN)
case(BK.compare_nbs, 3, {}, match='old')
case(BK.execute, [TMP/'none.ipynb'], match='none.ipynb', quiet=True)
case(BK.execute, ['README.md'], match='README.md', quiet=True)
case(BK.check, [TMP/'none.ipynb'], match='none.ipynb', quiet=True)
case(BK.check, [], match='n_workers', n_workers=0, quiet=True)
case(BK.nb_title, 3, match='nb')
case(cli, BK.main, 'check', str(TMP/'none.ipynb'), match='none.ipynb')
case(cli, BK.main, 'execute', 'README.md', match='README.md')
case(cli, BK.main, 'nosuchcommand', match='nosuchcommand')

# Cases that fail today, by id: what is wrong, and which chapter owns the fix. Strict: a fixed case fails until its line goes.
XFAIL = {k: f'owned by {v}' for k, v in {
    'optim.prepare_base[base_kw](3)': "optim: the error does not name base_kw: TypeError: 'int' object is not a mapping",
    'optim.LoopReplicated[models](3)': "optim: the error does not name models: TypeError: 'int' object is not iterable",
    'sam.asam_param_groups[model](3)': "sam: raises AttributeError: 'int' object has no attribute 'named_parameters'",
    'test_bad_inputs.enter_frozen_running_stats[model](3)': "sam: raises AttributeError: 'int' object has no attribute 'modules'",
    'sam.stats_once[model](<function <lambda> at...)': 'sam: model=3 accepted',
    'sam.stats_once[closure](3)': 'sam: closure=3 accepted',
    "sharpness.bn_mode[bn]('frozen')": 'sharpness: accepted',
    "sharpness.bn_mode[model]('eval')": 'sharpness: accepted',
    'sharpness.curvature_operator[loss_fn](loss_fn=3)': 'sharpness: a loss_fn that is not callable accepted (fails at the first product)',
    'sharpness.dense_hessian[x](<lambda>)': 'sharpness: NaN in x accepted',
    'sharpness.dense_hessian[x](<lambda>)#2': 'sharpness: x without rows accepted',
    'sharpness.dense_hessian[target](target=<lambda>)': 'sharpness: the error does not name target: ValueError: x must have shape [5, 4] or [1, 5, 4] to match xhat, ...',
    'sharpness.dense_hessian[loss_fn](loss_fn=3)': "sharpness: the error does not name loss_fn: TypeError: 'int' object is not callable",
    'sharpness.dense_hessian[r](r=-1)': 'sharpness: the error does not name r: ValueError: i must be >= 0, got -1',
    'sharpness.dense_hessian[r](r=2)': 'sharpness: the error does not name r: ValueError: i must be <= 1, got 2',
    'sharpness.lanczos[v0](2)': 'sharpness: an all-zero start vector v0 accepted (NaN basis)',
    'sharpness.lanczos[v0](2)#2': 'sharpness: a 1-d v0: the error does not name v0: ValueError: not enough values to unpack (expected 2, got 1)',
    'sharpness.lanczos[matvec](2)': "sharpness: the error does not name matvec: TypeError: 'int' object is not callable",
    'sharpness.lanczos[v0](2)#3': 'sharpness: NaN in v0 accepted',
    'sharpness.spectral_density[weights](weights=<lambda>)': 'sharpness: raises RuntimeError: The size of tensor a (4) must match the size of tensor b (3) at non-singleto...',
    "sharpness.spectral_density[grid](grid='ab')": "sharpness: the error does not name grid: TypeError: new(): invalid data type 'str'",
    'sharpness.spectral_density[nodes](nodes=<lambda>)': 'sharpness: the error does not name nodes: ValueError: sigma must be finite, got nan',
    'sharpness.barrier[losses](<lambda>)#2': 'sharpness: NaN in losses accepted',
    'sharpness.local_entropy[burn_in](burn_in=1.0)': 'sharpness: accepted',
    'train.evaluate[data](data=<lambda>)': 'train: the error does not name data: ValueError: x contains NaN or infinite values',
    'train.evaluate[seed](seed=-1)': 'train: accepted',
    "train.evaluate[epoch](epoch='a')": 'train: accepted',
    "train.Recorder[metrics](['replicas'])": 'train: an unknown metric accepted at construction',
    'train.Recorder[every](every=0)': 'train: accepted',
    'train.step_lr[milestones]([3, 1])': 'train: accepted',
    'train.Checkpoint[path](3)': 'train: the error does not name path: TypeError: expected str, bytes or os.PathLike object, not int',
    'train.Checkpoint[every](every=0)': 'train: accepted',
    'train.Loop[bs](bs=0)': 'train: accepted',
    'compare.mean_se[x]([1.0, nan])': 'compare: accepted',
    "compare.mean_se[x]('ab')": "compare: the error does not name x: ValueError: could not convert string to float: 'ab'",
    'compare.paired_diff[a]([1.0, 2.0])': 'compare: accepted',
    'compare.verdict_status[z](nan)': 'compare: accepted',
    "compare.paired_verdict[names](names=('a',))": 'compare: raises IndexError: tuple index out of range',
    'perceptron.violation_score[e0](-1)': "perceptron: raises AttributeError: 'int' object has no attribute 'max'",
    'annealing.anneal[beta0](beta0=0.0)': 'annealing: accepted',
    "annealing.anneal[keys](keys='abc')": "annealing: the error does not name keys: ValueError: invalid literal for int() with base 10: 'abc'",
    'experiments.parse_value[s](3)': 'experiments: accepted',
    "experiments.resolve_params[profiles]('quick')": "experiments: the error does not name profiles: TypeError: 'int' object is not iterable",
    "experiments.save_figure[fig](PosixPath('<tmp>/f.png'))": "experiments: raises AttributeError: 'int' object has no attribute 'savefig'",
    "experiments.notebook_profiles[bad.ipynb](PosixPath('<tmp>/bad....)": "experiments: the error does not name bad.ipynb: UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in po...",
    "experiments.write_json[obj](PosixPath('<tmp>/a.js...)": 'experiments: accepted',
    'experiments.run_experiments[params](params=3)': "experiments: the error does not name params: TypeError: 'int' object is not iterable",
    'sweeps.expand_grid[grid](3)': "sweeps: raises AttributeError: 'int' object has no attribute 'items'",
    'sweeps.plan_cells[blocks](3)': "sweeps: the error does not name blocks: TypeError: 'int' object is not iterable",
    'sweeps.run_sweep[workers](workers=0)': 'sweeps: accepted',
    'book.close_numbers[rtol](rtol=-1.0)': 'book: accepted',
    'book.same_text[rtol](rtol=nan)': 'book: accepted',
    'book.compare_nbs[old]({})': "book: the error does not name old: TypeError: 'int' object is not subscriptable",
    'book.nb_title[nb](3)': "book: the error does not name nb: TypeError: 'int' object is not subscriptable",
}.items()}

TEST_PARAMS = list(_params())
test_bad_input = pytest.mark.parametrize('fn,args,kw,exc,match', TEST_PARAMS)(test_bad_input)
