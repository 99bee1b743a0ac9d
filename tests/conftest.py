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
