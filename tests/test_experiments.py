"""The papermill runner and the `eae-run` command: profiles, overrides checked before any kernel starts, failures that name
the notebook and never replace an earlier good result, kernels started with the tuned allocator."""
import json, os, re, subprocess, sys
from pathlib import Path
import nbformat, pytest
from entropic_ae.experiments import ExperimentFailed, experiment_notebooks, main, run_experiments

TOY = '''
import os
from pathlib import Path
import matplotlib.pyplot as plt
from entropic_ae.experiments import resolve_params, save_figure
PROFILES = {"quick": {"n": 3, "scale": 1.0}, "full": {"n": 30, "scale": 1.0}}
p = resolve_params(PROFILES, profile, n=n, scale=scale)
fig, ax = plt.subplots(); ax.plot(range(p.n))
save_figure(fig, Path(figures_dir)/f"toy_{profile}.png")
Path(figures_dir, "env.txt").write_text(os.environ.get("GLIBC_TUNABLES", ""))
if p.scale < 0: raise RuntimeError("negative scale requested")
'''

def make_nb(folder, name, body):
    params = nbformat.v4.new_code_cell('profile = "quick"\nfigures_dir = "."\nn = None\nscale = None')
    params.metadata['tags'] = ['parameters']
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(body)])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    nbformat.write(nb, folder/f'{name}.ipynb')

@pytest.fixture
def toy(tmp_path):
    exp = tmp_path/'experiments'; exp.mkdir()
    make_nb(exp, 'a_toy', TOY)
    return tmp_path, exp

def test_runner_writes_figure_and_executed_notebook_from_a_kernel_with_the_tuned_allocator(toy):
    root, exp = toy
    out = run_experiments('quick', runs_dir=root/'runs', figures_dir=root/'figs', folder=exp, progress=False)
    assert out == [root/'runs'/'quick'/'a_toy.ipynb'] and out[0].exists()
    assert (root/'figs'/'toy_quick.png').read_bytes()[:4] == b'\x89PNG'
    assert (root/'figs'/'env.txt').read_text() == 'glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296'

def test_bad_override_is_refused_before_any_kernel_starts(toy):
    root, exp = toy
    for params, message in [({'n': 'many'}, 'a_toy: n must be an integer'), ({'scale': [1]}, 'a_toy: scale must be a real number'),
                            ({'unknown_param': 3}, "a_toy has no parameter(s) ['unknown_param']; its parameters are ['n', 'scale']"),
                            ({'profile': 'full'}, 'use eae-run --profile'), ({'figures_dir': 'x'}, 'use eae-run --figures-dir')]:
        with pytest.raises((TypeError, ValueError)) as e:
            run_experiments('quick', runs_dir=root/'runs', figures_dir=root/'figs', folder=exp, params=params, progress=False)
        assert message in str(e.value)
    assert not (root/'runs').exists() and not (root/'figs').exists()

def test_failed_run_never_replaces_good_notebook_or_figure(toy):
    "The failing run writes a new figure before it raises: the old figure and executed notebook stay, the failure is recorded."
    root, exp = toy
    run_experiments('quick', runs_dir=root/'runs', figures_dir=root/'figs', folder=exp, progress=False)
    fig, out = root/'figs'/'toy_quick.png', root/'runs'/'quick'/'a_toy.ipynb'
    before = fig.read_bytes(), out.read_bytes()
    with pytest.raises(ExperimentFailed) as e:
        run_experiments('quick', runs_dir=root/'runs', figures_dir=root/'figs', folder=exp, params={'n': 50, 'scale': -1.0}, progress=False)
    assert e.value.notebook == 'a_toy.ipynb' and 'negative scale requested' in str(e.value)
    assert (fig.read_bytes(), out.read_bytes()) == before
    failed = json.loads((out.parent/'a_toy.failed.json').read_text())
    assert failed['status'] == 'failed' and failed['retryable'] is False and failed['parameters'] == {'n': 50, 'scale': -1.0}
    assert (out.parent/'a_toy.failed.ipynb').exists() and not list((out.parent/'.staging').iterdir())
    prov = json.loads((out.parent/'a_toy.provenance.json').read_text())   # still the good run's
    assert prov['status'] == 'done' and prov['parameters'] == {} and prov['files'] == ['env.txt', 'toy_quick.png']
    assert {'git_commit', 'versions', 'device', 'start', 'end', 'wall_s'} <= set(prov)

