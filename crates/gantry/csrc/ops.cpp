// Native ops that tch does not expose with the arguments gantry needs. Each takes and returns
// at::Tensor pointers (what tch's Tensor wraps) and reports C++ exceptions as a malloc'd message.
#include <ATen/ATen.h>
#include <cstdlib>
#include <cstring>

extern "C" {

// at::leaky_relu with a chosen slope (tch's binding fixes it at 0.01). Autograd records it as
// the native op: one kernel forward and one backward.
char *gantry_leaky_relu(const void *x, double slope, void **out) {
  try {
    *out = new at::Tensor(at::leaky_relu(*static_cast<const at::Tensor *>(x), slope));
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}

}
