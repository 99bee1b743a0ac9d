"""eae-book on a tiny book made in a temporary folder: outputs kept and cleaned, stale outputs caught while float
noise passes, an HTML edition with working links, and (where Debian's chromium is installed) the browser check."""
import copy, json, re, shutil
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbdev.clean import clean_nb

from entropic_ae import book

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


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A two-page book, executed once with `eae-book execute`."
    d = tmp_path_factory.mktemp('book')
    _write(d/'index.ipynb', [('md', '# Tiny\n\nThe first page; read [the chapter](01_ch.ipynb#A-section).')])
    _write(d/'01_ch.ipynb', [('code', '#| hide\nimport math'),
                             ('md', '# Chapter one\n\n> What it shows.\n\n## A section\n\nEnergy $E = mc^2$ and\n\n$$\\int_0^1 x\\,dx = \\frac12$$'),
                             ('code', 'print(f"pi {math.pi:.6f}, seven 7")'),
                             ('code', FIG),
                             ('code', '#| eval: false\nraise RuntimeError("never runs")'),
                             ('md', 'Back to [the start](index.ipynb).')])
    assert book.execute([d/'01_ch.ipynb'], quiet=True) == []
    return d


def test_execute_keeps_outputs_clean(tiny):
    nb = json.loads((tiny/'01_ch.ipynb').read_text())
    cells = nb['cells']
    assert cells[2]['outputs'][0]['text'] == ['pi 3.141593, seven 7\n']
    assert cells[4]['outputs'] == []                                           # eval: false stays unexecuted
    (img,) = [o for o in cells[3]['outputs'] if 'image/png' in o.get('data', {})]
    w, h = book.image_size('image/png', img['data']['image/png'])
    assert 300 < w < 600 and 200 < h < 450, (w, h)                             # plain PNG at 80 dpi, not retina
    assert all(c.get('execution_count') is None for c in cells) and nb['metadata'].keys() <= {'kernelspec'}
    again = copy.deepcopy(nb)
    clean_nb(again)                                                            # what nbdev_clean does: no change
    assert again == nb


def test_check_catches_stale_and_errors_tolerates_noise(tiny, tmp_path):
    d = tmp_path/'nbs'
    shutil.copytree(tiny, d)
    p, bad = d/'01_ch.ipynb', _write(d/'02_bad.ipynb', [('code', 'x = 1'), ('code', 'raise ValueError("boom")')])
    committed = json.loads(p.read_text())
    nb = copy.deepcopy(committed)
    nb['cells'][2]['outputs'][0]['text'] = ['pi 3.141593, seven 8\n']        # an integer changed: stale
    nb['cells'][3]['outputs'] = []                                           # a figure missing: stale
    p.write_text(json.dumps(nb))
    problems = sorted(book.check([p, bad], keep=tmp_path/'fresh', quiet=True))  # one run: two notebooks at once
    assert len(problems) == 3, problems
    assert problems[0].startswith("01_ch.ipynb cell 2 ('print(f\"pi") and '+pi 3.141593, seven 7' in problems[0]
    assert problems[1].startswith('01_ch.ipynb cell 3') and 'no committed output' in problems[1]
    assert '02_bad.ipynb: raised while executing' in problems[2] and 'ValueError: boom' in problems[2]
    fresh = json.loads((tmp_path/'fresh'/'01_ch.ipynb').read_text())
    assert book.compare_nbs(committed, fresh) == []                          # the committed outputs were current
    committed['cells'][2]['outputs'][0]['text'] = ['pi 3.141598, seven 7\n']  # noise in the 6th digit: fine
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
    with pytest.raises(ValueError, match='paths'): book.check([tmp_path/'missing.ipynb'])
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


def test_html(tiny, tmp_path):
    pages = book.build_html(tiny, tmp_path/'site', title='Tiny', quiet=True)
    assert [p.name for p in pages] == ['index.html', '01_ch.html']
    index, ch = (p.read_text() for p in pages)
    ai, ac = _anchors(index), _anchors(ch)
    assert {'href': '01_ch.html#A-section'} in ai and {'href': 'index.html'} in ac      # links rewritten
    assert {'class': 'eae-next', 'rel': 'next', 'href': '01_ch.html'} in ai               # prev / next
    assert {'class': 'eae-prev', 'rel': 'prev', 'href': 'index.html'} in ac
    assert re.search(r'<li class="current"><a href="01_ch.html">01 Chapter one</a>', ch)  # sidebar, reading order
    assert 'import math' not in ch and 'never runs' in ch and 'data:image/png;base64' in ch
    assert (tmp_path/'site'/'_static'/'mathjax'/'MathJax.js').exists() and 'cdn' not in ch.lower()
    book.build_html(tiny, tmp_path/'site', title='Tiny', quiet=True)                    # rebuilds its own folder


@pytest.mark.skipif(shutil.which('chromium') is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_browser(tiny, tmp_path):
    site = tmp_path/'site'
    book.build_html(tiny, site, title='Tiny', quiet=True)
    assert book.browse(site, screenshot=tmp_path/'shot.png', shot_page='01_ch.html#A-section', quiet=True) == []
    assert (tmp_path/'shot.png').stat().st_size > 5_000
    ch = site/'01_ch.html'
    ch.write_text(ch.read_text().replace('href="index.html"', 'href="gone.html"', 1)
                  .replace('data:image/png;base64,', 'data:image/png;base64,AAAA', 1)
                  .replace('$E = mc^2$', '$E = \\frac{$', 1))
    problems = '\n'.join(book.browse(site, quiet=True))
    assert "link 'gone.html' does not resolve" in problems and 'image did not load' in problems
    assert 'TeX errors' in problems or 'not typeset' in problems, problems
