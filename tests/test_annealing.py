"""SA and replicated SA on the binary perceptron: incremental energies against full recomputation, the compiled kernel
against the torch one, rSA at gamma = 0 against independent SA runs, stacking invariance, the neighbour-density measure
against brute force, bad input, and papermill smoke runs of both experiments of issue 11."""
import itertools, math
from pathlib import Path
import numpy as np, pandas as pd, pytest
import papermill as pm
from entropic_ae.annealing import (anneal, binary_perceptron, chain_keys, energies, initial_weights,
                                   neighbour_solution_fraction, stabilities)

EXP = Path(__file__).resolve().parent.parent/'nbs'/'experiments'

@pytest.mark.parametrize('backend', ['numba', 'torch'])
def test_incremental_equals_full_recomputation(backend):
    pr = binary_perceptron(33, 0.7, 4, seed=1)
    for beta0, gamma0 in [(0., 0.), (0.8, 0.4)]:           # beta = 0: every one of the 4*3*33*sweeps moves is accepted
        r = anneal(pr, y=3, budget=3*33*(40 if backend == 'numba' else 8), beta0=beta0, beta1=0., gamma0=gamma0, backend=backend)
        assert (r.E[~r.solved] == energies(pr.A, r.w)[~r.solved]).all()
        assert (energies(pr.A, r.solution[:, None])[r.solved] == 0).all()
    # at beta = 0 the walk really moved: final weights differ from the start in many sites
    r0 = anneal(pr, y=3, budget=3*33*20, beta0=0., beta1=0., seed=5, backend=backend)
    start = initial_weights(chain_keys(5, 4, 3), 33)
    assert (r0.w != start).mean() > 0.3

def test_numba_equals_torch():
    pr = binary_perceptron(25, 0.6, 5, seed=2)
    kw = dict(y=3, budget=3*25*50, beta0=0.5, beta1=0.03, gamma0=0.2, gamma1=0.03, seed=4)
    a, b = anneal(pr, backend='numba', **kw), anneal(pr, backend='torch', **kw)
    for f in ['solved', 'moves', 'solution', 'E', 'w']: assert (getattr(a, f) == getattr(b, f)).all(), f

def test_gamma_zero_is_independent_sa():
    N, B, y, sweeps = 41, 12, 3, 60
    pr = binary_perceptron(N, 0.55, B, seed=5)
    keys = chain_keys(11, B, y)
    rep = anneal(pr, y=y, budget=y*N*sweeps, beta0=0.5, beta1=0.03, keys=keys)
    sa = [anneal(pr, y=1, budget=N*sweeps, beta0=0.5, beta1=0.03, keys=keys[:, a:a + 1]) for a in range(y)]
    assert 0 < rep.solved.sum() < B                      # a mix of solved and unsolved instances
    first = np.min([np.where(r.solved, (r.moves - 1)*y + a + 1, np.iinfo(np.int64).max) for a, r in enumerate(sa)], 0)
    assert (rep.solved == np.array([r.solved for r in sa]).any(0)).all()
    assert (rep.moves[rep.solved] == first[rep.solved]).all()
    for a, r in enumerate(sa): assert (rep.w[~rep.solved, a] == r.w[~rep.solved, 0]).all()

def test_stacking_does_not_change_instances():
    kw = dict(y=3, budget=3*21*40, beta0=0.5, beta1=0.03, gamma0=0.2, gamma1=0.03, seed=3)
    small, big = anneal(binary_perceptron(21, 0.5, 2, seed=7), **kw), anneal(binary_perceptron(21, 0.5, 6, seed=7), **kw)
    for f in ['solved', 'moves', 'E', 'w']: assert (getattr(small, f) == getattr(big, f)[:2]).all(), f

def test_moves_count_every_replica_and_respect_budget():
    pr = binary_perceptron(31, 0.5, 8, seed=9)
    for y in [1, 3, 5]:
        r = anneal(pr, y=y, budget=10**5, beta0=0.5, beta1=0.01, gamma0=0.2 if y > 1 else 0., gamma1=0.01)
        assert r.sweeps == 10**5//(y*31)
        assert (r.moves[r.solved] <= r.sweeps*y*31).all() and (r.moves[~r.solved] == -1).all()

