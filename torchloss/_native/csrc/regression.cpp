// torchloss native kernels: regression family (see common.h): Huber and SmoothL1 of a
// contiguous input x and target y of one shape and one dtype (float or double), any reduction.
// Everything else (weights, broadcasting, other dtypes or layouts, beta == 0) stays with the
// Python reference, torchloss/_autograd/regression.py, which these loops follow step for step.
//
// Forward. Per element, d = x - y (rounded in scalar_t, as the reference's `x - y`), then
//
//   Huber(delta):    c = clamp(d, -delta, delta),   l = c * (d - c/2)
//                    = d^2/2 for |d| <= delta, delta * (|d| - delta/2) otherwise;
//   SmoothL1(beta):  c = clamp(d, -beta, beta),     l = (d - c/2) * (c/beta)
//                    = d^2/(2 beta) for |d| <= beta, |d| - beta/2 otherwise
//
// (the reference's eager formulas, without a select: halving is exact, so the linear branch
// rounds as torch's two-branch formula does; SmoothL1's c/beta is exactly +-1 outside). 'none'
// writes l; 'mean'/'sum' add the l in double (see the blocks below) and round once at the end.
// beta = inf gives l = 0 (c/beta = 0), NaN in d stays NaN (the clamp passes it through).
//
// Gradient. With g_n the upstream gradient of element n (for 'mean' g/N, 'sum' g, 'none'
// grad[n]) and dl/dd = phi'(d):
//
//   Huber:     phi'(d) = clamp(d, -delta, delta)     (d inside, +-delta outside; continuous)
//   SmoothL1:  phi'(d) = clamp(d / beta, -1, 1)      (d/beta inside, exactly +-1 outside)
//
// and dL/dx_n = phi'(d_n) g_n, dL/dy_n = -phi'(d_n) g_n (d = x - y). The backward allocates
// only the gradient(s) it returns: no temporaries of the input's size (torch's peak).
// Under create_graph the saved x, y go to the Python reference (reference_backward).
//
// Parallelism and determinism: the elements are split into fixed blocks of kBlock; the sum of a
// block is kept in kLanes independent double accumulators (lane j takes the elements j mod
// kLanes of the block, which the compiler vectorises without reordering any addition), combined
// in lane order, and the block sums are added in block order. The result is therefore the same
// for every thread count.
#include "common.h"

#include <algorithm>
#include <cmath>

namespace torchloss {

namespace {

constexpr int64_t kLanes = 8;

// clamp(v, lo, hi) that passes NaN through (torch's clamp): max(NaN, lo) and min(NaN, hi) keep
// the first operand, and both map to vector min/max instructions.
template <typename T>
inline T clamp_nan(T v, T lo, T hi) {
  v = v < lo ? lo : v;
  return hi < v ? hi : v;
}

// The element-wise loss and its derivative: Huber (kSmooth = false, p = delta) or SmoothL1
// (kSmooth = true, p = beta). SmoothL1 divides by beta (c/beta, d/beta) as the reference does:
// one rounding, and exactly +-1 outside. When beta is a power of two (the default 1 included)
// the division is a multiplication by the exact 1/beta instead (kInv: the same correctly rounded
// result, without the slow vector division).
template <typename T, bool kSmooth, bool kInv = false>
struct Loss {
  T p;    // delta or beta
  T lo;   // -p
  T inv;  // 1/beta, exact (kInv only)

  inline T over_p(T v) const { return kInv ? v * inv : v / p; }

  inline T phi(T x, T y) const {
    const T d = x - y;
    const T c = clamp_nan(d, lo, p);
    const T e = d - T(0.5) * c;
    if (kSmooth) return e * over_p(c);
    return c * e;
  }

