"""Test-wide settings: one torch thread per process.

The suite runs on 2-core machines where notebooks and papermill kernels run side by side; with several
processes each spinning two OpenMP threads, small tensor ops were measured 15-60x slower. Kernels spawned
by the papermill smoke tests inherit OMP_NUM_THREADS from here.
"""
import os
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
import torch
torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))

import pytest

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
