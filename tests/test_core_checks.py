"One rule for seeds and one for booleans (`core.check_seeds`, `core.check_bool`), used everywhere (issue 20)."
import pytest, torch
from torch import nn
from entropic_ae.data import random_features
from entropic_ae.models import shallow_ae, deep_ae, MLP
from entropic_ae.replicas import replicate, replica, stack, barycentre, n_replicas

def test_check_seeds_rule():
    from entropic_ae.core import check_seeds
    assert check_seeds(None, 3) == [0, 1, 2]
    assert check_seeds((4, 2), 2) == [4, 2]
    for bad, err in [([0, 0], ValueError), ([1], ValueError), ([-1, 2], ValueError), ([0.5, 1], TypeError), ('01', TypeError), (3, TypeError)]:
        with pytest.raises(err, match='seeds'): check_seeds(bad, 2)

def test_check_bool():
    from entropic_ae.core import check_bool
    assert check_bool('flag', True) is True
    for bad in (1, 'yes', None):
        with pytest.raises(TypeError, match='flag'): check_bool('flag', bad)

@pytest.mark.parametrize('build', [lambda s: shallow_ae(6, 2, y=2, seeds=s), lambda s: deep_ae(6, 2, H=4, y=2, seeds=s),
                                   lambda s: MLP([6, 4, 3], y=2, seeds=s)])
def test_models_refuse_equal_seeds_like_replicate(build):
    "Former disagreement: the models built identical replicas from [0, 0], `replicate` refused them."
    with pytest.raises(ValueError, match='seeds must be distinct'): build([0, 0])
    with pytest.raises(ValueError, match='seeds must be distinct'): replicate(nn.Linear(3, 2), 2, seeds=[0, 0])

def test_fit_accepts_a_stack_the_library_built():
    "Former disagreement: stacking two y=1 models (seeds [0] each) gave seeds [0, 0], which fit(seeds=None) refused."
    from entropic_ae.train import fit
    st = stack([shallow_ae(6, 2, seeds=[0], dtype=torch.float64), shallow_ae(6, 2, seeds=[0], dtype=torch.float64)])
    assert st.seeds is None                           # no valid seed list: forgotten, fit uses range(y)
    data = random_features(N=6, D=2, P=8, P_test=4, seed=0, dtype=torch.float64)
    fit(st, data, epochs=1, bs=4, progress=False, metrics=('train_loss',))
    st2 = stack([shallow_ae(6, 2, seeds=[3]), shallow_ae(6, 2, seeds=[5])])
    assert st2.seeds == [3, 5]

def test_stacked_checks_seeds():
    from entropic_ae.replicas import Stacked
    with pytest.raises(ValueError, match='seeds must be distinct'): Stacked([nn.Linear(2, 2), nn.Linear(2, 2)], seeds=[1, 1])
