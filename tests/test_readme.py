"""The README's first example runs as printed: the stacked, grouped replicated-SGD fit on the digits (it had drifted
from `fit`'s signature once, unnoticed)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent/'README.md'

def test_readme_example_runs_as_printed():
    code = re.search(r'```python\n(.*?)```', README.read_text(), re.S).group(1)
    assert 'fit(' in code and 'Replicated' in code, 'the first python block is no longer the quick-start example'
    ns = {}
    exec(compile(code, str(README), 'exec'), ns)
    df = ns['res'].df
    last = df[(df.epoch == 3) & (df.metric == 'test_error')]
    assert sorted(last.eval_on.value_counts().items()) == [('barycentre', 3), ('replicas', 15)]   # 3 trials x 5 replicas
    assert (last[last.eval_on == 'replicas'].value < 0.5).all()                                   # 3 epochs learn the digits
