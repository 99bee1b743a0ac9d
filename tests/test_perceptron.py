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

def _bad_calls():
    "Every public function of entropic_ae.perceptron with one bad argument: (label, call, error type, message naming the parameter)."
    from entropic_ae.perceptron import violation_score
    data = gaussian_mixture(6, 10, 1., seed=0)
    X, s = data.X, data.sigma
    W = unit(torch.randn(2, 6, dtype=torch.float64))
    Xn = X.clone(); Xn[0, 0] = float('nan')
    s3 = s.clone(); s3[0] = 3.
    return [
        ('gaussian_mixture N', lambda: gaussian_mixture(0, 3, 1.), ValueError, 'N must be >= 1'),
        ('gaussian_mixture Delta nan', lambda: gaussian_mixture(5, 3, float('nan')), ValueError, 'Delta must be finite'),
        ('gaussian_mixture seed', lambda: gaussian_mixture(5, 3, 1., seed=-1), ValueError, 'seed must be >= 0'),
        ('gaussian_mixture dtype', lambda: gaussian_mixture(5, 3, 1., dtype=torch.int64), TypeError, 'dtype must be a floating-point'),
        ('generalisation_error data', lambda: generalisation_error(W, (X, s)), TypeError, 'data must be a Mixture'),
        ('generalisation_error W columns', lambda: generalisation_error(torch.ones(2, 5, dtype=torch.float64), data), ValueError, 'W must have 6 entries'),
        ('generalisation_error W nan', lambda: generalisation_error(torch.full((6,), float('nan'), dtype=torch.float64), data), ValueError, 'W must be finite'),
        ('generalisation_error W zero', lambda: generalisation_error(torch.zeros(6, dtype=torch.float64), data), ValueError, 'W must have nonzero rows'),
        ('train_errors X nan', lambda: train_errors(W, Xn, s), ValueError, 'X must be finite'),
        ('train_errors sigma labels', lambda: train_errors(W, X, s3), ValueError, 'sigma must contain only the labels'),
        ('train_errors sigma length', lambda: train_errors(W, X, s[:4]), ValueError, 'sigma must have one label per row of X'),
        ('train_errors W list', lambda: train_errors([[1.] * 6], X, s), TypeError, 'W must be a torch tensor'),
        ('hebb X 1-D', lambda: hebb(X[0], s), ValueError, 'X must have 2 dimensions'),
        ('hebb X int', lambda: hebb(X.long(), s), TypeError, 'X must be a floating-point tensor'),
        ('bayes_error alpha', lambda: bayes_error(-1., 1.), ValueError, 'alpha must be >= 0'),
        ('bayes_error_finite n', lambda: bayes_error_finite(5, 3, 1., n=1), ValueError, 'n must be >= 2'),
        ('bayes_error_finite seed', lambda: bayes_error_finite(5, 3, 1., seed=-2), ValueError, 'seed must be >= 0'),
        ('fit_minimisers max_iter', lambda: fit_minimisers(X, s, [1.], max_iter=-1), ValueError, 'max_iter must be >= 1'),
        ('fit_minimisers tol', lambda: fit_minimisers(X, s, [1.], tol=float('nan')), ValueError, 'tol must be finite'),
        ('fit_minimisers lambdas', lambda: fit_minimisers(X, s, []), ValueError, 'lambdas must be finite and > 0'),
        ('fit_minimisers lambdas str', lambda: fit_minimisers(X, s, 'small'), TypeError, 'lambdas must be a number or a sequence'),
        ('fit_minimisers X nan', lambda: fit_minimisers(Xn, s, [1.]), ValueError, 'X must be finite'),
        ('fit_minimisers progress', lambda: fit_minimisers(X, s, [1.], progress=0), TypeError, 'progress must be a bool'),
        ('cap_distances N', lambda: cap_distances(1, [0.1], 3), ValueError, 'N must be >= 2'),
        ('cap_distances d=4 on the circle', lambda: cap_distances(2, [4.], 3), ValueError, 'd must be < 4 when N = 2'),
        ('cap_distances generator', lambda: cap_distances(5, [0.1], 3, generator=0), TypeError, 'generator must be a torch.Generator'),
        ('sample_cap W norm', lambda: sample_cap(2 * W, [0.1], 3), ValueError, 'W must have unit-norm rows'),
        ('sample_cap n', lambda: sample_cap(W, [0.1], 0), ValueError, 'n must be >= 1'),
        ('sample_cap W 1-D', lambda: sample_cap(W[0], [0.1], 3), ValueError, 'W must have 2 dimensions'),
        ('violation_score e0', lambda: violation_score(W[None], X, s, torch.tensor([0.5])), ValueError, 'e0 must be an integer tensor'),
        ('violation_score Wp columns', lambda: violation_score(torch.ones(1, 2, 5, dtype=torch.float64), X, s, torch.tensor([0])), ValueError, 'Wp must have 6 entries'),
        ('local_entropy W columns', lambda: local_entropy(unit(torch.randn(2, 5, dtype=torch.float64)), X, s, [0.1]), ValueError, 'X must have 5 entries'),
        ('local_entropy X nan', lambda: local_entropy(W, Xn, s, [0.1]), ValueError, 'X must be finite'),
        ('local_entropy sigma', lambda: local_entropy(W, X, s3, [0.1]), ValueError, 'sigma must contain only the labels'),
        ('local_entropy max_levels', lambda: local_entropy(W, X, s, [0.1], max_levels=0), ValueError, 'max_levels must be >= 1'),
        ('local_entropy seed', lambda: local_entropy(W, X, s, [0.1], seed=-1), ValueError, 'seed must be >= 0'),
        ('local_entropy n', lambda: local_entropy(W, X, s, [0.1], n=1), ValueError, 'n must be >= 2'),
        ('local_entropy mcmc_steps', lambda: local_entropy(W, X, s, [0.1], mcmc_steps=-1), ValueError, 'mcmc_steps must be >= 0'),
        ('local_entropy d', lambda: local_entropy(W, X, s, [float('nan')]), ValueError, 'd must lie in'),
    ]

@pytest.mark.parametrize('case', _bad_calls(), ids=lambda c: c[0])
def test_every_bad_input_is_refused_naming_it(case):
    label, call, exc, msg = case
    with pytest.raises(exc, match=msg): call()
