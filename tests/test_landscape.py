"""Local free entropy quadrature, the two-well toy, replicated Langevin and the SGLD local mean."""
import math
import pytest, torch
from entropic_ae.landscape import (TwoWells, toy_energy, local_free_entropy, local_mean,
                                   replicated_langevin, sgld_local_mean)

E = toy_energy
f64 = dict(dtype=torch.float64)

@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "Tiny tensors stepped many times: intra-op threads only add synchronisation cost on a shared CPU."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.mark.parametrize('k,beta,gamma', [(3., 2., 0.), (3., 2., 0.5), (0.5, 7., 40.), (10., 0.5, 1e3)])
def test_quadratic_energy_is_exact(k, beta, gamma):
    x = torch.linspace(-1.5, 1.5, 7, **f64)
    exact = 0.5*math.log(2*math.pi/(beta*(k + gamma))) - beta*k*gamma/(2*(k + gamma))*x**2
    phi = local_free_entropy(x, lambda t: 0.5*k*t**2, beta, gamma, lo=-12, hi=12, n=40001)
    torch.testing.assert_close(phi, exact, rtol=0, atol=1e-9)
    # the tilted mean of a Gaussian times a Gaussian kernel
    torch.testing.assert_close(local_mean(x, lambda t: 0.5*k*t**2, beta, gamma, lo=-12, hi=12, n=40001),
                               gamma/(k + gamma)*x, rtol=0, atol=1e-9)

def test_large_gamma_limit_is_minus_beta_energy():
    x, beta, gamma = torch.tensor([-2.5, -1.2, -0.3, 0.4, 2.5], **f64), 3., 2e4
    phi = local_free_entropy(x, E, beta, gamma, n=16001)
    torch.testing.assert_close(phi, -beta*E(x) + 0.5*math.log(2*math.pi/(beta*gamma)), rtol=0, atol=1e-3)
    torch.testing.assert_close(local_free_entropy(x, E, beta, gamma, n=16001, normalize=True), -beta*E(x), rtol=0, atol=1e-3)

def test_argmax_moves_from_wide_to_narrow_well():
    x = torch.linspace(-3, 3, 601, **f64)
    am = lambda g: x[local_free_entropy(x, E, 2., g, n=4001).argmax()]
    assert E.in_wide(am(1.)) and abs(am(10.) + 1.16) < 0.03
    assert not E.in_wide(am(300.)) and abs(am(300.) - 1.2) < 0.02

def test_gradient_of_phi_is_pull_to_local_mean():
    x, beta, gamma, h = torch.tensor([-1.7, 0.2, 1.1, 1.9], **f64), 2., 2., 1e-4
    fd = (local_free_entropy(x + h, E, beta, gamma) - local_free_entropy(x - h, E, beta, gamma))/(2*h)
    torch.testing.assert_close(fd, -beta*gamma*(x - local_mean(x, E, beta, gamma)), rtol=0, atol=1e-5)

def test_shapes_dtypes_and_chunking():
    x = torch.linspace(-2, 2, 12, dtype=torch.float32).reshape(3, 4)
    phi = local_free_entropy(x, E, 1., 1., n=2001)
    assert phi.shape == (3, 4) and phi.dtype == torch.float64
    torch.testing.assert_close(local_free_entropy(x, E, 1., 1., n=2001, chunk=2001), phi)  # one row per chunk
    assert local_free_entropy([0.5, 1.], E, 1., 1., n=2001).shape == (2,)
    assert local_free_entropy(torch.empty(0), E, 1., 1.).shape == (0,)

@pytest.mark.parametrize('kw,name', [(dict(beta=0.), 'beta'), (dict(beta=-1.), 'beta'), (dict(beta=float('nan')), 'beta'),
                                     (dict(gamma=-0.1), 'gamma'), (dict(gamma=True), 'gamma'), (dict(n=1), 'n'),
                                     (dict(lo=1., hi=0.), 'hi'), (dict(gamma=0., normalize=True), 'gamma')])
