"""Sweeps on Dask: a worker killed mid-grid, a rerun that finishes only the missing cells, one row set per cell in the
gathered table; bad sweeps refused before any work; the per-GPU worker environment of the local cluster."""
import json, os, signal, threading, time
from pathlib import Path
import nbformat, pandas as pd, pytest
from entropic_ae.sweeps import main, plan_cells, run_sweep, local_cluster, output_paths

BODY = '''
import csv, os, time
from pathlib import Path
marker = Path(marker_dir)/f"started-{seed}"
first = not marker.exists()
marker.write_text(f"{os.getppid()} {os.getpid()}")
if seed == crash_seed and first: os._exit(1)           # the kernel dies: an infrastructure failure, worth a retry
time.sleep(120 if seed == slow_seed and first else 0.3)
with open(Path(figures_dir)/"tiny.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["run", "metric", "value"])
    w.writerows([[seed, m, k*(seed + 1)] for k, m in enumerate(["loss", "error", "energy"])])
'''

def tiny(folder):
    params = nbformat.v4.new_code_cell('profile = "quick"\nfigures_dir = "."\nseed = 0\nslow_seed = -1\ncrash_seed = -1\nmarker_dir = "."')
    params.metadata['tags'] = ['parameters']
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(BODY)])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    path = Path(folder)/'tiny.ipynb'; nbformat.write(nb, path); return path

def alive(pid):
    try: return Path(f'/proc/{pid}/status').read_text().split('State:')[1].split()[0] != 'Z'
    except (OSError, IndexError): return False

def test_worker_killed_mid_grid_then_rerun_finishes_only_missing_cells(tmp_path):
    from distributed import Client
    nb, markers, out = tiny(tmp_path), tmp_path/'markers', tmp_path/'sweep'
    markers.mkdir()
    cells = plan_cells([dict(notebooks=[str(nb)], params=dict(marker_dir=str(markers), slow_seed=2), grid=dict(seed=list(range(4))))],
                       'quick', out)
    result = {}
    with local_cluster(2) as cluster, Client(cluster) as client:
        workers = set(client.run(os.getpid).values())
        assert len(workers) == 2
        assert set(client.run(lambda: os.environ.get('GLIBC_TUNABLES')).values()) == {
            'glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296'}
        run = threading.Thread(target=lambda: result.update(run_sweep(cells, out, client=client, retries=0, progress=False)))
        run.start()
        slow = markers/'started-2'
        for _ in range(3000):                                     # up to 5 min: a loaded machine starts kernels slowly
            if slow.exists() and slow.read_text(): break
            time.sleep(0.1)
        worker_pid, kernel_pid = map(int, slow.read_text().split())
        assert worker_pid in workers
        os.kill(worker_pid, signal.SIGKILL)                       # the worker running seed 2 dies mid-cell
        run.join(120)
        assert not run.is_alive()
        by_seed = lambda cs: sorted(c.params['seed'] for c in cs)
        assert (by_seed(result['done']), by_seed(result['failed']), result['skipped']) == ([0, 1, 3], [2], [])
        lost = result['failed'][0]
        assert 'worker lost' in json.loads(output_paths(lost.out_notebook)['failed'].read_text())['error']
        assert not lost.out_notebook.exists() and not list(lost.figures_dir.iterdir())   # nothing half-written in place
        for _ in range(100):                                      # the killed worker's kernel does not outlive it
            if not alive(kernel_pid): break
            time.sleep(0.1)
        assert not alive(kernel_pid)
        again = run_sweep(cells, out, client=client, retries=0, progress=False)   # the rerun (the nanny restarted the worker)
    assert (by_seed(again['done']), len(again['skipped']), again['failed']) == ([2], 3, []), [again['records'][c.id].get('error') for c in again['failed']]
    assert not output_paths(lost.out_notebook)['failed'].exists()
    df = pd.read_csv(out/'results.csv')
    assert sorted(df.cell.unique()) == sorted(c.id for c in cells)
    assert (df.groupby('cell').size() == 3).all()                 # exactly one row set per cell
    assert sorted(df.groupby('cell').param_seed.first()) == list(range(4))
    assert pd.read_csv(out/'cells.csv').status.tolist().count('skipped') == 3

