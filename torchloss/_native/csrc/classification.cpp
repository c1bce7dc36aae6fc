// Plain negative log-likelihood: l_n = -x[n, t_n] for a contiguous (N, C) input and an (N,)
// int64 target with every t_n in [0, C) (the Python side routes weights, ignore_index and other
// layouts to the reference, as torchloss.functional's plain NLL path does).
//
// Gradient: dl_n/dx[n, c] = -[c = t_n]; scaled by the upstream gradient (and 1/N for 'mean'),
// it is scattered into zeros.
#include "common.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace torchloss {

struct NLLPlain : public torch::autograd::Function<NLLPlain> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            int64_t reduction) {
    const int64_t N = input.size(0), C = input.size(1);
    at::Tensor out = reduction == kNone ? at::empty({N}, input.options()) : at::empty({}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_nll_forward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const int64_t* t = target.data_ptr<int64_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      double total = 0;
      for (int64_t n = 0; n < N; ++n) {
        const int64_t k = t[n];
        TORCH_CHECK(k >= 0 && k < C, "Target ", k, " is out of bounds.");
        if (reduction == kNone) {
          o[n] = -x[n * C + k];
        } else {
          total += x[n * C + k];
        }
      }
      if (reduction == kMean) o[0] = static_cast<scalar_t>(-total / static_cast<double>(N));
      if (reduction == kSum) o[0] = static_cast<scalar_t>(-total);
    });
    ctx->save_for_backward({input, target});
    ctx->saved_data["reduction"] = reduction;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& target = saved[1];
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    const at::Tensor& grad = grads[0];
    if (!ctx->needs_input_grad(0)) return {at::Tensor(), at::Tensor(), at::Tensor()};
    if (hand_over(grad)) {
      return reference_backward("nll_loss", {input, target}, {static_cast<double>(reduction)}, grad, 3);
    }
    const int64_t N = input.size(0), C = input.size(1);
    at::Tensor gx = at::zeros({N, C}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_nll_backward", [&] {
      const int64_t* t = target.data_ptr<int64_t>();
      scalar_t* g = gx.data_ptr<scalar_t>();
      if (reduction == kNone) {
        const scalar_t* go = grad.data_ptr<scalar_t>();
        const int64_t s = grad.stride(0);
        for (int64_t n = 0; n < N; ++n) g[n * C + t[n]] = -go[n * s];
      } else {
        // 'mean': -(g/N) in scalar_t, rounded as torch rounds it
        const scalar_t g0 = *grad.data_ptr<scalar_t>();
        const scalar_t v = reduction == kMean ? -(g0 / static_cast<scalar_t>(N)) : -g0;
        for (int64_t n = 0; n < N; ++n) g[n * C + t[n]] = v;
      }
    });
    return {gx, at::Tensor(), at::Tensor()};
  }
};

at::Tensor nll_loss(const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
  check_float_cpu(input, "input");
  TORCH_CHECK(input.dim() == 2 && input.is_contiguous(), "torchloss native: nll_loss expects a contiguous (N, C) input");
  TORCH_CHECK(target.dim() == 1 && target.scalar_type() == at::kLong && target.is_contiguous() &&
                  target.size(0) == input.size(0),
              "torchloss native: nll_loss expects a contiguous (N,) int64 target");
  return NLLPlain::apply(input, target, reduction);
}


