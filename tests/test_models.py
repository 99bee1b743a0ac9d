"""Stacked-replica autoencoders: per-replica equivalence (init, forward, Adam training), shapes and errors."""
import pytest, torch
from torch import nn
from entropic_ae.core import make_generator
from entropic_ae.models import AutoEncoder, StackedLinear, deep_ae, recon_error, shallow_ae

def params_equal(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))

def test_stacked_linear_matches_nn_linear():
    lin = StackedLinear(7, 3, y=2, seeds=[11, 12])
    x = torch.randn(4, 7)
    with torch.no_grad():
        out = lin(x)
        for r, s in enumerate([11, 12]):
            torch.manual_seed(s); ref = nn.Linear(7, 3)
            assert torch.equal(lin.weight[r], ref.weight.T) and torch.equal(lin.bias[r, 0], ref.bias)
            torch.testing.assert_close(out[r], ref(x))
        assert torch.equal(lin(x.expand(2, 4, 7)), out)
        bound = 1/7**0.5
        assert lin.weight.abs().max() <= bound and lin.bias.abs().max() <= bound

def test_stacked_linear_per_replica_inputs():
    lin = StackedLinear(5, 2, y=3)
    x = torch.randn(3, 6, 5)
    with torch.no_grad():
        out = lin(x)
        for r in range(3): torch.testing.assert_close(out[r], x[r] @ lin.weight[r] + lin.bias[r])
    with pytest.raises(ValueError, match="x must"): lin(torch.randn(2, 6, 5))
    with pytest.raises(ValueError, match="x must"): lin(torch.randn(6, 4))

@pytest.mark.parametrize('make', [lambda **kw: shallow_ae(12, 3, **kw), lambda **kw: deep_ae(12, 3, H=9, bottleneck_relu=True, **kw)])
def test_replica_equals_single_model(make):
    seeds = [4, 9, 2]
    ae = make(y=3, seeds=seeds)
    x = torch.rand(10, 12)
    with torch.no_grad():
        out = ae(x)
        assert out.shape == (3, 10, 12) and ((out > 0) & (out < 1)).all()
        for r, s in enumerate(seeds):
            single = make(seeds=[s])
            for ls, l1 in zip(ae.layers, single.layers):
                assert torch.equal(ls.weight[r:r+1], l1.weight) and torch.equal(ls.bias[r:r+1], l1.bias)
            # weights are bitwise equal (same init stream), outputs only to float32 rounding: MKL's batched GEMM
            # depends on memory offsets and sigmoid rounds its vector body and scalar tail differently (~1 ulp)
            torch.testing.assert_close(out[r:r+1], single(x), rtol=1e-6, atol=1e-7)

def test_layers_of_equal_shape_start_different():
    ae = deep_ae(10, 3)     # first and last layers are both 10x10
    assert not torch.equal(ae.layers[0].weight, ae.layers[-1].weight)

def test_structure_and_bottleneck():
    ae = deep_ae(16, 4, bottleneck_relu=True, y=2)
    assert (ae.N, ae.B, ae.y, ae.sizes) == (16, 4, 2, [16, 16, 4, 16, 16])
    assert isinstance(ae.layers, nn.ModuleList) and len(ae.layers) == 4
    with torch.no_grad():
        z = ae.encode(torch.rand(5, 16))
        assert z.shape == (2, 5, 4) and (z >= 0).all()
        assert ae.decode(z).shape == (2, 5, 16)
    assert AutoEncoder([8, 6, 2, 5, 8]).B == 2
    assert shallow_ae(8, 8).sizes == [8, 8, 8]

def test_recon_error():
    x = torch.rand(6, 5); xhat = torch.rand(3, 6, 5)
    e = recon_error(xhat, x)
    assert e.shape == (3,)
    torch.testing.assert_close(e[1], ((xhat[1] - x)**2).mean())
    torch.testing.assert_close(recon_error(xhat, x.expand(3, 6, 5)), e)

