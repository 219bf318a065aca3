// The `torchxc._C` Python extension module. It only has to exist: importing it loads this shared library,
// whose static initialisers register the torchxc ops with the PyTorch dispatcher. Built against the limited
// Python API, so one wheel serves every CPython >= 3.9.
#include <Python.h>

#ifndef TORCHXC_WITH_CUDA
#define TORCHXC_WITH_CUDA 0
#endif

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "torchxc native ops (registered as torch.ops.torchxc.*)",
      -1,    // size of per-interpreter state
      NULL,  // methods
  };
  PyObject* module = PyModule_Create(&module_def);
  if (module != NULL && PyModule_AddIntConstant(module, "with_cuda", TORCHXC_WITH_CUDA) != 0) {
    Py_DECREF(module);
    return NULL;
  }
  return module;
}
}
