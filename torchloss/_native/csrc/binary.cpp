// torchloss native kernels: the binary family (see common.h), for contiguous float/double CPU
// tensors of one shape (any number of dims): input x, target y, optional weight w of that shape
// too. Every other layout (broadcast weights, pos_weight, mixed dtypes) runs the Python reference
// of torchloss/_autograd/binary.py, whose formulas these loops follow operation by operation, so
// that the two agree to float rounding. Element-wise work is done in scalar_t (as the reference's
// ops do); only the sums of 'mean'/'sum' are accumulated in double, per fixed block of kBlock
// elements, the blocks' partial sums added in order (the result does not depend on the number of
// threads).
//
// --- binary_cross_entropy (BCE on probabilities x in [0, 1], targets y in [0, 1]) --------------
//
//   l = -w [ y max(log x, -100) + (1-y) max(log(1-x), -100) ]
//
// The -100 clamps are torch's (x = 0 or 1 gives a finite loss). As in the reference, the bracket
// is formed as lerp(L1, L0, y) with L1 = max(log1p(-x), -100), L0 = max(log x, -100): exact L1/L0
// at y = 0/1, and log1p(-x) is exact for tiny x where log(1 - x) would round 1 - x first.
// Values outside [0, 1] (and NaN) raise torch's "all elements of input/target should be between
// 0 and 1" (input first when both are bad), checked in the same loop.
//
// Input gradient, away from the clamps:
//   dl/dx = -w [ y/x - (1-y)/(1-x) ] = -w [y(1-x) - (1-y)x] / (x(1-x)) = w (x - y) / (x(1-x)),
// with the denominator clamped to max(x(1-x), 1e-12) (the float32 constant, torch's rule) so it
// stays finite at x in {0, 1}; the forward's -100 clamp is deliberately NOT differentiated (torch's
// numbers: at x = 0, y = 1 the gradient is about -1e12, not 0). x(1-x) is evaluated as the
// reference's lerp(x, 0, x): x - x*x below 1/2, (1-x)*x (exact 1-x) above.
// Target gradient: dl/dy = -w [log x - log(1-x)] = -w logit(x), unclamped (+-inf at x in {1, 0}).
//
// --- binary_cross_entropy_with_logits (logits x, any real; no pos_weight here) ----------------
//
//   l = w [ y sp(-x) + (1-y) sp(x) ],  sp(z) = log(1 + e^z) (softplus)
//     = w [ T + x (H - y) ],  T = sp(-|x|) = log1p(exp(-|x|)),  H = [x >= 0]
//
// i.e. sp(-x) + (1-y)x for x >= 0 and sp(x) - yx below (using sp(x) = x + sp(-x)): no overflow
// (exp of a non-positive number only), no cancellation (both terms >= 0 for y in [0, 1]), and the
// reference's infinities (an infinite logit times a zero factor H - y is NaN).
//
// Gradients, with sp' = sigma, sigma(z) = 1/(1 + e^-z):
//   dl/dx = w [ (1-y) sigma(x) - y sigma(-x) ] = w lerp(sigma(x), -sigma(-x), y)
//     (each sigmoid evaluated where it is small, so sigma(x) - 1 never cancels: x = 40, y = 1
//     gives -4e-18, not 0),
//   dl/dy = w [ sp(-x) - sp(x) ] = -w x.
//
// --- reductions and the upstream gradient g ---------------------------------------------------
// 'none' returns l (shape of x); 'sum' sum(l); 'mean' sum(l)/N (NaN for N = 0, as torch). In the
// backward, dL/dl = g (elementwise for 'none', where g may be non-contiguous or expanded), g for
// 'sum', g/N for 'mean' (formed in scalar_t on the 0-d g, as the reference does). Each backward
// allocates only the gradient tensors it returns (every element written: at::empty); no
// temporary of the input's size. With create_graph=True it hands over to the reference instead
// (common.h), so double backward sees the reference's graph.
#include "common.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

