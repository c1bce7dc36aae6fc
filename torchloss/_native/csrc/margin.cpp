// torchloss native kernels: margin family (see common.h).
//
// MultiMargin: the multi-class hinge loss of a contiguous (N, C) float/double input x (or one
// (C) row) with int64 class indices y (N,) (or ()), p in {1, 2}, a margin m and an optional
// contiguous (C) weight w of the input's dtype (the reference is MultiMarginLossFunction in
// torchloss/_autograd/margin.py, whose notes this file follows):
//
//   l_n = (1/C) sum_{i != y_n} w_{y_n} max(0, z_{n,i})^p,    z_{n,i} = m - x_{n,y_n} + x_{n,i},
//
// reduced by 'none' (l_n, the target's shape), 'sum' (sum_n l_n) or 'mean' (sum_n l_n / N; an
// empty batch gives 0/0 = NaN, as the reference).
//
// Gradient. Only the active terms (i != y, z_i > 0, strictly: 0 at a kink, torch's subgradient)
// depend on x, with dz_i/dx_i = 1 and dz_i/dx_y = -1. With the slope
//   s_i = (w_y / C) [z_i > 0]          (p = 1),
//   s_i = (w_y / C) 2 z_i [z_i > 0]    (p = 2),       and s_y = 0:
//   dl/dx_i = s_i (i != y),    dl/dx_y = -sum_{i != y} s_i.
// The backward is g_n times this row, g_n being the upstream gradient of sample n ('none'), or
// of the reduced loss (times 1/N for 'mean'). The second derivatives (0 for p = 1, the step for
// p = 2) are the reference's: a backward with create_graph=True hands over to it (common.h).
//
// Numerics, as the reference's:
// * The hinge argument is formed as z = x_i - theta with theta = fl(x_y - m) in the input's
//   dtype (m rounded to it first): the same bits as torch's fl(fl(m - x_y) + x_i), since
//   rounding is symmetric, so the active set agrees with torch's at exact kinks too. A NaN z is
//   no term (torch's `if (z > 0)`), an infinite one an infinite term.
// * Forward: each term max(0, z)^p in the input's dtype (as the reference), summed per row in
//   double, times w_y, and the rows' sums summed in double (more accurate than the reference's
//   float sums; the results agree to float rounding). Large inputs: fixed blocks of rows in
//   parallel, their partial sums combined in order (no dependence on the thread count).
// * Backward, rounded as torch's kernel (and the reference's eager path): with the per-term
//   factor f = fl(1/C) (fl(1/(N C)) for 'mean'), an active term's gradient is fl(fl(f w_y) g)
//   for p = 1 (fl(f g) without a weight) and fl(fl(fl(fl(2 f) z) w_y) g) for p = 2; the target's
//   own entry is -(the row's sum of the unscaled slopes), summed in double (for p = 1: the
//   number of active terms times the slope, counted in a local integer), then times g. The
//   gradient is the only tensor allocated (torch's peak); rows run in parallel when large.
#include "common.h"

#include <algorithm>
#include <optional>

