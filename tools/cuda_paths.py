"""Runs every CUDA kernel path of torchxc once on small inputs and checks it against the CPU kernels.

Meant to run under compute-sanitizer (memcheck, racecheck), where the full test suite would be too slow:
    compute-sanitizer --tool memcheck --error-exitcode 1 python tools/cuda_paths.py
Paths: warp per row (d <= 1024), block per row (d <= 32768), split rows (longer), with vector and scalar loads
(odd d), every dtype: sparsemax forward, backward, loss (index and weight targets) and its backward; ZLPR with
hard, soft and sparse labels, with and without a mask, with and without the gradient (the backward's in-place
row scaling: weighted rows and a mean); the tree sampler's draws
(float32 and float64, C a power of two and not), log q of given labels and its backward.
--sizes / --dtypes / --ops narrow the run (racecheck, which only sees shared memory, needs the block and split paths
only). TORCHXC_CUDA_COOP_ABOVE=0 sends every ZLPR and sparsemax row to the cooperative chunk path (by default only
float32 sparsemax backward rows longer than 16384 take it), a value above every row length (with or without
TORCHXC_CUDA_SPLIT_ABOVE=0) to the register and split paths.
"""
import argparse
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


SIZES = [1, 7, 32, 100, 1024, 1500, 5000, 20000, 32768, 40000, 100003]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="row lengths, comma-separated")
    ap.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated, of " + ", ".join(DTYPES))
    ap.add_argument("--ops", default="sparsemax,zlpr,tree", help="comma-separated, of sparsemax, zlpr, tree")
    args = ap.parse_args(argv)
    sizes = [int(v) for v in args.sizes.split(",")]
    dtypes = [DTYPES[v] for v in args.dtypes.split(",")]
    ops = set(args.ops.split(","))
    assert ops <= {"sparsemax", "zlpr", "tree"}, f"unknown --ops {args.ops}"
    assert torch.cuda.is_available() and torchxc.cuda_kernels_built(), "needs a GPU and a CUDA build"
    gen = torch.Generator().manual_seed(0)
    ok = True
    for dtype in dtypes if "sparsemax" in ops else ():
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
    if "zlpr" in ops:
        ok &= zlpr_paths(gen, sizes, dtypes)
    if "tree" in ops:
        ok &= tree_paths(gen)
    torch.cuda.synchronize()
    print("ALL OK" if ok else "SOME FAILED")
    return 0 if ok else 1


def zlpr_paths(gen, sizes, dtypes):
    ok = True
    for dtype in dtypes:
        tol = {torch.float32: 1e-5, torch.float64: 1e-12}.get(dtype, 2e-2)
        for d in sizes:
            rows = 3
            s = torch.randn(rows, d, generator=gen).to(dtype)
            hard = torch.rand(rows, d, generator=gen) < 0.05
            soft = torch.rand(rows, d, generator=gen).to(dtype)
            pos = torch.randint(-1, d, (rows, 8), generator=gen)
            mask = torch.rand(d, generator=gen) < 0.9
            for name, fn, target in (("hard", torchxc.zlpr_loss, hard), ("soft", torchxc.zlpr_loss, soft),
                                     ("sparse", torchxc.zlpr_loss_sparse, pos)):
                for m in (None, mask):
                    sc = s.cuda().requires_grad_()
                    sr = s.clone().requires_grad_()
                    lc = fn(sc, target.cuda(), None if m is None else m.cuda(), reduction="none")
                    lr = fn(sr, target, m, reduction="none")
                    tag = f"zlpr[{name}{', mask' if m is not None else ''}] {dtype} d={d}"
                    ok &= check(tag, lc, lr, tol * max(1.0, lr.abs().max().item()))
                    # row weights 1, -2, 0.5: the backward's in-place scaling skips the first row, scales the others
                    w = torch.tensor([1.0, -2.0, 0.5], dtype=dtype)
                    (gc,) = torch.autograd.grad((lc * w.cuda()).sum(), sc)
                    (gr,) = torch.autograd.grad((lr * w).sum(), sr)
                    ok &= check(tag + " grad", gc, gr, tol * 2)
                    (gc,) = torch.autograd.grad(fn(sc, target.cuda(), None if m is None else m.cuda()), sc)  # mean
                    (gr,) = torch.autograd.grad(fn(sr, target, m), sr)
                    ok &= check(tag + " grad of the mean", gc, gr, tol)
                with torch.no_grad():  # the forward without the gradient pass
                    ok &= check(f"zlpr[{name}, no grad] {dtype} d={d}", fn(s.cuda(), target.cuda(), reduction="none"),
                                fn(s, target, reduction="none"), tol * 10)
    return ok


def tree_paths(gen):
    ok = True
    for dtype in (torch.float32, torch.float64):
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        for C in (1, 2, 37, 1024, 5000):
            D = max(0, (C - 1).bit_length())
            k = 5
            W = torch.randn((1 << D) - 1, k, generator=gen, dtype=dtype)
            b = torch.randn((1 << D) - 1, generator=gen, dtype=dtype)
            l2l = torch.cat([torch.randperm(C, generator=gen), torch.full(((1 << D) - C,), -1)])
            cpu = torchxc.TreeSampler.from_parameters(W, b, C, l2l)
            gpu = torchxc.TreeSampler.from_parameters(W.cuda(), b.cuda(), C, l2l.cuda())
            z = torch.randn(33, k, generator=gen, dtype=dtype)
            lab, lq = gpu.sample(z.cuda(), 17, generator=torch.Generator().manual_seed(1))
            lab_r, lq_r = cpu.sample(z, 17, generator=torch.Generator().manual_seed(1))
            same = (lab.cpu() == lab_r).double().mean().item()
            print(f"{'ok  ' if same > 0.99 else 'FAIL'} tree_sample {dtype} C={C}: {same:.4f} of draws equal the CPU's",
                  flush=True)
            ok &= same > 0.99
            ok &= check(f"tree_sample log_q {dtype} C={C}", lq, cpu.log_prob(z, lab.cpu()), tol)
            labels = torch.randint(C, (33, 9), generator=gen)
            zc, zr = z.cuda().requires_grad_(), z.clone().requires_grad_()
            lc, lr = gpu.log_prob(zc, labels.cuda()), cpu.log_prob(zr, labels)
            ok &= check(f"tree_log_prob {dtype} C={C}", lc, lr, tol)
            g = torch.randn(33, 9, generator=gen, dtype=dtype)
            gc = torch.autograd.grad(lc, [zc, gpu.node_weight, gpu.node_bias], g.cuda())
            gr = torch.autograd.grad(lr, [zr, cpu.node_weight, cpu.node_bias], g)
            for name, a, r in zip(("z", "node_weight", "node_bias"), gc, gr):
                ok &= check(f"tree_log_prob grad {name} {dtype} C={C}", a, r, tol * 10)
            ok &= check(f"tree_log_prob_all {dtype} C={C}", gpu.log_prob_all(z.cuda()), cpu.log_prob_all(z), tol)
    return ok


if __name__ == "__main__":
    sys.exit(main())
