"""Real-image support, chapter 11 (entropic_ae.images, .convnets, .vision): readers on tiny files written in the exact
on-disk formats, clear errors for missing and corrupt data, vision re-exporting the other two modules' names, stacked BN networks training through fit with every entropic optimizer, LR schedules
through every wrapper, augmentation shared by SAM's two passes, gradient accumulation."""
import math, os, pickle
from functools import partial
from pathlib import Path
import numpy as np
import pytest
import torch
from torch import nn
from entropic_ae import vision as V, images as I, convnets as C
from entropic_ae.models import cross_entropy
from entropic_ae.optim import Replicated, EntropySGD, Wrapper
from entropic_ae.sam import SAM
from entropic_ae.train import fit, Callback, CancelFit, Checkpoint, Recorder

@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(I.ENV_VAR, raising=False)

def write_cifar_set(root, n=(2, 3), classes=10, seed=0):
    "A complete miniature CIFAR-10 (or -100) folder; returns the arrays written."
    rng = np.random.default_rng(seed)
    spec = I.IMAGE_SETS['cifar10' if classes == 10 else 'cifar100']
    folder = Path(root)/spec.folder; folder.mkdir(parents=True, exist_ok=True)
    key = b'labels' if classes == 10 else b'fine_labels'
    out = {}
    for split, names in spec.files.items():
        for name in names:
            x = rng.integers(0, 256, (n[split == 'test'], 3, 32, 32), dtype=np.uint8)
            t = rng.integers(0, classes, n[split == 'test'])
            I.write_cifar(x, t, folder/name, key)
            out[name] = (x, t)
    return out

# ---- one chapter, three modules
def test_vision_reexports_images_and_convnets():
    "`from entropic_ae.vision import load_images, resnet18` works as before the split, and each name is defined once."
    for mod in (I, C):
        for name in mod.__all__: assert getattr(V, name) is getattr(mod, name), name
    assert V.load_images.__module__ == 'entropic_ae.images' and V.resnet18.__module__ == 'entropic_ae.convnets'
    assert not set(I.__all__) & set(V.__all__) and not set(C.__all__) & set(V.__all__)   # vision's __all__: its own names

# ---- data: root, missing, corrupt, formats
def test_missing_cifar_names_folder_and_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv(I.ENV_VAR, str(tmp_path))
    with pytest.raises(I.DataMissing) as e: I.load_images('cifar10')
    msg = str(e.value)
    assert str(tmp_path/'cifar-10-batches-py') in msg and I.ENV_VAR in msg and 'the environment variable' in msg
    assert 'data_batch_1' in msg and 'test_batch' in msg and 'cifar-10-python.tar.gz' in msg
    assert isinstance(e.value, FileNotFoundError)

def test_missing_files_listed_once(tmp_path, no_env):
    write_cifar_set(tmp_path)
    for f in ('data_batch_3', 'test_batch'): (tmp_path/'cifar-10-batches-py'/f).unlink()
    with pytest.raises(I.DataMissing, match=r'lacks data_batch_3, test_batch.*the root argument'): I.load_images('cifar10', tmp_path)

def test_default_root(no_env):
    assert I.data_root()[0] == Path.home()/'.cache'/'entropic_ae'/'data'

def test_cifar10_and_100_round_trip(tmp_path):
    arrays = write_cifar_set(tmp_path, classes=10)
    ds = I.load_images('cifar10', tmp_path, normalize=False)
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    x4, t4 = arrays['data_batch_4']
    assert torch.equal((ds.x_train[6:8] * 255).round().to(torch.uint8), torch.from_numpy(x4))   # batch order kept
    assert ds.t_train[6:8].tolist() == t4.tolist()
    write_cifar_set(tmp_path, classes=100, seed=1)
    c100 = I.load_images('cifar100', tmp_path)
    assert c100.classes == 100 and c100.x_train.shape == (2, 3, 32, 32)
    m, s = torch.tensor(I.IMAGE_SETS['cifar100'].mean), torch.tensor(I.IMAGE_SETS['cifar100'].std)
    raw = I.read_cifar(tmp_path/'cifar-100-python'/'train', b'fine_labels')[0]
    assert torch.allclose(c100.x_train[1, :, 4, 9], (torch.from_numpy(raw[1, :, 4, 9]).float() / 255 - m) / s, atol=1e-5)