namespace torchloss {

namespace {

// The row loops below select with `z > 0 ? a : 0`. Under GCC's default -ftrapping-math that
// comparison (an ordered one, which may raise FE_INVALID on NaN) keeps the selects as branches,
// which mispredict on about half the terms of a random row (~8 ns per element) and block
// vectorisation; the helpers are compiled with -fno-trapping-math instead (branch-free, SIMD:
// ~0.3 ns per element). It changes no value (torch does not read the FP exception flags).
#if defined(__GNUC__) && !defined(__clang__)
#define TORCHLOSS_SELECT_LOOP __attribute__((optimize("no-trapping-math")))
#else
#define TORCHLOSS_SELECT_LOOP
#endif

// Independent accumulators per loop ("lanes", summed in a fixed order at the end): the compiler
// vectorises across them without reassociating any sum, so results are the same on every build.
constexpr int kLanes = 8;

// sum over i in [lo, hi) of max(0, x_i - theta)^p, each term in scalar_t (NaN z -> 0), summed
// in double.
template <typename scalar_t, int P>
TORCHLOSS_SELECT_LOOP double mm_row_terms(const scalar_t* x, int64_t lo, int64_t hi, scalar_t theta) {
  double acc[kLanes] = {0};
  int64_t i = lo;
  for (; i + kLanes <= hi; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const scalar_t z = x[i + k] - theta;
      scalar_t h = z > scalar_t(0) ? z : scalar_t(0);
      if (P == 2) h = h * h;
      acc[k] += static_cast<double>(h);
    }
  }
  for (; i < hi; ++i) {
    const scalar_t z = x[i] - theta;
    scalar_t h = z > scalar_t(0) ? z : scalar_t(0);
    if (P == 2) h = h * h;
    acc[0] += static_cast<double>(h);
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// The row's loss times C: w_y sum_{i != y} max(0, z_i)^p (the target's own term left out by
// summing the two ranges around it).
template <typename scalar_t, int P>
inline double mm_row(const scalar_t* x, int64_t C, int64_t y, scalar_t m, const scalar_t* w) {
  const scalar_t theta = x[y] - m;
  const double s = mm_row_terms<scalar_t, P>(x, 0, y, theta) + mm_row_terms<scalar_t, P>(x, y + 1, C, theta);
  // the weight multiplies the positive terms only: a row without one has none to multiply (an
  // infinite or NaN w_y times its 0 would be NaN; torch's 0)
  return w == nullptr || !(s > 0) ? s : static_cast<double>(w[y]) * s;
}

// p = 1: gr_i = v [x_i - theta > 0] for every i of the row; returns the number of active i
// (the target's own i included: the caller takes it out). Per-lane counts are kept in scalar_t
// (exact up to 2^24 per lane for float) and flushed into the integer every 2^16 elements.
template <typename scalar_t>
TORCHLOSS_SELECT_LOOP int64_t mm_grad_p1(const scalar_t* x, scalar_t* gr, int64_t C, scalar_t theta, scalar_t v) {
  int64_t count = 0;
  int64_t i = 0;
  while (i + kLanes <= C) {
    scalar_t cnt[kLanes] = {0};
    const int64_t end = std::min<int64_t>(C, i + (int64_t(1) << 16));
    for (; i + kLanes <= end; i += kLanes) {
      for (int k = 0; k < kLanes; ++k) {
        const bool active = x[i + k] - theta > scalar_t(0);
        gr[i + k] = active ? v : scalar_t(0);
        cnt[k] += active ? scalar_t(1) : scalar_t(0);
      }
    }
    for (int k = 0; k < kLanes; ++k) count += static_cast<int64_t>(cnt[k]);
  }
  for (; i < C; ++i) {
    const bool active = x[i] - theta > scalar_t(0);
    gr[i] = active ? v : scalar_t(0);
    count += active;
  }
  return count;
}

// The gradient row gr of one sample (see the header): p = 1, v = the active terms' gradient.
template <typename scalar_t>
inline void mm_grad_row_p1(const scalar_t* x, scalar_t* gr, int64_t C, int64_t y, scalar_t m, scalar_t v) {
  const scalar_t theta = x[y] - m;
  int64_t count = mm_grad_p1(x, gr, C, theta, v);
  count -= (x[y] - theta > scalar_t(0));  // the target's own term is none
  // (no active term: 0, also where v is infinite or NaN, as the sum of no terms)
  gr[y] = count == 0 ? scalar_t(0) : static_cast<scalar_t>(-(static_cast<double>(count) * static_cast<double>(v)));
}

// p = 2: the unscaled slopes fl(fl(f2 z_i) w_y) of [lo, hi) into gr (w_y = 1: no weight),
// returning their sum in double.
template <typename scalar_t>
TORCHLOSS_SELECT_LOOP double mm_slopes_p2(const scalar_t* x, scalar_t* gr, int64_t lo, int64_t hi, scalar_t theta,
                                          scalar_t f2, bool weighted, scalar_t wy) {
  double acc[kLanes] = {0};
  auto slope = [=](scalar_t v) -> scalar_t {
    const scalar_t z = v - theta;
    const scalar_t s = z > scalar_t(0) ? z * f2 : scalar_t(0);
    return weighted && s > scalar_t(0) ? s * wy : s;  // (an inactive term's weight is none: inf * 0)
  };
  int64_t i = lo;
  for (; i + kLanes <= hi; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const scalar_t s = slope(x[i + k]);
      gr[i + k] = s;
      acc[k] += static_cast<double>(s);
    }
  }
  for (; i < hi; ++i) {
    const scalar_t s = slope(x[i]);
    gr[i] = s;
    acc[0] += static_cast<double>(s);
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <typename scalar_t>
inline void mm_grad_row_p2(const scalar_t* x, scalar_t* gr, int64_t C, int64_t y, scalar_t m, scalar_t f2,
                           const scalar_t* w, scalar_t g) {
  const scalar_t theta = x[y] - m;
  const bool weighted = w != nullptr;
  const scalar_t wy = weighted ? w[y] : scalar_t(1);
  const double s = mm_slopes_p2(x, gr, 0, y, theta, f2, weighted, wy) +
                   mm_slopes_p2(x, gr, y + 1, C, theta, f2, weighted, wy);
  gr[y] = static_cast<scalar_t>(-s);
  for (int64_t i = 0; i < C; ++i) gr[i] = gr[i] * g;
}

}  // namespace

struct MultiMargin : public torch::autograd::Function<MultiMargin> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            const std::optional<at::Tensor>& weight, int64_t p, double margin, int64_t reduction) {
    const bool weighted = weight.has_value() && weight->defined();
    const int64_t C = input.size(-1);
    const int64_t N = input.dim() == 2 ? input.size(0) : 1;
    const int64_t* t = target.data_ptr<int64_t>();
    for (int64_t n = 0; n < N; ++n) {
      // the functional's range check (the reference path runs it in Python), same message
      TORCH_CHECK(t[n] >= 0 && t[n] < C,
                  "multi_margin_loss: target out of range (class indices must be in [0, ", C - 1, "])");
    }
    at::Tensor out = reduction == kNone ? at::empty(target.sizes(), input.options()) : at::empty({}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_multi_margin_forward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const scalar_t* w = weighted ? weight->data_ptr<scalar_t>() : nullptr;
      const scalar_t m = static_cast<scalar_t>(margin);
      scalar_t* o = out.data_ptr<scalar_t>();
      const double dC = static_cast<double>(C);
      auto row = [&](int64_t n) -> double {
        return p == 1 ? mm_row<scalar_t, 1>(x + n * C, C, t[n], m, w) : mm_row<scalar_t, 2>(x + n * C, C, t[n], m, w);
      };
      const int64_t rpb = rows_per_block(C);
      const int64_t blocks = (N + rpb - 1) / rpb;
      if (reduction == kNone) {
        auto rows = [&](int64_t lo, int64_t hi) {
          for (int64_t n = lo; n < hi; ++n) o[n] = static_cast<scalar_t>(row(n) / dC);
        };
        if (blocks > 1) {
          at::parallel_for(0, N, rpb, rows);
        } else {
          rows(0, N);
        }
        return;
      }
      // per-block partial sums, combined in order
      auto block_sum = [&](int64_t b) -> double {
        double s = 0;
        for (int64_t n = b * rpb, e = std::min(N, (b + 1) * rpb); n < e; ++n) s += row(n);
        return s;
      };
      double total = 0;
      if (blocks > 1) {
        std::vector<double> part(blocks);
        at::parallel_for(0, blocks, 1, [&](int64_t lo, int64_t hi) {
          for (int64_t b = lo; b < hi; ++b) part[b] = block_sum(b);
        });
        for (double s : part) total += s;
      } else if (blocks == 1) {
        total = block_sum(0);
      }
      // 'mean': sum / (N C) ('mean' of nothing: 0/0 = NaN); 'sum': sum / C
      o[0] = static_cast<scalar_t>(total / (reduction == kMean ? static_cast<double>(N) * dC : dC));
    });
    if (weighted) {
      ctx->save_for_backward({input, target, *weight});
    } else {
      ctx->save_for_backward({input, target});
    }
    ctx->saved_data["p"] = p;
    ctx->saved_data["margin"] = margin;
    ctx->saved_data["reduction"] = reduction;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    constexpr size_t n_args = 6;
    if (!ctx->needs_input_grad(0)) return variable_list(n_args);
    auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& target = saved[1];
    const bool weighted = saved.size() > 2;
    const int64_t p = ctx->saved_data["p"].toInt();
    const double margin = ctx->saved_data["margin"].toDouble();
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    const at::Tensor& grad = grads[0];
    if (hand_over(grad)) {
      return reference_backward("multi_margin_loss", saved,
                                {static_cast<double>(p), margin, static_cast<double>(reduction)}, grad, n_args);
    }
    const int64_t C = input.size(-1);
    const int64_t N = input.dim() == 2 ? input.size(0) : 1;
    at::Tensor gx = at::empty(input.sizes(), input.options());  // every element is written
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_multi_margin_backward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const int64_t* t = target.data_ptr<int64_t>();
      const scalar_t* w = weighted ? saved[2].data_ptr<scalar_t>() : nullptr;
      scalar_t* g = gx.data_ptr<scalar_t>();
      const scalar_t m = static_cast<scalar_t>(margin);
      // torch's per-term factor
      const double scale = reduction == kMean ? 1.0 / static_cast<double>(std::max<int64_t>(N * C, 1))
                                              : 1.0 / static_cast<double>(C);
      const scalar_t f = static_cast<scalar_t>(scale);
      const scalar_t f2 = static_cast<scalar_t>(2 * scale);
      const at::Tensor go_t = grad.scalar_type() == input.scalar_type() ? grad : grad.to(input.scalar_type());
      const scalar_t* go = go_t.data_ptr<scalar_t>();
      const int64_t gs = reduction == kNone && go_t.dim() == 1 ? go_t.stride(0) : 0;
      auto rows = [&](int64_t lo, int64_t hi) {
        for (int64_t n = lo; n < hi; ++n) {
          const int64_t y = t[n];
          const scalar_t gn = go[n * gs];
          if (p == 1) {
            const scalar_t v = w == nullptr ? f * gn : static_cast<scalar_t>(f * w[y]) * gn;
            mm_grad_row_p1(x + n * C, g + n * C, C, y, m, v);
          } else {
            mm_grad_row_p2(x + n * C, g + n * C, C, y, m, f2, w, gn);
          }
        }
      };
      const int64_t rpb = rows_per_block(C);
      if (N > rpb) {
        at::parallel_for(0, N, rpb, rows);
      } else {
        rows(0, N);
      }
    });
    variable_list out(n_args);
    out[0] = gx;
    return out;
  }
};

