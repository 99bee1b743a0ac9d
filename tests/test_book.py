"""eae-book on a tiny book made in a temporary folder: outputs kept and cleaned, stale outputs caught while float
noise passes, an HTML edition with working links, and (where Debian's chromium is installed) the browser check."""
import copy, html, json, re, shutil
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbdev.clean import clean_nb

from entropic_ae import book, website

FIG = "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([0, 1], [0, 1]);"


def _write(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(s) if kind == 'md' else nbformat.v4.new_code_cell(s) for kind, s in cells]
    nbformat.write(nb, path)
    return path


def _anchors(page):
    "Attributes of every <a> of html `page`."
    res = []
    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == 'a': res.append(dict(attrs))
    P().feed(page)
    return res


SETTINGS = (Path(__file__).resolve().parent.parent/'settings.ini').read_text().replace('lib_path = entropic_ae', 'lib_path = pkg')
WIDGET = "import ipywidgets as W\nW.interact(lambda a: print(2 * a), a=W.FloatSlider(value=1.5, description='alpha'));"


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A two-page book in a tiny project (settings.ini, module pkg/m.py), executed once with `eae-book execute`; its nbs folder."
    root = tmp_path_factory.mktemp('proj')
    (root/'settings.ini').write_text(SETTINGS)
    (root/'pkg').mkdir(); (root/'pkg'/'m.py').write_text('import os\n\ndef exported_f(x):\n    "Twice `x`."\n    return 2 * x\n')
    d = root/'nbs'; d.mkdir()
    _write(d/'index.ipynb', [('md', '# Tiny\n\nThe first page; read [the chapter](01_ch.ipynb#A-section).')])
    _write(d/'01_ch.ipynb', [('code', '#| hide\nimport math\nfrom nbdev.showdoc import show_doc'),
                             ('md', '# Chapter one\n\n> What it shows.\n\n## A section\n\nEnergy $E = mc^2$ and\n\n$$\\int_0^1 x\\,dx = \\frac12$$'),
                             ('code', 'print(f"pi {math.pi:.6f}, seven 7")'),
                             ('code', FIG),
                             ('code', '#| eval: false\nraise RuntimeError("never runs")'),
                             ('md', 'Back to [the start](index.ipynb).\n\n## Reference'),
                             ('code', '#| export\ndef exported_f(x):\n    "Twice `x`."\n    return 2 * x'),
                             ('code', 'show_doc(exported_f)'),
                             ('code', 'assert exported_f(2) == 4  # a test stays on the page'),
                             ('code', WIDGET)])
    nb = json.loads((d/'01_ch.ipynb').read_text())
    nb['cells'].insert(0, nbformat.v4.new_code_cell('#| default_exp m'))
    (d/'01_ch.ipynb').write_text(json.dumps(nb))
    assert book.execute([d/'01_ch.ipynb'], quiet=True) == []
    return d


def test_execute_keeps_outputs_clean(tiny):
    nb = json.loads((tiny/'01_ch.ipynb').read_text())
    cells = nb['cells']
    assert cells[3]['outputs'][0]['text'] == ['pi 3.141593, seven 7\n']
    assert cells[5]['outputs'] == []                                           # eval: false stays unexecuted
    (img,) = [o for o in cells[4]['outputs'] if 'image/png' in o.get('data', {})]
    w, h = book.image_size('image/png', img['data']['image/png'])
    assert 300 < w < 600 and 200 < h < 450, (w, h)                             # plain PNG at 80 dpi, not retina
    assert all(c.get('execution_count') is None for c in cells) and nb['metadata'].keys() <= {'kernelspec'}
    again = copy.deepcopy(nb)
    clean_nb(again)                                                            # what nbdev_clean does: no change
    assert again == nb