def test_fashion_mnist_plain_and_gzipped(tmp_path):
    folder = tmp_path/'FashionMNIST'/'raw'; folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    I.write_idx(imgs, folder/'train-images-idx3-ubyte')                     # plain, as torchvision leaves them
    I.write_idx(np.array([9, 0, 3, 3, 1], np.uint8), folder/'train-labels-idx1-ubyte.gz', gz=True)
    I.write_idx(imgs[:2], folder/'t10k-images-idx3-ubyte.gz', gz=True)
    I.write_idx(np.array([2, 7], np.uint8), folder/'t10k-labels-idx1-ubyte')
    ds = I.load_images('fashion_mnist', tmp_path)
    assert ds.x_train.shape == (5, 1, 28, 28) and ds.t_train.tolist() == [9, 0, 3, 3, 1] and ds.t_test.tolist() == [2, 7]
    assert torch.allclose(ds.x_train[2, 0, 11, 20], torch.tensor(float((imgs[2, 11, 20] / 255 - 0.2860) / 0.3530)), atol=1e-5)
    assert I.load_images('fashion_mnist', tmp_path, normalize=False, flatten=True).x_test.shape == (2, 784)

def test_corrupt_files_are_reported(tmp_path):
    write_cifar_set(tmp_path)
    p = tmp_path/'cifar-10-batches-py'/'data_batch_2'
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(I.DataCorrupt, match='data_batch_2.*cannot be unpickled'): I.load_images('cifar10', tmp_path)
    I.write_cifar(np.zeros((2, 3, 32, 32), np.uint8), [0, 1], p)
    with open(p, 'wb') as f: pickle.dump({b'data': np.zeros((2, 100), np.uint8), b'labels': [0, 1]}, f, protocol=2)
    with pytest.raises(I.DataCorrupt, match='inconsistent CIFAR batch'): I.load_images('cifar10', tmp_path)
    folder = tmp_path/'MNIST'/'raw'; folder.mkdir(parents=True)
    for s, n in (('train', 4), ('t10k', 2)):
        I.write_idx(np.zeros((n, 28, 28), np.uint8), folder/f'{s}-images-idx3-ubyte')
        I.write_idx(np.zeros(n, np.uint8), folder/f'{s}-labels-idx1-ubyte')
    I.load_images('mnist', tmp_path)
    q = folder/'t10k-images-idx3-ubyte'
    q.write_bytes(q.read_bytes()[:-1])
    with pytest.raises(I.DataCorrupt, match='t10k-images-idx3-ubyte: truncated'): I.load_images('mnist', tmp_path)
    I.write_idx(np.zeros(3, np.uint8), folder/'t10k-labels-idx1-ubyte')
    I.write_idx(np.zeros((2, 28, 28), np.uint8), q)
    with pytest.raises(I.DataCorrupt, match='do not match MNIST'): I.load_images('mnist', tmp_path)

def test_digits_and_fake():
    d = I.load_digits(device='cpu')
    assert d.x_train.shape == (1438, 1, 8, 8) and d.classes == 10 and d.t_train.dtype == torch.int64
    assert abs(d.fill[0] - (-d.mean[0] / d.std[0])) < 1e-9
    with pytest.raises(ValueError, match='test_fraction'): I.load_digits(test_fraction=1.5)
    f = I.fake_images(20, 10, shape=(2, 4, 4), classes=3)
    assert f.x_train.shape == (20, 2, 4, 4) and int(f.t_train.max()) < 3

# ---- models and pipeline
def test_stacked_resnet_trains_with_every_entropic_optimizer():
    data = I.fake_images(16, 8, shape=(3, 8, 8), classes=4, noise=0.3, seed=5)
    for name in ('rsgd', 'esgd', 'sgd_sam', 'asam', 'adam_sam'):
        model = V.image_classifier('resnet18', 2, seeds=[3, 4], shape=(3, 8, 8), classes=4, width=4, augment=True,
                                   fill=data.fill)
        w0 = [p.detach().clone() for p in model.parameters()]
        bn0 = model.model.module.bn1.running_mean.clone()
        opt_func, cbs = V.recipe(name, 0.05, epochs=2, L=2, gamma=0.1, gamma0=0.5, gamma1=0.2)
        r = fit(model, data, epochs=2, bs=4, opt_func=opt_func, loss_fn=cross_entropy,
                cbs=[*cbs, Recorder(metrics=['train_loss', 'test_error'], on=('replicas', 'barycentre', 'ensemble'))])
        assert bool(r.active.all()), name
        assert all(bool(torch.isfinite(p).all()) for p in model.parameters()), name
        assert any(not torch.equal(a, b) for a, b in zip(w0, model.parameters())), name
        bn = model.model.module.bn1.running_mean
        assert not torch.equal(bn, bn0) and not torch.equal(bn[0], bn[1]), name   # BN statistics per replica
        assert {'replicas', 'barycentre', 'ensemble'} == set(r.df.eval_on.dropna()) - {'optimizer'}, name

