"""Tests of entropic_ae.compare: seeds shared across arms, train_arms/final_rows output, paired verdict statistics,
and errors that name the offending parameter."""
import math
import numpy as np
import pandas as pd
import pytest
import torch
from entropic_ae.data import random_features
from entropic_ae.flatness import local_energy
from entropic_ae.replicas import n_replicas, replica, distance_to_barycentre
from entropic_ae.optim import Exponential
from entropic_ae.compare import (ARMS, TARGETS, arm_seeds, autoencoder_builder, TracedReplicated, train_arms, final_rows,
                                 per_trial, mean_se, paired_diff, verdict_status, paired_verdict)

N, B = 10, 3
SETTING = dict(trials=2, y=3, epochs=2, bs=16, lr=1e-2, gamma0=0.3, gamma1=0.5, seed=3)

@pytest.fixture(scope='module')
def data():
    rf = random_features(N, 4, 32, P_test=32, seed=1)
    return rf.x_train, rf.x_test

@pytest.fixture(scope='module')
def build(): return autoencoder_builder('shallow', N, B)

@pytest.fixture(scope='module')
def trained(data, build):
    return train_arms(data, build, **SETTING, columns=dict(arch='shallow', B=B))

# ---------------------------------------------------------------- seeds and models
def test_arm_seeds_pair_replica0_with_network_t():
    nets, reps = arm_seeds(4, 3, seed=10)
    assert nets == [10, 11, 12, 13]
    assert [r[0] for r in reps] == nets
    assert all(len(set(r)) == 3 for r in reps)                      # replicas of a trial differ

def test_replica0_starts_from_network_t(build):
    nets, reps = arm_seeds(2, 3, seed=3)
    single = build(nets)
    for t, rs in enumerate(reps):
        a, b = replica(single, t), replica(build(rs), 0)
        for p, q in zip(a.parameters(), b.parameters()): assert torch.equal(p, q)
        c = replica(build(rs), 1)
        assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))

def test_traced_replicated_logs_distance_before_gamma_advances(build):
    m = build([0, 1, 2])
    opt = TracedReplicated(m, gamma=Exponential(0.2, 1.0), lr=0.1)
    assert opt.epoch_end() == pytest.approx(0.4)
    assert len(opt.dist_log) == 1
    torch.testing.assert_close(opt.dist_log[0], distance_to_barycentre(m))

# ---------------------------------------------------------------- train_arms
def test_train_arms_models_and_rows(trained):
    models, rows = trained
    assert list(models) == ['adam', 'sam', 'replicated', 'replicated_replica0']
    assert all(n_replicas(m) == 2 for m in models.values())
    df = pd.DataFrame(rows)
    assert set(df.arm) == set(ARMS) and set(df.trial) == {0, 1}
    assert (df.arch == 'shallow').all() and (df.B == B).all()
    d = df[df.metric == 'dist_to_barycentre']
    assert len(d) == 2 * 2 * 3 and set(d.eval_on) == {'optimizer'} and (d.value > 0).all()
    rep = df[(df.arm == 'replicated') & (df.eval_on == 'replicas')]
    assert set(rep.replica) == {0, 1, 2}
    assert set(df[df.arm != 'replicated'].replica) == {0}

def test_train_arms_epoch0_losses_are_paired(trained):
    df = pd.DataFrame(trained[1])
    e0 = df[(df.epoch == 0) & (df.metric == 'train_loss') & (df.eval_on == 'replicas')].set_index(['arm', 'trial', 'replica']).value
    for t in range(2):
        # the same network in stacks of different sizes: equal to float32 rounding (MKL's batched GEMM depends on offsets)
        assert e0['replicated', t, 0] == pytest.approx(e0['adam', t, 0], rel=1e-6) and e0['sam', t, 0] == e0['adam', t, 0]
        assert e0['replicated', t, 2] != e0['adam', t, 0]

def test_uncoupled_replica0_follows_the_adam_network(data, build):
    "gamma0 = 0: replica 0 of each replicated trial trains exactly like network t of the Adam arm."
    models, _ = train_arms(data, build, **(SETTING | dict(gamma0=0.)), arms=('adam', 'replicated'))
    assert 'sam' not in models
    for p, q in zip(models['adam'].parameters(), models['replicated_replica0'].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)

def test_strong_coupling_shrinks_distance_to_barycentre(data, build):
    _, rows = train_arms(data, build, **(SETTING | dict(epochs=3, gamma0=10., gamma1=0.)), arms=['replicated'])
    d = pd.DataFrame(rows).query("metric == 'dist_to_barycentre'").groupby('epoch').value.mean()
    assert d[3] < 0.5 * d[1]

