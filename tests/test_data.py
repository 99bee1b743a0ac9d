"""Random feature data: shapes, reproducibility, the generative formula, corruption and argument errors."""
import math
import pytest, torch
from entropic_ae.core import make_generator
from entropic_ae.data import RandomFeatureData, corrupt, explained_variance, random_features, sigmoid

def test_shapes_and_properties():
    d = random_features(N=30, D=5, P=40, P_test=7, seed=3)
    assert isinstance(d, RandomFeatureData)
    assert d.F.shape == (5, 30) and d.x_train.shape == (40, 30) and d.x_test.shape == (7, 30)
    assert d.c_train.shape == (40, 5) and d.c_test.shape == (7, 5)
    assert (d.N, d.D, d.P, d.P_test) == (30, 5, 40, 7)
    assert random_features(N=4, D=2, P=6).P_test == 6   # default P_test = P

def test_formula_and_range():
    d = random_features(N=50, D=6, P=80, seed=0, dtype=torch.float64)
    assert d.x_train.dtype == torch.float64
    torch.testing.assert_close(d.x_train, torch.sigmoid(5*d.c_train @ d.F/math.sqrt(6)))
    torch.testing.assert_close(d.x_test, torch.sigmoid(5*d.c_test @ d.F/math.sqrt(6)))
    assert ((d.c_train == 0) | (d.c_train == 1)).all()
    assert 0.3 < d.c_train.mean() < 0.7
    assert (d.x_train > 0).all() and (d.x_train < 1).all()

def test_custom_nonlinearity_and_gain():
    d = random_features(N=20, D=4, P=10, f=torch.tanh, seed=1)
    torch.testing.assert_close(d.x_train, torch.tanh(d.c_train @ d.F/2))
    d2 = random_features(N=20, D=4, P=10, gain=2.0, seed=1)
    torch.testing.assert_close(d2.x_train, sigmoid(2.0)(d2.c_train @ d2.F/2))

def test_seed_reproducible():
    a, b = random_features(20, 4, 10, seed=5), random_features(20, 4, 10, seed=5)
    for k in ('F', 'x_train', 'x_test', 'c_train', 'c_test'): assert torch.equal(getattr(a, k), getattr(b, k))
    assert not torch.equal(a.F, random_features(20, 4, 10, seed=6).F)

def test_linear_data_has_rank_D():
    d = random_features(N=60, D=5, P=200, f=lambda h: h, seed=0, dtype=torch.float64)
    assert explained_variance(d.x_train)[4] > 1 - 1e-10
    assert explained_variance(random_features(N=60, D=5, P=200, seed=0).x_train)[4] < 0.99

@pytest.mark.parametrize('kw,name', [(dict(N=0), 'N'), (dict(D=0), 'D'), (dict(P=-3), 'P'), (dict(P_test=0), 'P_test'),
                                     (dict(f='sigmoid'), 'f'), (dict(D=2.0), 'D'), (dict(gain=float('nan')), 'gain'),
                                     (dict(dtype=torch.int32), 'dtype')])
def test_bad_arguments_name_the_parameter(kw, name):
    with pytest.raises((TypeError, ValueError), match=name):
        random_features(**{**dict(N=10, D=3, P=5), **kw})

def test_corrupt():
    x = random_features(40, 5, 300).x_train
    assert torch.equal(corrupt(x, 0.0), x)
    xn = corrupt(x, 0.2, make_generator(1, 'cpu'))
    assert abs((xn - x).std().item() - 0.2) < 0.01 and abs((xn - x).mean().item()) < 0.01
    assert torch.equal(xn, corrupt(x, 0.2, make_generator(1, 'cpu')))
    for bad in (-1.0, float('nan'), float('inf')):
        with pytest.raises(ValueError, match='sigma'): corrupt(x, bad)