def test_vgg_and_small_convnet_replicate():
    for arch in ('vgg16_bn', 'small_convnet'):
        m = V.image_classifier(arch, 3, shape=(1, 8, 8), width=8)
        assert m(torch.randn(5, 1, 8, 8)).shape == (3, 5, 10)
        p = next(m.parameters())
        assert not torch.equal(p[0], p[1])                                  # replicas differ (own seeds)

def test_sam_passes_see_the_same_crops():
    m = V.image_classifier('small_convnet', 2, shape=(3, 8, 8), width=4, augment=True)
    x = torch.randn(2, 6, 3, 8, 8)
    a1 = m.augment(x); a2 = m.augment(x)
    assert a1 is a2
    assert m.augment(x.clone()) is a1                                       # the same images gathered anew: same crops
    assert not torch.equal(m.augment(x + 1), a1 + 1)                        # other images, new crops
    m.eval(); m.train()
    assert m._memo is None

@pytest.mark.parametrize('name, draws_per_step', [('sgd', 1), ('sgd_sam', 1), ('esgd', 2)])
def test_augmentation_draws_through_fit(name, draws_per_step, monkeypatch):
    "Through fit: SAM's two passes share one draw of crops (fit re-gathers the batch each call), Entropy-SGD's fresh batches do not."
    calls = []
    real = V.crop_flip
    monkeypatch.setattr(V, 'crop_flip', lambda *a, **k: calls.append(1) or real(*a, **k))
    data = I.fake_images(16, 8, shape=(3, 8, 8), classes=3)
    m = V.image_classifier('small_convnet', 2, shape=(3, 8, 8), classes=3, width=4, augment=True)
    opt_func, cbs = V.recipe(name, 0.05, epochs=1, L=2)
    fit(m, data, epochs=1, bs=4, opt_func=opt_func, cbs=[*cbs, Recorder(metrics=[])], loss_fn=cross_entropy)
    assert len(calls) == 4 * draws_per_step                                 # 4 steps per epoch

def test_classifier_errors_ensemble_and_barycentre():
    data = I.fake_images(32, 16, shape=(3, 8, 8), classes=3, noise=0.3)
    m = V.image_classifier('small_convnet', 4, shape=(3, 8, 8), classes=3, width=4)
    fit(m, data, epochs=2, bs=8, opt_func=partial(torch.optim.SGD, lr=0.05), loss_fn=cross_entropy, cbs=[Recorder(metrics=[])])
    e = V.classifier_errors(m, data, groups=2)
    assert e['replicas'].shape == (4,) and e['barycentre'].shape == (2,) and e['ensemble'].shape == (2,)
    assert m.training                                                       # classifier_errors leaves the model's mode as it was
    logits = m.eval()(data.x_test).mean(0)                                  # eval mode: ensemble of all 4 by hand
    e1 = V.classifier_errors(m, data, groups=1)['ensemble']
    assert torch.allclose(e1, (logits.argmax(-1) != data.t_test).float().mean().view(1), atol=1e-6)

# ---- schedules through the wrappers
def _groups(y=2):
    return [dict(params=[nn.Parameter(torch.randn(y, 3))]), dict(params=[nn.Parameter(torch.randn(y, 2))], lr=0.2)]

WRAPPERS = {'replicated': lambda: Replicated(_groups(), base=torch.optim.SGD, lr=0.1, momentum=0.9, gamma=0.5),
            'entropy_sgd': lambda: EntropySGD(_groups(), lr=0.1, L=2),
            'sam': lambda: SAM(_groups(), base=torch.optim.SGD, lr=0.1, rho=0.05, per_replica=True),
            'accumulate': lambda: V.Accumulate(_groups(), base=torch.optim.SGD, every=2, lr=0.1)}

@pytest.mark.parametrize('kind', list(WRAPPERS))
@pytest.mark.parametrize('sched', ['cosine', 'step'])
def test_lr_scheduler_steps_every_group_through_wrapper(kind, sched):
    opt = WRAPPERS[kind]()
    base = opt.base if isinstance(opt, Wrapper) else opt
    s = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4) if sched == 'cosine'
         else torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    ps = [p for g in opt.param_groups for p in g['params']]
    for _ in range(2):
        def closure():
            opt.zero_grad(); l = sum(p.square().sum() for p in ps); l.backward(); return l
        opt.step(closure)
        s.step()
    want = [0.05, 0.1] if sched == 'cosine' else [0.025, 0.05]
    assert [g['lr'] for g in opt.param_groups] == pytest.approx(want)
    assert [g['lr'] for g in base.param_groups] == pytest.approx(want)      # the wrapped optimizer uses them
    assert base.param_groups is opt.param_groups

