"""Sweeps on Dask: a worker killed mid-grid, a rerun that finishes only the missing cells, one row set per cell in the
gathered table; bad sweeps refused before any work; the per-GPU worker environment of the local cluster."""
import json, os, signal, threading, time
from pathlib import Path
import nbformat, pandas as pd, pytest
from entropic_ae.experiments import main
from entropic_ae.sweeps import plan_cells, run_sweep, local_cluster, output_paths

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
        for _ in range(600):
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
    }

@pytest.mark.parametrize('case', ['unknown notebook', 'unknown parameter', 'wrong type', 'empty grid file', 'empty axis', 'empty -g',
                                  'unwritable folder'])
def test_bad_sweep_is_refused_before_any_work(tmp_path, capsys, case):
    nb = tiny(tmp_path); (tmp_path/'markers').mkdir()
    argv, message = bad_cases(tmp_path, nb)[case]
    assert main(argv + ['--runs-dir', str(tmp_path/'runs'), '--workers', '0']) == 2
    assert message in capsys.readouterr().err
    assert not list((tmp_path/'markers').iterdir()) and not (tmp_path/'runs').exists()   # no kernel ran, nothing written

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