def test_neighbour_fraction_matches_brute_force():
    pr = binary_perceptron(13, 0.3, 6, seed=2)
    r = anneal(pr, budget=13*300, beta0=1., beta1=0.02)
    for b in np.flatnonzero(r.solved)[:2]:
        w, A = r.solution[b].astype(int), pr.A[b]
        for k in [1, 2, 3]:
            brute = np.mean([((w*np.where(np.isin(np.arange(13), F), -1, 1)) @ A.astype(int) > 0).all()
                             for F in itertools.combinations(range(13), k)])
            f, se, n = neighbour_solution_fraction(A, w, k, n_samples=1000)
            assert f == pytest.approx(brute, abs=1e-12) and se == 0 and n == math.comb(13, k)
        f, se, n = neighbour_solution_fraction(A, w, 4, n_samples=300, seed=1)
        brute4 = np.mean([((w*np.where(np.isin(np.arange(13), F), -1, 1)) @ A.astype(int) > 0).all()
                          for F in itertools.combinations(range(13), 4)])
        assert n == 300 and abs(f - brute4) < 4*se + 1e-9

def test_bad_inputs():
    with pytest.raises(ValueError, match='N must be odd'): binary_perceptron(10, 0.5, 1)
    with pytest.raises(ValueError, match='alpha must be >= 0'): binary_perceptron(11, -0.5, 1)
    with pytest.raises(TypeError, match='instances must be an integer'): binary_perceptron(11, 0.5, 1.5)
    pr = binary_perceptron(11, 0.5, 2)
    with pytest.raises(ValueError, match='y must be >= 1'): anneal(pr, y=0)
    with pytest.raises(ValueError, match='budget must be at least one sweep'): anneal(pr, y=3, budget=20)
    with pytest.raises(ValueError, match='beta1 must be >= 0'): anneal(pr, beta1=-0.1)
    with pytest.raises(ValueError, match='backend must be one of'): anneal(pr, backend='gpu')
    with pytest.raises(ValueError, match='keys must have shape'): anneal(pr, y=2, keys=chain_keys(0, 2, 3))
    r = anneal(pr, budget=11*200, beta0=1.)
    with pytest.raises(ValueError, match='w must be a solution'): neighbour_solution_fraction(pr.A[0], -np.ones(11), 1)
    with pytest.raises(ValueError, match='k must be <= 11'): neighbour_solution_fraction(pr.A[0], np.ones(11), 12)

def _run(name, tmp_path, **params):
    pm.execute_notebook(str(EXP/f'{name}.ipynb'), str(tmp_path/f'{name}_out.ipynb'), kernel_name='python3',
                        cwd=str(EXP), progress_bar=False, parameters=dict(figures_dir=str(tmp_path), **params))

def test_annealing_notebook_smoke(tmp_path):
    _run('replicated_annealing', tmp_path, Ns=[21, 31, 41], alphas=[0.4], ys=[3], instances=4, budget=60000,
         rates=[0.01], density_ks=[1, 2], density_samples=50, threads=1)
    assert (tmp_path/'annealing_scaling_quick.png').read_bytes()[:4] == b'\x89PNG'
    df = pd.read_csv(tmp_path/'annealing_quick.csv')
    assert {'solved', 'moves', 'final_min_energy', 'seconds'} <= set(df.metric)
    assert set(df.alg) == {'SA', 'rSA y=3'} and sorted(df.N.unique()) == [21, 31, 41]
    vt = pd.read_csv(tmp_path/'annealing_quick_verdict.csv')
    assert vt.claim.str.contains('time to solution').sum() == 2
    assert len(pd.read_csv(tmp_path/'annealing_quick_summary.csv')) == 6

def test_perceptron_notebook_smoke(tmp_path):
    _run('perceptron_local_entropy', tmp_path, N=16, instances=1, lambdas=[0.01, 10.0], ds=[0.05, 0.5],
         n_chains=32, reps=2, mcmc_steps=4, threads=1)
    assert (tmp_path/'perceptron_local_entropy_quick.png').read_bytes()[:4] == b'\x89PNG'
    df = pd.read_csv(tmp_path/'perceptron_local_entropy_quick.csv')
    assert {'test_error', 'train_error', 'phi', 'phi_se', 'ladder_levels', 'bayes_error_large_N'} <= set(df.metric)
    phi = df[df.metric == 'phi']
    assert len(phi) == 2*2*2 and (phi.value.dropna() <= 0).all() and phi.value.notna().sum() >= 6   # a stalled ladder is nan
    vt = pd.read_csv(tmp_path/'perceptron_local_entropy_quick_verdict.csv')
    assert set(vt.loss) == {'logistic', 'square'} and {'holds', 'contradicted', 'mixed', 'not resolved'} >= set(vt.result)

def test_bad_override_fails_before_writing(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match='Ns must be odd'):
        _run('replicated_annealing', tmp_path, Ns=[20, 31])
    with pytest.raises(pm.PapermillExecutionError, match=r'ds\[1\] must lie in \(0, 4\], got 5.0'):   # the notebook's BOUNDS, by item
        _run('perceptron_local_entropy', tmp_path, ds=[0.1, 5.0])
    assert not list(tmp_path.glob('*quick*'))

