"Tests for entropic_ae.flatness: local energy and denoising profiles, histograms, bad input."
import math
import pytest, torch
from entropic_ae.data import random_features
from entropic_ae.models import shallow_ae, deep_ae, recon_error
from entropic_ae.replicas import replica
from entropic_ae.flatness import dataset_loss, local_energy, denoising, param_histograms, log_bins

SIG = [0., 0.05, 0.1, 0.2, 0.4]

@pytest.fixture(scope='module')
def data():
    return random_features(N=16, D=3, P=64, P_test=32, seed=1)

@pytest.fixture(scope='module')
def trained(data):
    torch.manual_seed(0)
    m = deep_ae(16, 4, H=12, y=3, seeds=[3, 4, 5])
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad(); recon_error(m(data.x_train), data.x_train).sum().backward(); opt.step()
    return m

def test_sigma_zero_is_training_loss(trained, data):
    with torch.no_grad(): ref = recon_error(trained(data.x_train), data.x_train)
    assert torch.equal(local_energy(trained, data.x_train, [0.], seed=0)[:, 0], ref)
    assert torch.equal(local_energy(trained, data.x_train, SIG, seed=0)[:, 0], ref)
    # with chunks: identical to the chunked data-set loss the training loop reports
    assert torch.equal(local_energy(trained, data.x_train, SIG, batch_size=10)[:, 0],
                       dataset_loss(trained, data.x_train, batch_size=10))
    torch.testing.assert_close(dataset_loss(trained, data.x_train, batch_size=10), ref)

def test_denoising_sigma_zero_is_recon_error(trained, data):
    with torch.no_grad(): ref = recon_error(trained(data.x_train), data.x_train)
    assert torch.equal(denoising(trained, data.x_train, [0., 0.2], seed=0)[:, 0], ref)

def test_profiles_increase_with_sigma(trained, data):
    le = local_energy(trained, data.x_train, SIG, n_draws=20, seed=0)
    assert le.shape == (3, len(SIG)) and (le.diff(dim=1) > 0).all()
    dn = denoising(trained, data.x_train, [0., 0.1, 0.3, 0.6], n_draws=20, seed=0)
    assert dn.shape == (3, 4) and (dn.diff(dim=1) > 0).all()

def test_no_side_effects_and_no_grad(trained, data):
    before = [p.detach().clone() for p in trained.parameters()]
    le = local_energy(trained, data.x_train, SIG, n_draws=3)
    assert not le.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(before, trained.parameters()))

def test_seeded_and_chunk_draw_invariance(trained, data):
    a = local_energy(trained, data.x_train, SIG, n_draws=6, seed=7)
    assert torch.equal(a, local_energy(trained, data.x_train, SIG, n_draws=6, seed=7))
    assert not torch.equal(a, local_energy(trained, data.x_train, SIG, n_draws=6, seed=8))
    torch.testing.assert_close(local_energy(trained, data.x_train, SIG, n_draws=6, seed=7, batch_size=9), a)
    torch.testing.assert_close(local_energy(trained, data.x_train, SIG, n_draws=6, seed=7, draws_per_pass=4), a)
    # common random numbers across σ: the value at σ does not depend on the other σ in the list
    torch.testing.assert_close(local_energy(trained, data.x_train, [0.2], n_draws=6, seed=7)[:, 0], a[:, 3])

def test_stacked_equals_single(trained, data):
    "Replica r measured with its own seed equals the single model measured alone (also with a shared int seed)."
    per = local_energy(trained, data.x_train, SIG, n_draws=4, seed=[10, 11, 12])
    shared = local_energy(trained, data.x_train, SIG, n_draws=4, seed=5)
    dper = denoising(trained, data.x_train, [0.3], n_draws=4, seed=[10, 11, 12])
    for r in range(3):
        one = replica(trained, r)
        torch.testing.assert_close(local_energy(one, data.x_train, SIG, n_draws=4, seed=[10 + r])[0], per[r])
        torch.testing.assert_close(local_energy(one, data.x_train, SIG, n_draws=4, seed=5)[0], shared[r])
        torch.testing.assert_close(denoising(one, data.x_train, [0.3], n_draws=4, seed=[10 + r])[0], dper[r])