def test_cli_exit_code_names_failing_notebook(toy):
    root, exp = toy
    make_nb(exp, 'b_fails', TOY.replace('p.scale < 0', 'True'))
    r = subprocess.run([sys.executable, '-m', 'entropic_ae.experiments', '--profile', 'quick', '--experiments-dir', str(exp),
                        '--runs-dir', str(root/'runs'), '--figures-dir', str(root/'figs')], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert 'FAILED: b_fails.ipynb' in r.stderr
    assert (root/'figs'/'toy_quick.png').exists()  # the other notebook still delivered

def test_cli_p_profile_and_unwritable_folder(toy, capsys):
    root, exp = toy
    blocked = root/'a_file'; blocked.write_text('x')
    assert main(['-p', 'profile', 'full', '--experiments-dir', str(exp), '--runs-dir', str(root/'runs'),
                 '--figures-dir', str(root/'figs')]) == 0
    assert (root/'runs'/'full'/'a_toy.ipynb').exists() and (root/'figs'/'toy_full.png').exists()
    assert main(['--profile', 'quick', '--experiments-dir', str(exp), '--runs-dir', str(blocked/'runs')]) == 2
    assert f'runs_dir {blocked}/runs/quick is not writable' in capsys.readouterr().err

def test_cli_rejects_unknown_profile_and_notebook(toy, capsys):
    root, exp = toy
    assert main(['--profile', 'fast', '--experiments-dir', str(exp)]) == 2
    assert 'profile must be one of' in capsys.readouterr().err
    assert main(['--only', 'nope', '--experiments-dir', str(exp), '--profile', 'quick']) == 2
    assert 'unknown notebook' in capsys.readouterr().err

def test_repository_experiments_have_parameters_cell():
    for nb_path in experiment_notebooks():
        nb = nbformat.read(nb_path, as_version=4)
        tagged = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
        assert len(tagged) == 1, f'{nb_path.name} needs exactly one cell tagged parameters'
        assert 'profile' in tagged[0].source and 'figures_dir' in tagged[0].source, nb_path.name

def test_every_parameter_is_visible_to_papermill():
    "`papermill --help-notebook` lists every assignment of the parameters cell (an `=` in a comment hides it)."
    import ast
    from papermill.translators import PythonTranslator
    for nb_path in experiment_notebooks():
        nb = nbformat.read(nb_path, as_version=4)
        src = next(c.source for c in nb.cells if 'parameters' in c.metadata.get('tags', []))
        assigned = {t.id for node in ast.parse(src).body if isinstance(node, ast.Assign) for t in node.targets}
        seen = {p.name for p in PythonTranslator.inspect({'source': src})}
        assert seen == assigned, f'{nb_path.name}: papermill cannot parse {sorted(assigned - seen)}'

def test_only_accepts_several_names_and_repeats():
    from entropic_ae.experiments import _parser
    assert _parser().parse_args(['--only', 'a', '--only', 'b', 'c']).only == ['a', 'b', 'c']
    assert _parser().parse_args([]).only is None

@pytest.mark.parametrize('profile', ['quick', 'full'])
def test_every_profile_passes_its_notebooks_own_checks(profile, tmp_path):
    """The set-up cell of each experiment (profiles, typed parameters, consistency checks) accepts both profiles, so a
    `full` run on a GPU machine does not die on a typo after the quick profile was the only one ever executed here."""
    import torch
    threads = torch.get_num_threads()
    try:
        for nb_path in experiment_notebooks():
            nb = nbformat.read(nb_path, as_version=4)
            params = next(c.source for c in nb.cells if 'parameters' in c.metadata.get('tags', []))
            setup = next(c.source for c in nb.cells if 'PROFILES = {' in c.source)
            ns = {}
            exec(params, ns)
            ns.update(profile=profile, figures_dir=str(tmp_path), device='cpu')
            exec(setup, ns)
            p = ns['p']
            assert set(ns['PROFILES'][profile]) <= set(p), nb_path.name
            assert not list(tmp_path.iterdir()), f'{nb_path.name} wrote files in its set-up cell'
    finally:
        torch.set_num_threads(threads)

PWN = "PWN = [c for c in ().__class__.__base__.__subclasses__() if c.__name__=='_wrap_close'][0].__init__.__globals__['system']('touch X')"

@pytest.mark.parametrize('profiles', ['PROFILES = {"quick": {"n": 3, "scale": 1.0}}', 'PROFILES = {"quick": {"n": PWN, "scale": 1.0}}'])
def test_checking_a_run_executes_nothing(tmp_path, monkeypatch, profiles):
    "The issue's payload in a notebook whose PROFILES is checked: nothing runs, a PROFILES that needs it is refused by name."
    from entropic_ae.experiments import check_parameters
    monkeypatch.chdir(tmp_path)
    make_nb(tmp_path, 'evil', PWN + '\n' + profiles)
    if 'PWN' in profiles:
        with pytest.raises(ValueError, match=r'evil: PROFILES must be written as literals .*PWN: '):
            check_parameters(tmp_path/'evil.ipynb', 'quick', {'n': 3})
    else: assert check_parameters(tmp_path/'evil.ipynb', 'quick', {'n': 3}) == {'n': 3}
    assert not (tmp_path/'X').exists()

def test_bounds_are_checked_before_any_kernel_starts(toy):
    root, exp = toy
    make_nb(exp, 'a_toy', TOY.replace('p = resolve_params(PROFILES, profile,', 'BOUNDS = {"n": ">= 1", "scale": "[0, 10]"}\n'
                                      'p = resolve_params(PROFILES, profile, BOUNDS,'))
    for params, message in [({'n': -1}, 'a_toy: n must be >= 1, got -1'), ({'scale': 11}, 'a_toy: scale must lie in [0, 10], got 11.0')]:
        with pytest.raises(ValueError, match=re.escape(message)):
            run_experiments('quick', runs_dir=root/'runs', figures_dir=root/'figs', folder=exp, params=params, progress=False)
    assert not (root/'runs').exists()

def _cli_cases(root, exp):
    blocked = root/'a_file'; blocked.write_text('x')
    base = ['--experiments-dir', str(exp), '--runs-dir', str(root/'runs'), '--figures-dir', str(root/'figs')]
    return {
        'unknown profile': (['--profile', 'fast', *base], 'profile must be one of'),
        'unknown notebook': (['--only', 'nope', *base], "unknown notebook 'nope'"),
        'unknown parameter': (['-p', 'nn', '3', *base], "a_toy has no parameter(s) ['nn']"),
        'wrong type': (['-p', 'n', 'many', *base], 'a_toy: n must be an integer'),
        'below bound': (['-p', 'n', '-1', *base], 'a_toy: n must be >= 1, got -1'),
        'runner-owned -p': (['-p', 'profile', 'full', '--profile', 'quick', *base], '-p profile full contradicts --profile quick'),
        'unwritable runs': (['--experiments-dir', str(exp), '--runs-dir', str(blocked/'r'), '--figures-dir', str(root/'figs')], f'runs_dir {blocked}/r/quick is not writable'),
        'unwritable figures': (['--experiments-dir', str(exp), '--runs-dir', str(root/'runs'), '--figures-dir', str(blocked/'f')], f'figures_dir {blocked}/f is not writable'),
        'missing experiments dir': (['--experiments-dir', str(root/'nowhere')], f"experiments_dir '{root/'nowhere'}' is not a folder"),
        'empty experiments dir': (['--experiments-dir', str(root/'runs'), '--list'], 'holds no notebooks'),
        '--list missing dir': (['--list', '--experiments-dir', str(root/'nowhere')], 'is not a folder'),
        'negative retries': (['--retries', '-1', *base], 'retries must be >= 0, got -1'),
        'negative workers': (['--workers', '-1', *base], 'workers must be >= 0, got -1'),
    }

CLI = ['unknown profile', 'unknown notebook', 'unknown parameter', 'wrong type', 'below bound', 'runner-owned -p', 'unwritable runs',
       'unwritable figures', 'missing experiments dir', 'empty experiments dir', '--list missing dir', 'negative retries', 'negative workers']

@pytest.mark.parametrize('case', CLI)
def test_cli_refuses_bad_flags_in_one_line_before_any_work(toy, capsys, case):
    root, exp = toy
    make_nb(exp, 'a_toy', TOY.replace('p = resolve_params(PROFILES, profile,', 'BOUNDS = {"n": ">= 1"}\np = resolve_params(PROFILES, profile, BOUNDS,'))
    (root/'runs').mkdir()
    argv, message = _cli_cases(root, exp)[case]
    from entropic_ae.sweeps import main as eae_run                # the installed command: plain and sweep options
    assert eae_run(['--profile', 'quick', *argv] if '--profile' not in argv and '-p' not in argv else argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1 and 'Traceback' not in err, err
    assert not list((root/'runs').iterdir()) and not (root/'figs').exists()

def test_ctrl_c_is_a_clean_exit_130(toy, capsys, monkeypatch):
    import entropic_ae.experiments as E
    root, exp = toy
    def interrupted(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(E, 'run_experiments', interrupted)
    assert main(['--experiments-dir', str(exp)]) == 130
    err = capsys.readouterr().err
    assert err.startswith('eae-run: interrupted') and 'Traceback' not in err

def _bad_calls(root, exp):
    from entropic_ae import experiments as E
    from entropic_ae.core import write_csv
    nb = exp/'a_toy.ipynb'
    return [
        (lambda: E.resolve_params({'quick': {'n': 1}}, 'full'), "profile must be one of ['quick']"),
        (lambda: E.resolve_params({'quick': {'n': 1}}, 'quick', n=1.5), 'n must be an integer'),
        (lambda: E.resolve_params({'quick': {'n': 1}}, 'quick', {'n': '>= 2'}), 'n must be >= 2, got 1'),
        (lambda: E.resolve_params({'quick': {'n': 1}}, 'quick', {'n': 'big'}), "an interval is written like"),
        (lambda: E.check_bound('lr', float('nan'), '> 0'), 'lr must be > 0, got nan'),
        (lambda: E.check_bound('lr', 'x', '> 0'), "lr must be > 0, got 'x'"),
        (lambda: E.elbow([1, 2], [3, 2]), 'widths and errors must be 1-D of equal length >= 3'),
        (lambda: E.find_notebook('nope', exp), "unknown notebook 'nope'"),
        (lambda: E.experiment_notebooks(root/'nowhere'), 'is not a folder'),
        (lambda: E.notebook_parameters(root/'missing.ipynb'), 'cannot read the parameters of'),
        (lambda: E.check_parameters(nb, 'quick', {'figures_dir': 'x'}), 'use eae-run --figures-dir'),
        (lambda: E.check_parameters(nb, 'fast', {}), "a_toy: profile must be one of ['quick', 'full']"),
        (lambda: E.check_writable(figures_dir=root/'a_file'/'x'), 'figures_dir'),
        (lambda: E.run_experiments('fast', folder=exp), "profile must be one of ['full', 'quick'], got 'fast'"),
        (lambda: E.run_experiments('quick', folder=exp, retries=-1), 'retries must be >= 0'),
        (lambda: E.run_experiments('quick', folder=exp, only=['nope']), "unknown notebook 'nope'"),
        (lambda: write_csv([dict(a=1), 3], root/'t.csv'), 'rows[1] must be a dict'),
        (lambda: write_csv([dict(a=1)], root/'t.csv', digits=30), 'digits must be <= 17'),
    ]

N_CALLS = 18

@pytest.mark.parametrize('i', range(N_CALLS))
def test_public_functions_refuse_bad_values_by_name(toy, i, refuses):
    root, exp = toy
    (root/'a_file').write_text('x')
    refuses(_bad_calls(root, exp), i, N_CALLS)

def test_a_long_notebook_shows_progress_within_it(toy, capsys):
    "Besides the bar over notebooks, a bar over the running notebook's cells: a 20-minute notebook is seen moving."
    root, exp = toy
    run_experiments('quick', runs_dir=root/'runs', figures_dir=root/'figs', folder=exp, progress=True)
    err = capsys.readouterr().err
    assert 'a_toy cells' in err and '3/3' in err, err

def test_every_repository_experiment_is_checkable_without_running_it():
    "eae-run reads each notebook's PROFILES (and BOUNDS) as literals; a computed constant makes the notebook uncheckable."
    from entropic_ae.experiments import notebook_profiles, notebook_bounds
    bad = []
    for nb in experiment_notebooks():
        try: assert notebook_profiles(nb) is not None and isinstance(notebook_bounds(nb), dict)
        except ValueError as e: bad.append(str(e))
    assert not bad, '\n'.join(bad)

@pytest.mark.parametrize('nb', [p.stem for p in experiment_notebooks()])
def test_repository_experiment_refuses_counts_below_bound_before_any_kernel_starts(nb, monkeypatch):
    """Issue 17 item 7: `eae-run -p trials -1` used to fail inside the kernel after the run had started. Every repository
    experiment declares BOUNDS; each integer count with a lower bound is refused one below it, by name, with no kernel."""
    import papermill
    from entropic_ae.experiments import check_parameters, notebook_bounds, notebook_profiles
    def no_kernel(*a, **k): raise AssertionError('a kernel was started')
    monkeypatch.setattr(papermill, 'execute_notebook', no_kernel)
    path = next(p for p in experiment_notebooks() if p.stem == nb)
    bounds, quick = notebook_bounds(path), notebook_profiles(path)['quick']
    for prof in notebook_profiles(path).values(): check_parameters(path, 'quick', {k: v for k, v in prof.items() if k in bounds})
    counts = {k: int(s.split()[1]) for k, s in bounds.items() if s.startswith('>= ') and isinstance(quick[k], int)}
    assert counts, f'{nb} bounds no count parameter'
    for k, lo in counts.items():
        with pytest.raises(ValueError, match=re.escape(f'{nb}: {k} must be >= {lo}, got {lo - 1}')):
            check_parameters(path, 'quick', {k: lo - 1})

def _package_imports() -> dict:
    "Each module of `entropic_ae` -> the package modules it imports anywhere in its source (top level or inside a function)."
    import ast
    pkg = Path(__file__).resolve().parents[1]/'entropic_ae'
    mods = {p.stem for p in pkg.glob('*.py')}
    def deps(path):
        out = set()
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.ImportFrom) and n.level == 1: names = [n.module] if n.module else [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom) and (n.module or '').split('.')[0] == 'entropic_ae':
                names = [n.module.split('.', 1)[1]] if '.' in n.module else [a.name for a in n.names]
            elif isinstance(n, ast.Import): names = [a.name.split('.', 1)[1] for a in n.names if a.name.startswith('entropic_ae.')]
            else: continue
            out |= {m.split('.')[0] for m in names if m and m.split('.')[0] in mods}
        return out - {path.stem}
    return {p.stem: deps(p) for p in pkg.glob('*.py')}

def _cycle(graph:dict):
    "One import cycle of `graph` as a list of modules, or None."
    state, stack = {}, []
    def visit(m):
        state[m] = 'open'; stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 'open': return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)): return c
        state[m] = 'done'; stack.pop()
    for m in sorted(graph):
        if m not in state and (c := visit(m)): return c