def _bad_calls():
    "Every public function of entropic_ae.annealing with one bad argument: (label, call, error type, message naming the parameter)."
    pr = binary_perceptron(11, 0.5, 2)
    w = np.ones((2, 1, 11), np.int8)
    return [
        ('binary_perceptron seed', lambda: binary_perceptron(11, 0.5, 1, seed=-1), ValueError, 'seed must be >= 0'),
        ('binary_perceptron alpha too small', lambda: binary_perceptron(11, 0.01, 1), ValueError, 'alpha\\*N must round to at least one'),
        ('stabilities A values', lambda: stabilities(pr.A * 2, w), ValueError, 'A must contain only -1 and \\+1'),
        ('stabilities w values', lambda: stabilities(pr.A, w * 3), ValueError, 'w must contain only -1 and \\+1'),
        ('stabilities w shape', lambda: stabilities(pr.A, np.ones((2, 1, 10), np.int8)), ValueError, 'w must have shape \\[B, y, N\\]'),
        ('energies w dims', lambda: energies(pr.A, np.ones((2, 11), np.int8)), ValueError, 'w must have 3 dimensions'),
        ('chain_keys y', lambda: chain_keys(0, 2, 0), ValueError, 'y must be >= 1'),
        ('initial_weights N', lambda: initial_weights(chain_keys(0, 2, 1), 0), ValueError, 'N must be >= 1'),
        ('initial_weights keys', lambda: initial_weights(np.array([1.5, 2.5]), 5), ValueError, 'keys must be a non-empty \\[instances, y\\]'),
        ('anneal problem', lambda: anneal(pr.A), TypeError, 'problem must be a Problem'),
        ('anneal budget', lambda: anneal(pr, budget=0), ValueError, 'budget must be >= 1'),
        ('anneal beta0 nan', lambda: anneal(pr, beta0=float('nan')), ValueError, 'beta0 must be finite'),
        ('anneal gamma1', lambda: anneal(pr, gamma1=-1.), ValueError, 'gamma1 must be >= 0'),
        ('anneal seed', lambda: anneal(pr, seed=-1), ValueError, 'seed must be >= 0'),
        ('anneal progress', lambda: anneal(pr, progress='no'), TypeError, 'progress must be a bool'),
        ('neighbour A values', lambda: neighbour_solution_fraction(pr.A[0] * 0, np.ones(11), 1), ValueError, 'A must contain only -1 and \\+1'),
        ('neighbour w length', lambda: neighbour_solution_fraction(pr.A[0], np.ones(10), 1), ValueError, 'w must have one weight per row of A'),
        ('neighbour w values', lambda: neighbour_solution_fraction(pr.A[0], np.full(11, 2), 1), ValueError, 'w must contain only -1 and \\+1'),
        ('neighbour k', lambda: neighbour_solution_fraction(pr.A[0], np.ones(11), 0), ValueError, 'k must be >= 1'),
        ('neighbour n_samples', lambda: neighbour_solution_fraction(pr.A[0], np.ones(11), 1, n_samples=0), ValueError, 'n_samples must be >= 1'),
        ('neighbour seed', lambda: neighbour_solution_fraction(pr.A[0], np.ones(11), 1, seed=-3), ValueError, 'seed must be >= 0'),
    ]

@pytest.mark.parametrize('case', _bad_calls(), ids=lambda c: c[0])
def test_every_bad_input_is_refused_naming_it(case):
    label, call, exc, msg = case
    with pytest.raises(exc, match=msg): call()

def test_windows_change_nothing_and_progress_is_silent_by_default(capsys):
    "The numba kernel run window by window (for the progress bar) gives the run of one call; a short run prints nothing."
    from entropic_ae import annealing as an
    pr = binary_perceptron(21, 0.6, 3, seed=7)
    r = anneal(pr, y=3, budget=3*21*150, beta0=0.5, beta1=0.02, gamma0=0.2, gamma1=0.02, seed=2)
    assert capsys.readouterr().err == ''
    keys = chain_keys(2, 3, 3); w = initial_weights(keys, 21)
    h = stabilities(pr.A, w).astype(np.int32); E = (h < 0).sum(-1).astype(np.int32); S = w.astype(np.int32).sum(1)
    solved, moves, sol = (E == 0).any(1), np.zeros(3, np.int64), np.zeros((3, 21), np.int8)
    sw = np.arange(150)
    an._anneal_numba(pr.A, w, h, S, E, keys, 0.5*1.02**sw, 0.2*1.02**sw, solved, moves, sol, 0, 150*21)
    assert (solved == r.solved).all() and (np.where(solved, moves, -1) == r.moves).all() and (w == r.w).all() and (E == r.E).all()