@pytest.mark.parametrize('fn,name', [
    (lambda: shallow_ae(10, 0), 'B'), (lambda: shallow_ae(10, 11), 'B'), (lambda: deep_ae(10, -1), 'B'),
    (lambda: shallow_ae(0, 1), 'N'), (lambda: deep_ae(10.0, 2), 'N'), (lambda: deep_ae(10, 3, y=0), 'y'),
    (lambda: deep_ae(10, 3, y=3, seeds=[0, 1]), 'seeds'), (lambda: deep_ae(10, 3, seeds=[-1]), 'seeds'),
    (lambda: deep_ae(10, 3, H=2), 'H'), (lambda: AutoEncoder([10, 4]), 'sizes'), (lambda: AutoEncoder([10, 0, 10]), 'sizes'),
    (lambda: AutoEncoder([10, 4, 9]), 'sizes'), (lambda: StackedLinear(0, 3), 'n_in'), (lambda: deep_ae(10, 3, y=True), 'y')])
def test_bad_arguments_name_the_parameter(fn, name):
    with pytest.raises((TypeError, ValueError), match=name): fn()

@pytest.mark.parametrize('fused', [False, True])
def test_one_adam_on_stacked_equals_separate_adams(fused):
    "The property the project rests on: stacked training == y independent trainings (same seeds, same minibatches)."
    torch.manual_seed(0)
    X = torch.rand(128, 16, dtype=torch.float64)
    seeds, steps, bs = [1, 5, 8], 50, 16
    orders = [torch.randint(0, len(X), (steps, bs), generator=make_generator(s, 'cpu')) for s in seeds]
    stacked = deep_ae(16, 4, H=10, y=3, seeds=seeds, dtype=torch.float64)
    singles = [deep_ae(16, 4, H=10, seeds=[s], dtype=torch.float64) for s in seeds]
    opt = torch.optim.Adam(stacked.parameters(), lr=3e-3, fused=fused)
    opts = [torch.optim.Adam(m.parameters(), lr=3e-3, fused=fused) for m in singles]
    for t in range(steps):
        xb = torch.stack([X[o[t]] for o in orders])
        opt.zero_grad(); recon_error(stacked(xb), xb).sum().backward(); opt.step()
        for r, (m, o) in enumerate(zip(singles, opts)):
            o.zero_grad(); recon_error(m(xb[r]), xb[r]).sum().backward(); o.step()
    moved = 0.
    for r, m in enumerate(singles):
        start = deep_ae(16, 4, H=10, seeds=[seeds[r]], dtype=torch.float64)
        for ps, p1, p0 in zip(stacked.parameters(), m.parameters(), start.parameters()):
            torch.testing.assert_close(ps[r:r+1].detach(), p1.detach(), rtol=0, atol=1e-10)
            moved = max(moved, (p1 - p0).abs().max().item())
    assert moved > 1e-2     # the models really trained

def test_float32_and_devices_follow_arguments():
    ae = shallow_ae(6, 2, dtype=torch.float64, device='cpu')
    assert all(p.dtype == torch.float64 and p.device.type == 'cpu' for p in ae.parameters())

@pytest.mark.parametrize('init', ['kaiming_normal', 'kaiming_uniform'])
def test_kaiming_inits_have_relu_gain_per_replica(init):
    "Weight std sqrt(2/fan_in) within sampling error, each replica from its own stream, zero biases for the normal scheme."
    ae = deep_ae(300, 10, H=200, y=4, seeds=[5, 6, 7, 8], init=init, dtype=torch.float64)
    for l in ae.layers:
        w, target = l.weight, (2 / l.n_in)**0.5
        se = target / (2 * w.numel())**0.5 * (3 if init == 'kaiming_uniform' else 1)   # std error of the sample std (kurtosis aside)
        assert abs(w.std().item() - target) < 6 * se + 1e-12
        assert not torch.equal(w[0], w[1])
        assert bool((l.bias == 0).all()) == (init == 'kaiming_normal')
    single = deep_ae(300, 10, H=200, seeds=[7], init=init, dtype=torch.float64)    # replica 2 = its seed alone
    assert all(torch.equal(a.weight[2:3], b.weight) for a, b in zip(ae.layers, single.layers))

def test_linear_output_option():
    ae = shallow_ae(12, 3, y=2, output=None, init='kaiming_normal')
    x = torch.randn(7, 12) * 3
    with torch.no_grad():
        out = ae(x)
        assert torch.equal(out, ae.layers[-1](ae.encode(x)))
        assert (out < 0).any() and (out > 1).any()          # a sigmoid output could do neither
        assert ((shallow_ae(12, 3)(x) > 0)).all()           # the default keeps the sigmoid
    with pytest.raises(ValueError, match='output'): shallow_ae(12, 3, output='relu')
    with pytest.raises(ValueError, match='init'): shallow_ae(12, 3, init='orthogonal')
