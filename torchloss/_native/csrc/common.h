// Shared declarations of torchloss's native (C++) CPU kernels.
//
// Each kernel is a torch::autograd::Function with a hand-written forward and backward loop over
// contiguous float/double CPU tensors: the fast path of one plain, eager call of a loss, beside
// the Python reference Function of torchloss/_autograd (which every other call uses, and which
// the tests compare each kernel with). The Python side (torchloss/_native/__init__.py) decides
// when a call may take a kernel; a kernel that meets anything it does not handle raises, and the
// caller falls back to the reference.
//
// The loops are not differentiable, so a backward run with create_graph=True (grad mode on
// inside the backward), or given a batched upstream gradient (hand_over), hands the node's saved
// inputs to the Python reference instead: it
// recomputes the loss with its own Function and differentiates that with create_graph=True, so
// double backward sees exactly the reference's graph.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <string>
#include <vector>

namespace torchloss {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// torch's reduction enum, as torchloss._reduction's codes.
constexpr int64_t kNone = 0;
constexpr int64_t kMean = 1;
constexpr int64_t kSum = 2;

// The gradients of the reference loss `name` (registered on the Python side) at the saved
// `tensors` and `scalars`, for the upstream gradient `grad`, with create_graph=True; one entry
// per forward argument (`n_args`: tensors first, then scalars), undefined where there is none.
variable_list reference_backward(const char* name, const std::vector<at::Tensor>& tensors,
                                 const std::vector<double>& scalars, const at::Tensor& grad,
                                 size_t n_args);

// Whether a backward hands its saved inputs to the Python reference (reference_backward)
// instead of running its loop: grad mode is on (create_graph=True: the loop is not
// differentiable), or the upstream gradient is not a plain tensor with storage, such as the
// BatchedTensor of torch.autograd.grad(..., is_grads_batched=True) (gradcheck's
// check_batched_grad, jacobian/hessian(vectorize=True)) or a functorch wrapper, which a loop
// cannot read through a data pointer; the reference's ops batch it.
inline bool hand_over(const at::Tensor& grad) {
  return at::GradMode::is_enabled() || (grad.defined() && !grad.has_storage());
}

// Accumulator type of a loop over scalar_t: double for float too (the sums of a reduction are
// then more accurate than torch's float cascade sums, and independent of the thread count).
template <typename scalar_t>
using acc_t = double;

// Checks shared by every kernel's entry: a CPU floating tensor of float or double dtype.
inline void check_float_cpu(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu(), "torchloss native: ", what, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "torchloss native: ", what, " must be float32 or float64");
}

// Elements per block of a parallel reduction: the blocks are fixed (not per thread), so a sum
// does not depend on the number of threads.
constexpr int64_t kBlock = 1 << 14;

// Rows of C elements per parallel block: about kBlock elements, at least one row.
inline int64_t rows_per_block(int64_t C) { return std::max<int64_t>(1, kBlock / std::max<int64_t>(C, 1)); }

// The loops that call it are compiled with no-trapping-math (their selects become blends).
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
// exp(x) for x <= 0 (or NaN), float, vectorisable (no calls, no branches): Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2,
// then the degree-6 minimax polynomial of the Cephes expf (relative error about 1 ulp, as
// glibc's expf and torch's vectorised exp); 2^n built in the exponent bits. Below
// ln(FLT_MIN) = -87.34 it returns 0 instead of a subnormal (< 1.2e-38: for the softmax a change
// far below float rounding, since S >= 1). A NaN propagates (the comparison is false,
// the polynomial NaN); -inf gives 0.
inline float exp_nonpositive(float x) {
  const float lo = -87.33654f;
  const bool under = x < lo;
  const float xc = under ? lo : x;
  const float nf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  float r = xc - nf * 0.693359375f;                                        // ln 2, high part
  r = r - nf * -2.12194440e-4f;                                            // ln 2, low part
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  union {
    int32_t i;
    float f;
  } two_n;
  two_n.i = (static_cast<int32_t>(nf) + 127) << 23;  // n in [-126, 0]
  return under ? 0.0f : p * two_n.f;
}
#pragma GCC pop_options

// --- kernels: one file per family, each defining its register_<family>(m) ---------------------
// bindings.cpp calls every one that is linked in (they are weak references there, so that a
// build of some families only -- TORCHLOSS_NATIVE_FILES -- links too).
void register_classification(py::module& m);
void register_binary(py::module& m);
void register_regression(py::module& m);
void register_margin(py::module& m);
void register_multilabel(py::module& m);
void register_ctc(py::module& m);

}  // namespace torchloss
