"""Build-level checks: op registrations and the error of a build without CUDA kernels."""
import pytest
import torch

import torchxc


def torchxc_ops():
    return sorted(name for name in torch._C._dispatch_get_all_op_names() if name.startswith("torchxc::"))


def test_every_op_has_cpu_and_cuda_kernels():
    ops = torchxc_ops()
    assert "torchxc::sparsemax" in ops
    for name in ops:
        if torch._C._dispatch_has_kernel_for_dispatch_key(name, "CompositeExplicitAutograd"):
            continue  # written in Python on top of the other ops (e.g. fused_linear_zlpr): any device
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU"), name
        # a real CUDA kernel, or (CPU-only build) the stub with a clear error: never the dispatcher's generic one
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA"), name


@pytest.mark.skipif(torchxc.cuda_kernels_built(), reason="this build has CUDA kernels")
def test_cpu_only_build_names_the_missing_cuda_kernels():
    op = torch.ops.torchxc.sparsemax.default
    with pytest.raises(RuntimeError, match=r"torchxc::sparsemax: this build of torchxc has no CUDA kernels"):
        op.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA), torch.ones(3), -1)


def test_public_api():
    assert callable(torchxc.sparsemax) and callable(torchxc.sparsemax_loss)
    assert isinstance(torchxc.cuda_kernels_built(), bool)
    for fn in (torchxc.sparsemax, torchxc.sparsemax_loss):
        assert fn.__doc__ and "Example" in fn.__doc__


def test_installed_package_is_marked_typed():
    """PEP 561: the installed package carries py.typed, so type checkers read the wrappers' annotations."""
    import os
    assert os.path.isfile(os.path.join(os.path.dirname(torchxc.__file__), "py.typed"))


@pytest.mark.skipif(torchxc.cuda_kernels_built(), reason="this build has CUDA kernels")
def test_cpu_only_build_names_the_fused_linear_op():
    """fused_linear_zlpr runs the zlpr kernels itself: the error names the op the user called, not the inner one."""
    import torchxc.fused_linear as fl
    from torchxc.fused_linear import _require_device_kernels
    _require_device_kernels(torch.device("cpu"))
    seen = []  # the op itself checks the device it runs on, before any inner zlpr kernel (which would raise first
    # under its own name): labels of 2.0, which the inner kernel refuses, must not be reached

    class Checked(Exception):
        pass

    def check(device):
        seen.append(device)
        raise Checked

    original = fl._require_device_kernels
    try:
        fl._require_device_kernels = check
        with pytest.raises(Checked):
            torchxc.fused_linear_zlpr_loss(torch.randn(3, 4), torch.randn(5, 4), None, torch.full((3, 5), 2.0))
    finally:
        fl._require_device_kernels = original
    assert seen == [torch.device("cpu")]
    with pytest.raises(RuntimeError, match=r"^torchxc::fused_linear_zlpr: this build of torchxc has no CUDA kernels"):
        _require_device_kernels(torch.device("cuda", 0))


def test_loss_modules_refuse_a_bad_reduction_when_built():
    for cls in (torchxc.nn.SparsemaxLoss, torchxc.nn.ZLPRLoss):
        with pytest.raises(ValueError, match=f"{cls.__name__}: reduction must be one of"):
            cls(reduction="avg")  # it was accepted and failed at the first forward
        assert cls(reduction="sum").reduction == "sum"