def test_cycle_finder_sees_a_cycle():
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert _cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None

def test_no_import_cycle_among_package_modules():
    "The modules form layers: no module imports (even lazily, inside a function) one that imports it back."
    g = _package_imports()
    assert 'sweeps' in g and 'experiments' in g['sweeps']          # the graph sees relative imports
    assert (c := _cycle(g)) is None, ' -> '.join(c)

def test_eae_run_is_the_command_with_sweep_options():
    "The console script `eae-run` is `sweeps.main` (plain runs and sweeps); `experiments.main` alone knows no sweep options."
    import configparser
    cfg = configparser.ConfigParser(); cfg.read(Path(__file__).resolve().parents[1]/'settings.ini')
    scripts = dict(s.split('=', 1) for s in cfg['DEFAULT']['console_scripts'].split())
    assert scripts['eae-run'] == 'entropic_ae.sweeps:main', scripts['eae-run']
    with pytest.raises(SystemExit): main(['--workers', '2'])

MNIST_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')

def test_main_job_skips_what_lacks_data_and_says_so_first(toy, monkeypatch, capsys):
    """Issue 19: without MNIST the main job names the notebooks it skips, and where the files go, before any kernel starts,
    and runs the others; with the files under the data root it runs them all. (No kernel: execute_atomic is a stub.)"""
    from entropic_ae import experiments as E
    root, exp = toy
    make_nb(exp, 'b_mnist', 'REQUIRES = ["mnist"]\nraise RuntimeError("reads MNIST")')
    ran = []
    monkeypatch.setattr(E, 'execute_atomic', lambda nb, out, *a, **k: ran.append(Path(nb).stem) or dict(status='done', wall_s=0.0))
    monkeypatch.setenv('ENTROPIC_AE_DATA', str(root/'data'))
    done = run_experiments('quick', runs_dir=root/'runs', figures_dir=root/'figs', folder=exp, progress=False)
    err = capsys.readouterr().err
    assert ran == ['a_toy'] and [p.stem for p in done] == ['a_toy']
    assert 'skipping 1 of 2' in err and 'b_mnist: MNIST not found' in err and str(root/'data'/'MNIST'/'raw') in err, err
    raw = root/'data'/'MNIST'/'raw'; raw.mkdir(parents=True)
    for f in MNIST_FILES: (raw/f).touch()
    ran.clear()
    run_experiments('quick', runs_dir=root/'runs', figures_dir=root/'figs', folder=exp, progress=False)
    assert ran == ['a_toy', 'b_mnist'] and 'skipping' not in capsys.readouterr().err

