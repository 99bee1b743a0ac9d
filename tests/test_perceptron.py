"""Gaussian-mixture perceptron: the local-entropy estimator against exact answers (no patterns, the circle N = 2,
plain counting), the cap sampler against the exact distance law, the Bayes formula against simulation, bad input."""
import math
import numpy as np, pytest, torch
from scipy.special import betainc
from scipy.stats import kstest
from entropic_ae.perceptron import (bayes_error, bayes_error_finite, cap_distances, fit_minimisers, gaussian_mixture,
                                    hebb, local_entropy, sample_cap, generalisation_error, train_errors)

def unit(x): return torch.nn.functional.normalize(x, dim=-1)

def exact_fraction_circle(phi0, X, sigma, d):
    "Exact fraction of the arc |φ − φ0| ≤ θmax (cos θmax = 1 − d/2) whose points make ≤ ε_train(w) errors."
    th = math.acos(1 - d/2)
    w = torch.tensor([math.cos(phi0), math.sin(phi0)], dtype=torch.float64)
    e0 = int(train_errors(w, X, sigma))
    ang = torch.atan2(X[:, 1], X[:, 0]).numpy()
    cuts = []
    for a in ang:                                     # x·w' = 0 at φ = a ± π/2 (mod 2π), shifted next to φ0
        for b in (a + math.pi/2, a - math.pi/2):
            c = (b - phi0 + math.pi) % (2*math.pi) - math.pi
            if -th < c < th: cuts.append(c)
    pts = np.array(sorted([-th, th] + cuts))
    mids = torch.tensor(phi0 + (pts[1:] + pts[:-1])/2, dtype=torch.float64)
    E = train_errors(torch.stack([mids.cos(), mids.sin()], -1), X, sigma).numpy()
    return float(np.diff(pts)[E <= e0].sum()/(2*th))

def test_circle_exact():
    data = gaussian_mixture(2, 60, 0.5, seed=7)
    grid = torch.linspace(0, 2*math.pi, 20001, dtype=torch.float64)[:-1]
    E = train_errors(torch.stack([grid.cos(), grid.sin()], -1), data.X, data.sigma)
    phi0 = float(grid[E.argmin()])
    w = torch.tensor([[math.cos(phi0), math.sin(phi0)]], dtype=torch.float64)
    ds = [0.05, 1.0, 3.5]
    r = local_entropy(w, data.X, data.sigma, ds, n=400, reps=8, mcmc_steps=20, seed=1)
    for i, d in enumerate(ds):
        ex = math.log(exact_fraction_circle(phi0, data.X, data.sigma, d))
        assert abs(float(r['phi'][0, i]) - ex) < 3*float(r['se'][0, i]) + 0.02, (d, ex, r['phi'][0, i], r['se'][0, i])
    assert r['levels'][0, -1] >= 2                     # the widest arc needs a ladder

def test_no_patterns_gives_one():
    empty = gaussian_mixture(30, 0, 1.)
    W = unit(torch.randn(4, 30, dtype=torch.float64))
    r = local_entropy(W, empty.X, empty.sigma, [1e-3, 0.5, 4.], n=20, reps=2)
    assert (r['phi'] == 0).all() and (r['plain'] == 1).all()

def test_ladder_agrees_with_plain_counting():
    data = gaussian_mixture(40, 80, 1.0, seed=3)
    W = unit(fit_minimisers(data.X, data.sigma, [1e2], 'square'))
    d = [0.1]
    plain = local_entropy(W, data.X, data.sigma, d, n=20000, reps=1, p0=1/20000, seed=5)   # p0 tiny: one level, counting
    assert plain['levels'].item() == 1
    p = plain['plain'].item()
    assert 1e-3 < p < 0.1
    lad = local_entropy(W, data.X, data.sigma, d, n=300, reps=6, p0=0.5, mcmc_steps=15, seed=6)
    assert lad['levels'].item() >= 2
    se_plain = math.sqrt((1 - p)/(20000*p))
    assert abs(lad['phi'].item() - math.log(p)) < 3*math.hypot(lad['se'].item(), se_plain)

@pytest.mark.parametrize('N', [2, 3, 7, 60])
def test_cap_distance_law(N):
    g = torch.Generator().manual_seed(N)
    ds = [0.02, 0.7, 2.5]
    s = cap_distances(N, ds, 5000, g)
    k = (N - 1)/2
    for i, d in enumerate(ds):
        assert s[i].max() <= d/4
        assert kstest(s[i].numpy(), lambda x: betainc(k, k, x)/betainc(k, k, d/4)).pvalue > 1e-3

def test_cap_points_in_cap_and_isotropic():
    g = torch.Generator().manual_seed(0)
    W = unit(torch.randn(3, 25, dtype=torch.float64))
    P = sample_cap(W, [0.2, 3.], 3000, g)
    assert P.shape == (3, 2, 3000, 25)
    assert torch.allclose(P.norm(dim=-1), torch.ones((), dtype=torch.float64), atol=1e-12)
    assert (((P - W[:, None, None])**2).sum(-1) <= torch.tensor([0.2, 3.])[:, None] + 1e-12).all()
    cos = (P*W[:, None, None]).sum(-1)
    rest = P.mean(2) - cos.mean(-1)[..., None]*W[:, None]
    assert rest.norm(dim=-1).max() < 4/math.sqrt(3000)

def test_bayes_formula_vs_simulation():
    N, alpha, Delta = 100, 1.5, 0.8
    errs = []
    for s in range(400):
        data = gaussian_mixture(N, round(alpha*N), Delta, seed=1000 + s)
        errs.append(float(generalisation_error(hebb(data.X, data.sigma), data)))
    m, se = np.mean(errs), np.std(errs)/math.sqrt(len(errs))
    fin, fse = bayes_error_finite(N, round(alpha*N), Delta)
    assert abs(m - fin) < 4*math.hypot(se, fse)
    assert abs(fin - bayes_error(alpha, Delta)) < 1/N
    # Bayes-optimal: no minimiser of either loss beats the Hebbian vector on average
    data = gaussian_mixture(N, round(alpha*N), Delta, seed=1)
    for loss in ['logistic', 'square']:
        assert (generalisation_error(fit_minimisers(data.X, data.sigma, [1e-2, 1., 1e2], loss), data) >= bayes_error(alpha, Delta) - 0.03).all()

def test_bad_inputs():
    data = gaussian_mixture(10, 20, 1.)
    W = unit(torch.randn(2, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match='d must lie in'): local_entropy(W, data.X, data.sigma, [0.])
    with pytest.raises(ValueError, match='d must lie in'): cap_distances(10, [4.5], 3)
    with pytest.raises(ValueError, match='W must have unit-norm rows'): local_entropy(2*W, data.X, data.sigma, [0.1])
    with pytest.raises(ValueError, match='p0 must be'): local_entropy(W, data.X, data.sigma, [0.1], p0=0.95)
    with pytest.raises(ValueError, match='lambdas must be finite'): fit_minimisers(data.X, data.sigma, [-1.])
    with pytest.raises(ValueError, match='loss must be one of'): fit_minimisers(data.X, data.sigma, [1.], 'hinge')
    with pytest.raises(ValueError, match='Delta must be > 0'): bayes_error(1., 0.)
    with pytest.raises(TypeError, match='N must be an integer'): gaussian_mixture(10.5, 3, 1.)