// ============================================================================================
// Plain cross entropy of logits: a contiguous (N, C) input x and an (N,) int64 target with every
// t_n in [0, C) (no weight, no label smoothing, no ignored target: the cases of the Python
// reference CrossEntropyPlainFunction; everything else runs the reference).
//
// Forward, per row n, with the row maximum m_n and S_n = sum_k exp(x[n, k] - m_n):
//
//     l_n = -log p[n, t_n] = log S_n - (x[n, t_n] - m_n)
//
// formed as the log-softmax is formed, (x_t - m) - log S, and not as logsumexp(x) - x_t: when one
// logit dominates, the loss is tiny while logsumexp is large, and rounding the large value first
// would lose it (see _log_softmax in torchloss/_autograd/classification.py). The exponentials are
// taken in the input's dtype (as torch's softmax kernels do; float32 by a vectorisable polynomial
// exp of about 1 ulp, see ce_exp) and summed in double, as are the sums of 'mean' and 'sum'
// (fixed lanes within a row, fixed blocks of rows combined in order: independent of the thread
// count and the machine).
//
// Gradient: with the softmax s[n, c] = exp(x[n, c] - m_n) / S_n,
//
//     dl_n/dx[n, c] = s[n, c] - [c = t_n]
//
// (d log S_n / dx[n, c] = s[n, c]; d x[n, t_n] / dx[n, c] = [c = t_n]; m_n cancels), scaled by the
// upstream gradient g_n ('none'), g ('sum') or g / N ('mean', divided in the input's dtype as
// the reference divides it).
//
// Saved for backward: the input and the target only (torch saves its N x C log-softmax and the
// target: the same bytes). The backward recomputes m_n and S_n per row: the exponentials are
// written straight into the gradient buffer (the only allocation), summed, and then scaled in
// place while the row is still in cache -- softmax as torch forms it, e * (1 / S), then
// (s - [c = t]) * coef as the reference does.
// ============================================================================================

namespace {

// The row loops below are written for the compiler to vectorise (-O3; one clone per ISA): lanes of
// independent accumulators (fixed, so the sums are the same on every machine and thread count)
// and an exp without calls or branches. no-trapping-math lets the compiler turn their selects
// into vector blends; it changes no result (it only stops the compiler from assuming that a
// comparison may trap).
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")

constexpr int kLanes = 16;

// exp(x) for x = x_c - m <= 0 (or NaN), float: exp_nonpositive (common.h).
inline float ce_exp(float x) { return exp_nonpositive(x); }
// double: the C library's exp (float64 is the precise path, not the fast one).
inline double ce_exp(double x) { return std::exp(x); }

// The maximum of a row. `v > m ? v : m` skips a NaN unless it is the first element; either way
// a NaN logit makes S (and so the loss and the gradient of its row) NaN, as in torch.
template <typename scalar_t>
__attribute__((always_inline)) inline scalar_t ce_row_max_impl(const scalar_t* x, int64_t C) {
  scalar_t m[kLanes];
  for (int j = 0; j < kLanes; ++j) m[j] = x[0];
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes)
    for (int j = 0; j < kLanes; ++j) m[j] = x[c + j] > m[j] ? x[c + j] : m[j];
  scalar_t r = m[0];
  for (int j = 1; j < kLanes; ++j) r = m[j] > r ? m[j] : r;
  for (; c < C; ++c) r = x[c] > r ? x[c] : r;
  return r;
}

