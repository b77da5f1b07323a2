// The bridge to torch's own distributed engine: a c10d TCPStore, a c10d process group
// (ProcessGroupGloo for CPU tensors, ProcessGroupNCCL for CUDA tensors) and the collectives gantry
// needs. Nothing here is a transport of gantry's: every byte moves through the libtorch the binary
// already links.
//
// Joining is three calls, so that gantry can bound and explain each step (dist.rs): the store
// (hosted by rank 0, or by torchrun's agent), a rendezvous on it that says which ranks are missing,
// then the process group. The store's keys live under a prefix that names the attempt
// (TORCHELASTIC_RESTART_COUNT), as torch's elastic agent scopes its own: an agent's store outlives
// a failed attempt, and the next attempt must not read the old one's addresses.
//
// Every function reports a C++ exception as a malloc'd message (one line once gantry trims it)
// and returns nullptr on success. The group's timeout bounds every collective: a rank that died
// or hangs makes the others fail with an error instead of waiting for ever.
//
// ProcessGroupGloo.hpp includes gloo's own headers, which the torch wheel does not ship: the
// set-up script installs Debian's libgloo-dev for them (declarations only; the implementation
// that runs is the wheel's; docs/distributed.md says how to get them without root). Without them
// (GANTRY_GLOO undefined) this file still builds and every call says how to get multi-process
// training. NCCL is built when the wheel's CUDA and NCCL headers are found (GANTRY_NCCL).
#include <ATen/ATen.h>
#include <c10/util/Logging.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef GANTRY_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef GANTRY_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
  int rank;
  int world;
};

char *fail(const std::exception &e) { return strdup(e.what()); }

void wait(Group *g, const c10::intrusive_ptr<c10d::Work> &work) {
  if (!work->wait(g->timeout)) {
    throw std::runtime_error("collective did not finish within the timeout");
  }
}

void all_reduce(Group *g, at::Tensor &t, c10d::ReduceOp::RedOpType op) {
  std::vector<at::Tensor> ts{t};
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp(op);
  opts.timeout = g->timeout;
  wait(g, g->backend->allreduce(ts, opts));
}

// Sum over ranks that autograd sees through: the backward of a sum all-reduce is a sum
// all-reduce of the incoming gradients (each rank's loss depends on every rank's input).
struct AllReduceSum : public torch::autograd::Function<AllReduceSum> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x,
                            int64_t group) {
    ctx->saved_data["group"] = group;
    at::Tensor y = x.clone();
    all_reduce(reinterpret_cast<Group *>(group), y, c10d::ReduceOp::SUM);
    return y;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext *ctx,
                                               torch::autograd::tensor_list grads) {
    auto *g = reinterpret_cast<Group *>(ctx->saved_data["group"].toInt());
    at::Tensor dx = grads[0].contiguous().clone();
    all_reduce(g, dx, c10d::ReduceOp::SUM);
    return {dx, at::Tensor()};
  }
};

}  // namespace

extern "C" {

// Sets libtorch's own log threshold (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL). c10d logs every
// failed connection attempt with a C++ stack trace; gantry reports the failure itself, in one line.
void gantry_set_torch_log_level(int level) {
  FLAGS_caffe2_log_level = level;
  c10::UpdateLoggingLevelsFromFlags();
}

// Whether this build has the gloo (CPU) and NCCL (CUDA) process groups: bit 0 gloo, bit 1 NCCL.
int gantry_dist_backends() {
  int b = 0;
#ifdef GANTRY_GLOO
  b |= 1;
#endif
#ifdef GANTRY_NCCL
  b |= 2;
#endif
  return b;
}

// A TCPStore at host:port, hosted by this process when `is_server`, its keys under `prefix`.
// `timeout_s` bounds the connection (a client retries until then).
char *gantry_dist_store_new(const char *host, int port, int is_server, int world, double timeout_s,
                            const char *prefix, void **out) {
  try {
    auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000.0));
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = is_server != 0;
    opts.numWorkers = world;
    opts.waitWorkers = false;
    opts.timeout = timeout;
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(host, opts);
    *out = new Store{c10::make_intrusive<c10d::PrefixStore>(prefix, store)};
    return nullptr;
  } catch (const std::exception &e) {
    return fail(e);
  }
}

void gantry_dist_store_free(void *s) { delete static_cast<Store *>(s); }

// Says this rank has joined (`joined/<rank>`) and waits at most `timeout_s` for the others:
// `missing[r]` (world entries) is set to 1 for each rank that has not joined by then, 0 otherwise.
char *gantry_dist_rendezvous(void *s, int rank, int world, double timeout_s, int *missing) {
  try {
    auto &store = static_cast<Store *>(s)->store;
    auto key = [](int r) { return "joined/" + std::to_string(r); };
    store->set(key(rank), std::vector<uint8_t>{1});
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000.0));
    for (int r = 0; r < world; ++r) missing[r] = r != rank;
    while (true) {
      bool all = true;
      for (int r = 0; r < world; ++r) {
        if (missing[r] && store->check({key(r)})) missing[r] = 0;
        all = all && !missing[r];
      }
      if (all || std::chrono::steady_clock::now() >= deadline) return nullptr;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  } catch (const std::exception &e) {
    return fail(e);
  }
}

