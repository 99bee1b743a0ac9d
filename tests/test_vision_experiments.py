"""Smoke tests of the real-image experiment notebooks (talk_table, sam_study, real_autoencoders): tiny papermill runs of
the quick profile on the digits, and of the full and MNIST profiles on CPU against miniature CIFAR-10 / MNIST / Fashion-MNIST
files written in the exact on-disk formats; bad overrides fail before anything is written. (Each run is declared by a
`smoke` marker and started up front by tests/conftest.py.)"""
from pathlib import Path
import numpy as np
import pandas as pd
import papermill as pm
import pytest
import torch
from entropic_ae import vision as V

EXP = Path(__file__).resolve().parent.parent/'nbs'/'experiments'

def smoke(name, profile='quick', **params):
    "The marker of a run of `name` on the CPU with one thread."
    return pytest.mark.smoke(name, profile=profile, device='cpu', threads=1, **params)

def run(name, smoke_run, profile='quick'):
    out = smoke_run().out
    png, csv, verdict = (out/f'{name}_{profile}{s}' for s in ('.png', '.csv', '_verdict.csv'))
    assert png.read_bytes()[:4] == b'\x89PNG'
    vt = pd.read_csv(verdict)
    assert {'diff', 'diff_se', 'z', 'status'} <= set(vt.columns) and vt.status.isin(['holds', 'contradicted', 'not resolved']).all()
    return pd.read_csv(csv), vt, out

def miniature_images(root):
    "Miniature CIFAR-10, MNIST and Fashion-MNIST in torchvision's layout."
    rng = np.random.default_rng(0)
    c = root/'cifar-10-batches-py'; c.mkdir()
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        V.write_cifar(rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 4), c/name)
    for folder in ('MNIST', 'FashionMNIST'):
        f = root/folder/'raw'; f.mkdir(parents=True)
        for split, n in (('train', 24), ('t10k', 8)):
            V.write_idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), f/f'{split}-images-idx3-ubyte.gz', gz=True)
            V.write_idx(rng.integers(0, 10, n).astype(np.uint8), f/f'{split}-labels-idx1-ubyte.gz', gz=True)

TALK = dict(trials=2, y=2, L=2, epochs=1, bs=32, n_draws=1, n_flat=32, sigmas=[0.0, 0.2], record_every=1, hessian_iter=3)
@smoke('talk_table', n_train=96, n_test=40, widths=[4, 2], **TALK)
def test_talk_table_quick(smoke_run):
    df, vt, out = run('talk_table', smoke_run)
    fin = df[df.metric == 'final_test_error']
    assert set(zip(fin.arm, fin.eval_on)) == {('baseline', 'replicas'), ('rsgd', 'barycentre'), ('rsgd', 'ensemble'),
        ('rsgd', 'replica_mean'), ('esgd', 'replicas'), ('baseline_long', 'replicas'), ('independent', 'ensemble'),
        ('independent', 'replica_mean')}
    assert set(fin.trial) == {0, 1} and fin.value.between(0, 1).all()
    de = df[df.metric == 'delta_error']
    assert (de[de.sigma == 0].value == 0).all() and set(de.arm) == {'baseline', 'rsgd', 'esgd', 'baseline_long'}
    assert df[(df.arm == 'baseline_long') & (df.metric == 'final_test_error')].epoch.max() == 2      # y x epochs
    cost = df[df.metric == 'grad_evals_per_trial'].set_index(['arch', 'arm']).value
    assert cost[('resnet18', 'rsgd')] == 2 * cost[('resnet18', 'baseline')] == cost[('resnet18', 'esgd')]
    assert len(vt) == 2 * 12                                                # 9 claims + 3 on the top Hessian eigenvalue
    assert (df[df.metric == 'hessian_max'].value > 0).all()
    spread = df[df.metric == 'relative_spread'].groupby('arm').value.mean()
    assert spread['rsgd'] < spread['independent']                           # coupled replicas stay together
    table = pd.read_csv(out/'talk_table_quick_table.csv')
    assert list(table.source) == ['this run', 'talk', 'this run', 'talk']
    assert len(list((out.parent/'ckpt').glob('quick_*.pt'))) == 2 * 5      # a checkpoint per (arch, arm), in the run's folder

@smoke('talk_table', profile='full', data=miniature_images, widths=[2, 2], **TALK)
def test_talk_table_full_on_tiny_cifar(smoke_run):
    df, vt, _ = run('talk_table', smoke_run, 'full')
    assert set(df.arch) == {'small_convnet', 'resnet18'} and len(vt) == 24
    assert ((vt.ci_lo <= vt['diff']) & (vt['diff'] <= vt.ci_hi)).all()                          # 95 % CI of each paired difference