// S = sum_c exp(x_c - m), the exponentials in scalar_t, summed in double.
template <typename scalar_t>
__attribute__((always_inline)) inline double ce_row_sum_exp_impl(const scalar_t* x, int64_t C, scalar_t m) {
  double acc[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += static_cast<double>(ce_exp(x[c + j] - m));
  double S = 0;
  for (int j = 0; j < kLanes; ++j) S += acc[j];
  for (; c < C; ++c) S += static_cast<double>(ce_exp(x[c] - m));
  return S;
}

// e_c = exp(x_c - m) written to `e`; returns their sum (the same sum as ce_row_sum_exp).
template <typename scalar_t>
__attribute__((always_inline)) inline double ce_row_exp_impl(const scalar_t* __restrict x, scalar_t* __restrict e, int64_t C, scalar_t m) {
  for (int64_t c = 0; c < C; ++c) e[c] = ce_exp(x[c] - m);
  double acc[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += static_cast<double>(e[c + j]);
  double S = 0;
  for (int j = 0; j < kLanes; ++j) S += acc[j];
  for (; c < C; ++c) S += static_cast<double>(e[c]);
  return S;
}

// e_c <- (e_c * inv) * coef: the softmax as torch forms it (times 1/S), then scaled.
template <typename scalar_t>
__attribute__((always_inline)) inline void ce_row_scale_impl(scalar_t* e, int64_t C, scalar_t inv, scalar_t coef) {
  for (int64_t c = 0; c < C; ++c) e[c] = (e[c] * inv) * coef;
}

// The row loops, compiled for AVX-512, AVX2 and the baseline, picked at load time for this CPU
// (the same results on each: the lanes are fixed, there is no FMA contraction).
#define TORCHLOSS_CE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
TORCHLOSS_CE_CLONES float ce_row_max(const float* x, int64_t C) { return ce_row_max_impl(x, C); }
TORCHLOSS_CE_CLONES double ce_row_sum_exp(const float* x, int64_t C, float m) { return ce_row_sum_exp_impl(x, C, m); }
TORCHLOSS_CE_CLONES double ce_row_exp(const float* __restrict x, float* __restrict e, int64_t C, float m) {
  return ce_row_exp_impl(x, e, C, m);
}
TORCHLOSS_CE_CLONES void ce_row_scale(float* e, int64_t C, float inv, float coef) { ce_row_scale_impl(e, C, inv, coef); }
#undef TORCHLOSS_CE_CLONES
double ce_row_max(const double* x, int64_t C) { return ce_row_max_impl(x, C); }
double ce_row_sum_exp(const double* x, int64_t C, double m) { return ce_row_sum_exp_impl(x, C, m); }
double ce_row_exp(const double* __restrict x, double* __restrict e, int64_t C, double m) {
  return ce_row_exp_impl(x, e, C, m);
}
void ce_row_scale(double* e, int64_t C, double inv, double coef) { ce_row_scale_impl(e, C, inv, coef); }

#pragma GCC pop_options

// log p[t] of one row: (x_t - m) - log S.
template <typename scalar_t>
inline double ce_row_log_prob(const scalar_t* x, int64_t C, int64_t t) {
  const scalar_t m = ce_row_max(x, C);
  const double S = ce_row_sum_exp(x, C, m);
  return static_cast<double>(x[t] - m) - std::log(S);
}

}  // namespace

struct CrossEntropyPlain : public torch::autograd::Function<CrossEntropyPlain> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            int64_t reduction) {
    const int64_t N = input.size(0), C = input.size(1);
    const int64_t* t = target.data_ptr<int64_t>();
    // every target first (cheap, serial): an out-of-range one raises before any work, and the
    // caller falls back on the reference (which raises torch's error or ignores it)
    for (int64_t n = 0; n < N; ++n) {
      TORCH_CHECK(t[n] >= 0 && t[n] < C, "Target ", t[n], " is out of bounds.");
    }
    at::Tensor out = reduction == kNone ? at::empty({N}, input.options()) : at::empty({}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_cross_entropy_forward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      const int64_t rows = rows_per_block(C);
      const int64_t blocks = (N + rows - 1) / rows;
      if (reduction == kNone) {
        at::parallel_for(0, N, rows, [&](int64_t begin, int64_t end) {
          for (int64_t n = begin; n < end; ++n) o[n] = static_cast<scalar_t>(-ce_row_log_prob(x + n * C, C, t[n]));
        });
        return;
      }
      double total = 0;
      if (blocks == 1) {
        for (int64_t n = 0; n < N; ++n) total += ce_row_log_prob(x + n * C, C, t[n]);
      } else {
        std::vector<double> partial(blocks, 0.0);
        at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
          for (int64_t b = begin; b < end; ++b) {
            double s = 0;
            const int64_t stop = std::min(N, (b + 1) * rows);
            for (int64_t n = b * rows; n < stop; ++n) s += ce_row_log_prob(x + n * C, C, t[n]);
            partial[b] = s;
          }
        });
        for (double s : partial) total += s;
      }
      o[0] = static_cast<scalar_t>(reduction == kMean ? -total / static_cast<double>(N) : -total);
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
      return reference_backward("cross_entropy", {input, target}, {static_cast<double>(reduction)}, grad, 3);
    }
    const int64_t N = input.size(0), C = input.size(1);
    at::Tensor gx = at::empty({N, C}, input.options());  // every element is written
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_cross_entropy_backward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const int64_t* t = target.data_ptr<int64_t>();
      scalar_t* gp = gx.data_ptr<scalar_t>();
      const scalar_t* go = grad.data_ptr<scalar_t>();
      const int64_t gs = reduction == kNone ? grad.stride(0) : 0;
      // 'mean': g / N in scalar_t, rounded as the reference rounds it
      const scalar_t c0 = reduction == kNone ? scalar_t(0) : reduction == kMean ? go[0] / static_cast<scalar_t>(N) : go[0];
      at::parallel_for(0, N, rows_per_block(C), [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          const scalar_t* xr = x + n * C;
          scalar_t* gr = gp + n * C;
          const scalar_t coef = reduction == kNone ? go[n * gs] : c0;
          const scalar_t m = ce_row_max(xr, C);
          const double S = ce_row_exp(xr, gr, C, m);
          const scalar_t inv = static_cast<scalar_t>(1.0 / S);
          const int64_t k = t[n];
          const scalar_t ek = gr[k];
          ce_row_scale(gr, C, inv, coef);
          gr[k] = (ek * inv - scalar_t(1)) * coef;
        }
      });
    });
    return {gx, at::Tensor(), at::Tensor()};
  }
};

