"""Tests for slimbert.pruning.ext: the C++ gather extension matches the PyTorch fallback bit for bit."""
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from slimbert.pruning import ext as _ext

HAVE_CXX = shutil.which("g++") is not None or shutil.which("c++") is not None
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture
def cpp(monkeypatch):
    """The compiled extension. Fails (not skips) when a compiler exists but the build breaks."""
    if not HAVE_CXX:
        pytest.skip("no C++ compiler (g++/c++) on PATH, the C++ extension cannot be built")
    monkeypatch.delenv("SLIMBERT_NO_CPP", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the failure reason is asserted on below instead
        ext = _ext.load_extension()
    assert ext is not None, f"C++ extension failed to build although a compiler is present: {_ext._failure}"
    return ext


@pytest.fixture
def fresh_cache():
    _ext._reset_cache()
    yield
    _ext._reset_cache()


def _case(shape, dim, kept, dtype, with_scale, seed):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=g).to(dtype)
    index = torch.randperm(shape[dim], generator=g)[:kept].sort().values
    scale = torch.rand(kept, generator=g).to(dtype) * 2 if with_scale else None
    return weight, index, scale


CASES = [
    # (shape, dim, kept): 2-D weights along both dims, 1-D biases, empty and full selections.
    ((37, 53), 0, 19),
    ((37, 53), 1, 29),
    ((37, 53), -1, 5),
    ((101, 7), 0, 101),
    ((13, 211), 1, 0),
    ((13, 211), 0, 0),
    ((77,), 0, 31),
    ((77,), 0, 0),
    ((1,), 0, 1),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_scale", [False, True], ids=["plain", "scaled"])
@pytest.mark.parametrize("shape,dim,kept", CASES)
def test_cpp_matches_torch_bitwise(cpp, shape, dim, kept, dtype, with_scale):
    weight, index, scale = _case(shape, dim, kept, dtype, with_scale, seed=hash((shape, dim, kept)) % 1000)
    ref = _ext.gather_scaled(weight, index, dim, scale, backend="torch")
    out = _ext.gather_scaled(weight, index, dim, scale, backend="cpp")
    assert torch.equal(out, ref)
    assert out.dtype == ref.dtype == dtype
    assert out.is_contiguous() and ref.is_contiguous()
    expected_shape = list(shape)
    expected_shape[dim] = kept
    assert list(out.shape) == expected_shape
    # Also equal to the raw extension call and to "auto", which must pick the C++ path here.
    assert torch.equal(cpp.gather_scaled(weight, index, dim % len(shape), scale), ref)
    assert _ext.backend_name() == "cpp"
    assert torch.equal(_ext.gather_scaled(weight, index, dim, scale), ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_torch_semantics(dtype):
    """The fallback does what the docs say: select slices, then scale each one."""
    weight, index, scale = _case((9, 11), 1, 4, dtype, True, seed=3)
    out = _ext.gather_scaled(weight, index, 1, scale, backend="torch")
    for j, i in enumerate(index.tolist()):
        assert torch.equal(out[:, j], weight[:, i] * scale[j])
    bias = weight[0]
    out = _ext.gather_scaled(bias, index, 0, scale, backend="torch")
    assert torch.equal(out, bias[index] * scale)


def test_non_contiguous_input(cpp):
    weight = torch.randn(20, 30).t()  # transposed view
    index = torch.tensor([0, 5, 29, 3])
    scale = torch.rand(4)
    ref = _ext.gather_scaled(weight, index, 0, scale, backend="torch")
    assert torch.equal(_ext.gather_scaled(weight, index, 0, scale, backend="cpp"), ref)
    assert ref.is_contiguous()


@pytest.mark.parametrize("backend", ["torch", "auto", "cpp"])
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(index=torch.tensor([0, 12])), r"index value 12 is out of bounds for dim 0 of size 12"),
        (dict(index=torch.tensor([-1, 2])), r"index value -1 is out of bounds"),
        (dict(dim=1, index=torch.tensor([8])), r"index value 8 is out of bounds for dim 1 of size 8"),
        (dict(scale=torch.ones(3)), r"scale has length 3 but index has length 2"),
        (dict(scale=torch.ones(2, dtype=torch.float64)), r"scale dtype .* must match weight dtype"),
        (dict(scale=torch.ones(2, 1)), r"scale must be 1-D"),
        (dict(index=torch.tensor([0, 1], dtype=torch.int32)), r"index must be int64"),
        (dict(index=torch.tensor([[0, 1]])), r"index must be 1-D"),
        (dict(dim=2), r"dim 2 is out of range"),
        (dict(dim=-3), r"dim -3 is out of range"),
    ],
)
def test_bad_input_raises_value_error(backend, kwargs, match, request):
    if backend == "cpp":
        request.getfixturevalue("cpp")
    args = dict(weight=torch.randn(12, 8), index=torch.tensor([1, 4]), dim=0, scale=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        _ext.gather_scaled(backend=backend, **args)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        _ext.gather_scaled(torch.randn(3), torch.tensor([0]), 0, backend="cuda")


def test_no_cpp_env_uses_torch(monkeypatch, fresh_cache):
    monkeypatch.setenv("SLIMBERT_NO_CPP", "1")
    weight, index, scale = _case((17, 23), 1, 6, torch.float32, True, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # opting out is not a failure: no warning
        assert _ext.load_extension() is None
        assert _ext.backend_name() == "torch"
        out = _ext.gather_scaled(weight, index, 1, scale, backend="torch")
        auto = _ext.gather_scaled(weight, index, 1, scale)
    assert torch.equal(out, auto)
    assert torch.equal(out, weight[:, index] * scale)
    with pytest.raises(RuntimeError, match="SLIMBERT_NO_CPP"):
        _ext.gather_scaled(weight, index, 1, scale, backend="cpp")


def test_build_failure_falls_back_with_one_warning(monkeypatch, fresh_cache, tmp_path):
    monkeypatch.delenv("SLIMBERT_NO_CPP", raising=False)
    monkeypatch.setattr(_ext, "_SOURCE", Path(tmp_path) / "missing.cpp")
    with pytest.warns(RuntimeWarning, match="pure-PyTorch fallback.*not found"):
        assert _ext.load_extension() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cached: no second warning, no second attempt
        assert _ext.load_extension() is None
        assert _ext.backend_name() == "torch"
        weight = torch.randn(5, 4)
        out = _ext.gather_scaled(weight, torch.tensor([3, 1]), 0)
    assert torch.equal(out, weight[[3, 1]])
    with pytest.raises(RuntimeError, match="install a C\\+\\+ compiler .* and ninja"):
        _ext.gather_scaled(weight, torch.tensor([3, 1]), 0, backend="cpp")