def test_lr_schedule_callback_scales_inner_lr_and_survives_resume(tmp_path):
    data = I.fake_images(16, 8, shape=(3, 8, 8), classes=3, seed=2)
    def run(ckpt=None, stop_after=None, resume=False):
        torch.manual_seed(0)
        m = V.image_classifier('small_convnet', 2, shape=(3, 8, 8), classes=3, width=4)
        opt_func, cbs = V.recipe('esgd', 0.05, epochs=4, L=2, gamma=0.1)
        class Stop(Callback):
            order = 50
            def after_epoch(self, L):
                if stop_after and L.epoch + 1 == stop_after: raise CancelFit()
        r = fit(m, data, epochs=4, bs=8, opt_func=opt_func, loss_fn=cross_entropy,
                cbs=[*cbs, Stop(), Recorder(metrics=[]), *([Checkpoint(ckpt, resume=resume)] if ckpt else [])])
        return r
    full = run()
    g = full.optimizer.param_groups[0]
    assert g['lr'] == pytest.approx(0.)                                     # cosine to zero over 4 epochs
    assert g['inner_lr'] == pytest.approx(0.) and g['initial_lr'] == pytest.approx(10.)
    half = run(tmp_path/'c.pt', stop_after=2)
    assert half.optimizer.param_groups[0]['inner_lr'] == pytest.approx(0.25)       # 0.05 / (1 - 0.9), halved
    again = run(tmp_path/'c.pt', resume=True)
    assert again.optimizer.param_groups[0]['lr'] == pytest.approx(0.)
    for a, b in zip(full.model.parameters(), again.model.parameters()): assert torch.allclose(a, b, atol=1e-5)

# ---- gradient accumulation
def test_accumulation_equals_the_big_batch_step():
    torch.manual_seed(1)
    X, T = torch.randn(12, 4, dtype=torch.float64), torch.randint(0, 3, (12,))
    W0 = torch.randn(2, 4, 3, dtype=torch.float64)
    def loss(W, rows): return nn.functional.cross_entropy((X[rows] @ W).reshape(-1, 3), T[rows].repeat(2), reduction='sum') / (rows.stop - rows.start)
    Wa, Wb = nn.Parameter(W0.clone()), nn.Parameter(W0.clone())
    big = Replicated([Wa], base=torch.optim.SGD, lr=0.3, momentum=0.9, gamma=0.5)
    acc = V.Accumulate([Wb], base=partial(Replicated, base=torch.optim.SGD, gamma=0.5), every=3, lr=0.3, momentum=0.9)
    for _ in range(2):
        big.zero_grad(); loss(Wa, slice(0, 12)).backward(); big.step()
        for a in range(0, 12, 4):
            def closure(): acc.zero_grad(); l = loss(Wb, slice(a, a + 4)); l.backward(); return l
            acc.step(closure)
    assert torch.allclose(Wa, Wb, atol=1e-12)
    assert acc.gamma == 0.5
    with pytest.raises(TypeError, match='first-order'): V.Accumulate([Wb], base=partial(EntropySGD, lr=0.1))
    with pytest.raises(TypeError, match='first-order'): V.Accumulate([Wb], base=partial(SAM, base=torch.optim.SGD, lr=0.1))
    with pytest.raises(ValueError, match='every'): V.Accumulate([Wb], every=0)

def test_accumulate_resume_refuses_another_every(tmp_path):
    "`every` is one of the run's settings (`hyperparameters()`), so a checkpoint written with every=2 does not resume every=3."
    data = I.fake_images(8, 4, shape=(3, 8, 8), classes=3, seed=2)
    def run(every, resume=False):
        m = V.image_classifier('small_convnet', 1, shape=(3, 8, 8), classes=3, width=4)
        return fit(m, data, epochs=1 + resume, bs=4, loss_fn=cross_entropy,
                   opt_func=partial(V.Accumulate, base=torch.optim.SGD, every=every, lr=0.05, momentum=0.9),
                   cbs=[Checkpoint(tmp_path/'c.pt', resume=resume)])
    assert run(2).optimizer.hyperparameters()['every'] == 2
    with pytest.raises(ValueError, match='resume: .*every'): run(3, resume=True)
    assert run(2, resume=True).optimizer.base.state                   # the same every resumes
