"""Random asymmetric Hopfield model: exact enumeration against brute force, the compiled kernels (numba CPU,
numba.cuda: typed for a GPU and run in numba's CUDA simulator) against the numpy reference, the exact annealed
values, bad input, and a smoke run of the experiment notebook; for ±1 and for Gaussian couplings (grid 2^-24),
the latter also against rational arithmetic at adversarial, near-threshold self-couplings."""
import itertools, math, os, subprocess, sys, textwrap
from fractions import Fraction
import numpy as np, pandas as pd, pytest, torch
from entropic_ae import hopfield as H
from entropic_ae.hopfield import (GAUSS_BITS, N_MAX, annealed_entropy, count_fixed_points, count_fixed_points_brute,
                                  counts_from_histogram, expected_fixed_points, fixed_point_entropy, gauss_cuts, log_p_stable,
                                  min_stability_histogram, random_couplings, sample_fixed_points, stability_cut)

DS = [0.0, 0.2, 0.45, 0.8, 1.3, 2.2, 3.1, -0.6]   # no field lies within rounding error of zero for N <= 12

@pytest.mark.parametrize('N', range(2, 13))
def test_fast_counter_equals_brute_force(N):
    for k in range(3):
        J = random_couplings(N, seed=123, sample=k)
        ref = [count_fixed_points_brute(J, d) for d in DS]
        assert count_fixed_points(J, DS, device='cpu').tolist() == ref
        for L in {1, (N - 1)//2 or 1, N - 1}:
            assert count_fixed_points(J, DS, device='cpu', low_bits=L).tolist() == ref
        for be in ['numba', 'torch']:
            assert count_fixed_points(J, DS, device='cpu', backend=be, low_bits=max(1, N//2)).tolist() == ref

def test_histogram_sums_and_torch_batches():
    J = random_couplings(16, seed=5)
    h = min_stability_histogram(J, device='cpu')
    assert h.sum() == 2**16 and h.shape == (31,)
    assert (h[1::2] == 0).all()                          # min u has the parity of N - 1 = 15 (odd)
    L = 6
    small = 2*H._hist_torch(H._check_couplings(J), L, torch.device('cpu'), batch_bytes=16*2**L*3)   # several batches, ragged end
    assert (small == h).all()
    assert (min_stability_histogram(J, device='cpu', low_bits=9) == h).all()

@pytest.mark.parametrize('N', range(2, 25))
def test_numba_kernel_equals_numpy(N):
    "Full histograms identical, for every N <= 24, several networks, the default split and another one."
    for k in range(3):
        J = random_couplings(N, seed=2024, sample=k)
        ref = min_stability_histogram(J, device='cpu', backend='numpy')
        assert (min_stability_histogram(J, device='cpu', backend='numba') == ref).all()
        assert (min_stability_histogram(J, device='cpu', backend='numba', low_bits=max(1, N//2)) == ref).all()
    Jc = H._check_couplings(J)                       # small tasks; the window at both ends (most states through the tail branch)
    L = max(1, min(N - 6, 12))
    for a in ([0, N//3, N] if N <= 16 else [None]): assert (2*H._hist_numba(Jc, L, start=a, per_task=7) == ref).all()
    if N >= 20: assert (2*H._hist_numba(Jc, N - 11, per_task=2**10) == ref).all()     # one task of 1024 patterns: blocks of 255

def _brute_histogram(J):
    "Histogram of min_i u_i over all 2^N states, both signs of the last spin (index u + N - 1), in int64."
    N = len(J)
    s = H._spins(N).astype(np.int64)
    return np.bincount((s*(s @ J.astype(np.int64).T)).min(1) + N - 1, minlength=2*N - 1)

@pytest.mark.parametrize('N', [2, 3, 8, 13])
def test_numba_histogram_equals_brute_force_over_all_states(N):
    "All 2^N states (last spin + and -), not the doubled half: the ± symmetry and every window placement."
    J = random_couplings(N, seed=99)
    ref = _brute_histogram(J)
    assert ref.sum() == 2**N
    for L in sorted({1, N - 1, max(1, N//2)}):
        for a in [None, 0, N//2, N]:
            assert (2*H._hist_numba(H._check_couplings(J), L, start=a) == ref).all(), (N, L, a)
    assert (min_stability_histogram(J, backend='numba') == ref).all()

def test_task_rows_equal_numpy_rows():
    for N, L, p0, p1 in [(2, 1, 0, 1), (10, 3, 7, 64), (17, 5, 100, 700)]:
        J = random_couplings(N, seed=8)
        _, V_lo, V_hi = H._tables(J, L)
        assert (H._task_rows(J.astype(np.int64), L, V_lo, V_hi, p0, p1) == H._rows(J, L, V_lo, V_hi, p0, p1)).all()

def test_numba_table_aligned_and_wide():
    """The tile table starts on a cache line (16-byte aligned numpy data made every load straddle two lines: twice as slow);
    on an AVX-512 CPU the compiled minima use 512-bit registers (LLVM's default there is 256)."""
    J = random_couplings(12, seed=1)
    Tt = H._tile_table(np.zeros((5, 2**9), np.int8))
    assert Tt.ctypes.data % 64 == 0 and Tt.shape == (2, 5*256)
    import llvmlite.binding as llb, numba
    if 'avx512bw' in llb.get_host_cpu_features().flatten():
        f = numba.njit(lambda T, R, c, t: H._min_count_block(T, R, 0, 1, c, t))      # not cached: its assembly can be read
        f(Tt[0], np.zeros((1, 5), np.uint16), np.zeros(H._WINDOW - 1, np.int64), np.zeros(256, np.int64))
        mins = [l for l in ''.join(f.inspect_asm().values()).splitlines() if 'vpminsb' in l]
        assert mins and all('zmm' in l for l in mins), mins

def test_numba_start_checked():
    J = H._check_couplings(random_couplings(6, seed=1))
    with pytest.raises(ValueError, match='start'): H._hist_numba(J, 3, start=7)

def test_default_backend_is_the_compiled_one():
    assert H._default_backend(torch.device('cpu')) == 'numba'
    assert H._default_backend(torch.device('cuda')) == ('cuda' if H.cuda.is_available() else 'torch')

def test_cuda_fallback_without_nvvm(monkeypatch):
    "When numba.cuda cannot compile (no CUDA toolkit), `auto` warns once, uses torch gathers and stops trying the kernel."
    from numba.cuda.cudadrv.error import NvvmSupportError
    def no_nvvm(*a, **k): raise NvvmSupportError('libNVVM cannot be found')
    monkeypatch.setattr(H, '_cuda_problem', None)
    J = H._check_couplings(random_couplings(10, seed=3))
    with pytest.warns(UserWarning, match='numba.cuda kernel cannot run here'):
        h = H._cuda_or_torch(no_nvvm, H._hist_torch, J, 4, torch.device('cpu'))
    assert (h == H._hist_numpy(J, 4)).all() and 'NvvmSupportError' in H._cuda_problem
    assert H._default_backend(torch.device('cuda')) == 'torch'
    Jq = H._check_gauss_couplings(random_couplings(10, seed=3, couplings='gauss'))     # the Gaussian path falls back alike
    cuts = gauss_cuts([0.5, 2.])
    with pytest.warns(UserWarning, match='numba.cuda kernel cannot run here'):
        c = H._cuda_or_torch(no_nvvm, H._gauss_counts_torch, Jq, 4, cuts, torch.device('cpu'))
    assert (c == H._gauss_counts_numpy(Jq, 4, cuts)).all()

def test_cuda_kernel_types_for_a_gpu_without_one():
    "Type inference and lowering for compute capability 9.0 work on a CPU-only machine; no value becomes a float."
    from numba import types
    from numba.cuda.compiler import compile_cuda
    A = lambda t, n: types.Array(t, n, 'C')
    sig = (A(types.uint32, 2), A(types.int32, 2), types.int64, types.int64, types.int64, types.int64, A(types.int64, 1))
    ty = compile_cuda(H._min_hist_cuda.py_func, types.void, sig, cc=(9, 0)).type_annotation.typemap
    assert [str(ty[k]) for k in ['m', 'x', 'mask']] == ['uint32']*3
    assert not any('float' in str(v) for v in ty.values())

def test_cuda_packed_table():
    for N, L in [(2, 1), (9, 3), (12, 5)]:
        J = random_couplings(N, seed=1)
        Tw, V_lo, V_hi = H._cuda_words(J, L)
        T = H._tables(J, L)[0]
        b = Tw.view(np.uint8).reshape(len(T), -1)
        assert (b[:, :2**L].astype(int) - (N - 1) == T).all() and (b[:, 2**L:] == 127).all() and b.max() < 128

def test_cuda_kernel_in_the_simulator():
    "Every thread of both CUDA kernels run by numba's simulator: padding (L = 1), several blocks in x and y, several words per thread, idle threads, odd and even N."
    code = textwrap.dedent("""
        from entropic_ae.hopfield import _hist_cuda, _hist_numpy, random_couplings
        for N, L, wpt in [(2, 1, 8), (3, 1, 1), (7, 3, 8), (11, 10, 1), (11, 10, 3)]:
            J = random_couplings(N, seed=7)
            h, ref = _hist_cuda(J, L, words_per_thread=wpt), _hist_numpy(J, L)
            assert (h == ref).all(), (N, L, wpt, h, ref)
        from entropic_ae.hopfield import _gauss_counts_cuda, _gauss_counts_numpy, _check_gauss_couplings, gauss_cuts
        for N, L, cpt in [(2, 1, 8), (6, 3, 1), (9, 8, 1)]:           # padding; several blocks in y (N=6), in x (N=9)
            Jq = _check_gauss_couplings(random_couplings(N, seed=7, couplings='gauss'))
            cuts = gauss_cuts([1.5, 0.0, 0.7, 3.0, 0.7])              # unsorted, repeated
            c, ref = _gauss_counts_cuda(Jq, L, cuts, cols_per_thread=cpt), _gauss_counts_numpy(Jq, L, cuts)
            assert (c == ref).all(), (N, L, cpt, c, ref)
        print('ok')""")
    r = subprocess.run([sys.executable, '-c', code], env=dict(os.environ, NUMBA_ENABLE_CUDASIM='1'),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-3000:]

# ---- Gaussian couplings: integer grid units, exact cuts ------------------------------------------------------------

def _exact_gauss_counts(J, Ds):
    "Reference: min_i u_i of every state in Python-exact int64, each distinct value compared with D in rational arithmetic."
    Jq = np.rint(J*2**GAUSS_BITS).astype(np.int64)
    s = H._spins(len(J)).astype(np.int64)
    vals, mult = (a.tolist() for a in np.unique((s*(s @ Jq.T)).min(1), return_counts=True))
    out = []
    for d in Ds:                     # v·2^-24 + p/q > 0  <=>  v·q + p·2^24 > 0 (q > 0), in Python integers
        p, q = Fraction(d).as_integer_ratio()
        out.append(sum(c for v, c in zip(vals, mult) if v*q + p*2**GAUSS_BITS > 0))
    return out

def _adversarial_Ds(J, k=3):
    "Self-couplings at which states of J sit exactly on the threshold (ties: not fixed), and one float either side."
    Jq = np.rint(J*2**GAUSS_BITS).astype(np.int64)
    s = H._spins(len(J)).astype(np.int64)
    ties = [-int(v)/2**GAUSS_BITS for v in np.unique((s*(s @ Jq.T)).min(1))[-k:]]
    return ties + [float(np.nextafter(d, 9.)) for d in ties] + [float(np.nextafter(d, -9.)) for d in ties] + [0.0, 0.7, 4.0]

@pytest.mark.parametrize('N', [2, 3, 5, 8, 11, 12])
def test_gauss_counter_equals_exact_reference(N):
    "Every CPU backend and split against rational arithmetic, at adversarial D (ties, ± one ulp), several networks."
    for k in range(3):
        J = random_couplings(N, seed=77, sample=k, couplings='gauss')
        Ds = _adversarial_Ds(J)
        ref = _exact_gauss_counts(J, Ds)
        assert [count_fixed_points_brute(J, d, 'gauss') for d in Ds] == ref     # the float64 brute force is exact on the grid
        for be in ['numpy', 'numba', 'torch']:
            assert count_fixed_points(J, Ds, backend=be, couplings='gauss').tolist() == ref, (N, k, be)
        assert count_fixed_points(J, Ds, backend='numba', couplings='gauss', low_bits=max(1, N//3)).tolist() == ref

def test_gauss_cuts_are_exact():
    for d in [0.0, 0.1, 1/3, 2.5, 4.0, -0.7, 1e-300, 5e-324, 64.9, -64.9, float(np.nextafter(0.25, 1)), float(np.nextafter(0.25, 0))]:
        c = int(gauss_cuts(d)[0])
        assert Fraction(c, 2**GAUSS_BITS) + Fraction(d) > 0 >= Fraction(c - 1, 2**GAUSS_BITS) + Fraction(d), d
    assert gauss_cuts([1e9, -1e9]).tolist() == [-65*2**24 + 1, 65*2**24 + 1]     # beyond any field (|u| <= 2^30): all, none
    assert gauss_cuts([0.25, 0.5]).dtype == np.int64 and gauss_cuts(0.25)[0] == -2**22 + 1

@pytest.mark.parametrize('N', [3, 8, 14])
def test_gauss_numba_kernel_equals_numpy(N):
    "Counts identical for several splits, tiles (one column, a quarter row, the whole row) and ragged chunks."
    Jq = H._check_gauss_couplings(random_couplings(N, seed=4, couplings='gauss'))
    cuts = gauss_cuts([0.0, 0.3, 1.0, 1.7, 3.0, -0.5])
    for L in sorted({1, max(1, N//2), N - 1}):
        ref = H._gauss_counts_numpy(Jq, L, cuts)
        assert ref.sum() > 0
        for tile in sorted({1, max(1, 2**L//4), 2**L}):
            assert (H._gauss_counts_numba(Jq, L, cuts, tile=tile, chunk=max(5, 2**(N - L)//3)) == ref).all(), (L, tile)
        assert (H._gauss_counts_torch(Jq, L, cuts, 'cpu', batch_bytes=4*N*2**L*3) == ref).all()

@pytest.mark.parametrize('N', [5, 12, 20])
def test_gauss_kernel_reproduces_the_pm1_table_kernel(N):
    "The real-coupling kernel on integer ±1 couplings with the exact ±1 cuts: the independent int8 table kernel's counts."
    J = random_couplings(N, seed=6)
    Ds = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0]
    cuts = [stability_cut(N, d) for d in Ds]
    want = count_fixed_points(J, Ds, backend='numba')
    assert (H._gauss_counts(J.astype(np.int64), cuts, 'cpu', None, 'numba') == want).all()
    assert (H._gauss_counts(J.astype(np.int64), cuts, 'cpu', None, 'numpy') == want).all()

def test_gauss_couplings_law_grid_and_streams():
    J = random_couplings(40, seed=2, sample=1, couplings='gauss')
    off = J[~np.eye(40, dtype=bool)]
    q = J*2**GAUSS_BITS
    assert J.dtype == np.float64 and (q == np.rint(q)).all() and (np.diag(J) == 0).all()
    assert abs(off.var()*39 - 1) < 0.1 and abs(off.mean()) < 0.02 and np.abs(J).sum(1).max() < 16
    assert (random_couplings(40, seed=2, sample=1, couplings='gauss') == J).all()
    assert not (random_couplings(40, seed=2, sample=2, couplings='gauss') == J).all()
    # the ±1 stream is what it was: the committed counts of the chapter's example network
    assert count_fixed_points(random_couplings(12, seed=1), [0., 0.5, 1., 1.5, 2., 3.]).tolist() == [0, 72, 1014, 2782, 2782, 4072]

def test_gauss_cuda_kernel_types_for_a_gpu_without_one():
    from numba import types
    from numba.cuda.compiler import compile_cuda
    A = lambda t, n: types.Array(t, n, 'C')
    sig = (A(types.int32, 2), A(types.int32, 2), types.int64, types.int64, A(types.int32, 1), A(types.int64, 1))
    ty = compile_cuda(H._gauss_counts_cuda_kernel.py_func, types.void, sig, cc=(9, 0)).type_annotation.typemap
    assert [str(ty[k]) for k in ['m', 'x']] == ['int64']*2
    assert not any('float' in str(v) for v in ty.values())


def test_exact_ties_and_sign_zero():
    assert stability_cut(16, 0.0) == 1 and stability_cut(16, 1.0) == -3 and stability_cut(16, 1.0 + 1e-12) == -4
    assert stability_cut(100, 0.1) == -1          # the float 0.1 is slightly larger than 1/10
    # D = 0 and odd N: states with a zero field are not fixed points
    J = random_couplings(9, seed=2)
    h = min_stability_histogram(J, device='cpu')
    assert counts_from_histogram(h, 9, [0.0])[0] == h[9:].sum() == count_fixed_points_brute(J, 0.0)
    # N = 4, D = 1.5: D√N = 3 exactly and u = -3 is possible (u has the parity of N - 1): a tie, counted unstable
    for k in range(5):
        J4 = random_couplings(4, seed=0, sample=k)
        c = count_fixed_points(J4, [1.4999, 1.5, 1.5001])
        assert c[0] == c[1] == count_fixed_points_brute(J4, 1.5) and c[2] >= c[1]

def _all_networks_mean(N, Ds):
    "Exact E[#FP] by averaging over every ±1 coupling matrix of size N (vectorised brute force)."
    n_off = N*(N - 1)
    bits = torch.tensor(list(itertools.product([-1., 1.], repeat=n_off)), dtype=torch.float64)  # [2^n_off, n_off]
    J = torch.zeros(len(bits), N, N, dtype=torch.float64)
    off = ~torch.eye(N, dtype=torch.bool)
    J[:, off] = bits
    s = torch.tensor(H._spins(N), dtype=torch.float64)                                            # [2^N, N]
    Js = torch.einsum('mij,sj->msi', J, s)/math.sqrt(N)
    return [float((torch.sign(d*s + Js) == s).all(-1).sum(-1).double().mean()) for d in Ds]

def test_expected_count_is_exact_for_tiny_networks():
    Ds = [0.0, 0.3, 0.6, 1.0, 1.8]
    for N in [2, 3, 4]:
        np.testing.assert_allclose(_all_networks_mean(N, Ds), [expected_fixed_points(N, d) for d in Ds], rtol=1e-12)

@pytest.mark.parametrize('N', [9, 10])
def test_mean_count_matches_first_moment(N):
    Ds = [0.0, 0.5, 1.0, 2.0]
    df = sample_fixed_points(N, Ds, 300, seed=99, progress=False)
    g = df.groupby('D').n_fp
    for d, m, se in zip(Ds, g.mean(), g.sem()):
        assert abs(m - expected_fixed_points(N, d)) < 4.5*se + 1e-9, (N, d, m, se)

def test_annealed_tends_to_theory_without_overflow():
    for N in [10**4, 10**4 + 1, 10**4 + 7]:
        for d in [0.25, 0.5, 1.0, 1.5, 2.0, 3.0]:
            S = fixed_point_entropy(d)
            amp = math.exp(-d*d/2)/math.sqrt(2*math.pi)/math.exp(S - math.log(2))/math.sqrt(N)   # lattice saw-tooth
            a = annealed_entropy(N, d)
            assert math.isfinite(a) and abs(a - S) < amp + 1/N
            assert abs(annealed_entropy(N, d, 'gauss') - S) < 1/N
    assert math.isfinite(annealed_entropy(10**6, 0.5)) and expected_fixed_points(10**4, 1.0) == math.inf
    assert annealed_entropy(50, -30.0) == -math.inf or annealed_entropy(50, -30.0) < -10
    # D = 0: exactly one expected fixed point for even N, fewer for odd N
    assert expected_fixed_points(20, 0.0) == pytest.approx(1.0, rel=1e-12)
    assert expected_fixed_points(21, 0.0) < 0.05

def test_gaussian_first_moment_is_exact():
    "Gaussian couplings N(0, 1/(N-1)): the mean count over networks equals (1 + erf(D/√2))^N at every N."
    for N in [6, 9]:
        Ds = [0.0, 0.5, 1.0, 2.0]
        df = sample_fixed_points(N, Ds, 300, seed=17, progress=False, couplings='gauss')
        g = df.groupby('D').n_fp
        for d, m, se in zip(Ds, g.mean(), g.sem()):
            exact = (1 + math.erf(d/math.sqrt(2)))**N
            assert expected_fixed_points(N, d, 'gauss') == pytest.approx(exact, rel=1e-12)
            assert abs(m - exact) < 4.5*se, (N, d, m, se, exact)

def test_sampling_table():
    df = sample_fixed_points([6, 8], [0.5, 1.5], [2, 3], seed=4, progress=False)
    assert list(df.columns) == ['N', 'D', 'sample', 'n_fp'] and len(df) == 2*2 + 3*2
    row = df[(df.N == 8) & (df['sample'] == 2) & (df.D == 1.5)].n_fp.item()
    assert row == count_fixed_points(random_couplings(8, 4, 2), 1.5)[0]

def test_bad_input_names_the_parameter():
    J = random_couplings(8)
    with pytest.raises(ValueError, match='N must be >= 2'): random_couplings(1)
    with pytest.raises(ValueError, match=r'N \(the size of J\) must be <= 40'): count_fixed_points(random_couplings(N_MAX + 1), 1.0)
    with pytest.raises(ValueError, match=r'N \(the size of J\) must be >= 2'): count_fixed_points(np.zeros((1, 1), np.int8), 1.0)
    with pytest.raises(ValueError, match='D must be finite'): count_fixed_points(J, float('nan'))
    with pytest.raises(ValueError, match=r'D\[1\] must be finite'): count_fixed_points(J, [0.5, float('inf')])
    with pytest.raises(TypeError, match='D must be a real number'): count_fixed_points(J, 'large')
    with pytest.raises(ValueError, match='D must be finite'): fixed_point_entropy(float('-inf'))
    with pytest.raises(ValueError, match='D must be finite'): annealed_entropy(10, float('nan'))
    with pytest.raises(ValueError, match='N must be >= 2'): annealed_entropy(1, 1.0)
    with pytest.raises(TypeError, match='N must be an integer'): annealed_entropy(10.0, 1.0)
    with pytest.raises(ValueError, match='couplings must be one of'): annealed_entropy(10, 1.0, 'binary')
    with pytest.raises(ValueError, match='J must have 0 on the diagonal'): count_fixed_points(3*J, 1.0)
    with pytest.raises(ValueError, match='J must be a square'): count_fixed_points(J[:, :5], 1.0)
    with pytest.raises(ValueError, match='low_bits must be >= 1'): count_fixed_points(J, 1.0, low_bits=0)
    with pytest.raises(ValueError, match='backend must be one of'): count_fixed_points(J, 1.0, backend='gpu')
    with pytest.raises(ValueError, match="backend 'cuda' needs a CUDA device"): count_fixed_points(J, 1.0, device='cpu', backend='cuda')
    with pytest.raises(ValueError, match=r'Ns\[1\] must be <= 40'): sample_fixed_points([8, 50], 1.0, 1, progress=False)
    with pytest.raises(ValueError, match='n_samples must be an int or have one entry per N'): sample_fixed_points([8, 10], 1.0, [1], progress=False)
    with pytest.raises(ValueError, match=r'N \(the size of J\) must be <= 20 for the brute-force counter'): count_fixed_points_brute(random_couplings(21), 1.0)
    Jg = random_couplings(8, couplings='gauss')
    with pytest.raises(ValueError, match='couplings must be one of'): random_couplings(8, couplings='normal')
    with pytest.raises(ValueError, match='couplings must be one of'): count_fixed_points(Jg, 1.0, couplings='normal')
    with pytest.raises(ValueError, match='couplings must be one of'): sample_fixed_points(8, 1.0, 1, couplings='normal', progress=False)
    with pytest.raises(ValueError, match='on the grid'): count_fixed_points(Jg*3.1, 1.0, couplings='gauss')
    with pytest.raises(ValueError, match='on the grid'): count_fixed_points(Jg + np.eye(8)/4, 1.0, couplings='gauss')
    with pytest.raises(ValueError, match='J must be finite'): count_fixed_points(np.where(Jg > 0.3, np.inf, Jg), 1.0, couplings='gauss')
    with pytest.raises(ValueError, match=r'sum_j \|J_ij\| <= 64'): count_fixed_points((1 - np.eye(8))*10, 1.0, couplings='gauss')
    with pytest.raises(TypeError, match='J must be a real'): count_fixed_points('abcd', 1.0, couplings='gauss')
    with pytest.raises(ValueError, match='J must be a square'): count_fixed_points(Jg[:3], 1.0, couplings='gauss')
    with pytest.raises(ValueError, match='±1 off the diagonal'): count_fixed_points(Jg, 1.0)              # the default family is ±1
    with pytest.raises(ValueError, match='D must be finite'): count_fixed_points(Jg, float('nan'), couplings='gauss')
    with pytest.raises(ValueError, match='backend must be one of'): count_fixed_points(Jg, 1.0, couplings='gauss', backend='gpu')
    with pytest.raises(ValueError, match="backend 'cuda' needs a CUDA device"): count_fixed_points(Jg, 1.0, device='cpu', couplings='gauss', backend='cuda')
    with pytest.raises(ValueError, match='low_bits must be >= 1'): count_fixed_points(Jg, 1.0, couplings='gauss', low_bits=0)
    with pytest.raises(ValueError, match='cuts must have at most 63'): H._gauss_counts_cuda(H._check_gauss_couplings(Jg), 3, np.arange(64))


@pytest.mark.smoke('hopfield_fixed_points', profile='quick', device='cpu', Ns=[8, 10], n_samples=[4, 3], gauss_Ns=[6, 7, 8, 9],
                   gauss_samples=[5, 4, 4, 4], n_boot=10, D_grid=[0.0, 1.0, 2.0], table_Ds=[1.0, 2.0], annealed_Ns=[16], N_large=200,
                   D0_Ns=[5, 6], D0_samples=4)
def test_experiment_notebook_smoke(smoke_run):
    "(The run is declared by the `smoke` marker and started up front by tests/conftest.py.)"
    out = smoke_run().out
    for name in ['fixed_points', 'finite_size', 'families', 'extrapolation']:
        assert (out/f'hopfield_{name}_quick.png').read_bytes()[:4] == b'\x89PNG'
    tab = pd.read_csv(out/'hopfield_table_quick.csv')
    assert tab.D.tolist() == [1.0, 2.0] and (tab.N == 10).all() and tab.quenched.notna().all()
    counts = pd.read_csv(out/'hopfield_fixed_points_quick.csv')
    assert set(counts.metric) == {'n_fixed_points', 'n_fixed_points_D0'} and len(counts) == (4 + 3)*3 + 2*4
    g = pd.read_csv(out/'hopfield_gauss_counts_quick.csv')
    assert len(g) == 5 + 4 + 4 + 4 and list(g.columns) == ['N', 'sample', 'n_fp_D0.00', 'n_fp_D1.00', 'n_fp_D2.00']
    assert g.iloc[5]['n_fp_D1.00'] == count_fixed_points(random_couplings(7, 0, 0, 'gauss'), 1.0, couplings='gauss')[0]
    ext = pd.read_csv(out/'hopfield_extrapolation_quick.csv').set_index('D')
    assert ext.loc[2.0, 'n_sizes'] == 4 and np.isfinite(ext.loc[2.0, ['S_inf', 'se', 'z']].astype(float)).all()
    sa = pd.read_csv(out/'hopfield_self_averaging_quick.csv')
    assert len(sa) == 4*3 and ((sa.frac_zero >= 0) & (sa.frac_zero <= 1)).all()

@pytest.mark.smoke('hopfield_fixed_points', Ns=[8, 10], n_samples=[4])
def test_experiment_notebook_rejects_bad_override(smoke_run):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError, match='n_samples must have one entry per N'):
        smoke_run()
    assert not any(smoke_run.out.glob('*.png'))