def test_rescaling_invariance(data):
    "Multiplicative noise does not see the ReLU rescaling w_in -> c w_in, w_out -> w_out / c of a hidden unit."
    m = deep_ae(16, 4, H=12, y=2, seeds=[0, 1], dtype=torch.float64)
    x = data.x_train.double()
    ref = local_energy(m, x, SIG, n_draws=5, seed=3)
    with torch.no_grad():
        l0, l1 = m.layers[0], m.layers[1]
        c = torch.rand(2, 1, 12, dtype=torch.float64) * 10 + 0.1
        l0.weight.mul_(c); l0.bias.mul_(c); l1.weight.div_(c.transpose(1, 2))
    torch.testing.assert_close(local_energy(m, x, SIG, n_draws=5, seed=3), ref)

def test_histograms(trained, data):
    trained.zero_grad(set_to_none=True)
    rows = param_histograms(trained, run='t', epoch=3)
    assert rows and all(r['metric'] == 'weight_hist' for r in rows)
    recon_error(trained(data.x_train), data.x_train).sum().backward()
    edges = log_bins(1e-6, 1., per_decade=2)
    rows = param_histograms(trained, bins=edges, run='t', epoch=3, replicas=[0, 2], eval_on='replicas')
    assert {r['replica'] for r in rows} == {0, 2} and {r['metric'] for r in rows} == {'weight_hist', 'grad_hist'}
    assert {r['bin'] for r in rows} == set(range(len(edges) + 1))
    for name, p in trained.named_parameters():
        for metric in ('weight_hist', 'grad_hist'):
            n = sum(r['value'] for r in rows if r['layer'] == name and r['metric'] == metric and r['replica'] == 2)
            assert n == p[0].numel()
    assert rows[0]['lo'] == 0 and rows[len(edges)]['hi'] == math.inf and rows[0]['eval_on'] == 'replicas'

def test_bad_input(trained, data):
    x = data.x_train
    with pytest.raises(ValueError, match=r'sigmas\[1\]'): local_energy(trained, x, [0.1, -0.2])
    with pytest.raises(ValueError, match='sigmas'): denoising(trained, x, [])
    with pytest.raises(ValueError, match='n_draws'): local_energy(trained, x, [0.1], n_draws=0)
    with pytest.raises(ValueError, match='batch_size'): denoising(trained, x, [0.1], batch_size=0)
    with pytest.raises(ValueError, match='seed'): local_energy(trained, x, [0.1], seed=[1, 2])
    with pytest.raises(ValueError, match='seed'): local_energy(trained, x, [0.1], seed=-1)
    with pytest.raises(ValueError, match='draws_per_pass'): local_energy(trained, x, [0.1], draws_per_pass=0)
    with pytest.raises(ValueError, match='bins'): param_histograms(trained, bins=[1., 0.5])

def _naive_weights_only(model, x, sigmas, n_draws, seeds):
    "Perturb-evaluate-restore, weights only, one flat draw per replica over its weight tensors in parameter order."
    from entropic_ae.core import make_generator
    ws = [p for n, p in model.named_parameters() if n.endswith('weight')]
    gens = [make_generator(s, 'cpu') for s in seeds]
    out = torch.zeros(len(seeds), len(sigmas), dtype=torch.float64)
    for _ in range(n_draws):
        zs = [torch.randn(sum(w[r].numel() for w in ws), generator=g, dtype=torch.float64).split([w[r].numel() for w in ws])
              for r, g in enumerate(gens)]
        for j, s in enumerate(sigmas):
            saved = [p.detach().clone() for p in model.parameters()]
            with torch.no_grad():
                for r in range(len(seeds)):
                    for w, z in zip(ws, zs[r]): w[r] *= 1 + s * z.view(w[r].shape)
                out[:, j] += recon_error(model(x), x) / n_draws
                for p, p0 in zip(model.parameters(), saved): p.copy_(p0)
    return out

def test_local_energy_weights_only_matches_naive_loop(data):
    m = deep_ae(16, 4, H=12, y=3, seeds=[3, 4, 5], dtype=torch.float64, output=None, init='kaiming_normal')
    with torch.no_grad():
        for l in m.layers: l.bias.normal_(generator=torch.Generator().manual_seed(1))   # biases that matter
    x = data.x_train.double()
    sig = [0., 0.05, 0.15]
    got = local_energy(m, x, sig, n_draws=3, seed=[7, 8, 9], params='weights')
    torch.testing.assert_close(got, _naive_weights_only(m, x, sig, 3, [7, 8, 9]), rtol=1e-12, atol=1e-14)
    with torch.no_grad(): assert torch.equal(got[:, 0], recon_error(m(x), x))
    torch.testing.assert_close(local_energy(m, x, sig, n_draws=3, seed=[7, 8, 9], params='weights', draws_per_pass=2), got,
                               rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match='params'): local_energy(m, x, sig, params='bias')