namespace torchloss {

namespace {

// torch's lerp: a + w(b - a) for |w| < 1/2, b - (b - a)(1 - w) otherwise (exact at w in {0, 1}).
template <typename T>
inline T lerp(T a, T b, T w) {
  return std::abs(w) < T(0.5) ? a + w * (b - a) : b - (b - a) * (T(1) - w);
}

// Runs body(begin, end) over [0, n): one call for small n; else fixed blocks of kBlock elements
// in parallel. body returns the block's partial sum (double); the sums are added in block order.
template <typename F>
double blocked(int64_t n, const F& body) {
  if (n <= kBlock) return body(0, n);
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks, 0.0);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) partial[b] = body(b * kBlock, std::min(n, (b + 1) * kBlock));
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

// How the upstream gradient reaches element i: a scalar (0-d for 'mean'/'sum', or a 'none'
// gradient expanded from one value), or a contiguous buffer (a copy when it was neither).
template <typename scalar_t>
struct Upstream {
  at::Tensor keep;  // owns the contiguous copy, when one was made
  const scalar_t* p = nullptr;
  scalar_t scalar = 0;
  bool elementwise = false;
  scalar_t at(int64_t i) const { return elementwise ? p[i] : scalar; }
};

template <typename scalar_t>
Upstream<scalar_t> upstream(const at::Tensor& grad, int64_t reduction, int64_t n, bool negate) {
  Upstream<scalar_t> u;
  if (reduction != kNone) {
    const scalar_t g = *grad.data_ptr<scalar_t>();
    // the reference's factor: grad / N ('mean', its negation as grad / -N), or grad (negated)
    if (reduction == kMean) {
      u.scalar = g / static_cast<scalar_t>(negate ? -n : n);
    } else {
      u.scalar = negate ? -g : g;
    }
    return u;
  }
  bool expanded = true;
  for (int64_t d = 0; d < grad.dim(); ++d) expanded = expanded && (grad.stride(d) == 0 || grad.size(d) == 1);
  if (expanded && grad.numel() > 0) {
    // e.g. the gradient of loss.sum(): one value broadcast; never materialise it
    const scalar_t g = *grad.data_ptr<scalar_t>();
    u.scalar = negate ? -g : g;
    return u;
  }
  u.keep = grad.contiguous();
  u.p = u.keep.template data_ptr<scalar_t>();
  u.elementwise = true;
  return u;
}

at::Tensor reduced_output(const at::Tensor& input, int64_t reduction) {
  return reduction == kNone ? at::empty(input.sizes(), input.options()) : at::empty({}, input.options());
}

template <typename scalar_t>
void write_reduced(at::Tensor& out, double total, int64_t n, int64_t reduction) {
  if (reduction == kNone) return;
  const double v = reduction == kMean ? total / static_cast<double>(n) : total;
  *out.data_ptr<scalar_t>() = static_cast<scalar_t>(v);
}

}  // namespace

// --- BCE on probabilities ---------------------------------------------------------------------

// What both kernels save: input, target, weight (undefined when there is none), the reduction;
// and their create_graph hand-over to the reference (its tensors: input, target[, weight]).
namespace {

struct Saved {
  at::Tensor input, target, weight;
  int64_t reduction;

  explicit Saved(AutogradContext* ctx) {
    auto saved = ctx->get_saved_variables();
    input = saved[0];
    target = saved[1];
    weight = saved[2];
    reduction = ctx->saved_data["reduction"].toInt();
  }

  variable_list reference(const char* name, const at::Tensor& grad) const {
    std::vector<at::Tensor> tensors{input, target};
    if (weight.defined()) tensors.push_back(weight);
    return reference_backward(name, tensors, {static_cast<double>(reduction)}, grad, 4);
  }
};

}  // namespace

