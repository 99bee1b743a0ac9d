"""Benchmark: CIFAR crop + flip for a minibatch of y replicas x b images, vectorised (`images.crop_flip`, one gather)
against the per-image Python loop a torchvision-style transform pipeline runs. Timings interleaved; prints ratios.
Usage: OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python tests/benchmarks/bench_vision.py"""
import time, random
import torch
import torch.nn.functional as F
from entropic_ae.images import crop_flip

def per_image(x, pad=4):
    "Each image padded, cropped at a random offset and maybe flipped, one at a time (what a per-sample transform does)."
    out = torch.empty_like(x)
    H, W = x.shape[-2:]
    for i, img in enumerate(x.reshape(-1, *x.shape[-3:])):
        p = F.pad(img, (pad,) * 4)
        dy, dx = random.randint(0, 2 * pad), random.randint(0, 2 * pad)
        c = p[:, dy:dy + H, dx:dx + W]
        out.view(-1, *x.shape[-3:])[i] = c.flip(-1) if random.random() < 0.5 else c
    return out

def bench(y=5, b=128, reps=20):
    x = torch.randn(y, b, 3, 32, 32)
    t = {'vectorised': 0., 'per-image loop': 0.}
    for _ in range(reps):                               # interleaved, so load changes hit both alike
        t0 = time.perf_counter(); crop_flip(x); t['vectorised'] += time.perf_counter() - t0
        t0 = time.perf_counter(); per_image(x); t['per-image loop'] += time.perf_counter() - t0
    ms = {k: 1e3 * v / reps for k, v in t.items()}
    print(f"y={y}, b={b}, 3x32x32: vectorised {ms['vectorised']:.1f} ms, per-image loop {ms['per-image loop']:.1f} ms "
          f"-> loop / vectorised = {ms['per-image loop'] / ms['vectorised']:.1f}x")

if __name__ == '__main__':
    torch.set_num_threads(1)
    for y, b in ((1, 128), (5, 128)): bench(y, b)
