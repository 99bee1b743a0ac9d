"""Smoke tests of the latent-dimension experiment notebook (Fig. 4.1): a tiny papermill run must write the
figure, the tidy per-trial table and the elbow table; bad overrides fail before anything is written."""
import re
from pathlib import Path
import pandas as pd
import papermill as pm
import pytest

NB = Path(__file__).resolve().parent.parent/'nbs'/'experiments'/'latent_dimension.ipynb'
TINY = dict(N=40, trials=2, epochs=2, P_test=40, deep_D_ratios=[0.2], shallow_P_ratios=[2.0, 4.0])

def run(tmp_path, **params):
    pm.execute_notebook(str(NB), str(tmp_path/'out.ipynb'), kernel_name='python3', cwd=str(NB.parent),
                        progress_bar=False, parameters=dict(figures_dir=str(tmp_path), **params))

def test_tiny_run_writes_figure_and_tables(tmp_path):
    run(tmp_path, **dict(TINY, shallow_epochs=[2, 1]))
    assert (tmp_path/'latent_dimension_quick.png').read_bytes()[:4] == b'\x89PNG'
    df = pd.read_csv(tmp_path/'latent_dimension_quick.csv')
    est = pd.read_csv(tmp_path/'latent_dimension_quick_elbows.csv')
    assert set(df.panel) == {'deep', 'shallow'} and set(df.trial) == {0, 1}
    assert set(df[df.panel == 'deep'].D) == {8} and set(df[df.panel == 'shallow'].P) == {80, 160}
    # shallow_epochs: one training length per shallow curve; the deep panel trains `epochs`
    assert df.groupby(['panel', 'P']).epochs.unique().map(list).to_dict() == {('deep', 800): [2], ('shallow', 80): [2], ('shallow', 160): [1]}
    # widths are round(r*D) for the default ratios: 2, 4, 6, 7, 8, 9, 10, 12, 16, 24 for D = 8
    assert sorted(df[df.panel == 'deep'].B.unique()) == [2, 4, 6, 7, 8, 9, 10, 12, 16, 24]
    assert (df.train_error > 0).all() and (df.test_error > 0).all()
    assert len(est) == 3 and set(est.columns) >= {'D', 'D_hat', 'rel_error', 'trial_min', 'trial_max'}
    assert est.D_hat.isin(df.B.unique()).all()     # the chord rule returns one of the trained widths

def test_list_override_as_string(tmp_path):
    "papermill -p passes lists as strings; they are read as literals. (Run under the thesis protocol: AdamW, Kaiming, ReLU code.)"
    run(tmp_path, **dict(TINY, deep_D_ratios='[0.1]', shallow_P_ratios='[]', width_ratios='[0.5, 1.0, 2.0]', protocol='thesis',
                         init='kaiming_uniform', bottleneck_relu=True))
    df = pd.read_csv(tmp_path/'latent_dimension_quick.csv')
    assert set(df.panel) == {'deep'} and sorted(df.B.unique()) == [2, 4, 8]

@pytest.mark.parametrize('bad, message', [
    (dict(profile='medium'), "profile must be one of"),
    # (out-of-BOUNDS values are refused by resolve_params: tests/test_experiments.py checks every notebook's BOUNDS without a kernel)
    # inside the bounds but useless at this N: the notebook's own checks
    (dict(deep_D_ratios=[0.01]), "deep_D_ratios=0.01 gives D = 0"),
    (dict(width_ratios=[]), "width_ratios must be positive"),
    (dict(shallow_epochs=[5]), "shallow_epochs must give one value per shallow curve"),
])
def test_bad_override_fails_before_writing(tmp_path, bad, message):
    keep = tmp_path/'latent_dimension_quick.png'
    keep.write_bytes(b'earlier result')
    with pytest.raises(pm.PapermillExecutionError, match=message):
        run(tmp_path, **dict(TINY, **bad))
    assert keep.read_bytes() == b'earlier result'
    assert not (tmp_path/'latent_dimension_quick.csv').exists()