struct BinaryCrossEntropy : public torch::autograd::Function<BinaryCrossEntropy> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            const std::optional<at::Tensor>& weight_opt, int64_t reduction) {
    // (optional: an undefined tensor is no valid argument of apply)
    const at::Tensor weight = weight_opt.has_value() ? *weight_opt : at::Tensor();
    const int64_t n = input.numel();
    const bool has_w = weight.defined();
    at::Tensor out = reduced_output(input, reduction);
    bool bad_input = false, bad_target = false;
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_bce_forward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const scalar_t* y = target.data_ptr<scalar_t>();
      const scalar_t* w = has_w ? weight.data_ptr<scalar_t>() : nullptr;
      scalar_t* o = reduction == kNone ? out.data_ptr<scalar_t>() : nullptr;
      const int64_t blocks = std::max<int64_t>(1, (n + kBlock - 1) / kBlock);
      // per-block flags (a block is written by one thread only)
      std::vector<char> bad_x(blocks, 0), bad_y(blocks, 0);
      const scalar_t lo = -100;
      double total = blocked(n, [&](int64_t begin, int64_t end) {
        double s = 0;
        bool bx = false, by = false;
        for (int64_t i = begin; i < end; ++i) {
          const scalar_t xi = x[i], yi = y[i];
          bx |= !(xi >= 0 && xi <= 1);  // NaN fails too
          by |= !(yi >= 0 && yi <= 1);
          // std::max(NaN, lo) is NaN (the first argument is kept unless less): NaN propagates
          const scalar_t l1 = std::max(static_cast<scalar_t>(std::log1p(-xi)), lo);
          const scalar_t l0 = std::max(static_cast<scalar_t>(std::log(xi)), lo);
          scalar_t v = lerp(l1, l0, yi);
          if (w) v = v * w[i];
          v = -v;
          if (o) {
            o[i] = v;
          } else {
            s += v;
          }
        }
        bad_x[begin / kBlock] |= bx;
        bad_y[begin / kBlock] |= by;
        return s;
      });
      for (int64_t b = 0; b < blocks; ++b) {
        bad_input = bad_input || bad_x[b];
        bad_target = bad_target || bad_y[b];
      }
      write_reduced<scalar_t>(out, total, n, reduction);
    });
    // torch's messages; the input is reported first when both are out of range
    TORCH_CHECK(!bad_input, "all elements of input should be between 0 and 1");
    TORCH_CHECK(!bad_target, "all elements of target should be between 0 and 1");
    ctx->save_for_backward({input, target, weight});
    ctx->saved_data["reduction"] = reduction;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Saved saved(ctx);
    const at::Tensor &input = saved.input, &target = saved.target, &weight = saved.weight;
    const int64_t reduction = saved.reduction;
    const bool need_x = ctx->needs_input_grad(0), need_y = ctx->needs_input_grad(1), has_w = weight.defined();
    const at::Tensor& grad = grads[0];
    if (!need_x && !need_y) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    if (hand_over(grad)) return saved.reference("binary_cross_entropy", grad);
    const int64_t n = input.numel();
    at::Tensor gx = need_x ? at::empty(input.sizes(), input.options()) : at::Tensor();
    at::Tensor gy = need_y ? at::empty(target.sizes(), target.options()) : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_bce_backward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const scalar_t* y = target.data_ptr<scalar_t>();
      const scalar_t* w = has_w ? weight.data_ptr<scalar_t>() : nullptr;
      scalar_t* px = need_x ? gx.data_ptr<scalar_t>() : nullptr;
      scalar_t* py = need_y ? gy.data_ptr<scalar_t>() : nullptr;
      const Upstream<scalar_t> sx = upstream<scalar_t>(grad, reduction, n, false);
      // dl/dy = -w logit(x): the reference multiplies logit(x) w by the negated factor
      const Upstream<scalar_t> sy = upstream<scalar_t>(grad, reduction, n, true);
      const scalar_t eps = static_cast<scalar_t>(1e-12f);  // torch's float32 clamp
      blocked(n, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const scalar_t xi = x[i];
          if (px) {
            // x(1-x) as lerp(x, 0, x); NaN survives std::max (first argument)
            const scalar_t d = std::max(xi < scalar_t(0.5) ? xi - xi * xi : (scalar_t(1) - xi) * xi, eps);
            scalar_t v = (xi - y[i]) / d;
            if (w) v = v * w[i];
            px[i] = v * sx.at(i);
          }
          if (py) {
            scalar_t v = static_cast<scalar_t>(std::log(xi / (scalar_t(1) - xi)));
            if (w) v = v * w[i];
            py[i] = sy.elementwise ? -(v * sy.p[i]) : v * sy.scalar;
          }
        }
        return 0.0;
      });
    });
    return {gx, gy, at::Tensor(), at::Tensor()};
  }
};

// --- BCE on logits ----------------------------------------------------------------------------

