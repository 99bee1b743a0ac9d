"""Test-wide settings: one torch thread per process, and the experiment notebooks' smoke runs started up front.

The suite runs on 2-core machines where notebooks and papermill kernels run side by side; with several
processes each spinning two OpenMP threads, small tensor ops were measured 15-60x slower. Kernels spawned
by the papermill smoke tests inherit OMP_NUM_THREADS from here.
"""
import os
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
import torch
torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))

import resource, threading, time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
import pytest
from papermill import execute_notebook   # bound once: a test may monkeypatch papermill.execute_notebook while a run is going
from entropic_ae.experiments import notebook_parameters

EXP = Path(__file__).resolve().parent.parent/'nbs'/'experiments'

@pytest.fixture
def refuses():
    """`refuses(calls, i, n)`: the table `calls` of (function, message) pairs still has `n` rows, and calling the `i`-th
    raises a ValueError or TypeError whose text contains its message (one body for every bad-calls table)."""
    def check(calls, i, n):
        assert len(calls) == n, f"the table has {len(calls)} bad calls, the test is parametrised for {n}"
        f, message = calls[i]
        with pytest.raises((ValueError, TypeError)) as e: f()
        assert message in str(e.value), str(e.value)
    return check

# Smoke runs of the experiment notebooks. A test declares its papermill run with `@pytest.mark.smoke(notebook, **params)`
# and reads it through the `smoke_run` fixture. While a kernel computes, the pytest process only waits, so on two cores
# a second lane pays: a background thread starts the selected tests' runs from the last one needed backwards while this
# process runs the other tests, which come first; then the smoke tests run here, each starting its run itself if the
# background has not begun it. The two lanes meet in the middle; every run still happens once per session.

def pytest_configure(config):
    config.addinivalue_line('markers', 'smoke(notebook, data=None, before=None, **params): a papermill run of '
                            'nbs/experiments/<notebook>.ipynb with figures_dir a fresh folder (which before(folder) may fill first), '
                            'data_root the folder data(folder) fills and, where the notebook takes one, ckpt_dir a fresh folder '
                            'beside it; read through the smoke_run fixture')

def pytest_collection_modifyitems(session, config, items):
    "The smoke tests last (in their order), so the background lane runs kernels while the other tests run here."
    items[:] = sorted(items, key=lambda i: i.get_closest_marker('smoke') is not None)

class SmokeRuns:
    "The marked tests' papermill runs: started in a background thread from the last one backwards, or by the test that needs it."
    def __init__(self, items, root:Path, workers=1):
        self.root, self.data, self.lock, self.log = root, {}, threading.Lock(), []
        self.specs = {i.nodeid: i.get_closest_marker('smoke') for i in items if i.get_closest_marker('smoke')}
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix='smoke')
        self.futures = {k: self.pool.submit(self.run, k, 'background') for k in reversed(list(self.specs))}

    def data_root(self, make):
        "The folder `make(folder)` filled, once per session, whichever lane asks first."
        with self.lock:
            if make not in self.data:
                self.data[make] = self.root/f'data{len(self.data)}_{make.__name__}'
                self.data[make].mkdir()
                make(self.data[make])
            return self.data[make]

    def folder(self, key):
        "The folder of test `key`'s run: the executed notebook, and `out`, its figures_dir."
        return self.root/f'run{list(self.specs).index(key):02d}_{self.specs[key].args[0]}'

    def run(self, key, lane):
        m = self.specs[key]
        (name,), params, folder = m.args, dict(m.kwargs), self.folder(key)
        out = folder/'out'; out.mkdir(parents=True)
        if (make := params.pop('data', None)) is not None: params['data_root'] = str(self.data_root(make))
        if (before := params.pop('before', None)) is not None: before(out)
        if 'ckpt_dir' in notebook_parameters(EXP/f'{name}.ipynb'):    # checkpoints in the run's own folder, never in the repository's runs/
            params.setdefault('ckpt_dir', str(folder/'ckpt'))
        t0 = time.perf_counter()
        try:
            nb = execute_notebook(str(EXP/f'{name}.ipynb'), str(folder/f'{name}.ipynb'), kernel_name='python3', cwd=str(EXP),
                                  progress_bar=False, parameters=dict(figures_dir=str(out), **params))
        finally: self.log.append((key, lane, time.perf_counter() - t0))
        return SimpleNamespace(out=out, nb=nb, text=''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'
                                                             for o in c.get('outputs', [])))

    def get(self, key):
        "The run of test `key`: its result, or its error raised here; run in this thread (once) if the background has not begun it."
        f = self.futures[key]
        if f.cancel():                             # not begun: run it here, and keep the outcome for the test's next call
            self.futures[key] = f = Future()
            try: f.set_result(self.run(key, 'inline'))
            except BaseException as e: f.set_exception(e)
        return f.result()

@pytest.fixture(scope='session', autouse=True)
def _smoke_runs(request, tmp_path_factory):
    runs = SmokeRuns(request.session.items, tmp_path_factory.mktemp('smoke'))
    request.config._smoke_log = runs.log
    yield runs
    runs.pool.shutdown(cancel_futures=True)

class SmokeRun:
    """One test's run: `out` is its figures_dir; calling it returns the run (out, nb: the executed notebook, text: its
    printed output) or raises the run's PapermillExecutionError."""
    def __init__(self, runs, key): self.runs, self.key, self.out = runs, key, runs.folder(key)/'out'
    def __call__(self): return self.runs.get(self.key)

@pytest.fixture
def smoke_run(request, _smoke_runs):
    "The test's `@pytest.mark.smoke` run (a `SmokeRun`)."
    if request.node.nodeid not in _smoke_runs.specs: raise KeyError(f'{request.node.nodeid} has no @pytest.mark.smoke(notebook, ...) marker')
    return SmokeRun(_smoke_runs, request.node.nodeid)

def pytest_terminal_summary(terminalreporter, config):
    "Where the smoke runs went and their wall times (they are no test's duration), and the session's CPU seconds."
    log = getattr(config, '_smoke_log', None)
    if not log: return
    tr = terminalreporter
    tr.section('smoke runs (papermill kernels)')
    for key, lane, s in sorted(log, key=lambda r: -r[2]): tr.write_line(f'{s:7.1f}s {lane:10} {key}')
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = lambda r: r.ru_utime + r.ru_stime
    tr.write_line(f'{sum(s for k, l, s in log if l == "background"):.0f}s in the background lane, '
                  f'{sum(s for k, l, s in log if l == "inline"):.0f}s inline; CPU of the session: {cpu(me):.0f}s in pytest, '
                  f'{cpu(kids):.0f}s in finished child processes (kernels, workers)')
