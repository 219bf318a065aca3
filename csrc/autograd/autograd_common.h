// Shared by the autograd kernels in csrc/autograd/<family>_autograd.cpp.
//
// Each differentiable op has a torch::autograd::Function registered as its Autograd kernel. Its forward calls the
// op's CPU/CUDA kernel below autograd through the dispatcher, its backward calls the registered backward op (so
// the backward is itself an op, with its own fake kernel, and torch.compile / AOTAutograd traces both). Doing
// this in C++ instead of torch.library.register_autograd in Python removes the Python round trip of every call:
// forward+backward of sparsemax on an 8x16 tensor took 239 us of host time with the Python registration and
// 137 us in C++ (torch.softmax: 98 us; tools/host_overhead.py on the development VM), which is what bounds small
// problems on a GPU.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>

// The dispatcher handle of the registered op `qualified_name` ("torchxc::...") with the C++ signature given as
// the remaining arguments, looked up once per call site.
#define TORCHXC_OP(qualified_name, ...)                                                                      \
  ([]() -> const c10::TypedOperatorHandle<__VA_ARGS__>& {                                                    \
    static const auto handle =                                                                               \
        c10::Dispatcher::singleton().findSchemaOrThrow(qualified_name, "").template typed<__VA_ARGS__>();       \
    return handle;                                                                                           \
  }())