  inline T dphi(T x, T y) const {
    const T d = x - y;
    if (kSmooth) return clamp_nan(over_p(d), T(-1), T(1));
    return clamp_nan(d, lo, p);
  }
};

// Calls f(loss) with the Loss of scalar_t T for parameter p (see kInv above).
template <typename T, bool kSmooth, typename F>
void with_loss(double p, F&& f) {
  const T pt = static_cast<T>(p);
  if (kSmooth) {
    int e;
    const T inv = T(1) / pt;
    // a power of two (mantissa 1/2) whose reciprocal is exact and finite in T
    if (std::isfinite(pt) && std::frexp(pt, &e) == T(0.5) && std::isfinite(inv) && inv * pt == T(1) &&
        std::frexp(inv, &e) == T(0.5)) {
      f(Loss<T, kSmooth, true>{pt, -pt, inv});
      return;
    }
  }
  f(Loss<T, kSmooth, false>{pt, -pt, T(0)});
}

// Sum of phi over [begin, end) in kLanes double accumulators, combined in lane order.
template <typename LossT, typename T>
double block_sum(const LossT& L, const T* x, const T* y, int64_t begin, int64_t end) {
  double acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) acc[j] += static_cast<double>(L.phi(x[i + j], y[i + j]));
  }
  for (int64_t j = 0; i < end; ++i, ++j) acc[j] += static_cast<double>(L.phi(x[i], y[i]));
  double total = 0;
  for (int64_t j = 0; j < kLanes; ++j) total += acc[j];
  return total;
}

template <typename LossT, typename T>
void forward_loop(const LossT& L, const T* x, const T* y, T* out, int64_t n, int64_t reduction) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  if (reduction == kNone) {
    auto body = [&](int64_t b0, int64_t b1) {
      const int64_t end = std::min(b1 * kBlock, n);
      for (int64_t i = b0 * kBlock; i < end; ++i) out[i] = L.phi(x[i], y[i]);
    };
    if (blocks <= 1) body(0, blocks);
    else at::parallel_for(0, blocks, 1, body);
    return;
  }
  double total = 0;
  if (blocks <= 1) {
    total = block_sum(L, x, y, 0, n);
  } else {
    std::vector<double> partial(blocks);
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) partial[b] = block_sum(L, x, y, b * kBlock, std::min((b + 1) * kBlock, n));
    });
    for (int64_t b = 0; b < blocks; ++b) total += partial[b];
  }
  // empty 'mean': 0/0 = NaN, as torch's mean of nothing
  if (reduction == kMean) total /= static_cast<double>(n);
  out[0] = static_cast<T>(total);
}

// gx = phi'(d) * g and/or gy = -phi'(d) * g. `go`: the upstream gradient per element (stride 1)
// or nullptr for the single scalar `g0`.
template <typename LossT, typename T>
void backward_loop(const LossT& L, const T* x, const T* y, const T* go, T g0, T* gx, T* gy,
                   int64_t n) {
  auto body = [&](int64_t b0, int64_t b1) {
    const int64_t begin = b0 * kBlock, end = std::min(b1 * kBlock, n);
    if (go == nullptr) {
      if (gx != nullptr && gy != nullptr) {
        for (int64_t i = begin; i < end; ++i) {
          const T v = L.dphi(x[i], y[i]) * g0;
          gx[i] = v;
          gy[i] = -v;
        }
      } else if (gx != nullptr) {
        for (int64_t i = begin; i < end; ++i) gx[i] = L.dphi(x[i], y[i]) * g0;
      } else {
        for (int64_t i = begin; i < end; ++i) gy[i] = -(L.dphi(x[i], y[i]) * g0);
      }
    } else {
      if (gx != nullptr && gy != nullptr) {
        for (int64_t i = begin; i < end; ++i) {
          const T v = L.dphi(x[i], y[i]) * go[i];
          gx[i] = v;
          gy[i] = -v;
        }
      } else if (gx != nullptr) {
        for (int64_t i = begin; i < end; ++i) gx[i] = L.dphi(x[i], y[i]) * go[i];
      } else {
        for (int64_t i = begin; i < end; ++i) gy[i] = -(L.dphi(x[i], y[i]) * go[i]);
      }
    }
  };
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  if (blocks <= 1) body(0, blocks);
  else at::parallel_for(0, blocks, 1, body);
}