at::Tensor multi_margin_loss(const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& weight,
                             int64_t p, double margin, int64_t reduction) {
  check_float_cpu(input, "input");
  TORCH_CHECK((input.dim() == 1 || input.dim() == 2) && input.size(-1) > 0 && input.is_contiguous(),
              "torchloss native: multi_margin_loss expects a contiguous (N, C) or (C) input with C > 0");
  const int64_t N = input.dim() == 2 ? input.size(0) : 1;
  TORCH_CHECK(target.dim() <= 1 && target.scalar_type() == at::kLong && target.device().is_cpu() &&
                  target.is_contiguous() && target.numel() == N,
              "torchloss native: multi_margin_loss expects a contiguous (N,) int64 target");
  if (weight.has_value() && weight->defined()) {
    TORCH_CHECK(weight->dim() == 1 && weight->size(0) == input.size(-1) && weight->is_contiguous() &&
                    weight->scalar_type() == input.scalar_type() && weight->device().is_cpu(),
                "torchloss native: multi_margin_loss expects a contiguous (C) weight of the input's dtype");
  }
  TORCH_CHECK(p == 1 || p == 2, "torchloss native: multi_margin_loss expects p = 1 or 2");
  TORCH_CHECK(reduction == kNone || reduction == kMean || reduction == kSum,
              "torchloss native: unknown reduction ", reduction);
  return MultiMargin::apply(input, target, weight, p, margin, reduction);
}

void register_margin(py::module& m) {
  m.def("multi_margin_loss", &multi_margin_loss,
        "multi-class hinge loss: (N, C) or (C) input, int64 target, optional (C) weight, p, margin, reduction code",
        py::arg("input"), py::arg("target"), py::arg("weight"), py::arg("p"), py::arg("margin"),
        py::arg("reduction"));
}

}  // namespace torchloss