at::Tensor cross_entropy(const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
  check_float_cpu(input, "input");
  TORCH_CHECK(input.dim() == 2 && input.is_contiguous() && input.size(0) > 0,
              "torchloss native: cross_entropy expects a contiguous, non-empty (N, C) input");
  TORCH_CHECK(target.dim() == 1 && target.scalar_type() == at::kLong && target.is_contiguous() &&
                  target.size(0) == input.size(0),
              "torchloss native: cross_entropy expects a contiguous (N,) int64 target");
  TORCH_CHECK(reduction == kNone || reduction == kMean || reduction == kSum,
              "torchloss native: cross_entropy: unknown reduction ", reduction);
  return CrossEntropyPlain::apply(input, target, reduction);
}

// ============================================================================================
// Cross entropy of logits and class indices with class weights, ignore_index and label smoothing,
// and weighted NLL (issue 15): the cases of the Python reference CrossEntropyLossFunction and
// NLLLossFunction for a contiguous (N, C) input, an (N,) int64 target and a (C,) weight of the
// input's dtype (or none). Per row n with target t_n, valid_n = [t_n != ignore_index],
// w_t = valid_n w[t_n] (1 without a weight), W = sum_c w_c and log p_c = (x_c - m) - log S:
//
//   cross entropy:  l_n = valid_n [(1 - eps) w_t (-log p_t) + (eps / C) sum_c w_c (-log p_c)]
//   NLL:            l_n = -w_t x[n, t_n]
//
// 'mean' divides the sum by D = sum_n w_t (torch's rule, also for the smoothing term). Gradient,
// with a_n the upstream gradient of row n (g_n, g, or g / D' for 'mean', D' = D plus 1 when no
// target is valid, as the reference's _safe_total) and a_n = 0 where ignored:
//
//   cross entropy:  dl/dx_c = s_c [(1 - eps) w_t + (eps / C) W] a_n - (1 - eps) w_t a_n [c = t]
//                             - (eps / C) w_c a_n
//   NLL:            dl/dx[n, t_n] = -w_t a_n
//
// (the reference's backward: one scaled softmax, the target's correction, the smoothing term).
// A target outside [0, C) that is not ignore_index raises (the caller falls back on the
// reference, which raises torch's IndexError). Saved: the input, the target and the weight, as
// the reference. Sums in double (fixed order: thread-count independent).
// ============================================================================================