def test_from_one_point_starts_each_trial_at_its_replica0(data, build):
    "With a vanishing step the replicas stay where they started: at one point per trial, or spread apart."
    kw = SETTING | dict(epochs=1, lr=1e-12, gamma0=0.)
    dist = lambda rows: pd.DataFrame(rows).query("metric == 'dist_to_barycentre'").value
    _, one = train_arms(data, build, **kw, arms=['replicated'], from_one_point=True)
    _, apart = train_arms(data, build, **kw, arms=['replicated'])
    assert dist(one).max() < 1e-12 < dist(apart).min()
    m, _ = train_arms(data, build, **kw, from_one_point=True)                 # replica 0 is network t of the other arms
    torch.testing.assert_close(next(m['replicated_replica0'].parameters()), next(m['adam'].parameters()))

@pytest.mark.parametrize('kw, name', [(dict(trials=0), 'trials'),
                                      (dict(from_one_point=1), 'from_one_point'), (dict(y=1.5), 'y'), (dict(epochs=0), 'epochs'),
                                      (dict(lr=0.), 'lr'), (dict(lr=-1e-3), 'lr'), (dict(gamma0=-1.), 'gamma0'),
                                      (dict(gamma1=float('nan')), 'gamma1'), (dict(rho=-0.1), 'rho'), (dict(seed=-1), 'seed'),
                                      (dict(bs=0), 'bs'), (dict(record_every=0), 'record_every'), (dict(arms='adam'), 'arms'),
                                      (dict(arms=['adam', 'sgd']), 'arms'), (dict(arms=[]), 'arms'),
                                      (dict(columns=dict(trial=1)), 'columns'), (dict(columns=[1]), 'columns')])
def test_train_arms_bad_input_names_parameter(data, build, kw, name):
    with pytest.raises((TypeError, ValueError), match=name):
        train_arms(data, build, **(SETTING | kw))

def test_train_arms_bad_build(data, build):
    with pytest.raises(TypeError, match='build'): train_arms(data, 'deep', **SETTING)
    with pytest.raises(ValueError, match='build'): train_arms(data, lambda s: build(list(s) + [99]), **SETTING)

def test_autoencoder_builder_checks():
    with pytest.raises(ValueError, match='arch'): autoencoder_builder('wide', N, B)
    with pytest.raises(ValueError, match='B'): autoencoder_builder('deep', N, N + 1)
    with pytest.raises(TypeError, match='N'): autoencoder_builder('deep', 10.0, B)
    m = autoencoder_builder('deep', N, B)([0, 1])
    assert n_replicas(m) == 2 and m.sizes == [N, N, B, N, N]

# ---------------------------------------------------------------- final_rows
def test_final_rows(trained, data):
    models, _ = trained
    sig = [0., 0.1]
    fr = pd.DataFrame(final_rows(models, data, 2, energy_sigmas=sig, denoise_sigmas=[0., 0.2], n_draws=2, seed=3,
                                 columns=dict(arch='shallow')))
    assert fr.final.all() and (fr.arch == 'shallow').all() and (fr.epoch == 2).all()
    assert set(zip(fr.arm, fr.eval_on)) == {(a, e) for a, e, _ in TARGETS}
    assert len(fr) == 4 * 2 * (3 + 2 + 2)
    assert set(fr[fr.eval_on == 'barycentre'].replica) == {-1}
    # trial t uses noise seed 10000 + seed + t in every arm
    le = local_energy(models['sam'], data[0], sig, 2, seed=[10_003, 10_004])
    got = fr[(fr.arm == 'sam') & (fr.metric == 'local_energy')].sort_values(['sigma', 'trial']).value.to_numpy()
    np.testing.assert_allclose(got, le.T.reshape(-1).numpy(), rtol=1e-6)
    # without noise levels: losses and dead units only
    assert set(pd.DataFrame(final_rows(models, data, 2)).metric) == {'train_loss', 'test_loss', 'dead_bottleneck_units'}
    # a subset of the arms
    only = pd.DataFrame(final_rows({'adam': models['adam']}, data, 2))
    assert set(only.arm) == {'adam'}

def test_final_rows_bad_input(trained, data):
    models, _ = trained
    with pytest.raises(ValueError, match='energy_sigmas'): final_rows(models, data, 2, energy_sigmas=[-0.1])
    with pytest.raises(ValueError, match='n_draws'): final_rows(models, data, 2, n_draws=0)
    with pytest.raises(ValueError, match='epoch'): final_rows(models, data, -1)
    with pytest.raises(ValueError, match='columns'): final_rows(models, data, 2, columns=dict(final=False))
    with pytest.raises(ValueError, match='models'): final_rows({'other': models['adam']}, data, 2)
    with pytest.raises(TypeError, match='models'): final_rows([models['adam']], data, 2)