def test_repository_mnist_experiments_declare_their_data(tmp_path):
    "The MNIST notebooks say so in REQUIRES, so the runner can skip them on a machine without the files, and say which runs (gather, summary) read none."
    from entropic_ae.experiments import find_notebook, missing_data
    nb = find_notebook('mnist_autoencoders')
    assert 'MNIST not found' in missing_data([nb], 'quick', tmp_path)[nb]
    tables = [find_notebook(n) for n in ('talk_table', 'sam_study')]
    for profile in ('mnist_quick', 'mnist_narrow', 'mnist_full'):              # every MNIST profile of the supervised tables
        why = missing_data(tables, profile, tmp_path)
        assert len(why) == 2 and all('MNIST not found' in w for w in why.values())
        assert missing_data(tables, profile, tmp_path, {'gather': 'rows*.csv'}) == {}     # a gather reads no data: not skipped
    assert missing_data([nb], 'full', tmp_path, {'mode': 'summary'}) == {}
    for f in MNIST_FILES: (tmp_path/'MNIST'/'raw').mkdir(parents=True, exist_ok=True); (tmp_path/'MNIST'/'raw'/f).touch()
    assert missing_data([nb], 'quick', tmp_path) == {} and missing_data(tables, 'mnist_narrow', tmp_path) == {}