template <bool kSmooth>
struct PiecewiseQuadratic {
  static constexpr const char* kName = kSmooth ? "smooth_l1_loss" : "huber_loss";

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            int64_t reduction, double p) {
    const int64_t n = input.numel();
    at::Tensor out = reduction == kNone ? at::empty(input.sizes(), input.options()) : at::empty({}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_regression_forward", [&] {
      with_loss<scalar_t, kSmooth>(p, [&](const auto& L) {
        forward_loop(L, input.data_ptr<scalar_t>(), target.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), n,
                     reduction);
      });
    });
    ctx->save_for_backward({input, target});
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["p"] = p;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const bool need_x = ctx->needs_input_grad(0), need_y = ctx->needs_input_grad(1);
    if (!need_x && !need_y) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& target = saved[1];
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    const double p = ctx->saved_data["p"].toDouble();
    const at::Tensor& grad = grads[0];
    if (hand_over(grad)) {
      return reference_backward(kName, {input, target}, {static_cast<double>(reduction), p}, grad, 4);
    }
    const int64_t n = input.numel();
    at::Tensor gx = need_x ? at::empty(input.sizes(), input.options()) : at::Tensor();
    at::Tensor gy = need_y ? at::empty(target.sizes(), target.options()) : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_regression_backward", [&] {
      with_loss<scalar_t, kSmooth>(p, [&](const auto& L) {
        const scalar_t* x = input.data_ptr<scalar_t>();
        const scalar_t* y = target.data_ptr<scalar_t>();
        scalar_t* px = need_x ? gx.data_ptr<scalar_t>() : nullptr;
        scalar_t* py = need_y ? gy.data_ptr<scalar_t>() : nullptr;
        if (reduction != kNone) {
          // 'mean': g * (1/N) rounded to scalar_t, the scale torch's kernels apply
          const scalar_t g = *grad.data_ptr<scalar_t>();
          const scalar_t inv_n = static_cast<scalar_t>(1.0 / static_cast<double>(std::max<int64_t>(n, 1)));
          const scalar_t g0 = reduction == kMean ? g * inv_n : g;
          backward_loop(L, x, y, static_cast<const scalar_t*>(nullptr), g0, px, py, n);
        } else if (grad.is_contiguous()) {
          backward_loop(L, x, y, grad.data_ptr<scalar_t>(), scalar_t(1), px, py, n);
        } else if (is_broadcast_scalar(grad)) {
          // e.g. the gradient of loss.sum(): one value expanded (all strides 0)
          backward_loop(L, x, y, static_cast<const scalar_t*>(nullptr), *grad.data_ptr<scalar_t>(), px, py, n);
        } else {
          // any other strided gradient (rare): the loop writes +-phi'(d), and ATen's in-place
          // product applies the gradient (no temporary of the input's size)
          backward_loop(L, x, y, static_cast<const scalar_t*>(nullptr), scalar_t(1), px, py, n);
          if (need_x) gx.mul_(grad);
          if (need_y) gy.mul_(grad);
        }
      });
    });
    return {gx, gy, at::Tensor(), at::Tensor()};
  }

  static bool is_broadcast_scalar(const at::Tensor& t) {
    for (int64_t s : t.strides()) {
      if (s != 0) return false;
    }
    return true;
  }
};

using HuberLoss = PiecewiseQuadratic<false>;
using SmoothL1Loss = PiecewiseQuadratic<true>;

void check_pair(const at::Tensor& input, const at::Tensor& target, int64_t reduction, const char* name) {
  check_float_cpu(input, "input");
  check_float_cpu(target, "target");
  TORCH_CHECK(input.scalar_type() == target.scalar_type(), "torchloss native: ", name,
              " expects input and target of one dtype");
  TORCH_CHECK(input.sizes() == target.sizes() && input.is_contiguous() && target.is_contiguous(), "torchloss native: ",
              name, " expects a contiguous input and target of one shape");
  TORCH_CHECK(reduction == kNone || reduction == kMean || reduction == kSum, "torchloss native: ", name,
              ": invalid reduction code ", reduction);
}

}  // namespace

// The node names the tests look for: CppNode<torchloss::HuberNative>, CppNode<torchloss::SmoothL1Native>
// (struct names in namespace torchloss itself, not in the anonymous namespace).
struct HuberNative : public torch::autograd::Function<HuberNative> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            int64_t reduction, double delta) {
    return HuberLoss::forward(ctx, input, target, reduction, delta);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) { return HuberLoss::backward(ctx, grads); }
};

struct SmoothL1Native : public torch::autograd::Function<SmoothL1Native> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            int64_t reduction, double beta) {
    return SmoothL1Loss::forward(ctx, input, target, reduction, beta);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return SmoothL1Loss::backward(ctx, grads);
  }
};