struct BinaryCrossEntropyWithLogits : public torch::autograd::Function<BinaryCrossEntropyWithLogits> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            const std::optional<at::Tensor>& weight_opt, int64_t reduction) {
    // (optional: an undefined tensor is no valid argument of apply)
    const at::Tensor weight = weight_opt.has_value() ? *weight_opt : at::Tensor();
    const int64_t n = input.numel();
    const bool has_w = weight.defined();
    at::Tensor out = reduced_output(input, reduction);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_bce_logits_forward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const scalar_t* y = target.data_ptr<scalar_t>();
      const scalar_t* w = has_w ? weight.data_ptr<scalar_t>() : nullptr;
      scalar_t* o = reduction == kNone ? out.data_ptr<scalar_t>() : nullptr;
      double total = blocked(n, [&](int64_t begin, int64_t end) {
        double s = 0;
        for (int64_t i = begin; i < end; ++i) {
          const scalar_t xi = x[i];
          const scalar_t t = static_cast<scalar_t>(std::log1p(std::exp(-std::abs(xi))));  // sp(-|x|)
          const scalar_t h = xi >= 0 ? scalar_t(1) : scalar_t(0);                         // NaN: 0
          scalar_t v = t + xi * (h - y[i]);
          if (w) v = v * w[i];
          if (o) {
            o[i] = v;
          } else {
            s += v;
          }
        }
        return s;
      });
      write_reduced<scalar_t>(out, total, n, reduction);
    });
    ctx->save_for_backward({input, target, weight});
    ctx->saved_data["reduction"] = reduction;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Saved saved(ctx);
    const at::Tensor &input = saved.input, &target = saved.target, &weight = saved.weight;
    const int64_t reduction = saved.reduction;
    const bool need_x = ctx->needs_input_grad(0), need_y = ctx->needs_input_grad(1), has_w = weight.defined();
    const at::Tensor& grad = grads[0];
    if (!need_x && !need_y) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    if (hand_over(grad)) return saved.reference("binary_cross_entropy_with_logits", grad);
    const int64_t n = input.numel();
    at::Tensor gx = need_x ? at::empty(input.sizes(), input.options()) : at::Tensor();
    at::Tensor gy = need_y ? at::empty(target.sizes(), target.options()) : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_bce_logits_backward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const scalar_t* y = target.data_ptr<scalar_t>();
      const scalar_t* w = has_w ? weight.data_ptr<scalar_t>() : nullptr;
      scalar_t* px = need_x ? gx.data_ptr<scalar_t>() : nullptr;
      scalar_t* py = need_y ? gy.data_ptr<scalar_t>() : nullptr;
      const Upstream<scalar_t> s = upstream<scalar_t>(grad, reduction, n, false);
      blocked(n, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const scalar_t xi = x[i];
          const scalar_t si = s.at(i);
          if (px) {
            // lerp(sigma(x), -sigma(-x), y): each sigmoid where it is small (no cancellation)
            const scalar_t pos = scalar_t(1) / (scalar_t(1) + static_cast<scalar_t>(std::exp(-xi)));
            const scalar_t neg = -(scalar_t(1) / (scalar_t(1) + static_cast<scalar_t>(std::exp(xi))));
            scalar_t v = lerp(pos, neg, y[i]);
            if (w) v = v * w[i];
            px[i] = v * si;
          }
          if (py) {
            scalar_t v = -xi;
            if (w) v = v * w[i];
            py[i] = v * si;
          }
        }
        return 0.0;
      });
    });
    return {gx, gy, at::Tensor(), at::Tensor()};
  }
};

// --- entries ----------------------------------------------------------------------------------

namespace {

// input, target (and a weight, when given) contiguous, of one shape and one float/double dtype.
at::Tensor checked_weight(const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& weight,
                          const char* fn) {
  check_float_cpu(input, "input");
  TORCH_CHECK(target.device().is_cpu() && target.scalar_type() == input.scalar_type() &&
                  target.sizes() == input.sizes() && input.is_contiguous() && target.is_contiguous(),
              "torchloss native: ", fn, " expects contiguous input and target of one shape and dtype");
  if (!weight.has_value() || !weight->defined()) return at::Tensor();
  const at::Tensor& w = *weight;
  TORCH_CHECK(w.device().is_cpu() && w.scalar_type() == input.scalar_type() && w.sizes() == input.sizes() &&
                  w.is_contiguous(),
              "torchloss native: ", fn, " expects a contiguous weight of the input's shape and dtype");
  return w;
}

void check_reduction(int64_t reduction) {
  TORCH_CHECK(reduction == kNone || reduction == kMean || reduction == kSum,
              "torchloss native: unknown reduction code ", reduction);
}

}  // namespace

