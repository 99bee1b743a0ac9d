"""Smoke tests of the replication experiment notebooks (Figs 4.2-4.4): tiny papermill runs that must write the
figure, the tidy CSV with the expected metrics, and the verdict table; bad overrides fail before anything is written.
(Each run is declared by a `smoke` marker and started up front by tests/conftest.py.)"""
import pandas as pd
import papermill as pm
import pytest

TINY = dict(N=24, D=6, P_test=48, trials=2, y=2, epochs=3, bs=32, record_every=1)

def run(name, smoke_run):
    out = smoke_run().out
    png, csv, verdict = (out/f'{name}_quick{s}' for s in ('.png', '.csv', '_verdict.csv'))
    assert png.read_bytes()[:4] == b'\x89PNG'
    return pd.read_csv(csv), pd.read_csv(verdict)

def check_arms(df, trials):
    fin = df[df.final == True]
    got = set(zip(fin.arm, fin.eval_on))
    assert got == {('adam', 'replicas'), ('replicated', 'barycentre'), ('replicated', 'replica0'), ('sam', 'replicas')}
    assert set(fin.trial) == set(range(trials))
    rep = df[df.arm == 'replicated']
    assert {'gamma', 'dist_to_barycentre'} <= set(rep.metric)
    assert (rep[rep.metric == 'gamma'].value > 0).all()
    assert fin.value.notna().all()

@pytest.mark.smoke('replication_flatness', P=96, B=6, archs=['deep', 'shallow'], n_draws=2, energy_sigmas=[0.0, 0.1],
                   denoise_sigmas=[0.0, 0.2], **TINY)
def test_flatness_notebook(smoke_run):
    df, vt = run('replication_flatness', smoke_run)
    check_arms(df, 2)
    fin = df[df.final == True]
    assert {'train_loss', 'test_loss', 'local_energy', 'denoising'} <= set(fin.metric)
    assert set(fin.arch) == {'deep', 'shallow'}
    le = fin[fin.metric == 'local_energy']
    assert sorted(le.sigma.unique()) == [0.0, 0.1]
    # sigma = 0 of the local energy is exactly the training loss
    key = ['arch', 'arm', 'eval_on', 'trial']
    a = le[le.sigma == 0].set_index(key).value.sort_index()
    b = fin[fin.metric == 'train_loss'].set_index(key).value.sort_index()
    pd.testing.assert_series_equal(a, b, check_names=False, rtol=1e-6)
    assert {'diff', 'diff_se', 'z', 'status'} <= set(vt.columns) and len(vt) == 2 * 4 * 3

def check_matched(df, vt, key, values):
    """Targets [1.0, 1e-9]: every run reaches the first (an MSE of sigmoid outputs is below 1) and never the second, so the
    matched comparison is made at 1.0 for every setting, and the unreached target is reported, not dropped."""
    st = df[df.metric == 'status']
    assert set(st[st.target == 1.0].status) == {'reached'} and set(st[st.target == 1e-9].status) == {'not reached'}
    m = vt[vt.comparison == 'matched loss']
    assert set(vt.comparison) == {'fixed epochs', 'matched loss'} and set(m.target) == {1.0}
    assert set(m[m.vs != 'trend'][key].astype(str)) == set(map(str, values)) and (m[m.vs != 'trend'].epochs_adam >= 1).all()
    assert (vt.n_trials == 2).all()

@pytest.mark.smoke('replication_bottleneck', P=96, widths=[3, 8], targets=[1.0, 1e-9], **TINY)
def test_bottleneck_notebook(smoke_run):
    df, vt = run('replication_bottleneck', smoke_run)
    check_arms(df, 2)
    assert sorted(df[df.final == True].B.unique()) == [3, 8]
    assert set(vt.metric) == {'test_loss', 'train_loss', 'gap'} and set(vt.B) == {3, 8}
    assert set(vt.protocol) == {'ours'}
    check_matched(df, vt, 'B', [3, 8])

@pytest.mark.smoke('replication_patterns', Ps=[32, 96], P_ref=96, B=6, protocol='thesis', budget='stages', gamma_every=1,
                   init='kaiming_uniform', targets=[1.0, 1e-9], **TINY)
def test_patterns_notebook(smoke_run):
    "The thesis protocol with the 'stages' budget: the same steps for every P, and the same γ stages, stretched."
    df, vt = run('replication_patterns', smoke_run)
    check_arms(df, 2)
    fin = df[df.final == True]
    assert sorted(fin.P.unique()) == [32, 96]
    # same step budget: P = 32 trains three times as many epochs as P_ref = 96
    assert fin[fin.P == 32].epoch.max() == 9 and fin[fin.P == 96].epoch.max() == 3
    # one γ stage per epoch at P = 96, per three epochs at P = 32: the same three values
    gam = df[df.metric == 'gamma'].groupby(['P', 'epoch']).value.mean()
    assert list(gam[96].round(6)) == sorted(set(gam[32].round(6))) and list(gam[32].round(6).value_counts()) == [3, 3, 3]
    assert (vt[vt.comparison == 'fixed epochs'].vs == 'trend').sum() == 5
    assert (vt[vt.comparison == 'matched loss'].vs == 'trend').sum() == 3      # no training-error trends at matched loss
    assert set(vt.protocol) == {'thesis'}
    check_matched(df, vt, 'P', [32, 96])

@pytest.mark.smoke('replication_bottleneck', widths=[4, 500], **TINY)
def test_bad_override_fails_before_writing(smoke_run):
    with pytest.raises(pm.PapermillExecutionError, match='widths must lie in'):
        smoke_run()
    assert not list(smoke_run.out.glob('replication_bottleneck_quick*'))

def test_flatness_summarises_a_sweep_that_is_half_done(tmp_path):
    "gather mid-sweep: replicated Adam has one finished trial, so only SAM is compared with Adam (verdict and curvature), and nothing fails."
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    rows = pd.read_csv(root/'figures'/'replication_flatness_quick.csv')
    (tmp_path/'cells').mkdir()
    rows[~((rows.arm == 'replicated') & (rows.trial > 0))].to_csv(tmp_path/'cells'/'a.csv', index=False)
    pm.execute_notebook(str(root/'nbs'/'experiments'/'replication_flatness.ipynb'), str(tmp_path/'out.ipynb'), kernel_name='python3',
                        cwd=str(root/'nbs'/'experiments'), progress_bar=False,
                        parameters=dict(gather=str(tmp_path/'cells'/'*.csv'), figures_dir=str(tmp_path), device='cpu'))
    vt, cv = (pd.read_csv(tmp_path/f'replication_flatness_quick{s}.csv') for s in ('_verdict', '_curvature_verdict'))
    assert set(vt.vs) == set(cv.vs) == {'sam/replicas'} and set(vt.arch) == {'deep', 'shallow'} and (vt.n_trials == 5).all()
