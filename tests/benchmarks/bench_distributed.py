"""One training step of y replicas of the deep autoencoder: one stacked process vs y processes (one replica each) on
torch.distributed (gloo), and what the ranks communicate.

Model: `models.deep_ae(800, 160)` = [800, 800, 160, 800, 800] (1.65 M parameters per replica, float32), batch 64 per
replica, Adam (lr 1e-3), elastic coupling with γ = 0.1. One step = zero_grad + forward + backward of the summed
per-replica loss + `opt.step()` (with the coupling). Implementations:

- `stacked`  one process, the y replicas stacked (`optim.Replicated`), `--threads` torch threads;
- `ranks`    y processes of one replica each (`distributed.DistributedReplicated`, gloo), one torch thread each,
             coupling every step or every `--every` steps; the barycentres are one all-reduce per coupled step.

Reported per configuration: mean (what a run of many steps pays), median and minimum step time (rank 0's clock: an all-reduce makes every rank wait for
the slowest, so rank 0's step is the job's step), the mean time spent inside `all_reduce` per step (waiting for
the slowest rank included), and the bytes each rank hands to all-reduce per timed step (the optimizer's own count, `comm_bytes`); gloo's ring all-reduce
moves about 2(W-1)/W of that in and out of each rank (column `wire_bytes_est`).

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_distributed.py --out figures/bench_distributed_cpu.csv
"""
from __future__ import annotations
import argparse, os, statistics, tempfile, time
from pathlib import Path
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from entropic_ae import distributed as D
from entropic_ae.core import write_csv
from entropic_ae.models import deep_ae, recon_error
from entropic_ae.optim import Replicated

N, H, B, BS, GAMMA = 800, 800, 160, 64, 0.1

def stepper(y:int, seeds, opt_cls, **kw):
    "A zero-argument function doing one training step; and its optimizer."
    model = deep_ae(N, B, H=H, y=len(seeds), seeds=list(seeds))
    opt = opt_cls(model, gamma=GAMMA, lr=1e-3, **kw)
    X = torch.rand(1024, N, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seeds[0])
    idx = [torch.randint(0, len(X), (len(seeds), BS), generator=g) for _ in range(8)]
    k = iter(range(10**9))
    def step():
        i = idx[next(k) % 8]
        opt.zero_grad(set_to_none=True); recon_error(model(X[i]), X[i]).sum().backward(); opt.step()
    return step, opt

def timed(step, warmup:int, n:int, sync=lambda: None, comm=None):
    for _ in range(warmup): step()
    sync()
    ts, cs = [], []
    for _ in range(n):
        if comm is not None: comm[0] = 0.
        t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
        if comm is not None: cs.append(comm[0])
    return ts, cs

def rank_main(rank, world, y, every, warmup, n, init, out):
    torch.set_num_threads(1)
    D.setup('gloo', 300., init_method=init, rank=rank, world_size=world)
    comm, reduce = [0.], dist.all_reduce
    def timed_reduce(*a, **k):                    # time spent inside all_reduce
        t = time.perf_counter(); r = reduce(*a, **k); comm[0] += time.perf_counter() - t; return r
    dist.all_reduce = timed_reduce
    step, opt = stepper(y, list(D.replica_slice(y)), D.DistributedReplicated, every=every)
    b0 = []
    ts, cs = timed(step, warmup, n, lambda: (D.barrier('bench: start'), b0.append(opt.comm_bytes)), comm)
    if rank == 0: torch.save(dict(ts=ts, cs=cs, bytes=opt.comm_bytes - b0[0], steps=n), out)
    D.barrier('bench: end')
    dist.destroy_process_group()

def run_ranks(y, every, warmup, n):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)/'rank0.pt'
        mp.start_processes(rank_main, args=(y, y, every, warmup, n, f'file://{tmp}/store', out), nprocs=y, start_method='spawn')
        return torch.load(out)

def row(impl, y, world, every, threads, ts, cs, nbytes, steps):
    ms = lambda v: round(1e3 * v, 2)
    per = nbytes / steps if steps else 0.
    return dict(impl=impl, y=y, ranks=world, every=every, threads=threads, step_ms_mean=ms(statistics.mean(ts)), step_ms_median=ms(statistics.median(ts)),
                step_ms_min=ms(min(ts)), comm_ms_mean=ms(statistics.mean(cs)) if cs else 0.,
                bytes_per_step=int(per), wire_bytes_est=int(per * 2 * (world - 1) / world), steps=len(ts))

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--ys', type=int, nargs='+', default=[2, 4]); p.add_argument('--every', type=int, default=4)
    p.add_argument('--warmup', type=int, default=3); p.add_argument('--steps', type=int, default=12)
    p.add_argument('--threads', type=int, nargs='+', default=[1, 2]); p.add_argument('--out', default='figures/bench_distributed_cpu.csv')
    a = p.parse_args(argv)
    rows = []
    for y in a.ys:
        for th in a.threads:
            torch.set_num_threads(th)
            step, opt = stepper(y, list(range(y)), Replicated)
            ts, _ = timed(step, a.warmup, a.steps)
            rows.append(row('stacked', y, 1, 1, th, ts, [], 0, a.steps)); print(rows[-1], flush=True)
        for every in sorted({1, a.every}):
            r = run_ranks(y, every, a.warmup, a.steps)
            rows.append(row('ranks', y, y, every, 1, r['ts'], r['cs'], r['bytes'], r['steps'])); print(rows[-1], flush=True)
    write_csv(rows, a.out)
    print('wrote', a.out)

if __name__ == '__main__': main()
