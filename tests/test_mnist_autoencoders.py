"""Smoke tests of nbs/experiments/mnist_autoencoders.ipynb (issue 19 part 1: SAM, replicated AdamW and Entropy-Adam vs
AdamW at matched training loss): tiny papermill runs on a miniature MNIST written in torchvision's on-disk format, the
stopping rule's two outcomes (reached / not reached) in the tables, a sweep cell resumed from its checkpoint and the
summary mode gathering cells, a clean skip without the data, and a bad override refused before any work. (Each run is
declared by a `smoke` marker and started up front by tests/conftest.py.)"""
import numpy as np
import pandas as pd
import papermill as pm
import pytest
from entropic_ae import vision as V

NB = 'mnist_autoencoders'
TINY = dict(sizes=[256], held_out=16, trials=2, energy_sigmas=[0.0, 0.1], energy_draws=1, denoise_sigmas=[0.0, 0.5],
            denoise_draws=1, eval_bs=512, threads=1, device='cpu', y=2, L=2, sharp_n=16, hessian_iter=2, trace_probes=2, rho_steps=1)
READS = [('adamw', 'network'), ('sam', 'network'), ('replicated', 'barycentre'), ('replicated', 'replica0'), ('esgd', 'network'),
         ('adam', 'network'), ('esgd_adamw', 'network')]

def miniature_mnist(root):
    "A miniature MNIST: 280 training and 8 test images of random pixels."
    rng = np.random.default_rng(0)
    f = root/'MNIST'/'raw'; f.mkdir(parents=True)
    for split, n in (('train', 280), ('t10k', 8)):
        V.write_idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), f/f'{split}-images-idx3-ubyte.gz', gz=True)
        V.write_idx(rng.integers(0, 10, n).astype(np.uint8), f/f'{split}-labels-idx1-ubyte.gz', gz=True)

smoke = lambda **params: pytest.mark.smoke(NB, profile='quick', **dict(TINY, **params))

# (the 'reached' path: StopAtLoss's tests in ch. 09 and test_train)
@pytest.mark.parametrize('scale,status', [pytest.param(1.0, 'not reached', marks=smoke(data=miniature_mnist, max_epochs=2, target_scale=1.0))])
def test_quick_runs_and_reports_every_trial(smoke_run, scale, status):
    "Random pixels never get near the author's target in 2 epochs (not reached, stopped at the limit); a huge target is reached at once."
    out = smoke_run().out
    df = pd.read_csv(out/f'{NB}_quick_shallow_256.csv')   # a run of other sizes than the profile's names them
    st = df[df.metric == 'stop_epoch']
    assert sorted(set(zip(st.arm, st['read']))) == sorted(READS)
    assert len(st) == 7 * 2 and set(st.status) == {status}                       # 7 readings x 2 trials, none dropped
    assert (st.value == (2 if status == 'not reached' else 1)).all()
    fin = df[df.metric.isin(['flatness_avg_diff', 'denoising_avg_diff', 'heldout_loss', 'train_loss'])]
    assert len(fin) == 4 * 7 * 2 and np.isfinite(fin.value).all() and (fin.value > 0).all()
    assert np.isfinite(df[df.metric.isin(['hessian_max', 'hessian_trace', 'rho_sharpness'])].value).all()
    le = df[(df.metric == 'local_energy') & (df.sigma == 0)].set_index(['arm', 'read', 'trial']).value
    tr = df[df.metric == 'train_loss'].set_index(['arm', 'read', 'trial']).value
    pd.testing.assert_series_equal(le.sort_index(), tr.sort_index(), check_names=False, rtol=1e-6)   # σ = 0 is the training loss
    vt = pd.read_csv(out/f'{NB}_quick_shallow_256_verdict.csv')
    assert {'ratio', 'diff', 'diff_se', 'z', 'status', 'kind', 'adamw_reached', 'other_reached', 'trials'} <= set(vt.columns)
    assert (vt.adamw_reached == (2 if status == 'reached' else 0)).all() and (vt.trials == 2).all()
    assert vt['other'].nunique() == 6
    checks = vt[vt.kind == 'matching check']                                     # not claims: no holds/contradicted there
    assert set(checks.metric) == {'train_loss', 'stop_epoch', 'grad_evals'} and not checks.status.isin(['holds', 'contradicted']).any()
    loss = checks[checks.metric == 'train_loss'].set_index('other').status
    assert set(loss.drop('replicated AdamW (replica 0)')) == ({'matched'} if status == 'reached' else {'not matched (0/0 of 2 reached)'})
    if status == 'reached': assert 'barycentre' in loss['replicated AdamW (replica 0)']     # replica 0 stops with its barycentre
    assert (out/f'{NB}_quick_shallow_256.png').read_bytes()[:4] == b'\x89PNG'

def no_files(root): "An empty data root."

@smoke(data=no_files)
def test_without_mnist_it_says_so_and_writes_nothing(smoke_run):
    run = smoke_run()
    assert 'SKIPPED: MNIST is not available' in run.text and 'ENTROPIC_AE_DATA' in run.text
    assert not list(run.out.iterdir())

@smoke(data=miniature_mnist, sizes=[300])
def test_bad_override_is_refused_before_any_work(smoke_run):
    with pytest.raises(pm.PapermillExecutionError, match='sizes must be a non-empty list'):
        smoke_run()
    assert not list(smoke_run.out.iterdir())
