"""A short training run with and without the malloc setting `eae-run` gives its kernels and Dask workers.

glibc serves blocks above its mmap threshold (at most 32 MB) with mmap and returns them with munmap on free, so a
training step of y = 25 stacked replicas faults in fresh pages for its gradients and evaluation activations on every
step. `eae-run` starts every papermill kernel and Dask worker with
GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296 (set before the process
starts: glibc reads it once); a running process gets the same thresholds from `experiments.tune_allocator` (glibc's
mallopt). This script runs the same short `fit` (deep autoencoder [800, 800, 160, 800, 800], y = 25 replicas,
replicated Adam, batch 64, full-batch evaluation every epoch) in fresh processes three ways: 'default' (glibc's own
settings), 'tunables' (the environment variable) and 'mallopt' (`tune_allocator()` called first thing in the process),
rotating the order every round so that load drift on a shared machine hits all three alike. It reports per epoch the wall time, the
CPU time (user + system: on a machine shared with other jobs, wall time mostly measures waiting for a core, CPU time
much less so), the system time and the minor page faults, the peak RSS, how much the resident memory grows per epoch
over the timed epochs, and the ratios default / tuned for both ways. Memory growth needs longer runs (--epochs 20):
on the MNIST autoencoder cell of replicated AdamW (shallow, 10 trials x 5 replicas) glibc's defaults grew the resident
memory by about 28 MB per epoch, without levelling off, while `StopAtLoss` kept a few bytes per epoch (fixed since);
the tuned setting kept it flat (see chapter 15).

    python tests/benchmarks/bench_allocator.py                  # y=25, 3 rounds of the three ways
    python tests/benchmarks/bench_allocator.py --y 5 --rounds 5
"""
from __future__ import annotations
import argparse, json, os, statistics, subprocess, sys


def child(a):
    "One run in this process: warm-up epoch, then `a.epochs` timed epochs; prints a JSON line."
    import resource, time
    from functools import partial
    import torch
    from entropic_ae.data import random_features
    from entropic_ae.models import deep_ae
    from entropic_ae.optim import Replicated
    from entropic_ae.train import fit, Callback
    if a.mallopt:
        from entropic_ae.experiments import tune_allocator
        assert tune_allocator(), "glibc's mallopt refused the thresholds"
    torch.set_num_threads(a.threads)
    rf = random_features(800, 16, a.P, P_test=a.P, seed=0)
    data = (rf.x_train, rf.x_test)
    opt = partial(Replicated, lr=1e-3, gamma=0.3)
    rss = []
    class Resident(Callback):
        "The resident memory after each epoch, in MB."
        def after_epoch(self, L): rss.append(int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20)
    def run(epochs, seed):
        model = deep_ae(800, 160, y=a.y, seeds=list(range(seed, seed + a.y)))
        fit(model, data, epochs, bs=64, opt_func=opt, cbs=[Resident()])
    run(1, 1000)                                                   # warm-up: imports, first allocations, thread pools
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    rss.clear(); run(a.epochs, 0)
    t, ru1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / a.epochs
    print(json.dumps(dict(s_per_epoch=t / a.epochs, cpu_s_per_epoch=cpu, sys_s_per_epoch=(ru1.ru_stime - ru0.ru_stime) / a.epochs,
                          faults_per_epoch=(ru1.ru_minflt - ru0.ru_minflt) / a.epochs,
                          peak_rss_mb=ru1.ru_maxrss / 1024, rss_growth_mb_per_epoch=(rss[-1] - rss[0]) / max(1, len(rss) - 1),
                          tunables=os.environ.get('GLIBC_TUNABLES'))))

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--y', type=int, default=25); ap.add_argument('--P', type=int, default=640)
    ap.add_argument('--epochs', type=int, default=3); ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2); ap.add_argument('--child', action='store_true')
    ap.add_argument('--mallopt', action='store_true')
    a = ap.parse_args()
    if a.child: return child(a)
    from entropic_ae.experiments import tuned_environ
    base = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
    tuned = tuned_environ(base)               # the library's one setting, not a copy of it
    args = [sys.executable, __file__, '--child', '--y', str(a.y), '--P', str(a.P), '--epochs', str(a.epochs), '--threads', str(a.threads)]
    ways = ['default', 'tunables', 'mallopt']
    res = {w: [] for w in ways}
    for i in range(a.rounds):
        for name in ways[i % 3:] + ways[:i % 3]:
            env = tuned if name == 'tunables' else base
            out = subprocess.run(args + (['--mallopt'] if name == 'mallopt' else []), env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            res[name].append(json.loads(out)); print(name, res[name][-1], flush=True)
    keys = ('s_per_epoch', 'cpu_s_per_epoch', 'sys_s_per_epoch', 'faults_per_epoch', 'peak_rss_mb', 'rss_growth_mb_per_epoch')
    med = {n: {k: statistics.median(r[k] for r in rs) for k in keys} for n, rs in res.items()}
    print(f"\ny={a.y}, P={a.P}, {a.epochs} epochs of {a.P // 64} steps + evaluation, {a.threads} threads, median of {a.rounds} runs each")
    for n, m in med.items():
        print(f"  {n:8s} wall {m['s_per_epoch']:.2f} s/epoch, CPU {m['cpu_s_per_epoch']:.2f} s/epoch (system {m['sys_s_per_epoch']:.2f} s), "
              f"{m['faults_per_epoch']:.0f} minor faults/epoch, peak RSS {m['peak_rss_mb']:.0f} MB, "
              f"RSS growth {m['rss_growth_mb_per_epoch']:.1f} MB/epoch")
    for tuned in ('tunables', 'mallopt'):
        for k, what in (('s_per_epoch', 'wall time'), ('cpu_s_per_epoch', 'CPU time')):
            per = [d[k] / t[k] for d, t in zip(res['default'], res[tuned])]
            print(f"  {what} default / {tuned}: {med['default'][k] / med[tuned][k]:.2f}x (per round: {', '.join(f'{r:.2f}' for r in per)})")
        print(f"  peak memory {tuned} / default: {med[tuned]['peak_rss_mb'] / med['default']['peak_rss_mb']:.2f}x")

if __name__ == '__main__': main()