namespace {

// valid_n, and w_t; raises for a target out of range.
template <typename scalar_t>
inline void general_targets(const int64_t* t, const scalar_t* w, int64_t N, int64_t C, int64_t ignore_index,
                            std::vector<scalar_t>& wt) {
  wt.resize(N);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t k = t[n];
    if (k == ignore_index) {
      wt[n] = scalar_t(0);
      continue;
    }
    TORCH_CHECK(k >= 0 && k < C, "Target ", k, " is out of bounds.");
    wt[n] = w != nullptr ? w[k] : scalar_t(1);
  }
}

// The per-row coefficient a_n of the backward (see above).
template <typename scalar_t>
inline std::vector<scalar_t> general_coefficients(const at::Tensor& grad, const int64_t* t, const std::vector<scalar_t>& wt,
                                                  int64_t N, int64_t ignore_index, int64_t reduction) {
  std::vector<scalar_t> a(N);
  const scalar_t* go = grad.data_ptr<scalar_t>();
  if (reduction == kNone) {
    const int64_t gs = grad.dim() > 0 ? grad.stride(0) : 0;
    for (int64_t n = 0; n < N; ++n) a[n] = t[n] == ignore_index ? scalar_t(0) : go[n * gs];
    return a;
  }
  scalar_t g = go[0];
  if (reduction == kMean) {
    // D' in scalar_t, summed as the reference sums it (in double here, then rounded)
    double D = 0;
    bool any = false;
    for (int64_t n = 0; n < N; ++n) {
      D += static_cast<double>(wt[n]);
      any = any || t[n] != ignore_index;
    }
    g = g / static_cast<scalar_t>(any ? D : D + 1.0);
  }
  for (int64_t n = 0; n < N; ++n) a[n] = t[n] == ignore_index ? scalar_t(0) : g;
  return a;
}

// `grad` in the dtype of `input` (no dispatch when it already is: the usual case).
inline at::Tensor in_dtype(const at::Tensor& grad, const at::Tensor& input) {
  return grad.scalar_type() == input.scalar_type() ? grad : grad.to(input.scalar_type());
}

// 'mean' or 'sum' of the per-row losses l. With label smoothing, torch divides its two terms by
// D separately, so a D of 0 gives NaN (the first term's 0/0) even where the smoothing term's sum
// is not 0 (`smoothing`: cross entropy with eps > 0).
template <typename scalar_t>
inline scalar_t general_reduce(const std::vector<double>& l, const std::vector<scalar_t>& wt, int64_t reduction,
                               bool smoothing = false) {
  double total = 0, D = 0;
  for (size_t n = 0; n < l.size(); ++n) {
    total += l[n];
    D += static_cast<double>(wt[n]);
  }
  if (reduction != kMean) return static_cast<scalar_t>(total);
  if (smoothing && D == 0) return std::numeric_limits<scalar_t>::quiet_NaN();
  return static_cast<scalar_t>(total / D);
}

// What the forward of a weighted kernel (CrossEntropyWeighted, NLLWeighted) saves and its
// backward reads: the input, the target, the weight (undefined when absent: the forward gets an
// empty tensor, see cross_entropy_weighted), the reduction, ignore_index and, for cross entropy,
// the label smoothing (negative: none, NLL).
struct WeightedSaved {
  at::Tensor input, target, weight;
  int64_t reduction = kMean, ignore_index = -100;
  double smoothing = -1;

  static void save(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target, const at::Tensor& weight,
                   int64_t reduction, int64_t ignore_index, double smoothing = -1) {
    if (weight.numel() > 0) ctx->save_for_backward({input, target, weight});
    else ctx->save_for_backward({input, target});
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["ignore_index"] = ignore_index;
    if (smoothing >= 0) ctx->saved_data["smoothing"] = smoothing;
  }