def bad_cases(tmp_path, nb):
    blocked = tmp_path/'a_file'; blocked.write_text('not a folder')
    def toml(name, text):
        (tmp_path/f'{name}.toml').write_text(text); return str(tmp_path/f'{name}.toml')
    head = f'notebooks = ["{nb}"]\n'
    grid = f'[params]\nmarker_dir = "{tmp_path/"markers"}"\n[grid]\n'
    return {
        'unknown notebook': (['--sweep', toml('nb', 'notebooks = ["no_such_notebook"]\n[grid]\nseed = [0, 1]\n')],
                             "unknown notebook 'no_such_notebook'"),
        'unknown parameter': (['--sweep', toml('par', head + grid + 'sede = [0, 1]\n')],
                              "tiny has no parameter(s) ['sede']; its parameters are ['crash_seed', 'marker_dir', 'seed', 'slow_seed']"),
        'wrong type': (['--sweep', toml('typ', head + grid + 'seed = [0, "one"]\n')], 'tiny: seed must be an integer'),
        'empty grid file': (['--sweep', toml('emp', head + grid)], 'the grid is empty'),
        'empty axis': (['--sweep', toml('axis', head + grid + 'seed = []\n')], "grid parameter 'seed' has no values"),
        'empty -g': (['--only', str(nb), '-g', 'seed'], '-g seed needs at least one value'),
        'unwritable folder': (['--sweep', toml('unw', head + f'runs_dir = "{blocked}/runs"\n' + grid + 'seed = [0]\n')],
                              f'{blocked}/runs'),
        'non-UTF-8 file': (['--sweep', latin1(tmp_path/'lat.toml', head + '# café\n' + grid + 'seed = [0]\n')],
                           f'sweep file {tmp_path/"lat.toml"} is not UTF-8 text'),
        'invalid TOML': (['--sweep', toml('inv', head + '[grid\n')], f'sweep file {tmp_path/"inv.toml"} is not valid TOML'),
        'missing file': (['--sweep', str(tmp_path/'nope.toml')], f'cannot read sweep file {tmp_path/"nope.toml"}'),
        'unknown key': (['--sweep', toml('key', head + 'workers = 2\n' + grid + 'seed = [0]\n')], "unknown key(s) ['workers']"),
        'fixed and swept': (['--sweep', toml('fs', head + grid.replace('[grid]', 'seed = 1\n[grid]') + 'seed = [0]\n')],
                            "parameter(s) ['seed'] are both fixed and swept"),
        'repeated value': (['--sweep', toml('rep', head + grid + 'seed = [0, 0]\n')], "grid parameter 'seed' repeats a value"),
        'figures_dir swept': (['--sweep', toml('fig', head + grid + 'figures_dir = ["a"]\n')], 'figures_dir cannot be set in a sweep'),
        '-g twice': (['--only', str(nb), '-g', 'seed', '0', '-g', 'seed', '1'], '-g seed is given twice'),
        '--only with --sweep': (['--only', str(nb), '--sweep', toml('only', head + grid + 'seed = [0]\n')], '--only does not combine'),
        '--figures-dir with -g': (['--only', str(nb), '-g', 'seed', '0', '--figures-dir', str(tmp_path/'f')], '--figures-dir does not apply'),
        'negative --retries': (['--only', str(nb), '-g', 'seed', '0', '--retries', '-1'], 'retries must be >= 0, got -1'),
        'scheduler refused': (['--only', str(nb), '-g', 'seed', '0', '--scheduler', 'tcp://127.0.0.1:1'],
                              'scheduler tcp://127.0.0.1:1: cannot connect'),
        'scheduler malformed': (['--only', str(nb), '--scheduler', 'localhost'], "scheduler: expected tcp://HOST:PORT, got 'localhost'"),
    }