at::Tensor huber_loss(const at::Tensor& input, const at::Tensor& target, int64_t reduction, double delta) {
  check_pair(input, target, reduction, "huber_loss");
  TORCH_CHECK(delta > 0, "huber_loss does not support non-positive values for delta (got delta=", delta, ").");
  return HuberNative::apply(input, target, reduction, delta);
}

at::Tensor smooth_l1_loss(const at::Tensor& input, const at::Tensor& target, int64_t reduction, double beta) {
  check_pair(input, target, reduction, "smooth_l1_loss");
  // beta == 0 is L1 (the Python side routes it there); negative beta is torch's error there too
  TORCH_CHECK(beta > 0, "torchloss native: smooth_l1_loss expects beta > 0 (got beta=", beta, ")");
  return SmoothL1Native::apply(input, target, reduction, beta);
}

// ============================================================================================
// L1 and MSE (issue 15: their small-size steps), same layout as above: a contiguous input x and
// target y of one shape and dtype, no weight, any reduction.
//
//   MSE:  l = d^2 (d * d, as torch's kernel), dl/dd = 2 d;  saves x and y (as torch and the reference)
//   L1:   l = |d|,  dl/dd = sign(d) (0 at d = 0, torch's subgradient); saves only sign(d) as int8,
//         one byte per element, as the reference's keep_sign path (torch keeps the float d). The
//         gradient is linear in the upstream gradient with a piecewise-constant factor, so a
//         create_graph (or batched-gradient) backward is sign(d) * unreduce(g) in ATen ops, the
//         reference's own non-eager backward, and needs nothing more.
// ============================================================================================

namespace {

template <typename T>
struct SquareKind {
  inline T phi(T x, T y) const {
    const T d = x - y;
    return d * d;
  }
  inline T dphi(T x, T y) const { return T(2) * (x - y); }
};

template <typename T>
struct AbsKind {
  inline T phi(T x, T y) const {
    const T d = x - y;
    return d < T(0) ? -d : d;
  }
};

}  // namespace

struct MSENative : public torch::autograd::Function<MSENative> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
    const int64_t n = input.numel();
    at::Tensor out = reduction == kNone ? at::empty(input.sizes(), input.options()) : at::empty({}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_mse_forward", [&] {
      forward_loop(SquareKind<scalar_t>{}, input.data_ptr<scalar_t>(), target.data_ptr<scalar_t>(),
                   out.data_ptr<scalar_t>(), n, reduction);
    });
    ctx->save_for_backward({input, target});
    ctx->saved_data["reduction"] = reduction;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const bool need_x = ctx->needs_input_grad(0), need_y = ctx->needs_input_grad(1);
    if (!need_x && !need_y) return {at::Tensor(), at::Tensor(), at::Tensor()};
    auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& target = saved[1];
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    const at::Tensor& grad = grads[0];
    if (hand_over(grad)) {
      return reference_backward("mse_loss", {input, target}, {static_cast<double>(reduction)}, grad, 3);
    }
    const int64_t n = input.numel();
    at::Tensor gx = need_x ? at::empty(input.sizes(), input.options()) : at::Tensor();
    at::Tensor gy = need_y ? at::empty(target.sizes(), target.options()) : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_mse_backward", [&] {
      const SquareKind<scalar_t> L;
      const scalar_t* x = input.data_ptr<scalar_t>();
      const scalar_t* y = target.data_ptr<scalar_t>();
      scalar_t* px = need_x ? gx.data_ptr<scalar_t>() : nullptr;
      scalar_t* py = need_y ? gy.data_ptr<scalar_t>() : nullptr;
      if (reduction != kNone) {
        const scalar_t g = *grad.data_ptr<scalar_t>();
        const scalar_t inv_n = static_cast<scalar_t>(1.0 / static_cast<double>(std::max<int64_t>(n, 1)));
        backward_loop(L, x, y, static_cast<const scalar_t*>(nullptr), reduction == kMean ? g * inv_n : g, px, py, n);
      } else if (grad.is_contiguous()) {
        backward_loop(L, x, y, grad.data_ptr<scalar_t>(), scalar_t(1), px, py, n);
      } else {
        backward_loop(L, x, y, static_cast<const scalar_t*>(nullptr), scalar_t(1), px, py, n);
        if (need_x) gx.mul_(grad);
        if (need_y) gy.mul_(grad);
      }
    });
    return {gx, gy, at::Tensor()};
  }
};

