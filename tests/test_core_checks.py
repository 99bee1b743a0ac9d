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
    from entropic_ae.train import fit, Recorder
    st = stack([shallow_ae(6, 2, seeds=[0], dtype=torch.float64), shallow_ae(6, 2, seeds=[0], dtype=torch.float64)])
    assert st.seeds is None                           # no valid seed list: forgotten, fit uses range(y)
    data = random_features(N=6, D=2, P=8, P_test=4, seed=0, dtype=torch.float64)
    fit(st, data, epochs=1, bs=4, cbs=[Recorder(metrics=('train_loss',))])
    st2 = stack([shallow_ae(6, 2, seeds=[3]), shallow_ae(6, 2, seeds=[5])])
    assert st2.seeds == [3, 5]

def test_stacked_checks_seeds():
    from entropic_ae.replicas import Stacked
    with pytest.raises(ValueError, match='seeds must be distinct'): Stacked([nn.Linear(2, 2), nn.Linear(2, 2)], seeds=[1, 1])

def test_check_seeds_without_y_takes_as_many_as_given():
    "A loader whose seeds say how many replicas there are: any non-empty list, under the same rule."
    from entropic_ae.core import check_seeds
    assert check_seeds([5, 0, 3]) == [5, 0, 3]
    for bad, err in [([], ValueError), (None, TypeError), ([2, 2], ValueError), ([-1], ValueError), (3, TypeError)]:
        with pytest.raises(err, match='seeds'): check_seeds(bad)

def test_check_module_one_message_wherever_a_model_is_taken():
    "`core.check_module` replaces the ad-hoc checks; each function taking a model refuses a non-module by its parameter's name."
    from entropic_ae.core import check_module
    from entropic_ae import replicas as R, sam as S, flatness as F, vision as V
    lin = nn.Linear(2, 1)
    assert check_module('model', lin) is lin
    with pytest.raises(TypeError, match='net must be an nn.Module, got list'): check_module('net', [lin])
    calls = [(R.sample_dims_of, 'module'), (lambda m: R.recompute_bn(m, torch.zeros(2, 2)), 'model'),
             (S.asam_param_groups, 'model'), (lambda m: S.frozen_running_stats(m).__enter__(), 'model'),
             (lambda m: S.stats_once(m, lambda: 0.), 'model'), (F.model_device, 'model'), (V.channels_last_, 'model')]
    for f, name in calls:
        with pytest.raises(TypeError, match=f'^{name} must be an nn.Module, got list$'): f([lin])