def latin1(path, text):
    path.write_bytes(text.encode('latin-1')); return str(path)

CASES = ['unknown notebook', 'unknown parameter', 'wrong type', 'empty grid file', 'empty axis', 'empty -g', 'unwritable folder',
         'non-UTF-8 file', 'invalid TOML', 'missing file', 'unknown key', 'fixed and swept', 'repeated value', 'figures_dir swept',
         '-g twice', '--only with --sweep', '--figures-dir with -g', 'negative --retries', 'scheduler refused', 'scheduler malformed']

@pytest.mark.parametrize('case', CASES)
def test_bad_sweep_is_refused_before_any_work(tmp_path, capsys, case):
    "Each refused fast (no 60 s wait for a scheduler) with one line naming the file, option or parameter."
    nb = tiny(tmp_path); (tmp_path/'markers').mkdir()
    argv, message = bad_cases(tmp_path, nb)[case]
    t0 = time.time()
    assert main(argv + ['--runs-dir', str(tmp_path/'runs')] + ([] if '--scheduler' in argv else ['--workers', '0'])) == 2
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1 and 'Traceback' not in err, err
    assert time.time() - t0 < 20
    assert not list((tmp_path/'markers').iterdir()) and not (tmp_path/'runs').exists()   # no kernel ran, nothing written

def test_local_clusters_leave_port_8787_alone():
    "With the dashboard's usual port taken (another sweep's cluster), a local cluster, CPU or GPU, starts without a warning: its scheduler's HTTP routes take a free port (they used to try 8787 and warn, into the chapters' outputs)."
    import socket, warnings
    taken = socket.socket()
    try: taken.bind(('127.0.0.1', 8787)); taken.listen()
    except OSError: pass                                       # already taken: the same situation
    try:
        for kw in (dict(n_workers=1), dict(gpus=['0'])):
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter('always')
                with local_cluster(**kw) as cluster: port = cluster.scheduler_info['services']['dashboard']
            assert port != 8787 and not [x for x in w if '8787' in str(x.message)], (kw, port, [str(x.message) for x in w])
    finally: taken.close()

def test_gpu_workers_and_cli_on_a_running_scheduler(tmp_path):
    """With GPUs (here pretended: ids only) the local cluster has one worker per GPU, each with its own
    CUDA_VISIBLE_DEVICES; `eae-run --scheduler ADDRESS` runs a grid on such a running cluster."""
    from distributed import Client
    nb = tiny(tmp_path); (tmp_path/'markers').mkdir()
    with local_cluster(gpus=['0', '1']) as cluster, Client(cluster) as client:
        env = client.run(lambda: (os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ.get('OMP_NUM_THREADS')))
        assert sorted(v[0] for v in env.values()) == ['0', '1'] and all(v[1] for v in env.values())
        assert main(['--only', str(nb), '-g', 'seed', '3', '4', '-p', 'marker_dir', str(tmp_path/'markers'),
                     '--runs-dir', str(tmp_path/'runs'), '--scheduler', cluster.scheduler_address]) == 0
        assert main(['--only', str(nb), '-p', 'marker_dir', str(tmp_path/'markers'), '-p', 'seed', '7', '--runs-dir', str(tmp_path/'plain'),
                     '--figures-dir', str(tmp_path/'figs'), '--scheduler', cluster.scheduler_address]) == 0   # no grid: plain layout
    assert (tmp_path/'plain'/'quick'/'tiny.ipynb').exists() and (tmp_path/'figs'/'tiny.csv').read_text().startswith('run,metric')
    cells = pd.read_csv(tmp_path/'runs'/'sweeps'/'grid'/'cells.csv')
    assert cells.status.tolist() == ['done', 'done']
    provs = [json.loads(p.read_text()) for p in (tmp_path/'runs'/'sweeps'/'grid').rglob('tiny.provenance.json')]
    assert sorted(p['parameters']['seed'] for p in provs) == [3, 4]
    assert all(p['device']['cuda_visible_devices'] in ('0', '1') and p['worker'].startswith('tcp://') for p in provs)

