"""Replica helpers: selection/stacking round trips, barycentre, ensemble output, distances and errors."""
import pytest, torch
from torch import nn
from entropic_ae.models import deep_ae, recon_error, shallow_ae
from entropic_ae.replicas import barycentre, distance_to_barycentre, ensemble_forward, n_replicas, replica, stack

def same_params(a, b): return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))

def test_replica_is_the_single_model_with_that_seed():
    ae = deep_ae(10, 3, H=7, y=3, seeds=[5, 6, 7], bottleneck_relu=True)
    for i, s in enumerate([5, 6, 7]):
        r = replica(ae, i)
        assert n_replicas(r) == 1 and r.y == 1 and all(l.y == 1 for l in r.layers) and r.seeds == [s]
        assert same_params(r, deep_ae(10, 3, H=7, seeds=[s], bottleneck_relu=True))
        assert r.bottleneck_relu
    assert same_params(ae, deep_ae(10, 3, H=7, y=3, seeds=[5, 6, 7]))   # the original is untouched

def test_stack_round_trip_and_forward():
    ae = shallow_ae(9, 4, y=4, seeds=[3, 1, 4, 5])
    back = stack(replica(ae, i) for i in range(4))
    assert back.y == 4 and all(l.y == 4 for l in back.layers) and back.seeds == [3, 1, 4, 5]
    assert same_params(back, ae)
    x = torch.rand(6, 9)
    with torch.no_grad(): assert torch.equal(back(x), ae(x))
    mixed = stack([ae, replica(ae, 0)])
    assert n_replicas(mixed) == 5 and mixed.seeds is None   # [3, 1, 4, 5, 3]: not a valid seed list
    for p in mixed.parameters(): assert p.requires_grad and p.is_leaf

def test_grads_follow_replicas():
    ae = shallow_ae(8, 3, y=3)
    x = torch.rand(5, 8)
    recon_error(ae(x), x).sum().backward()
    r1 = replica(ae, 1)
    for p, q in zip(r1.parameters(), ae.parameters()): assert torch.equal(p.grad, q.grad[1:2])
    back = stack([replica(ae, i) for i in range(3)])
    for p, q in zip(back.parameters(), ae.parameters()): assert torch.equal(p.grad, q.grad)
    assert all(p.grad is None for p in barycentre(ae).parameters())

def test_stacked_copies_are_independent():
    ae = shallow_ae(6, 2, y=2)
    r = replica(ae, 0)
    with torch.no_grad(): r.layers[0].weight.add_(1.0)
    assert not torch.equal(r.layers[0].weight, ae.layers[0].weight[:1])

def test_barycentre():
    single = deep_ae(10, 3, H=6, seeds=[9])
    bc = barycentre(stack([single] * 4))
    assert n_replicas(bc) == 1 and bc.seeds is None
    for p, q in zip(bc.parameters(), single.parameters()): torch.testing.assert_close(p, q)
    ae = shallow_ae(7, 2, y=3)
    bc = barycentre(ae)
    for p, q in zip(bc.parameters(), ae.parameters()): torch.testing.assert_close(p, q.mean(0, keepdim=True))

def test_distance_and_ensemble():
    single = shallow_ae(7, 2, seeds=[1])
    torch.testing.assert_close(distance_to_barycentre(stack([single] * 3)), torch.zeros(3))
    ae = shallow_ae(7, 2, y=2, dtype=torch.float64)
    d = distance_to_barycentre(ae)
    half = sum((p[0] - p[1]).square().sum() for p in ae.parameters()).detach()/4   # |w_a - w̄|² = |w_0 - w_1|²/4
    torch.testing.assert_close(d, torch.stack([half, half]))
    x = torch.rand(5, 7, dtype=torch.float64)
    with torch.no_grad(): torch.testing.assert_close(ensemble_forward(ae, x), ae(x).mean(0, keepdim=True))
    assert ensemble_forward(ae, x).shape == (1, 5, 7)

def test_errors_name_the_parameter():
    ae = shallow_ae(6, 2, y=3)
    for bad in (3, -1, 10):
        with pytest.raises(ValueError, match='^i must'): replica(ae, bad)
    with pytest.raises(TypeError, match='^i must'): replica(ae, 1.0)
    with pytest.raises(ValueError, match='models'): stack([])
    with pytest.raises(ValueError, match=r'models\[1\]'): stack([ae, shallow_ae(6, 3)])
    with pytest.raises(TypeError, match=r'models\[1\]'): stack([ae, nn.Linear(2, 2)])
    with pytest.raises(TypeError, match='model'): n_replicas(nn.Linear(3, 2))
    bad = shallow_ae(6, 2, y=3); bad.y = 2
    with pytest.raises(ValueError, match='model tensor'): n_replicas(bad)