def test_weights_only_skips_biases_and_norm_scales():
    "On a replicated conv net with batch norm only the conv and linear kernels move: zeroing them makes σ irrelevant."
    from torch import nn
    from entropic_ae.replicas import replicate
    from entropic_ae.flatness import _perturbed
    net = replicate(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 4)), 2)
    names = [n for n, _ in net.named_parameters()]
    assert sorted(names[i] for i in _perturbed(net, 'weights')) == ['module.0.weight', 'module.3.weight']

def test_multiplicative_denoising_matches_naive_loop(data):
    from entropic_ae.core import make_generator
    m = shallow_ae(16, 4, y=2, seeds=[0, 1], dtype=torch.float64, output=None)
    x = data.x_train.double() * 2 - 1
    sig = [0., 0.4, 1.]
    gens = [make_generator(s, 'cpu') for s in (5, 6)]
    ref = torch.zeros(2, 3, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(3):
            xi = torch.stack([torch.randn(x.shape, generator=g, dtype=torch.float64) for g in gens])
            for j, s in enumerate(sig): ref[:, j] += recon_error(m(x * (1 + s * xi)), x) / 3
    got = denoising(m, x, sig, n_draws=3, seed=[5, 6], noise='multiplicative')
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match='noise'): denoising(m, x, sig, noise='dropout')

def test_avg_diff():
    from entropic_ae.flatness import avg_diff
    p = torch.tensor([[2., 3., 5.]])
    assert torch.equal(avg_diff(p), torch.tensor([(0. + 1. + 3.) / 3]))
    assert torch.equal(avg_diff(p, torch.tensor([1.])), torch.tensor([(1. + 2. + 4.) / 3]))
    with pytest.raises(ValueError, match='base'): avg_diff(p, torch.tensor([1., 2.]))

REGISTRY_FRESH = """
import sys, inspect
from entropic_ae.train import check_metrics
from entropic_ae.flatness import METRICS
assert 'entropic_ae.vision' not in sys.modules and 'entropic_ae.sharpness' not in sys.modules, 'imported eagerly'
check_metrics({'test_error': {}, 'train_error': {}, 'delta_error': {'sigmas': [0.1]}, 'grad_sharpness': {},
               'hessian_max': {}, 'rho_sharpness': {'rhos': [0.]}, 'local_entropy': {'gammas': [1.]}, 'dead_bottleneck_units': {}})
assert list(inspect.signature(METRICS['hessian_top'].fn).parameters)[:5] == ['model', 'x', 'target', 'loss_fn', 'ranks']
from entropic_ae import vision, sharpness, compare, flatness
assert METRICS['test_error'].fn is flatness._error and METRICS['asam_sharpness'].fn.__wrapped__ is sharpness._m_asam_sharpness
assert METRICS['dead_bottleneck_units'].fn(compare.shallow_ae(4, 2, y=1), __import__('torch').zeros(3, 4), None, None).shape == (1,)
"""

def test_registry_complete_whatever_is_imported_first():
    "Every built-in measure is known to `check_metrics` in a fresh interpreter, its module imported only on first use."
    import subprocess, sys
    r = subprocess.run([sys.executable, '-c', REGISTRY_FRESH], capture_output=True, text=True, env={**__import__('os').environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-2000:]

def test_register_metric_by_reference():
    from entropic_ae.flatness import METRICS, register_metric
    m = register_metric('lazy_test', 'entropic_ae.flatness:dataset_loss')
    try: assert m.fn.__wrapped__ is dataset_loss and repr(m.fn) == "_Lazy('entropic_ae.flatness:dataset_loss')"
    finally: del METRICS['lazy_test']
    with pytest.raises(ValueError, match='module:function'): register_metric('bad', 'entropic_ae.flatness')
    with pytest.raises(TypeError, match='fn must be callable'): register_metric('bad', 3)