def test_check_catches_stale_and_errors_tolerates_noise(tiny, tmp_path):
    shutil.copytree(tiny.parent, tmp_path/'proj')
    d = tmp_path/'proj'/'nbs'
    p, bad = d/'01_ch.ipynb', _write(d/'02_bad.ipynb', [('code', 'x = 1'), ('code', 'raise ValueError("boom")')])
    committed = json.loads(p.read_text())
    nb = copy.deepcopy(committed)
    nb['cells'][3]['outputs'][0]['text'] = ['pi 3.141593, seven 8\n']        # an integer changed: stale
    nb['cells'][4]['outputs'] = []                                           # a figure missing: stale
    p.write_text(json.dumps(nb))
    problems = sorted(book.check([p, bad], keep=tmp_path/'fresh', quiet=True))  # one run: two notebooks at once
    assert len(problems) == 3, problems
    assert problems[0].startswith("01_ch.ipynb cell 3 ('print(f\"pi") and '+pi 3.141593, seven 7' in problems[0]
    assert problems[1].startswith('01_ch.ipynb cell 4') and 'no committed output' in problems[1]
    assert '02_bad.ipynb: raised while executing' in problems[2] and 'ValueError: boom' in problems[2]
    fresh = json.loads((tmp_path/'fresh'/'01_ch.ipynb').read_text())
    assert book.compare_nbs(committed, fresh) == []                          # the committed outputs were current
    committed['cells'][3]['outputs'][0]['text'] = ['pi 3.141598, seven 7\n']  # noise in the 6th digit: fine
    assert book.compare_nbs(committed, fresh) == []


def test_rule():
    assert book.same_text('x 0.333333 t 1.2 s <A at 0x7f00aa11>', 'x 0.333338 t 9.9 s <A at 0x7f00bb22>')
    assert not book.same_text('x 0.3333', 'x 0.3340')
    assert not book.same_text('n 7', 'n 8')
    out = lambda t: {'cell_type': 'code', 'source': '', 'outputs': [{'output_type': 'stream', 'name': 'stdout', 'text': t}]}
    timed = lambda t: dict(out(t), source='t0 = time.perf_counter()\nprint(speed())')
    assert book.compare_cells(timed('numba 1.7x faster'), out('numba 2.1x faster')) is None    # reads the clock
    assert 'differs' in book.compare_cells(timed('numba 1.7x faster'), out('numpy 1.7x faster'))
    assert 'differs' in book.compare_cells(dict(out('1.7x'), source='print(x)'), out('2.1x'))


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match='nbs'): book.chapters(tmp_path/'nowhere')
    with pytest.raises(ValueError, match='n_workers'): book.execute([], n_workers=0)
    with pytest.raises(ValueError, match='notebooks: no notebook'): book.check([tmp_path/'missing.ipynb'])
    _write(tmp_path/'index.ipynb', [('md', '# Hi')])
    (tmp_path/'site').mkdir(); (tmp_path/'site'/'keep.txt').write_text('mine')
    with pytest.raises(ValueError, match='dest'): book.build_html(tmp_path, tmp_path/'site')


def test_showdoc_checker():
    nb = {'cells': [{'cell_type': 'code', 'source': '#| export\ndef f(): pass\nclass K: pass\n@patch\ndef m(self:K): pass'},
                    {'cell_type': 'code', 'source': 'show_doc(f)\nshow_doc(K.m)'}]}
    assert book.exported_names(nb) == ['f', 'K', 'K.m'] and book.missing_show_doc(nb) == ['K']


def test_cli_showdoc(tmp_path, capsys):
    p = _write(tmp_path/'01_x.ipynb', [('code', '#| default_exp x'), ('code', '#| export\ndef f(): "F."')])
    with pytest.raises(SystemExit, match='1 exported names without show_doc'): book.main(['showdoc', str(p)])
    assert '01_x.ipynb: f' in capsys.readouterr().out
    book.main(['showdoc', '--add', str(p)])
    book.main(['showdoc', str(p)])                                              # now complete: no exit
    assert [c.source for c in nbformat.read(p, as_version=4).cells][1:] == [
        '#| hide\nfrom nbdev.showdoc import show_doc', '#| export\ndef f(): "F."', 'show_doc(f)']