@smoke('talk_table', profile='mnist_narrow', data=miniature_images, widths=[2, 2], **TALK)
def test_talk_table_mnist_narrow(smoke_run):
    "Issue 19: all of a (miniature) MNIST with narrow networks, every arm checkpointed under the profile's name."
    df, vt, out = run('talk_table', smoke_run, 'mnist_narrow')
    assert set(df.arch) == {'small_convnet', 'resnet18'} and len(vt) == 24 and (vt.profile == 'mnist_narrow').all()
    assert df[df.metric == 'final_test_error'].trial.nunique() == 2
    assert len(list((out.parent/'ckpt').glob('mnist_narrow_*.pt'))) == 2 * 5

@smoke('talk_table', archs=['small_convnet'], widths=[4], arms=['baseline', 'esgd'], n_train=96, n_test=40, **TALK)
def test_talk_table_of_some_arms(smoke_run):
    "A sweep cell of some arms: only they train, the verdict keeps the claims between them, the table leaves the rest blank."
    df, vt, out = run('talk_table', smoke_run)
    assert set(df.arm) == {'baseline', 'esgd'} and len(vt) == 3 and vt.other.eq('esgd/replicas').all()   # error, δε, Hessian
    table = pd.read_csv(out/'talk_table_quick_table.csv')
    assert table.loc[0, 'eSGD'].startswith(tuple('0123456789')) and table.loc[0, ['rSGD', 'rSGD×y']].isna().all()

@smoke('talk_table', arms=['sam'])
def test_talk_table_bad_arm_fails_before_writing(smoke_run):
    with pytest.raises(pm.PapermillExecutionError, match='arms must be a non-empty list from'):
        smoke_run()
    assert not list(smoke_run.out.glob('*'))

@smoke('sam_study', n_train=64, n_test=32, widths=[2, 2], trials=2, epochs=2, bs=32, n_sharp=16, hessian_iter=3)
def test_sam_study_quick(smoke_run):
    df, vt, out = run('sam_study', smoke_run)
    assert set(df.arm) == {'sgd', 'sgd_sam', 'adam', 'adam_sam', 'asam'}
    sh = df[df.metric == 'grad_sharpness']
    assert sorted(sh.epoch.unique()) == [0, 1, 2] and np.isfinite(sh.value).all()                # sharpness per epoch
    assert set(vt.claim.str.contains('flatter')) == {True, False} and len(vt) == 2 * 10
    assert 'study' in ' '.join(pd.read_csv(out/'sam_study_quick_table.csv').columns)

@smoke('sam_study', arms=['sgd'], n_train=64, n_test=32, widths=[2, 2], trials=2, epochs=1, bs=32, n_sharp=16, hessian_iter=3)
def test_sam_study_of_one_optimizer(smoke_run):
    "A sweep cell runs one optimizer: its rows and table are written, and it says that the verdict needs the other arms' rows."
    run = smoke_run()
    df = pd.read_csv(run.out/'sam_study_quick.csv')
    assert set(df.arm) == {'sgd'} and set(df.arch) == {'resnet18', 'vgg16_bn'}
    assert (run.out/'sam_study_quick_table.csv').exists() and 'no claim compares two of the arms' in run.text

def test_sam_study_resumes_from_its_checkpoints(tmp_path):
    "A second run with the same ckpt_dir reads every arm back from its finished checkpoint: the same rows, and the first run's seconds."
    kw = dict(profile='quick', device='cpu', threads=1, n_train=64, n_test=32, widths=[2, 2], trials=2, epochs=2, bs=32, n_sharp=16,
              hessian_iter=3, arms=['sgd', 'sgd_sam'], ckpt_dir=str(tmp_path/'ckpt'))
    stamps = lambda: {f.name: f.stat().st_mtime_ns for f in (tmp_path/'ckpt').glob('quick_*.pt')}
    for i in (1, 2):
        pm.execute_notebook(str(EXP/'sam_study.ipynb'), str(tmp_path/f'run{i}.ipynb'), kernel_name='python3', cwd=str(EXP),
                            progress_bar=False, parameters=dict(figures_dir=str(tmp_path/f'out{i}'), **kw))
        if i == 1: first = stamps()
    assert len(first) == 2 * 2 and stamps() == first                  # one per (arch, arm), read back and not rewritten
    a, b = (pd.read_csv(tmp_path/f'out{i}'/'sam_study_quick.csv') for i in (1, 2))
    secs = lambda d: d[d.metric == 'seconds'].sort_values(['arch', 'arm']).value.to_numpy()
    saved = np.array([torch.load(*(tmp_path/'ckpt').glob(f'quick_{arch}_{arm}_{"?" * 12}.pt'), weights_only=True)['callbacks']['Timer']['wall']
                      for arch, arm in sorted(set(zip(a.arch, a.arm)))])
    assert (saved <= secs(a)).all() and (saved <= secs(b)).all() and (secs(b) <= saved + 1).all()   # the saved clock plus the read-back's
    pd.testing.assert_frame_equal(a[a.metric != 'seconds'].reset_index(drop=True), b[b.metric != 'seconds'].reset_index(drop=True))