struct L1Native : public torch::autograd::Function<L1Native> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
    const int64_t n = input.numel();
    at::Tensor out = reduction == kNone ? at::empty(input.sizes(), input.options()) : at::empty({}, input.options());
    at::Tensor sign = at::empty(input.sizes(), input.options().dtype(at::kChar));
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_l1_forward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const scalar_t* y = target.data_ptr<scalar_t>();
      forward_loop(AbsKind<scalar_t>{}, x, y, out.data_ptr<scalar_t>(), n, reduction);
      int8_t* sg = sign.data_ptr<int8_t>();
      auto body = [&](int64_t b0, int64_t b1) {
        const int64_t end = std::min(b1 * kBlock, n);
        for (int64_t i = b0 * kBlock; i < end; ++i) {
          const scalar_t d = x[i] - y[i];
          sg[i] = static_cast<int8_t>((d > scalar_t(0)) - (d < scalar_t(0)));
        }
      };
      const int64_t blocks = (n + kBlock - 1) / kBlock;
      if (blocks <= 1) body(0, blocks);
      else at::parallel_for(0, blocks, 1, body);
    });
    ctx->save_for_backward({sign});
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["dtype"] = static_cast<int64_t>(input.scalar_type());
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const bool need_x = ctx->needs_input_grad(0), need_y = ctx->needs_input_grad(1);
    if (!need_x && !need_y) return {at::Tensor(), at::Tensor(), at::Tensor()};
    const at::Tensor sign = ctx->get_saved_variables()[0];
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    const at::Tensor& grad = grads[0];
    const int64_t n = sign.numel();
    at::Tensor gd;
    if (hand_over(grad)) {
      // differentiable in grad (create_graph) and batching-transparent: ATen ops
      at::Tensor g = grad;
      if (reduction == kMean) g = g / static_cast<double>(n);
      gd = sign.to(dtype) * g;
    } else {
      gd = at::empty(sign.sizes(), sign.options().dtype(dtype));
      AT_DISPATCH_FLOATING_TYPES(dtype, "torchloss_l1_backward", [&] {
        const int8_t* sg = sign.data_ptr<int8_t>();
        scalar_t* o = gd.data_ptr<scalar_t>();
        const at::Tensor gc = reduction == kNone ? grad.expand(sign.sizes()).contiguous() : grad;
        const scalar_t* go = gc.data_ptr<scalar_t>();
        const scalar_t g0 = reduction == kNone ? scalar_t(0) : reduction == kMean ? go[0] / static_cast<scalar_t>(n) : go[0];
        auto body = [&](int64_t b0, int64_t b1) {
          const int64_t end = std::min(b1 * kBlock, n);
          if (reduction == kNone) {
            for (int64_t i = b0 * kBlock; i < end; ++i) o[i] = static_cast<scalar_t>(sg[i]) * go[i];
          } else {
            for (int64_t i = b0 * kBlock; i < end; ++i) o[i] = static_cast<scalar_t>(sg[i]) * g0;
          }
        };
        const int64_t blocks = (n + kBlock - 1) / kBlock;
        if (blocks <= 1) body(0, blocks);
        else at::parallel_for(0, blocks, 1, body);
      });
    }
    if (need_x && need_y) return {gd, -gd, at::Tensor()};
    if (need_x) return {gd, at::Tensor(), at::Tensor()};
    return {at::Tensor(), hand_over(grad) ? -gd : gd.neg_(), at::Tensor()};
  }
};

at::Tensor mse_loss(const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
  check_pair(input, target, reduction, "mse_loss");
  return MSENative::apply(input, target, reduction);
}

at::Tensor l1_loss(const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
  check_pair(input, target, reduction, "l1_loss");
  return L1Native::apply(input, target, reduction);
}

void register_regression(py::module& m) {
  m.def("mse_loss", &mse_loss, "MSE loss: same-shape contiguous input/target, reduction code");
  m.def("l1_loss", &l1_loss, "L1 loss: same-shape contiguous input/target, reduction code (saves the int8 sign)");
  m.def("huber_loss", &huber_loss, "Huber loss: same-shape contiguous input/target, reduction code, delta");
  m.def("smooth_l1_loss", &smooth_l1_loss,
        "SmoothL1 loss: same-shape contiguous input/target, reduction code, beta > 0");
}

}  // namespace torchloss
