"""Smoke tests of the latent-dimension experiment notebook (Fig. 4.1): a tiny papermill run must write the
figure, the tidy per-trial table and the elbow table; bad overrides fail before anything is written. (Each run is
declared by a `smoke` marker and started up front by tests/conftest.py.)"""
import pandas as pd
import papermill as pm
import pytest

TINY = dict(N=40, trials=2, epochs=2, P_test=40, deep_D_ratios=[0.2], shallow_P_ratios=[2.0, 4.0])
smoke = lambda **params: pytest.mark.smoke('latent_dimension', **dict(TINY, **params))

@smoke(shallow_epochs=[2, 1])
def test_tiny_run_writes_figure_and_tables(smoke_run):
    out = smoke_run().out
    assert (out/'latent_dimension_quick.png').read_bytes()[:4] == b'\x89PNG'
    df = pd.read_csv(out/'latent_dimension_quick.csv')
    est = pd.read_csv(out/'latent_dimension_quick_elbows.csv')
    assert set(df.panel) == {'deep', 'shallow'} and set(df.trial) == {0, 1}
    assert set(df[df.panel == 'deep'].D) == {8} and set(df[df.panel == 'shallow'].P) == {80, 160}
    # shallow_epochs: one training length per shallow curve; the deep panel trains `epochs`
    assert df.groupby(['panel', 'P']).epochs.unique().map(list).to_dict() == {('deep', 800): [2], ('shallow', 80): [2], ('shallow', 160): [1]}
    # widths are round(r*D) for the default ratios: 2, 4, 6, 7, 8, 9, 10, 12, 16, 24 for D = 8
    assert sorted(df[df.panel == 'deep'].B.unique()) == [2, 4, 6, 7, 8, 9, 10, 12, 16, 24]
    assert (df.train_error > 0).all() and (df.test_error > 0).all()
    assert len(est) == 3 and set(est.columns) >= {'D', 'D_hat', 'rel_error', 'trial_min', 'trial_max'}
    assert est.D_hat.isin(df.B.unique()).all()     # the chord rule returns one of the trained widths

@smoke(deep_D_ratios='[0.1]', shallow_P_ratios='[]', width_ratios='[0.5, 1.0, 2.0]', protocol='thesis', init='kaiming_uniform',
       bottleneck_relu=True)
def test_list_override_as_string(smoke_run):
    "papermill -p passes lists as strings; they are read as literals. (Run under the thesis protocol: AdamW, Kaiming, ReLU code.)"
    df = pd.read_csv(smoke_run().out/'latent_dimension_quick.csv')
    assert set(df.panel) == {'deep'} and sorted(df.B.unique()) == [2, 4, 8]

def earlier_result(out):
    (out/'latent_dimension_quick.png').write_bytes(b'earlier result')

# (out-of-BOUNDS values are refused by resolve_params: tests/test_experiments.py checks every notebook's BOUNDS without a
# kernel; an unknown profile likewise: test_experiments.py::test_public_functions_refuse_bad_values_by_name, cases 0 and 11)
# inside the bounds but useless at this N: the notebook's own checks
@pytest.mark.parametrize('message', [
    pytest.param("deep_D_ratios=0.01 gives D = 0", marks=smoke(deep_D_ratios=[0.01], before=earlier_result)),
    pytest.param("width_ratios must be positive", marks=smoke(width_ratios=[], before=earlier_result)),
    pytest.param("shallow_epochs must give one value per shallow curve", marks=smoke(shallow_epochs=[5], before=earlier_result)),
])
def test_bad_override_fails_before_writing(smoke_run, message):
    with pytest.raises(pm.PapermillExecutionError, match=message):
        smoke_run()
    assert (smoke_run.out/'latent_dimension_quick.png').read_bytes() == b'earlier result'
    assert not (smoke_run.out/'latent_dimension_quick.csv').exists()