@smoke('sam_study', profile='mnist_quick', data=miniature_images, n_train=0, n_test=0, widths=[2, 2], trials=2, epochs=1, bs=8,
       arms=['sgd', 'sgd_sam', 'sgd_2x'], n_sharp=8, hessian_iter=3)
def test_sam_study_mnist(smoke_run):
    "Issue 19: the MNIST profile (here on a miniature MNIST), with the equal-cost arm SGD 2x epochs and confidence intervals."
    df, vt, out = run('sam_study', smoke_run, 'mnist_quick')
    assert set(df.arm) == {'sgd', 'sgd_sam', 'sgd_2x'} and len(vt) == 2 * 4
    assert df[(df.arm == 'sgd_2x') & (df.metric == 'test_error')].epoch.max() == 2                 # twice the epochs
    eq = vt[vt.claim.str.contains('equal gradient evaluations')]
    assert len(eq) == 2 and set(eq.reference) == {'sgd_2x'} and (vt.ci_lo <= vt['diff']).all() and (vt['diff'] <= vt.ci_hi).all()
    assert 'CI ±' in pd.read_csv(out/'sam_study_mnist_quick_table.csv').iloc[0, 1]

AE = dict(trials=2, y=2, epochs=2, bs=32, n_draws=2, record_every=1, energy_sigmas=[0.0, 0.1], denoise_sigmas=[0.0, 0.2])
@smoke('real_autoencoders', n_train=96, B=4, conv_widths=[4, 4], **AE)
def test_real_autoencoders_quick(smoke_run):
    df, vt, _ = run('real_autoencoders', smoke_run)
    fin = df[df.final == True]
    assert set(zip(fin.arm, fin.eval_on)) == {('adam', 'replicas'), ('replicated', 'barycentre'), ('replicated', 'replica0'), ('sam', 'replicas')}
    assert set(fin.arch) == {'mlp', 'conv'} and {'local_energy', 'denoising', 'test_loss'} <= set(fin.metric)
    assert len(vt) == 2 * 4 * 3

@smoke('real_autoencoders', profile='full', data=miniature_images, B=4, conv_widths=[2, 2], **AE)
def test_real_autoencoders_full(smoke_run):
    df, vt, _ = run('real_autoencoders', smoke_run, 'full')
    assert set(df.dataset) == {'mnist', 'fashion_mnist'} and len(vt) == 2 * 2 * 4 * 3

FIGURES = EXP.parent.parent/'figures'
@smoke('talk_table', gather='../../figures/talk_table_quick.csv')
def test_talk_table_gathers_committed_rows(smoke_run):
    "gather: the committed quick run's rows are summarised by today's code (paired t verdicts), nothing is trained."
    from entropic_ae.compare import t_critical
    df, vt, out = run('talk_table', smoke_run)
    src = pd.read_csv(FIGURES/'talk_table_quick.csv')
    assert len(df) == len(src) and 'gathered the rows of 1 earlier run' in smoke_run().text
    assert np.allclose(vt.threshold, t_critical(3)) and (vt.dof == 3).all()                       # 4 paired trials
    decided = vt.z.abs() >= vt.threshold
    assert (decided == (vt.status != 'not resolved')).all() and ((vt.ci_lo > 0) | (vt.ci_hi < 0) == decided).all()
    fin = src[(src.metric == 'final_test_error') & (src.arch == 'resnet18')]
    d = [fin[(fin.arm == a) & (fin.eval_on == e)].sort_values('trial').value.to_numpy() for a, e in (('baseline', 'replicas'), ('esgd', 'replicas'))]
    row = vt[(vt.arch == 'resnet18') & vt.claim.str.startswith('eSGD has a lower test error')].iloc[0]
    assert np.isclose(row['diff'], (d[0] - d[1]).mean())

@smoke('sam_study', gather='../../figures/sam_study_quick.csv')
def test_sam_study_gathers_committed_rows(smoke_run):
    df, vt, out = run('sam_study', smoke_run)
    assert len(df) == len(pd.read_csv(FIGURES/'sam_study_quick.csv')) and (vt.dof == 3).all() and len(vt) == 2 * 10