def test_dead_kernel_is_retried_a_bounded_number_of_times(tmp_path):
    "A kernel that dies is a retryable failure: recorded as such without retries, and completed on the next attempt with one."
    nb, markers = tiny(tmp_path), tmp_path/'markers'
    markers.mkdir()
    plan = lambda crash: plan_cells([dict(notebooks=[str(nb)], params=dict(marker_dir=str(markers), crash_seed=crash), grid=dict(seed=[5]))],
                                    'quick', tmp_path/'sweep')
    s = run_sweep(plan(5), tmp_path/'sweep', workers=0, retries=0, progress=False)
    rec = s['records'][s['failed'][0].id]
    assert rec['retryable'] is True and 'DeadKernelError' in rec['error'], rec['error']
    (markers/'started-5').unlink()
    s = run_sweep(plan(5), tmp_path/'sweep', workers=0, retries=1, progress=False)
    assert len(s['done']) == 1 and json.loads(output_paths(s['done'][0].out_notebook)['provenance'].read_text())['attempt'] == 1


def test_a_cell_running_elsewhere_is_not_run_twice(tmp_path):
    "A cell whose lock another sweep holds is reported Busy, its staging folder untouched, and not retried; once free, it runs."
    from entropic_ae.experiments import exclusive
    nb, markers = tiny(tmp_path), tmp_path/'markers'
    markers.mkdir()
    cells = plan_cells([dict(notebooks=[str(nb)], params=dict(marker_dir=str(markers)), grid=dict(seed=[0, 1]))], 'quick', tmp_path/'sweep')
    busy = output_paths(cells[0].out_notebook)
    with exclusive(busy['lock']):                                 # the other sweep, mid-cell
        (busy['staging']/f"{busy['stem']}-0123abcd").mkdir(parents=True)
        s = run_sweep(cells, tmp_path/'sweep', workers=0, retries=2, progress=False)
    rec = s['records'][cells[0].id]
    assert [c.id for c in s['failed']] == [cells[0].id] and len(s['done']) == 1 and rec['retryable'] is False
    assert rec['error'].startswith(f"Busy: {busy['lock'].name} is held by pid {os.getpid()}") and 'attempt' in rec and rec['attempt'] == 0
    assert (busy['staging']/f"{busy['stem']}-0123abcd").exists() and not (markers/'started-0').exists() and not busy['failed'].exists()
    assert 'Busy' in pd.read_csv(tmp_path/'sweep'/'cells.csv').set_index('cell').error[cells[0].id]
    s = run_sweep(cells, tmp_path/'sweep', workers=0, progress=False)
    assert ([c.id for c in s['done']], len(s['skipped'])) == ([cells[0].id], 1)


def _bad_calls(tmp_path):
    from entropic_ae import sweeps as S
    nb = tiny(tmp_path)
    return [
        (lambda: S.expand_grid({'seed': 3}), "grid parameter 'seed' must be a list"),
        (lambda: S.expand_grid({'seed': []}), "grid parameter 'seed' has no values"),
        (lambda: S.load_sweep(tmp_path), f'cannot read sweep file {tmp_path}'),
        (lambda: S.plan_cells([]), 'the sweep has no cells'),
        (lambda: S.plan_cells([dict(notebooks=['nope'], grid={'seed': [0]})]), "unknown notebook 'nope'"),
        (lambda: S.plan_cells([dict(notebooks=[str(nb)], grid={'seed': [0]})], profile=3), 'profile must be a string'),
        (lambda: S.plan_cells([dict(grid={'seed': [0]})]), 'no notebooks named'),
        (lambda: S.run_cells([], retries=-1), 'retries must be >= 0'),
        (lambda: S.run_sweep([], workers=-1), 'workers must be >= 0'),
        (lambda: S.local_cluster(0), 'workers must be >= 1'),
        (lambda: S.check_scheduler('tcp://127.0.0.1:1'), 'cannot connect'),
        (lambda: S.check_scheduler(None), 'scheduler: expected tcp://HOST:PORT'),
        (lambda: S.cell_slug({'a': 1}, limit=5), 'limit must be >= 20'),
    ]