def test_bad_input_names_the_parameter(kw, name):
    args = dict(beta=1., gamma=1.) | kw
    with pytest.raises((ValueError, TypeError), match=name):
        local_free_entropy(torch.zeros(3), E, **args)

def test_bad_input_elsewhere():
    with pytest.raises(ValueError, match='beta'): local_mean(0., E, beta=-2., gamma=1.)
    with pytest.raises(ValueError, match='gamma'): sgld_local_mean(0., E.grad, beta=1., gamma=-1.)
    with pytest.raises(ValueError, match='beta'): replicated_langevin(torch.zeros(2, 3), E.grad, [0.1], beta=0.)
    with pytest.raises(ValueError, match='lr'): replicated_langevin(torch.zeros(2, 3), E.grad, [0.1], lr=0.)
    with pytest.raises(ValueError, match='gammas'): replicated_langevin(torch.zeros(2, 3), E.grad, [0.1, -1.])
    with pytest.raises(ValueError, match='narrow'): TwoWells(narrow=(1., 0., 1.))
    with pytest.raises(ValueError, match='wall'): TwoWells(wall=0.)
    with pytest.raises(TypeError, match='wide'): TwoWells(wide=(1., 2.))
    with pytest.warns(UserWarning, match='kernel width'): local_free_entropy(0., E, 1., 1e6, n=101)

def test_toy_energy_gradient_matches_autograd():
    x = torch.linspace(-3, 3, 301, **f64).requires_grad_()
    torch.testing.assert_close(E.grad(x.detach()), torch.autograd.grad(E(x).sum(), x)[0])
    assert abs(E.barrier() - 0.906) < 2e-3 and E(1.2) < E(-1.2) < 0

def test_replicated_langevin_exact_cases():
    x0 = torch.randn(4, 6, **f64)
    # flat energy: the barycentre is conserved and deviations shrink by (1 - lr*gamma) per step
    x, _ = replicated_langevin(x0, torch.zeros_like, [2.]*10, lr=0.1)
    torch.testing.assert_close(x.mean(-1), x0.mean(-1))
    torch.testing.assert_close(x - x.mean(-1, keepdim=True), 0.8**10*(x0 - x0.mean(-1, keepdim=True)))
    # gamma = 0: stacked replicas are independent gradient-descent runs
    xs, traj = replicated_langevin(x0, E.grad, [0.]*50, record_every=10)
    one = torch.stack([replicated_langevin(x0[:, j:j+1], E.grad, [0.]*50)[0][:, 0] for j in range(6)], -1)
    torch.testing.assert_close(xs, one)
    assert traj.shape == (5, 4, 6)
    # same seed, same noise
    a = replicated_langevin(x0, E.grad, [0.5]*20, beta=2., seed=3)[0]
    torch.testing.assert_close(a, replicated_langevin(x0, E.grad, [0.5]*20, beta=2., seed=3)[0])

def test_robust_ensemble_prefers_wide_well():
    x0 = torch.rand(300, 5, generator=torch.Generator().manual_seed(0), **f64)*6 - 3
    scoped = torch.logspace(-2, 1, 1500, **f64)
    gd = E.in_wide(replicated_langevin(x0, E.grad, torch.zeros(1500, **f64), quench=200)[0]).double().mean()
    re = E.in_wide(replicated_langevin(x0, E.grad, scoped, beta=2., quench=200, seed=1)[0].mean(-1)).double().mean()
    assert re > gd + 0.2, (re, gd)

def test_sgld_local_mean_matches_quadrature():
    x = torch.tensor([-2., -0.5, 2.], **f64)
    est, sem = sgld_local_mean(x, E.grad, 2., 10., n_steps=3000, n_chains=128)
    assert est.shape == sem.shape == x.shape
    torch.testing.assert_close(est, local_mean(x, E, 2., 10.), rtol=0, atol=0.03)