  static WeightedSaved load(AutogradContext* ctx) {
    WeightedSaved r;
    auto saved = ctx->get_saved_variables();
    r.input = saved[0];
    r.target = saved[1];
    if (saved.size() > 2) r.weight = saved[2];
    r.reduction = ctx->saved_data["reduction"].toInt();
    r.ignore_index = ctx->saved_data["ignore_index"].toInt();
    if (ctx->saved_data.count("smoothing")) r.smoothing = ctx->saved_data["smoothing"].toDouble();
    return r;
  }

  // The backward of the Python reference `name` at these saved values (see hand_over).
  variable_list reference(const char* name, const at::Tensor& grad, size_t n_args) const {
    std::vector<at::Tensor> tensors = {input, target};
    if (weight.defined()) tensors.push_back(weight);
    std::vector<double> scalars = {static_cast<double>(reduction), static_cast<double>(ignore_index)};
    if (smoothing >= 0) scalars.push_back(smoothing);
    return reference_backward(name, tensors, scalars, grad, n_args);
  }
};

}  // namespace

struct CrossEntropyWeighted : public torch::autograd::Function<CrossEntropyWeighted> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            const at::Tensor& weight, int64_t reduction, int64_t ignore_index, double smoothing) {
    const int64_t N = input.size(0), C = input.size(1);
    const int64_t* t = target.data_ptr<int64_t>();
    const bool has_w = weight.numel() > 0;  // (an empty tensor: no weight; see cross_entropy_weighted)
    at::Tensor out = reduction == kNone ? at::empty({N}, input.options()) : at::empty({}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_cross_entropy_weighted_forward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const scalar_t* w = has_w ? weight.data_ptr<scalar_t>() : nullptr;
      std::vector<scalar_t> wt;
      general_targets(t, w, N, C, ignore_index, wt);
      const double eps = smoothing, keep = 1.0 - smoothing;
      std::vector<double> l(N);
      at::parallel_for(0, N, rows_per_block(C), [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          if (t[n] == ignore_index) {
            l[n] = 0;
            continue;
          }
          const scalar_t* xr = x + n * C;
          const scalar_t m = ce_row_max(xr, C);
          const double logS = std::log(ce_row_sum_exp(xr, C, m));
          double v = keep * static_cast<double>(wt[n]) * (logS - static_cast<double>(xr[t[n]] - m));
          if (eps > 0) {
            double sm = 0;  // sum_c w_c (-log p_c), each term formed before the sum
            for (int64_t c = 0; c < C; ++c) {
              const double nl = logS - static_cast<double>(xr[c] - m);
              sm += w != nullptr ? static_cast<double>(w[c]) * nl : nl;
            }
            v += eps / static_cast<double>(C) * sm;
          }
          l[n] = v;
        }
      });
      if (reduction == kNone) {
        scalar_t* o = out.data_ptr<scalar_t>();
        for (int64_t n = 0; n < N; ++n) o[n] = static_cast<scalar_t>(l[n]);
      } else {
        *out.data_ptr<scalar_t>() = general_reduce(l, wt, reduction, eps > 0);
      }
    });
    WeightedSaved::save(ctx, input, target, weight, reduction, ignore_index, smoothing);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const size_t n_args = 6;
    if (!ctx->needs_input_grad(0)) return variable_list(n_args);
    const WeightedSaved sv = WeightedSaved::load(ctx);
    const at::Tensor &input = sv.input, &target = sv.target, &weight = sv.weight;
    const int64_t reduction = sv.reduction, ignore_index = sv.ignore_index;
    const double eps = sv.smoothing;
    const at::Tensor& grad = grads[0];
    if (hand_over(grad)) return sv.reference("cross_entropy_weighted", grad, n_args);
    const int64_t N = input.size(0), C = input.size(1);
    at::Tensor gx = at::empty({N, C}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_cross_entropy_weighted_backward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const int64_t* t = target.data_ptr<int64_t>();
      const scalar_t* w = weight.defined() ? weight.data_ptr<scalar_t>() : nullptr;
      std::vector<scalar_t> wt;
      general_targets(t, w, N, C, ignore_index, wt);
      const std::vector<scalar_t> a = general_coefficients(in_dtype(grad, input), t, wt, N, ignore_index, reduction);
      double W = 0;
      if (w != nullptr) {
        for (int64_t c = 0; c < C; ++c) W += static_cast<double>(w[c]);
      }
      const scalar_t keep = static_cast<scalar_t>(1.0 - eps);
      const scalar_t eps_c = static_cast<scalar_t>(eps / static_cast<double>(C));
      const scalar_t smooth_s = w != nullptr ? static_cast<scalar_t>(eps / static_cast<double>(C) * W)
                                             : static_cast<scalar_t>(eps);
      scalar_t* gp = gx.data_ptr<scalar_t>();
      at::parallel_for(0, N, rows_per_block(C), [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          const scalar_t* xr = x + n * C;
          scalar_t* gr = gp + n * C;
          const scalar_t an = a[n];
          const scalar_t a_target = eps > 0 ? keep * (an * wt[n]) : an * wt[n];
          const scalar_t a_soft = eps > 0 ? a_target + an * smooth_s : a_target;
          const scalar_t m = ce_row_max(xr, C);
          const double S = ce_row_exp(xr, gr, C, m);
          const scalar_t inv = static_cast<scalar_t>(1.0 / S);
          ce_row_scale(gr, C, inv, a_soft);
          if (t[n] != ignore_index) gr[t[n]] -= a_target;
          if (eps > 0) {
            const scalar_t k = eps_c * an;
            if (w != nullptr) {
              for (int64_t c = 0; c < C; ++c) gr[c] -= k * w[c];
            } else {
              for (int64_t c = 0; c < C; ++c) gr[c] -= k;
            }
          }
        }
      });
    });
    variable_list result(n_args);
    result[0] = gx;
    return result;
  }
};