N_CALLS = 13

@pytest.mark.parametrize('i', range(N_CALLS))
def test_public_functions_refuse_bad_values_by_name(tmp_path, i, refuses):
    refuses(_bad_calls(tmp_path), i, N_CALLS)

def test_in_process_cells_show_their_notebooks_progress(tmp_path, capsys):
    "A cell run here shows a bar of its notebook's cells (not only whole cells), so an hour-long cell is seen moving."
    nb = tiny(tmp_path)
    cells = plan_cells([dict(notebooks=[str(nb)], params=dict(marker_dir=str(tmp_path)), grid=dict(seed=[0]))], 'quick', tmp_path/'s')
    run_sweep(cells, tmp_path/'s', workers=0, progress=True)
    err = capsys.readouterr().err
    assert 'tiny cells' in err and '3/3' in err, err   # the parameters, the injected parameters and the body

def test_small_sweeps_run_here_and_a_cluster_starts_only_once_it_pays_back(tmp_path, monkeypatch):
    """Cells of 0.05 s never pay back a cluster's start: they all run in this process and no cluster is made. With a
    (pretended) start cost below one cell's time, the first cell runs here, then a cluster takes the other three;
    the summary says which way the cells went. (Fake cells and an in-process cluster keep this to about a second.)"""
    from distributed import LocalCluster
    from entropic_ae import sweeps as S
    nb = tiny(tmp_path)
    cells = plan_cells([dict(notebooks=[str(nb)], params=dict(marker_dir=str(tmp_path)), grid=dict(seed=list(range(4))))], 'quick', tmp_path/'s')
    def fake(cell, attempt=0, start_timeout=180, progress=False):
        time.sleep(0.05)
        return dict(status='done', retryable=False, attempt=attempt, worker=S._worker_name())
    started = []
    monkeypatch.setattr(S, 'execute_cell', fake)
    monkeypatch.setattr(S, 'available_cpus', lambda: 2)
    monkeypatch.setattr(S, 'visible_gpus', lambda: [])
    monkeypatch.setattr(S, 'local_cluster', lambda n: started.append(n) or LocalCluster(n_workers=n, threads_per_worker=1, processes=False,
                                                                                         dashboard_address=None))
    where = lambda s: [s['records'][c.id]['worker'] for c in cells]
    s = S.run_sweep(cells, progress=False)
    assert where(s) == [None] * 4 and started == [] and len(s['done']) == 4
    assert s['engine'] == 'in this process (a local cluster of 2 workers would not pay back)'
    monkeypatch.setattr(S, 'CLUSTER_START_S', 0.01)
    s = S.run_sweep(cells, progress=False, force=True)
    assert where(s)[0] is None and all(w is not None for w in where(s)[1:]) and started == [2], where(s)
    assert s['engine'] == '1 cell(s) in this process, then 3 on a local Dask cluster of 2 workers (it pays back)'

def test_committed_sweep_files_plan():
    "Every sweep file under nbs/experiments/sweeps names existing notebooks and parameters they accept (checked as eae-run checks them, nothing run)."
    from entropic_ae.sweeps import load_sweep, plan_cells
    root = Path(__file__).parent.parent
    files = sorted((root/'nbs'/'experiments'/'sweeps').glob('*.toml'))
    assert files, 'no sweep files found'
    for f in files:
        spec = load_sweep(f)
        cells = plan_cells(spec['blocks'], profile=spec.get('profile'), runs_dir=root/(spec.get('runs_dir') or 'runs/sweeps/grid'),
                           folder=root/'nbs'/'experiments')
        assert cells, f
