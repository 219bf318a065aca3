"""Runs every CUDA kernel path of torchxc once on small inputs and checks it against the CPU kernels.

Meant to run under compute-sanitizer (memcheck, racecheck), where the full test suite would be too slow:
    compute-sanitizer --tool memcheck --error-exitcode 1 python tools/cuda_paths.py
Paths: warp per row (d <= 1024), block per row (d <= 32768), split rows (longer), with vector and scalar loads
(odd d), every dtype, forward, backward, loss (index and weight targets) and its backward.
"""
import sys

import torch

import torchxc


def check(name, a, b, tol):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    same_nan = torch.equal(a.isnan(), b.isnan())
    err = (a - b).nan_to_num(0, 0, 0).abs().max().item() if a.numel() else 0.0
    ok = same_nan and err <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max err {err:.2e}", flush=True)
    return ok


def main():
    assert torch.cuda.is_available() and torchxc.cuda_kernels_built(), "needs a GPU and a CUDA build"
    gen = torch.Generator().manual_seed(0)
    ok = True
    sizes = [1, 7, 32, 100, 1024, 1500, 5000, 20000, 32768, 40000, 100003]
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        tol = {torch.float32: 1e-5, torch.float64: 1e-12}.get(dtype, 1e-2)
        for d in sizes:
            rows = 3
            x = torch.randn(rows, d, generator=gen, dtype=torch.float64)
            x[0, : d // 2] = -float("inf") if d > 1 else x[0, : d // 2]
            x = x.to(dtype)
            g = torch.randn(rows, d, generator=gen).to(dtype)
            xc, gc = x.cuda().requires_grad_(), g.cuda()
            xr = x.clone().requires_grad_()
            yc, yr = torchxc.sparsemax(xc), torchxc.sparsemax(xr)
            ok &= check(f"sparsemax {dtype} d={d}", yc, yr, tol)
            (gxc,) = torch.autograd.grad(yc, xc, gc)
            (gxr,) = torch.autograd.grad(yr, xr, g)
            ok &= check(f"sparsemax backward {dtype} d={d}", gxc, gxr, tol * 10)
            labels = torch.randint(d, (rows,), generator=gen)
            labels[0] = d - 1  # a finite score in row 0 (its first half is masked)
            weights = (torch.rand(rows, d, generator=gen) < 0.3).to(dtype)
            weights[0, : d // 2] = 0
            weights[:, -1] = 1
            for tname, t in (("index", labels), ("weights", weights)):
                lc = torchxc.sparsemax_loss(xc, t.cuda(), reduction="none")
                lr = torchxc.sparsemax_loss(xr, t, reduction="none")
                ok &= check(f"sparsemax_loss[{tname}] {dtype} d={d}", lc, lr, tol * 10)
                (glc,) = torch.autograd.grad(lc.sum(), xc)
                (glr,) = torch.autograd.grad(lr.sum(), xr)
                ok &= check(f"sparsemax_loss backward[{tname}] {dtype} d={d}", glc, glr, tol * 10)
    torch.cuda.synchronize()
    print("ALL OK" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