// Joins the process group of `world` processes as `rank` through the store `s` (kept alive by
// the group). `nccl`: ProcessGroupNCCL on CUDA device `cuda_device`, else ProcessGroupGloo;
// `iface` non-empty: gloo's network interface (GLOO_SOCKET_IFNAME), else the device of `host`.
char *gantry_dist_new(void *s, const char *host, int rank, int world, double timeout_s, int nccl,
                      int cuda_device, const char *iface, void **out) {
  try {
    auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000.0));
    c10::intrusive_ptr<c10d::Store> prefixed = static_cast<Store *>(s)->store;
    prefixed->setTimeout(timeout);
    c10::intrusive_ptr<c10d::Backend> backend;
    if (nccl) {
#ifdef GANTRY_NCCL
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      at::globalContext().lazyInitDevice(c10::DeviceType::CUDA);
      // This rank's GPU becomes the current device before NCCL is set up, as
      // torch.cuda.set_device(local_rank) does in a PyTorch job: NCCL's communicator, its streams
      // and any allocation without an explicit device go there, not to GPU 0.
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(cuda_device));
      backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, world, opts);
#else
      throw std::runtime_error(
          "this gantry was built without NCCL (the CUDA and NCCL headers of the torch wheel were "
          "not found at build time)");
#endif
    } else {
#ifdef GANTRY_GLOO
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      if (iface && *iface) {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
      } else {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
      }
      backend = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, world, opts);
#else
      throw std::runtime_error(
          "this gantry was built without gloo's headers, so it cannot train in several processes "
          "(install Debian's libgloo-dev, or point GANTRY_GLOO_INCLUDE at gloo's headers, and "
          "rebuild: docs/distributed.md)");
#endif
    }
    *out = new Group{prefixed, backend, timeout, rank, world};
    return nullptr;
  } catch (const std::exception &e) {
    return fail(e);
  }
}

void gantry_dist_free(void *g) { delete static_cast<Group *>(g); }

// In-place all-reduce: op 0 sum, 1 max, 2 min.
char *gantry_dist_all_reduce(void *g, void *t, int op) {
  try {
    auto kind = op == 1 ? c10d::ReduceOp::MAX : op == 2 ? c10d::ReduceOp::MIN : c10d::ReduceOp::SUM;
    all_reduce(static_cast<Group *>(g), *static_cast<at::Tensor *>(t), kind);
    return nullptr;
  } catch (const std::exception &e) {
    return fail(e);
  }
}

// In-place broadcast from `root`.
char *gantry_dist_broadcast(void *g, void *t, int root) {
  try {
    auto *grp = static_cast<Group *>(g);
    std::vector<at::Tensor> ts{*static_cast<at::Tensor *>(t)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = grp->timeout;
    wait(grp, grp->backend->broadcast(ts, opts));
    return nullptr;
  } catch (const std::exception &e) {
    return fail(e);
  }
}

// `out` ([world * n, ...], contiguous) receives every rank's `in` ([n, ...]) in rank order.
char *gantry_dist_all_gather(void *g, void *out, void *in) {
  try {
    auto *grp = static_cast<Group *>(g);
    at::Tensor &o = *static_cast<at::Tensor *>(out);
    std::vector<at::Tensor> parts = o.chunk(grp->world, 0);
    std::vector<std::vector<at::Tensor>> outs{parts};
    std::vector<at::Tensor> ins{*static_cast<at::Tensor *>(in)};
    c10d::AllgatherOptions opts;
    opts.timeout = grp->timeout;
    wait(grp, grp->backend->allgather(outs, ins, opts));
    return nullptr;
  } catch (const std::exception &e) {
    return fail(e);
  }
}

// Rank `root`'s `out` ([world * n, ...], contiguous) receives every rank's `in` ([n, ...]) in
// rank order; the other ranks pass a null `out` and receive nothing (c10d's gather).
char *gantry_dist_gather(void *g, void *out, void *in, int root) {
  try {
    auto *grp = static_cast<Group *>(g);
    std::vector<std::vector<at::Tensor>> outs;
    if (out != nullptr) {
      at::Tensor &o = *static_cast<at::Tensor *>(out);
      outs.push_back(o.chunk(grp->world, 0));
    }
    std::vector<at::Tensor> ins{*static_cast<at::Tensor *>(in)};
    c10d::GatherOptions opts;
    opts.rootRank = root;
    opts.timeout = grp->timeout;
    wait(grp, grp->backend->gather(outs, ins, opts));
    return nullptr;
  } catch (const std::exception &e) {
    return fail(e);
  }
}

char *gantry_dist_barrier(void *g) {
  try {
    auto *grp = static_cast<Group *>(g);
    c10d::BarrierOptions opts;
    opts.timeout = grp->timeout;
    wait(grp, grp->backend->barrier(opts));
    return nullptr;
  } catch (const std::exception &e) {
    return fail(e);
  }
}

// `*out` = the sum of `x` over all ranks, differentiable (see AllReduceSum).
char *gantry_dist_all_reduce_autograd(void *g, const void *x, void **out) {
  try {
    *out = new at::Tensor(AllReduceSum::apply(*static_cast<const at::Tensor *>(x),
                                              reinterpret_cast<int64_t>(g)));
    return nullptr;
  } catch (const std::exception &e) {
    return fail(e);
  }
}

}  // extern "C"