at::Tensor binary_cross_entropy(const at::Tensor& input, const at::Tensor& target,
                                const std::optional<at::Tensor>& weight, int64_t reduction) {
  at::Tensor w = checked_weight(input, target, weight, "binary_cross_entropy");
  check_reduction(reduction);
  return BinaryCrossEntropy::apply(input, target, w.defined() ? std::optional<at::Tensor>(w) : std::nullopt,
                                   reduction);
}

at::Tensor binary_cross_entropy_with_logits(const at::Tensor& input, const at::Tensor& target,
                                            const std::optional<at::Tensor>& weight, int64_t reduction) {
  at::Tensor w = checked_weight(input, target, weight, "binary_cross_entropy_with_logits");
  check_reduction(reduction);
  return BinaryCrossEntropyWithLogits::apply(
      input, target, w.defined() ? std::optional<at::Tensor>(w) : std::nullopt, reduction);
}

// ============================================================================================
// Soft margin (issue 15: its small-size step): l = log(1 + exp(-y x)) = sp(z), z = -(y x), for a
// contiguous input and target of one shape and dtype, formed as the reference's eager path forms
// it, logaddexp(z, 0) = max(z, 0) + log1p(exp(-|z|)) (finite for any z, unlike torch's), and
// dl/dx = -y sigmoid(z). Small inputs only (the Python side sends at most kSoftMarginMax elements:
// the loops call exp and log1p per element, and the reference's vectorised ops are faster
// beyond). Saves the input and the target, as torch and the reference; sums in double, serially.
// ============================================================================================

struct SoftMarginNative : public torch::autograd::Function<SoftMarginNative> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
    const int64_t n = input.numel();
    at::Tensor out = reduction == kNone ? at::empty(input.sizes(), input.options()) : at::empty({}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_soft_margin_forward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const scalar_t* y = target.data_ptr<scalar_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      double total = 0;
      for (int64_t i = 0; i < n; ++i) {
        const scalar_t z = -(x[i] * y[i]);
        const scalar_t l = (z > scalar_t(0) ? z : scalar_t(0)) + std::log1p(std::exp(-std::abs(z)));
        if (reduction == kNone) o[i] = l;
        else total += static_cast<double>(l);
      }
      if (reduction != kNone) o[0] = static_cast<scalar_t>(reduction == kMean ? total / static_cast<double>(n) : total);
    });
    ctx->save_for_backward({input, target});
    ctx->saved_data["reduction"] = reduction;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!ctx->needs_input_grad(0)) return {at::Tensor(), at::Tensor(), at::Tensor()};
    auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& target = saved[1];
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    const at::Tensor& grad = grads[0];
    if (hand_over(grad)) {
      return reference_backward("soft_margin_loss", {input, target}, {static_cast<double>(reduction)}, grad, 3);
    }
    const int64_t n = input.numel();
    at::Tensor gx = at::empty(input.sizes(), input.options());
    if (n == 0) return {gx, at::Tensor(), at::Tensor()};  // (an empty 'none' grad has no go[0])
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_soft_margin_backward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const scalar_t* y = target.data_ptr<scalar_t>();
      scalar_t* g = gx.data_ptr<scalar_t>();
      const at::Tensor gc = reduction == kNone ? grad.expand(input.sizes()).contiguous() : grad;
      const scalar_t* go = gc.data_ptr<scalar_t>();
      const scalar_t g0 = reduction == kNone ? scalar_t(0) : reduction == kMean ? go[0] / static_cast<scalar_t>(n) : go[0];
      for (int64_t i = 0; i < n; ++i) {
        const scalar_t z = -(x[i] * y[i]);
        const scalar_t sig = scalar_t(1) / (scalar_t(1) + std::exp(-z));
        g[i] = -(sig * y[i]) * (reduction == kNone ? go[i] : g0);
      }
    });
    return {gx, at::Tensor(), at::Tensor()};
  }
};

at::Tensor soft_margin_loss(const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
  check_float_cpu(input, "input");
  TORCH_CHECK(target.scalar_type() == input.scalar_type() && target.sizes() == input.sizes() && input.is_contiguous() &&
                  target.is_contiguous() && target.device().is_cpu(),
              "torchloss native: soft_margin_loss expects a contiguous input and target of one shape and dtype");
  TORCH_CHECK(reduction == kNone || reduction == kMean || reduction == kSum,
              "torchloss native: soft_margin_loss: invalid reduction code ", reduction);
  return SoftMarginNative::apply(input, target, reduction);
}

