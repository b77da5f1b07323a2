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

// ---- Precision and memory format (tch 0.24 exposes neither autocast dtypes nor memory formats).
#include <ATen/autocast_mode.h>
#include <ATen/Context.h>

extern "C" {

// Turns autocast on for CPU (`cuda` 0) or CUDA ops with `dtype` (a c10::ScalarType: Half, BFloat16),
// or off (`dtype` < 0); writes the previous state to *prev_enabled / *prev_dtype for the matching
// restore. Autocast state is thread-local.
void gantry_autocast_set(int cuda, int dtype, int *prev_enabled, int *prev_dtype) {
  auto dev = cuda ? at::kCUDA : at::kCPU;
  *prev_enabled = at::autocast::is_autocast_enabled(dev) ? 1 : 0;
  *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dev));
  if (dtype >= 0) {
    at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(dtype));
    at::autocast::set_autocast_enabled(dev, true);
    at::autocast::increment_nesting();
  } else {
    at::autocast::set_autocast_enabled(dev, false);
  }
}

// Undoes gantry_autocast_set (`entered`: it turned autocast on) with the state it reported.
void gantry_autocast_restore(int cuda, int entered, int prev_enabled, int prev_dtype) {
  auto dev = cuda ? at::kCUDA : at::kCPU;
  if (entered && at::autocast::decrement_nesting() == 0) {
    at::autocast::clear_cache();
  }
  at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(prev_dtype));
  at::autocast::set_autocast_enabled(dev, prev_enabled != 0);
}

// TF32 in CUDA matmuls and cuDNN convolutions, cuDNN's autotuner, and deterministic algorithms
// (torch.use_deterministic_algorithms + cudnn.deterministic). cuBLAS is deterministic only with a
// fixed workspace, read from CUBLAS_WORKSPACE_CONFIG when its first handle is made: set here
// (unless the user set it) before any CUDA work.
void gantry_cuda_flags(int tf32, int cudnn_benchmark, int deterministic) {
  at::globalContext().setAllowTF32CuBLAS(tf32 != 0);
  at::globalContext().setAllowTF32CuDNN(tf32 != 0);
  at::globalContext().setBenchmarkCuDNN(cudnn_benchmark != 0);
  at::globalContext().setDeterministicCuDNN(deterministic != 0);
  at::globalContext().setDeterministicAlgorithms(deterministic != 0, false);
  if (deterministic) {
    setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", 0);
  }
}

// `*out` = `x` in page-locked (pinned) host memory: Tensor::pin_memory() without a device (tch's
// binding passes one, which torch 2.11 deprecates with a warning on every call).
char *gantry_pin_memory(const void *x, void **out) {
  try {
    *out = new at::Tensor(static_cast<const at::Tensor *>(x)->pin_memory());
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}

// `*out` = `x` in channels-last memory format (a copy unless it already is).
char *gantry_channels_last(const void *x, void **out) {
  try {
    *out = new at::Tensor(
        static_cast<const at::Tensor *>(x)->contiguous(at::MemoryFormat::ChannelsLast));
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}

// Re-lays a 4-D parameter's data out as channels-last in place (the variable and its autograd
// identity stay).
char *gantry_channels_last_(void *x) {
  try {
    auto &t = *static_cast<at::Tensor *>(x);
    if (t.dim() == 4) {
      t.set_data(t.contiguous(at::MemoryFormat::ChannelsLast));
    }
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}

}