@pytest.fixture(scope='module')
def site(tiny, tmp_path_factory):
    "The tiny book's HTML edition, built once."
    dest = tmp_path_factory.mktemp('site')/'site'
    website.build_html(tiny, dest, title='Tiny', quiet=True)
    return dest


def _text(page):
    "What a reader reads on html `page`: tags dropped, entities decoded."
    return html.unescape(re.sub(r'<[^>]+>', '', page))


def test_html(tiny, site):
    index, ch = (site/'index.html').read_text(), (site/'01_ch.html').read_text()
    ai, ac = _anchors(index), _anchors(ch)
    assert {'href': '01_ch.html#A-section'} in ai and {'href': 'index.html'} in ac      # links rewritten
    assert {'class': 'eae-next', 'rel': 'next', 'href': '01_ch.html'} in ai               # prev / next
    assert {'class': 'eae-prev', 'rel': 'prev', 'href': 'index.html'} in ac
    assert re.search(r'<li class="current"><a href="01_ch.html">01 Chapter one</a>', ch)  # sidebar, reading order
    assert 'import math' not in ch and 'never runs' in ch and 'data:image/png;base64' in ch
    assert (site/'_static'/'mathjax'/'MathJax.js').exists() and 'cdn' not in ch.lower()
    assert book.build_html is website.build_html                                         # the old import path still works
    website.build_html(tiny, site, title='Tiny', quiet=True)                              # rebuilds its own folder


def test_site_has_contents_and_search(site):
    "Issue 20: each page has a table of contents of its headings, and the site a search index of every section."
    ch = (site/'01_ch.html').read_text()
    toc = re.search(r'<nav class="eae-toc".*?</nav>', ch, re.S)
    assert toc and 'href="#A-section"' in toc[0] and 'href="#exported_f"' in toc[0]
    js = (site/'_static'/'search_index.js').read_text()
    index = json.loads(js[js.index('['):js.rindex(']') + 1])
    sec = next(e for e in index if e['href'] == '01_ch.html#A-section')
    assert sec['title'] == 'A section' and sec['page'] == '01 Chapter one' and 'Energy' in sec['text']
    assert 'id="eae-search"' in ch and (site/'_static'/'search.js').exists()


def test_site_shows_entries_not_exported_code(tiny, site):
    "Issue 20: an exported cell's code is left out of the page (its show_doc entry stays); examples and tests stay."
    text = _text((site/'01_ch.html').read_text())
    assert 'return 2 * x' not in text and 'Twice x.' in text.replace('`', '') and 'assert exported_f(2) == 4' in text
    assert any('return 2 * x' in ''.join(c['source']) for c in json.loads((tiny/'01_ch.ipynb').read_text())['cells'])  # the notebook keeps it


def test_widget_is_a_note_not_a_repr(tiny, site):
    "Issue 20: a widget's stored text names its controls and settings; the page shows it as a note, not `interactive(children=...`."
    outs = json.loads((tiny/'01_ch.ipynb').read_text())['cells'][10]['outputs']
    (view,) = [o for o in outs if 'application/vnd.jupyter.widget-view+json' in o.get('data', {})]
    assert ''.join(view['data']['text/plain']).startswith('Interactive widget (alpha = 1.5): in Jupyter')
    ch = (site/'01_ch.html').read_text()
    assert 'children=' not in ch and '<p class="eae-widget">Interactive widget (alpha = 1.5)' in ch


def test_source_links_are_relative_and_resolve(tiny, site):
    "Issue 20: [source] leads to the definition's file and line relative to the notebook; the site renders that file."
    entry = ''.join(json.loads((tiny/'01_ch.ipynb').read_text())['cells'][8]['outputs'][0]['data']['text/markdown'])
    assert entry.startswith('---\n\n[source](../pkg/m.py#L3){target="_blank"'), entry[:80]
    ch = (site/'01_ch.html').read_text()
    assert 'href="_source/pkg/m.py.html#L3"' in ch and 'entropic-ae.invalid' not in ch
    assert '<span id="L3">' in (site/'_source'/'pkg'/'m.py.html').read_text()
    assert website.link_problems(site, {'01_ch.html': ch}) == []
    assert website.link_problems(site, {'01_ch.html': ch.replace('m.py.html#L3', 'm.py.html#L99')}) == [
        "01_ch.html: link '_source/pkg/m.py.html#L99': no #L99 in _source/pkg/m.py.html"]