// --- the input gradient of a large BCE of logits (issue 15's large row) ------------------------
// dl/dx = lerp(sigma(x), -sigma(-x), y) (torch's lerp rule: y < 1/2 from the first end, else
// from the second; so each sigmoid is used where it does not cancel: exact at y = 0 and y = 1,
// the Python eager formula, _bcel_dx_into), times the upstream factor (a scalar for 'mean' and
// 'sum', per element for 'none'). One pass reading x and y and writing the gradient, float32,
// written for the compiler to vectorise (exp_nonpositive: e = exp(-|x|), sigma(|x|) = 1/(1 + e),
// sigma(-|x|) = e/(1 + e)), in parallel blocks. The Python backward calls it on a first-order
// eager backward (it is not an autograd Function); torch's forward kernels stay faster than a
// loop here, so the forward stays in Python.
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
namespace {

inline float bcel_dx(float x, float y) {
  const float a = x < 0.0f ? -x : x;  // |x| (NaN stays NaN)
  const float e = exp_nonpositive(-a);
  const float inv = 1.0f / (1.0f + e);
  const float big = inv, small = e * inv;  // sigma(|x|), sigma(-|x|)
  const bool neg = x < 0.0f;
  const float sp = neg ? small : big, sn = neg ? big : small;  // sigma(x), sigma(-x)
  const float d = -sn - sp;                                    // end - self of the lerp
  const float ay = y < 0.0f ? -y : y;
  return ay < 0.5f ? sp + y * d : -sn - d * (1.0f - y);
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void bcel_dx_scalar(const float* __restrict x, const float* __restrict y, float scale, float* __restrict out,
                    int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = bcel_dx(x[i], y[i]) * scale;
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void bcel_dx_each(const float* __restrict x, const float* __restrict y, const float* __restrict g,
                  float* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = bcel_dx(x[i], y[i]) * g[i];
}

}  // namespace
#pragma GCC pop_options

at::Tensor binary_cross_entropy_with_logits_grad(const at::Tensor& input, const at::Tensor& target,
                                                 const at::Tensor& scale) {
  TORCH_CHECK(input.scalar_type() == at::kFloat && target.scalar_type() == at::kFloat &&
                  scale.scalar_type() == at::kFloat && input.device().is_cpu() && target.device().is_cpu() &&
                  scale.device().is_cpu() && input.is_contiguous() && target.is_contiguous() &&
                  target.sizes() == input.sizes() &&
                  (scale.dim() == 0 || (scale.sizes() == input.sizes() && scale.is_contiguous())),
              "torchloss native: binary_cross_entropy_with_logits_grad expects contiguous float32 input and target "
              "of one shape and a 0-d or same-shape scale");
  at::Tensor out = at::empty_like(input, at::MemoryFormat::Contiguous);
  const float* x = input.data_ptr<float>();
  const float* y = target.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t n = input.numel();
  if (scale.dim() == 0) {
    const float s = scale.item<float>();
    at::parallel_for(0, n, kBlock, [&](int64_t b, int64_t e) { bcel_dx_scalar(x + b, y + b, s, o + b, e - b); });
  } else {
    const float* g = scale.data_ptr<float>();
    at::parallel_for(0, n, kBlock, [&](int64_t b, int64_t e) { bcel_dx_each(x + b, y + b, g + b, o + b, e - b); });
  }
  return out;
}

void register_binary(py::module& m) {
  m.def("soft_margin_loss", &soft_margin_loss,
        "soft margin loss: contiguous same-shape float/double input and target, reduction code");
  m.def("binary_cross_entropy", &binary_cross_entropy,
        "BCE of probabilities: contiguous same-shape float/double input, target, optional weight; reduction code",
        py::arg("input"), py::arg("target"), py::arg("weight"), py::arg("reduction"));
  m.def("binary_cross_entropy_with_logits", &binary_cross_entropy_with_logits,
        "BCE of logits (no pos_weight): contiguous same-shape float/double input, target, optional weight; "
        "reduction code",
        py::arg("input"), py::arg("target"), py::arg("weight"), py::arg("reduction"));
  m.def("binary_cross_entropy_with_logits_grad", &binary_cross_entropy_with_logits_grad,
        "the input gradient of BCE of logits (no weights) times a 0-d or per-element scale: contiguous float32");
}

}  // namespace torchloss