struct NLLWeighted : public torch::autograd::Function<NLLWeighted> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            const at::Tensor& weight, int64_t reduction, int64_t ignore_index) {
    const int64_t N = input.size(0), C = input.size(1);
    const int64_t* t = target.data_ptr<int64_t>();
    const bool has_w = weight.numel() > 0;
    at::Tensor out = reduction == kNone ? at::empty({N}, input.options()) : at::empty({}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_nll_weighted_forward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const scalar_t* w = has_w ? weight.data_ptr<scalar_t>() : nullptr;
      std::vector<scalar_t> wt;
      general_targets(t, w, N, C, ignore_index, wt);
      if (reduction == kNone) {
        scalar_t* o = out.data_ptr<scalar_t>();
        for (int64_t n = 0; n < N; ++n) o[n] = t[n] == ignore_index ? scalar_t(0) : -(wt[n] * x[n * C + t[n]]);
        return;
      }
      std::vector<double> l(N);
      for (int64_t n = 0; n < N; ++n)
        l[n] = t[n] == ignore_index ? 0.0 : -static_cast<double>(wt[n] * x[n * C + t[n]]);
      *out.data_ptr<scalar_t>() = general_reduce(l, wt, reduction);
    });
    WeightedSaved::save(ctx, input, target, weight, reduction, ignore_index);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const size_t n_args = 5;
    if (!ctx->needs_input_grad(0)) return variable_list(n_args);
    const WeightedSaved sv = WeightedSaved::load(ctx);
    const at::Tensor &input = sv.input, &target = sv.target, &weight = sv.weight;
    const int64_t reduction = sv.reduction, ignore_index = sv.ignore_index;
    const at::Tensor& grad = grads[0];
    if (hand_over(grad)) return sv.reference("nll_weighted", grad, n_args);
    const int64_t N = input.size(0), C = input.size(1);
    at::Tensor gx = at::zeros({N, C}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_nll_weighted_backward", [&] {
      const int64_t* t = target.data_ptr<int64_t>();
      const scalar_t* w = weight.defined() ? weight.data_ptr<scalar_t>() : nullptr;
      std::vector<scalar_t> wt;
      general_targets(t, w, N, C, ignore_index, wt);
      const std::vector<scalar_t> a = general_coefficients(in_dtype(grad, input), t, wt, N, ignore_index, reduction);
      scalar_t* g = gx.data_ptr<scalar_t>();
      for (int64_t n = 0; n < N; ++n) {
        if (t[n] != ignore_index) g[n * C + t[n]] = -(a[n] * wt[n]);
      }
    });
    variable_list result(n_args);
    result[0] = gx;
    return result;
  }
};