@pytest.mark.skipif(shutil.which('chromium') is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_browser(site, tmp_path):
    copy = tmp_path/'site'
    shutil.copytree(site, copy)
    assert website.browse(copy, screenshot=tmp_path/'shot.png', shot_page='01_ch.html#A-section', quiet=True) == []
    assert (tmp_path/'shot.png').stat().st_size > 5_000
    dom = website.chromium(['--dump-dom', (copy/'index.html').as_uri() + '?q=energy'])     # the search box answers
    results = re.search(r'<ol id="eae-results">(.*?)</ol>', dom, re.S)
    assert results and 'href="01_ch.html#A-section"' in results[1], dom[:2000]
    ch = copy/'01_ch.html'
    ch.write_text(ch.read_text().replace('href="index.html"', 'href="gone.html"', 1)
                  .replace('data:image/png;base64,', 'data:image/png;base64,AAAA', 1)
                  .replace('$E = mc^2$', '$E = \\frac{$', 1))
    (copy/'_static'/'search_index.js').write_text('window.eaeSearchIndex = [];')
    problems = '\n'.join(website.browse(copy, quiet=True))
    assert "link 'gone.html' does not resolve" in problems and 'image did not load' in problems
    assert 'TeX errors' in problems or 'not typeset' in problems, problems
    assert "searching its title 'Chapter one' does not find the page" in problems


def test_cli_showdoc_flags_several_show_docs_in_one_cell(tmp_path, capsys):
    "Issue 20: a cell holding show_doc(f) and show_doc(g) renders g only; eae-book showdoc fails on it."
    p = _write(tmp_path/'01_x.ipynb', [('code', '#| export\ndef f(): "F."\ndef g(): "G."'), ('code', 'show_doc(f)\nshow_doc(g)')])
    with pytest.raises(SystemExit, match='1 cells with several show_doc calls'): book.main(['showdoc', str(p)])
    assert '01_x.ipynb cell 1: 2 show_doc calls (f, g); only the last one renders' in capsys.readouterr().out


ROOT = Path(__file__).resolve().parent.parent


def machine_patterns() -> dict:
    "What would tie a committed output to this machine: its kernel, platform, host, home, checkout and temporary paths, a clock."
    import os, platform, socket, tempfile
    pats = {'kernel release': re.escape(platform.release()), 'platform': re.escape(platform.platform()),
            'checkout path': re.escape(str(ROOT)), 'home path': re.escape(str(Path.home())) + r'/',
            'temporary path': re.escape(tempfile.gettempdir()) + r'/tmp\w', 'host field': r'"host"\s*:\s*"',
            'platform field': r'"platform"\s*:\s*"', 'timestamp': r'\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d'}
    if len(h := socket.gethostname()) >= 4: pats['host name'] = rf'\b{re.escape(h)}\b'
    return {k: re.compile(v) for k, v in pats.items()}


def _output_texts(cell):
    for o in cell.get('outputs', []):
        if 'text' in o: yield ''.join(o['text'])
        for mime, v in o.get('data', {}).items():
            if not mime.startswith('image/'): yield v if isinstance(v, str) else ''.join(v) if isinstance(v, list) else json.dumps(v)
        if o.get('output_type') == 'error': yield '\n'.join(o.get('traceback', []))


def test_committed_outputs_name_no_machine():
    "No committed output (of any notebook under nbs/) shows this machine's host, kernel, platform, paths or a clock time."
    pats, found = machine_patterns(), []
    for p in sorted((ROOT/'nbs').rglob('*.ipynb')):
        if '.ipynb_checkpoints' in p.parts: continue
        for i, c in enumerate(json.loads(p.read_text(encoding='utf-8'))['cells']):
            for t in _output_texts(c):
                found += [f"{p.relative_to(ROOT)} cell {i}: {k}: {t[max(0, m.start() - 30):m.end() + 30]!r}"
                          for k, r in pats.items() if (m := r.search(t))]
    assert not found, '\n'.join(found)


def test_machine_scan_catches_what_it_should():
    import platform, tempfile
    pats = machine_patterns()
    for text in [f'Linux {platform.release()}', '"host": "node7"', f'{tempfile.gettempdir()}/tmp0a1iju47/x.csv',
                 f'written {ROOT}/figures/a.csv', 'at 2025-01-02T03:04:05']:
        assert any(r.search(text) for r in pats.values()), text
    assert not any(r.search('loss 0.0123 after 30 epochs, see figures/a.csv') for r in pats.values())


def test_other_cpu_check_really_runs_other_kernels(tmp_path):
    "`eae-book check --other-cpu` runs the chapters on another CPU's torch kernels: a chapter printing them goes stale."
    import subprocess, sys
    nb = _write(tmp_path/'cpu.ipynb', [('code', 'import torch\nprint(torch.backends.cpu.get_cpu_capability())')])
    assert book.execute([nb], quiet=True) == []
    run = lambda *a: subprocess.run([sys.executable, '-c', 'from entropic_ae.book import main; main()', 'check', str(nb), *a],
                                    capture_output=True, text=True, cwd=ROOT)
    assert run().returncode == 0
    r = run('--other-cpu')
    assert r.returncode == 1 and 'cpu.ipynb cell 0' in r.stderr and 'ATEN_CPU_CAPABILITY=' in r.stderr, r.stderr


def _cli_cases(tmp):
    (tmp/'broken.ipynb').write_text('{"cells": [')
    (tmp/'list.ipynb').write_text('[1, 2]')
    (tmp/'file').write_text('x')
    (tmp/'site').mkdir(); (tmp/'site'/'mine.txt').write_text('mine')
    return {
        'README as notebook': (['execute', str(ROOT/'README.md')], 'is not a notebook (.ipynb)'),
        'broken notebook': (['check', str(tmp/'broken.ipynb')], f"'{tmp/'broken.ipynb'}' cannot be read as a notebook"),
        'JSON not a notebook': (['execute', str(tmp/'list.ipynb')], 'is JSON but not a notebook'),
        'missing notebook': (['check', str(tmp/'nope.ipynb')], f"no notebook '{tmp/'nope.ipynb'}'"),
        'zero workers': (['check', '--n-workers', '0', str(ROOT/'nbs'/'00_core.ipynb')], 'n_workers: expected a positive integer, got 0'),
        'keep is a file': (['check', '--keep', str(tmp/'file'), str(ROOT/'nbs'/'00_core.ipynb')], str(tmp/'file')),
        'showdoc broken': (['showdoc', str(tmp/'broken.ipynb')], 'cannot be read as a notebook'),
        'html into a foreign folder': (['html', '--dest', str(tmp/'site')], 'was not made by eae-book'),
        'html under a file': (['html', '--dest', str(tmp/'file'/'site')], str(tmp/'file')),
        'browse nothing built': (['browse', '--site', str(tmp/'nowhere')], 'no html pages'),
    }

BOOK_CLI = ['README as notebook', 'broken notebook', 'JSON not a notebook', 'missing notebook', 'zero workers', 'keep is a file',
            'showdoc broken', 'html into a foreign folder', 'html under a file', 'browse nothing built']


@pytest.mark.parametrize('case', BOOK_CLI)
def test_cli_bad_input_is_one_line_and_exit_1(tmp_path, case, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv, message = _cli_cases(tmp_path)[case]
    with pytest.raises(SystemExit) as e: book.main(argv)
    msg = e.value.code
    assert isinstance(msg, str) and msg.startswith(f'eae-book {argv[0]}: ') and message in msg and '\n' not in msg, msg


def test_cli_ctrl_c_exits_130(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    def interrupted(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(book, 'check', interrupted)
    with pytest.raises(SystemExit) as e: book.main(['check', str(ROOT/'nbs'/'00_core.ipynb')])
    assert e.value.code == 130 and capsys.readouterr().err.startswith('eae-book: interrupted')


BAD_CALLS = [
    (lambda tmp: book.chapters(tmp/'nowhere'), 'nbs'),
    (lambda tmp: book.execute([], n_workers=-2), 'n_workers'),
    (lambda tmp: book.check([tmp/'a.txt']), 'notebooks: no notebook'),
    (lambda tmp: book.check_notebooks([ROOT/'README.md']), 'is not a notebook'),
    (lambda tmp: book.image_size('image/png', 'aGVsbG8gd29ybGQ='), 'data: not a PNG image'),
    (lambda tmp: book.browse(tmp), 'site: no html pages'),
    (lambda tmp: book.build_html(tmp/'nowhere', tmp/'out'), 'nbs'),
]


@pytest.mark.parametrize('i', range(len(BAD_CALLS)))
def test_public_functions_refuse_bad_values_by_name(tmp_path, i):
    f, message = BAD_CALLS[i]
    with pytest.raises((ValueError, TypeError)) as e: f(tmp_path)
    assert message in str(e.value), str(e.value)


def test_book_modules_are_layers():
    "Issue 20: apidoc (17a) imports no package module, website (17c) only apidoc, book (17b) apidoc and (lazily) website."
    import ast
    def deps(mod):
        tree = ast.parse((ROOT/'entropic_ae'/f'{mod}.py').read_text())
        return {n.module.split('.')[-1] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                and (n.level == 1 or n.module.startswith('entropic_ae.'))} - {mod}
    assert deps('apidoc') == set(), deps('apidoc')
    assert deps('website') == {'apidoc'}, deps('website')
    assert deps('book') == {'apidoc', 'website'}, deps('book')
    from entropic_ae import apidoc
    assert book.chapters is apidoc.chapters is website.chapters and book.missing_show_doc is apidoc.missing_show_doc  # old path

def test_no_control_characters_in_sources():
    "No notebook cell holds a control character (a LaTeX `\\bar` or `\\rVert` written in a non-raw Python string becomes a backspace or a line break)."
    import json, re
    from pathlib import Path
    root = Path(__file__).parent.parent/'nbs'
    bad = [(f.name, c.get('id')) for f in sorted(root.glob('*.ipynb')) + sorted(root.glob('experiments/*.ipynb'))
           for c in json.loads(f.read_text())['cells'] if re.search(r'[\x00-\x08\x0b-\x1f]', ''.join(c['source']))]
    assert not bad, f'control characters in the sources of {bad}'

def test_source_links_point_at_their_definitions():
    "Every show_doc `[source]` link in a committed output names the line that defines the documented name (the book check masks line anchors, so a chapter left unexecuted after its module changed would otherwise keep links to the wrong lines)."
    wrong = []
    for nbp in sorted((ROOT/'nbs').glob('*.ipynb')):
        for c in json.loads(nbp.read_text())['cells']:
            for o in c.get('outputs', []):
                md = ''.join(o.get('data', {}).get('text/markdown', ''))
                for m in re.finditer(r'\[source\]\(\.\./(entropic_ae/\w+\.py)#L(\d+)\)[^\n]*\n\n#+ ([\w.]+)', md):
                    f, n, name = ROOT/m.group(1), int(m.group(2)), m.group(3).split('.')[-1]
                    lines = f.read_text().splitlines()[n - 1:n + 3]               # the line, or a decorator above the def
                    if not any(re.search(rf'\b(def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*[:=]', l.strip()) for l in lines):
                        wrong.append(f'{nbp.name}: {name} -> {m.group(1)}#L{n}')
    assert not wrong, f'{len(wrong)} stale source links (run eae-book execute on these chapters): {wrong[:5]}'
