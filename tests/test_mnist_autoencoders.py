"""Smoke tests of nbs/experiments/mnist_autoencoders.ipynb (issue 19 part 1: SAM, replicated AdamW and the Entropy-Adam
arms vs AdamW at matched training loss): a tiny papermill run on a miniature MNIST written in torchvision's on-disk format
(every arm and reading in the tables, the stopping rule's not-reached outcome), the summary mode gathering per-cell
tables, a clean skip without the data, and a bad override refused before any work. (The runs declared by a `smoke`
marker are started up front by tests/conftest.py.)"""
import numpy as np
import pandas as pd
import papermill as pm
import pytest
import torch
from entropic_ae import vision as V
from conftest import EXP

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

def cell_table(folder, arm, arch='shallow', size=256, trials=3, seed=0, levels=None, status='reached'):
    "A per-cell table as a finished sweep cell writes it (synthetic values, every column the summary reads; `levels`: metric -> value x (1 + t/100) in trial t)."
    rng, rows = np.random.default_rng(seed), []
    c = dict(arch=arch, size=size, arm=arm, read='network', target=0.015, epoch_limit=12000, profile='full')
    for t in range(trials):
        rows += [dict(c, trial=t, metric=m, value=float(v), status=status) for m, v in (('stop_epoch', 500 + t), ('grad_evals', 2000 + t))]
        rows += [dict(c, trial=t, metric=m, value=float(levels[m] * (1 + t / 100) if levels else rng.uniform(0.01, 1))) for m in
                 ('train_loss', 'heldout_loss', 'flatness_avg_diff', 'denoising_avg_diff', 'hessian_max', 'hessian_trace', 'rho_sharpness')]
        rows += [dict(c, trial=t, metric=m, sigma=s, value=float(rng.uniform(0.01, 1))) for m in ('local_energy', 'denoising') for s in (0., 0.1)]
    rows += [dict(c, read='cost', trial=-1, metric=m, value=1.) for m in ('train_wall_s', 'train_cpu_s', 'measure_wall_s', 'measure_cpu_s')]
    pd.DataFrame(rows).to_csv(folder/f'{NB}_full_{arch}_{size}_{arm}.csv', index=False)

def test_summary_gathers_every_arm_and_skips_derived_tables(tmp_path):
    "Summary mode reads the per-cell tables of every arm (names with '_' too: esgd_adamw), not the _cells/_verdict tables beside them."
    cells = tmp_path/'cells'; cells.mkdir()
    for arm in ('adamw', 'esgd_adamw', 'sam'): cell_table(cells, arm)
    (cells/f'{NB}_full_shallow_256_sam_cells.csv').write_text('arch,size,arm,trials\nshallow,256,sam,3\n')   # a derived table
    out = tmp_path/'out'; out.mkdir()
    pm.execute_notebook(str(EXP/f'{NB}.ipynb'), str(tmp_path/f'{NB}.ipynb'), kernel_name='python3', cwd=str(EXP), progress_bar=False,
                        parameters=dict(profile='full', mode='summary', gather=[str(cells)], figures_dir=str(out)))
    got = pd.read_csv(out/f'{NB}_full_cells.csv')
    assert sorted(got.arm) == ['adamw', 'esgd_adamw', 'sam'] and (got.trials == 3).all()
    vt = pd.read_csv(out/f'{NB}_full_verdict.csv')
    assert set(vt.other) == {'SAM(AdamW)', 'Entropy-AdamW'}

MEASURES = ('flatness_avg_diff', 'denoising_avg_diff', 'hessian_max', 'hessian_trace', 'rho_sharpness')
def test_summary_counts_where_each_flatness_measure_agrees_with_the_held_out_loss(tmp_path):
    "SAM: flatter by every measure and a lower held-out loss; Entropy-AdamW: flatter but for its trace, and a higher held-out loss; Adam, at its epoch cap, not counted."
    cells = tmp_path/'cells'; cells.mkdir()
    level = lambda flat, held, trace: {'train_loss': 0.015, 'heldout_loss': held, **dict.fromkeys(MEASURES, flat), 'hessian_trace': trace}
    for arm, lv in (('adamw', level(1., 1., 1.)), ('sam', level(0.5, 0.9, 0.5)), ('esgd_adamw', level(0.5, 1.1, 2.))): cell_table(cells, arm, levels=lv)
    cell_table(cells, 'adam', levels=level(0.5, 1.1, 0.5), status='epoch limit')        # not at matched loss
    out = tmp_path/'out'; out.mkdir()
    pm.execute_notebook(str(EXP/f'{NB}.ipynb'), str(tmp_path/f'{NB}.ipynb'), kernel_name='python3', cwd=str(EXP), progress_bar=False,
                        parameters=dict(profile='full', mode='summary', gather=[str(cells)], figures_dir=str(out)))
    got = pd.read_csv(out/f'{NB}_full_measures.csv', keep_default_na=False).set_index('measure')
    assert list(got.index) == list(MEASURES) and (got.resolved == 2).all()
    assert got.agree.to_dict() == {**dict.fromkeys(MEASURES, 1), 'hessian_trace': 2}
    assert got.disagree.to_dict() == {**dict.fromkeys(MEASURES, 'shallow 256 Entropy-AdamW'), 'hessian_trace': ''}

def test_a_cell_read_back_reports_the_seconds_it_trained(tmp_path):
    "A second run with the same ckpt_dir reads the finished arm back; its cost rows carry the training seconds the checkpoint saved (the Timer's), not the read-back's."
    miniature_mnist(tmp_path)
    kw = dict(TINY, profile='quick', arms=['adamw'], max_epochs=2, ckpt_dir=str(tmp_path/'ckpt'), data_root=str(tmp_path))
    for i in (1, 2):
        pm.execute_notebook(str(EXP/f'{NB}.ipynb'), str(tmp_path/f'run{i}.ipynb'), kernel_name='python3', cwd=str(EXP),
                            progress_bar=False, parameters=dict(figures_dir=str(tmp_path/f'out{i}'), **kw))
    a, b = (pd.read_csv(tmp_path/f'out{i}'/f'{NB}_quick_shallow_256_adamw.csv').set_index('metric').value for i in (1, 2))
    (ckpt,) = (tmp_path/'ckpt').glob('*.pt')
    saved = torch.load(ckpt, weights_only=True)['callbacks']['Timer']     # the clock as last saved: all but fit's tail after it
    assert a['train_wall_s'] > 0
    for k, s in (('train_wall_s', 'wall'), ('train_cpu_s', 'cpu')):
        assert b[k] == pytest.approx(saved[s], rel=1e-5) and saved[s] <= a[k], (k, a[k], b[k], saved[s])
