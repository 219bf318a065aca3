"""Build torchxc: the CPU kernels always, the CUDA kernels when a CUDA toolkit and a CUDA build of torch are
present. Nothing here probes for a GPU, so the CUDA kernels build on machines without one.

Switches (environment):
  FORCE_CUDA=1      build the CUDA kernels (fails clearly if torch or the toolkit lacks CUDA)
  FORCE_ONLY_CPU=1  never build the CUDA kernels
  TORCH_CUDA_ARCH_LIST="9.0"  GPU architectures (default here "7.5;8.0;9.0+PTX": Turing, Ampere, Ada, Hopper, and
                    newer GPUs through the PTX; torch's own default counts the visible GPUs and fails with none)
  MAX_JOBS=N        parallel compile jobs (ninja)
  DEBUG=1           -O0 -g instead of -O3
  SANITIZE=1        AddressSanitizer + UndefinedBehaviorSanitizer (-O1 -g; tools/sanitize_check.sh, which also sets the
                    LD_PRELOAD these need under an uninstrumented Python)

Install with `pip install --no-build-isolation .` so the build sees the torch you already have.
"""
import glob
import os

try:
    import torch
except ImportError as e:  # what `pip install .` (with build isolation) meets: its build environment has no torch
    raise RuntimeError(
        "torchxc builds against the torch you have installed: install torch first (pip install torch), then "
        "`pip install --no-build-isolation .` (pip's default build isolation hides your torch from this build)"
    ) from e
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "7.5;8.0;9.0+PTX"  # when TORCH_CUDA_ARCH_LIST is unset (see the switches above)


def _flag(name):
    return os.getenv(name, "0") == "1"


def with_cuda():
    if _flag("FORCE_ONLY_CPU"):
        return False
    has_torch_cuda = torch.version.cuda is not None
    if _flag("FORCE_CUDA"):
        if not has_torch_cuda or CUDA_HOME is None:
            raise RuntimeError(
                "FORCE_CUDA=1 needs a CUDA build of torch and the CUDA toolkit "
                f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={CUDA_HOME})"
            )
        return True
    return has_torch_cuda and CUDA_HOME is not None


def extensions():
    cuda = with_cuda()
    rel = lambda pattern: sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))
    sources = ["csrc/schema.cpp", "csrc/python_module.cpp"] + rel("csrc/cpu/*.cpp") + rel("csrc/composite/*.cpp") + rel("csrc/autograd/*.cpp")
    sources += rel("csrc/cuda/*.cu") if cuda else ["csrc/cuda_unavailable.cpp"]
    debug = _flag("DEBUG")
    cxx = ["-O0", "-g"] if debug else ["-O3", "-g0"]  # -g0: no debug info from Python's CFLAGS (30 MB -> a few)
    # float-cast-overflow: a float converted to an integer type that cannot hold it (NaN included) is undefined too
    sanitize = (["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all"]
                if _flag("SANITIZE") else [])
    if sanitize:
        cxx = ["-O1", "-g", "-fno-omit-frame-pointer"] + sanitize
    # -fopenmp: at::parallel_for is an inline OpenMP region in ATen's headers; without the flag it runs serially.
    # -fno-trapping-math (no floating-point traps are observed; results are unchanged) lets GCC turn the kernels'
    # float selects into vector blends: without it the AVX2 clone of the sparsemax backward was scalar, with a
    # branch per value (8192x128 float32, one thread: 4.1 -> 2.4 ms).
    cxx += ["-fno-trapping-math", "-fopenmp", "-DPy_LIMITED_API=0x03090000", f"-DTORCHXC_WITH_CUDA={int(cuda)}"]
    nvcc = ["-O3", "-lineinfo", "--expt-relaxed-constexpr", f"-DTORCHXC_WITH_CUDA={int(cuda)}"]
    if cuda and not os.getenv("TORCH_CUDA_ARCH_LIST"):
        # torch picks the architectures of the visible GPUs when the list is unset, and on a machine without one
        # (a container build, CI) its build code fails with an IndexError: a fixed default instead, no GPU probe
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
        print(f"torchxc: TORCH_CUDA_ARCH_LIST unset, building for {DEFAULT_CUDA_ARCHS}", flush=True)
    Extension = CUDAExtension if cuda else CppExtension
    print(f"torchxc: building {'CPU + CUDA' if cuda else 'CPU-only'} kernels", flush=True)
    return [
        Extension(
            "torchxc._C",
            sources,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc} if cuda else {"cxx": cxx},
            extra_link_args=["-fopenmp"] + sanitize,
            py_limited_api=True,
        )
    ]


setup(
    name="torchxc",
    version="0.1.0",
    description="Fast, exact PyTorch ops for multi-label and extreme classification (CPU and CUDA)",
    long_description=open(os.path.join(ROOT, "README.md")).read(),
    long_description_content_type="text/markdown",
    packages=find_packages("python"),
    package_dir={"": "python"},
    package_data={"torchxc": ["py.typed"]},  # PEP 561: the wrappers are typed
    ext_modules=extensions(),
    install_requires=["torch>=2.4"],
    python_requires=">=3.10",
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
    zip_safe=False,
)