# ---------------------------------------------------------------- verdicts
def test_paired_diff_known_values():
    a, b = [1., 2., 3., 4.], [0., 0., 1., 1.]
    m, se, z = paired_diff(a, b)
    assert m == pytest.approx(2.) and se == pytest.approx(math.sqrt(2 / 3) / 2) and z == pytest.approx(2 * math.sqrt(6))
    assert paired_diff(b, a) == pytest.approx((-m, se, -z))
    assert mean_se(a) == pytest.approx((2.5, np.std(a, ddof=1) / 2))
    assert paired_diff([1., 2.], [0., 1.])[2] == math.inf
    assert paired_diff([1., 2.], [2., 3.])[2] == -math.inf
    assert math.isnan(paired_diff([1., 2.], [1., 2.])[2])

def test_paired_diff_bad_input():
    with pytest.raises(ValueError, match='a and b'): paired_diff([1., 2., 3.], [1., 2.])
    with pytest.raises(ValueError, match='a must'): paired_diff([1.], [2.])
    with pytest.raises(ValueError, match='b must'): paired_diff([1., 2.], [[1., 2.]])
    with pytest.raises(ValueError, match='x must'): mean_se([3.])

def test_verdict_status_thresholds():
    assert [verdict_status(z, 2.) for z in (2., 5., 1.999, 0., -1.999, -2., -math.inf, math.nan, np.float64(2.5))] == \
        ['holds', 'holds', 'not resolved', 'not resolved', 'not resolved', 'contradicted', 'contradicted', 'not resolved', 'holds']
    assert verdict_status(1.5, threshold=1.5) == 'holds' and verdict_status(1.5, threshold=3) == 'not resolved'
    with pytest.raises(ValueError, match='threshold'): verdict_status(1., threshold=0)
    with pytest.raises(ValueError, match='threshold'): verdict_status(1., threshold=-1)
    with pytest.raises(TypeError, match='z'): verdict_status('2', 2.)
    with pytest.raises(TypeError): verdict_status(2.5)                  # the threshold is always stated

def test_paired_verdict_row():
    v = paired_verdict([1., 2., 3., 4.], [0., 0., 1., 1.], names=('adam', 'other'))
    assert list(v) == ['adam_mean', 'adam_se', 'other_mean', 'other_se', 'diff', 'diff_se', 'z', 'dof', 'threshold', 'ci_lo', 'ci_hi', 'status']
    assert v['status'] == 'holds' and v['other_mean'] == pytest.approx(0.5) and v['dof'] == 3
    two = paired_verdict([1., 2.], [0., 0.5])                          # z = 5 with 2 trials: far below t_critical(1) = 12.7
    assert two['z'] == pytest.approx(5.) and two['status'] == 'not resolved' and two['threshold'] == pytest.approx(12.7062, abs=1e-4)
    assert two['ci_lo'] < 0 < two['ci_hi']                              # not resolved: the interval holds 0

def test_per_trial():
    rows = []
    for t in range(3):
        for arm, shift in [('adam', 0.), ('rep', -0.1)]:
            rows += [dict(arm=arm, trial=t, metric='train_loss', sigma=math.nan, value=1. + t + shift),
                     dict(arm=arm, trial=t, metric='test_loss', sigma=math.nan, value=2. + t + shift)]
            rows += [dict(arm=arm, trial=t, metric='local_energy', sigma=s, value=1. + t + shift + s) for s in (0., 0.1, 0.3)]
    df = pd.DataFrame(rows[::-1])                                   # order of rows must not matter
    np.testing.assert_allclose(per_trial(df, 'train_loss', arm='adam'), [1., 2., 3.])
    np.testing.assert_allclose(per_trial(df, 'gap', arm='rep'), [1., 1., 1.])
    np.testing.assert_allclose(per_trial(df, 'local_energy', arm='adam'), [1.2, 2.2, 3.2])
    np.testing.assert_allclose(per_trial(df, 'local_energy', rise=True, arm='rep'), [0.2, 0.2, 0.2])
    with pytest.raises(ValueError, match='rise'): per_trial(df, 'test_loss', rise=True, arm='adam')
    with pytest.raises(ValueError, match='no rows'): per_trial(df, 'test_loss', arm='sam')
    with pytest.raises(ValueError, match='column'): per_trial(df, 'test_loss', width=3)
    with pytest.raises(TypeError, match='df'): per_trial(rows, 'test_loss')