def check_regathered(name, smoke_run):
    "The committed per-cell rows of `name`'s all-of-MNIST sweep, gathered by today's code with no data set at hand: every row, and the committed verdict."
    df, vt, out = run(name, smoke_run, 'mnist_narrow')
    cells = sorted((FIGURES/f'{name}_mnist_narrow_cells').glob('*.csv'))
    assert len(cells) >= 2 and len(df) == sum(len(pd.read_csv(f)) for f in cells)
    old = pd.read_csv(FIGURES/f'{name}_mnist_narrow_verdict.csv')
    assert list(vt.claim) == list(old.claim) and list(vt.status) == list(old.status)       # the reading quotes these
    assert np.allclose(vt.z, old.z, rtol=1e-4) and np.allclose(vt['diff'], old['diff'], rtol=1e-4, atol=1e-9)

@smoke('talk_table', profile='mnist_narrow', data_root='/nowhere/entropic_ae', gather='../../figures/talk_table_mnist_narrow_cells/*.csv')
def test_talk_table_mnist_narrow_cells_give_the_committed_verdict(smoke_run): check_regathered('talk_table', smoke_run)

@smoke('sam_study', profile='mnist_narrow', data_root='/nowhere/entropic_ae', gather='../../figures/sam_study_mnist_narrow_cells/*.csv')
def test_sam_study_mnist_narrow_cells_give_the_committed_verdict(smoke_run): check_regathered('sam_study', smoke_run)

@smoke('real_autoencoders', gather='../../figures/real_autoencoders_quick.csv')
def test_real_autoencoders_gathers_committed_rows(smoke_run):
    "The committed quick rows, re-summarised: the same rows, 5 paired trials under t_4, and each diff the mean of the per-trial differences."
    from entropic_ae.compare import t_critical
    df, vt, out = run('real_autoencoders', smoke_run)
    src = pd.read_csv(FIGURES/'real_autoencoders_quick.csv')
    assert len(df) == len(src) and 'gathered from 1 earlier run' in smoke_run().text and len(vt) == 2 * 4 * 3
    assert np.allclose(vt.threshold, t_critical(4)) and ((vt.z.abs() >= vt.threshold) == (vt.status != 'not resolved')).all()
    fin = src[(src.final == True) & (src.metric == 'test_loss') & (src.arch == 'mlp')]
    d = [fin[(fin.arm == a) & (fin.eval_on == e)].sort_values('trial').value.to_numpy() for a, e in (('adam', 'replicas'), ('replicated', 'barycentre'))]
    row = vt[(vt.arch == 'mlp') & (vt.metric == 'test_loss') & (vt.vs == 'replicated/barycentre')].iloc[0]
    assert np.isclose(row['diff'], (d[0] - d[1]).mean())

@smoke('sam_study', gather='../../figures/no_such_run_*.csv')
def test_gather_without_files_fails_before_writing(smoke_run):
    with pytest.raises(pm.PapermillExecutionError, match='gather: no files match'):
        smoke_run()
    assert not list(smoke_run.out.glob('*'))

def test_replicas_start_together_in_the_autoencoder_notebook(tmp_path):
    "same_start: a replicated trial's replicas begin at its first network's weights (checked through the builder's code path)."
    import json, torch
    nb = json.loads((EXP/'real_autoencoders.ipynb').read_text())
    src = next(''.join(c['source']) for c in nb['cells'] if 'def start_together' in ''.join(c['source']))
    ns = {}
    exec(src.split('def builder')[0], {'torch': torch}, ns)
    m = V.replicate(lambda: torch.nn.Linear(3, 2), 4, seeds=[0, 1000, 1, 1001], sample_dims=1)
    ns['start_together'](m, [0, 1000, 1, 1001])
    w = m.module.weight
    assert torch.equal(w[0], w[1]) and torch.equal(w[2], w[3]) and not torch.equal(w[0], w[2])

@smoke('talk_table', profile='full', data_root='/nowhere/entropic_ae', **TALK)
def test_missing_data_fails_before_writing(smoke_run):
    with pytest.raises(pm.PapermillExecutionError, match='CIFAR-10 not found'):
        smoke_run()
    assert not list(smoke_run.out.glob('*'))

@smoke('sam_study', archs=['alexnet'])
def test_bad_override_fails_before_writing(smoke_run):
    with pytest.raises(pm.PapermillExecutionError, match='archs must be a non-empty list'):
        smoke_run()
    assert not list(smoke_run.out.glob('*'))