namespace {
void check_general(const at::Tensor& input, const at::Tensor& target, const c10::optional<at::Tensor>& weight,
                   int64_t reduction, const char* name) {
  check_float_cpu(input, "input");
  // (C = 0: every target is ignored, and the reference returns the empty call's result)
  TORCH_CHECK(input.dim() == 2 && input.is_contiguous() && input.numel() > 0, "torchloss native: ", name,
              " expects a contiguous, non-empty (N, C) input");
  TORCH_CHECK(target.dim() == 1 && target.scalar_type() == at::kLong && target.is_contiguous() &&
                  target.size(0) == input.size(0),
              "torchloss native: ", name, " expects a contiguous (N,) int64 target");
  if (weight.has_value() && weight->defined()) {
    TORCH_CHECK(weight->dim() == 1 && weight->size(0) == input.size(1) && weight->is_contiguous() &&
                    weight->scalar_type() == input.scalar_type() && weight->device().is_cpu(),
                "torchloss native: ", name, " expects a contiguous (C,) weight of the input's dtype");
  }
  TORCH_CHECK(reduction == kNone || reduction == kMean || reduction == kSum, "torchloss native: ", name,
              ": unknown reduction ", reduction);
}
}  // namespace

at::Tensor cross_entropy_weighted(const at::Tensor& input, const at::Tensor& target, const c10::optional<at::Tensor>& weight,
                                  int64_t reduction, int64_t ignore_index, double smoothing) {
  check_general(input, target, weight, reduction, "cross_entropy_weighted");
  TORCH_CHECK(smoothing >= 0 && smoothing <= 1, "torchloss native: label smoothing outside [0, 1]");
  // no weight: an empty tensor (an undefined one is no argument of a C++ Function's apply)
  const bool has_w = weight.has_value() && weight->defined();
  return CrossEntropyWeighted::apply(input, target, has_w ? *weight : at::empty({0}, input.options()), reduction,
                                     ignore_index, smoothing);
}

at::Tensor nll_weighted(const at::Tensor& input, const at::Tensor& target, const c10::optional<at::Tensor>& weight,
                        int64_t reduction, int64_t ignore_index) {
  check_general(input, target, weight, reduction, "nll_weighted");
  const bool has_w = weight.has_value() && weight->defined();
  return NLLWeighted::apply(input, target, has_w ? *weight : at::empty({0}, input.options()), reduction, ignore_index);
}

void register_classification(py::module& m) {
  m.def("cross_entropy_weighted", &cross_entropy_weighted,
        "cross entropy of logits: (N, C) input, (N,) int64 target, (C,) weight or None, reduction code, ignore_index, "
        "label smoothing");
  m.def("nll_weighted", &nll_weighted,
        "NLL: (N, C) input, (N,) int64 target, (C,) weight or None, reduction code, ignore_index");
  m.def("nll_loss", &nll_loss, "plain NLL: (N, C) input, (N,) int64 target, reduction code");
  m.def("cross_entropy", &cross_entropy,
        "plain cross entropy of logits: (N, C) input, (N,) int64 target, reduction code");
}

}  // namespace torchloss
