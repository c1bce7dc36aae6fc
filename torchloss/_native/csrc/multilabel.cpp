// Multi-label hinge loss (multilabel_margin_loss) of a contiguous (N, C) or (C) float/double
// input and an int64 target of the same shape: row n lists its label classes t_1, t_2, ... up to
// the first -1 (the entries after it are ignored, but every entry must lie in [-1, C-1]).
//
//   l_n = 1/C  sum_{k in K} sum_{i not in J} max(0, z_ki),   z_ki = 1 - x_{t_k} + x_i,
//
// K the positions before the terminator, J = {t_k : k in K} the label set (a label listed twice
// is two positions and counts twice). 'none' gives (N,) (or () for a (C) input), 'sum' sum_n l_n,
// 'mean' sum_n l_n / N.
//
// Active pairs (as the Python reference, MultiLabelMarginLossFunction): the pair (k, i) is active
// iff z_ki > 0 strictly, z formed in torch's order (1 - x_c) + x_i; since rounding is monotonic
// and symmetric, that holds iff x_i > theta_k = fl(x_{t_k} - 1), compared exactly in the input's
// dtype (theta is computed in scalar_t, not in double). A NaN score is in no active pair.
//
// Gradient: with a_i = #{k in K : x_i > theta_k} for a non-label i and G_k = #{i not in J :
// x_i > theta_k} for a position k, and dz_ki/dx_i = 1, dz_ki/dx_{t_k} = -1:
//
//   C dl/dx_i = k_i = a_i (i not in J),   C dl/dx_c = k_c = -sum_{k: t_k = c} G_k (c in J),
//
// integers, counted exactly. The backward writes g_n * (k_i / C), rounded as the reference
// rounds it: fl(k / C) in scalar_t (k converted exactly), times g_n = g (or fl(g / N) for 'mean',
// the upstream gradient of row n for 'none'). Summing z over the active pairs, each non-label i
// appears a_i times and each position k G_k times, so
//
//   C l_n = sum_i a_i (1 + x_i) - sum_k G_k x_{t_k} = sum_{c: k_c != 0} max(k_c, 0) + k_c x_c,
//
// evaluated in double as the reference does (exact products for float32 scores; a class with
// k_c = 0, whose score may be infinite or NaN, adds nothing, as the reference's nansum skips it).
//
// Counting, per row, into a per-thread buffer of C int32 (no tensor of input size is allocated
// besides the output and, in backward, the gradient; the inputs alone are saved, where torch
// also saves an (N, C) is_target):
// * few positions (linear_passes: L <= max(64, C/4)): for each position, one vectorised pass
//   over the scores with the labels' scores replaced by -inf (above no threshold): O(L C), as
//   torch's kernel.
// * more: the positions' thresholds sorted once, then each non-label's a_i by a binary search
//   (the number of thresholds strictly below its score) and the G_k by suffix sums of those
//   counts: O((C + L) log L), so a row of many labels is not quadratic.
// Both give the same integers. The backward recounts (O(L C) again) instead of saving counts.
//
// Target values are checked here (every entry in [-1, C-1]) with the functional's message, so
// the Python side skips its range read when it calls this kernel.
#include "common.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <utility>

namespace torchloss {

namespace {

// Whether a row of L positions among C classes is counted by the per-position linear passes
// (else by the sorted thresholds): the passes are vectorised, the binary searches are not, and
// measured (float32, C = 1024) the passes win up to L of about C/4; for C <= 64, at any L.
inline bool linear_passes(int64_t L, int64_t C) { return L <= 64 || 4 * L <= C; }
// The counts are int32: |k_c| <= (C - |J| + 1)(C - |J|) < C^2 must fit.
constexpr int64_t kMaxClasses = 46340;

// Per-thread scratch of one row.
template <typename scalar_t>
struct RowScratch {
  std::vector<scalar_t> xs;                          // scores, labels' set to -inf
  std::vector<int32_t> k;                            // the counts k_c
  std::vector<std::pair<scalar_t, int64_t>> thr;     // (theta_k, t_k), sorted path only
  std::vector<scalar_t> th;                          // sorted thresholds
  std::vector<int32_t> cnt;                          // non-labels per insertion point
  explicit RowScratch(int64_t C) : xs(C), k(C) {}
};

// The number of the M sorted thresholds th strictly below v (std::lower_bound's index), without
// branches on the comparisons (a binary search's branches are unpredictable).
template <typename scalar_t>
inline int32_t lower_bound(const scalar_t* th, int64_t M, scalar_t v) {
  if (M == 0) return 0;
  const scalar_t* base = th;
  int64_t n = M;
  while (n > 1) {
    const int64_t half = n / 2;
    base = base[half - 1] < v ? base + half : base;
    n -= half;
  }
  return static_cast<int32_t>(base - th) + (*base < v);
}

// The counts k of one row into s.k; false (and nothing counted) when a target entry lies outside
// [-1, C-1].
template <typename scalar_t>
bool row_counts(const scalar_t* x, const int64_t* t, int64_t C, RowScratch<scalar_t>& s) {
  bool bad = false;
  for (int64_t i = 0; i < C; ++i) bad |= (t[i] < -1) | (t[i] >= C);
  if (bad) return false;
  int64_t L = 0;
  while (L < C && t[L] >= 0) ++L;
  scalar_t* xs = s.xs.data();
  int32_t* k = s.k.data();
  std::copy(x, x + C, xs);
  for (int64_t j = 0; j < L; ++j) xs[t[j]] = -std::numeric_limits<scalar_t>::infinity();
  if (linear_passes(L, C)) {
    std::fill(k, k + C, 0);
    for (int64_t j = 0; j < L; ++j) {
      const scalar_t theta = x[t[j]] - scalar_t(1);  // fl(x_c - 1) in scalar_t
      int32_t G = 0;
      for (int64_t i = 0; i < C; ++i) {
        const int32_t active = xs[i] > theta;  // false for NaN, for labels (-inf)
        k[i] += active;
        G += active;
      }
      k[t[j]] -= G;
    }
    return true;
  }
  // sorted thresholds; a NaN threshold is below no score (no active pair): left out
  auto& thr = s.thr;
  thr.clear();
  for (int64_t j = 0; j < L; ++j) {
    const scalar_t theta = x[t[j]] - scalar_t(1);
    if (!std::isnan(theta)) thr.emplace_back(theta, t[j]);
  }
  std::sort(thr.begin(), thr.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  const int64_t M = static_cast<int64_t>(thr.size());
  s.th.resize(M);
  for (int64_t m = 0; m < M; ++m) s.th[m] = thr[m].first;
  s.cnt.assign(M + 1, 0);
  const scalar_t* th = s.th.data();
  int32_t* cnt = s.cnt.data();
  for (int64_t i = 0; i < C; ++i) {
    // p = #{thresholds strictly below x_i} = a_i; a label's -inf gives 0, and so does a
    // non-label's -inf, as they should (above no threshold)
    if (std::isnan(xs[i])) {
      k[i] = 0;
      continue;
    }
    const int32_t p = lower_bound(th, M, xs[i]);
    k[i] = p;
    cnt[p] += 1;
  }
  // G of the m-th smallest threshold: the non-labels whose insertion point is past m
  int32_t G = 0;
  for (int64_t m = M - 1; m >= 0; --m) {
    G += cnt[m + 1];
    k[thr[m].second] -= G;
  }
  return true;
}

// C l_n, in double, from the counts (see the header).
template <typename scalar_t>
double row_loss(const scalar_t* x, const int32_t* k, int64_t C) {
  double s = 0;
  for (int64_t i = 0; i < C; ++i) {
    const int32_t ki = k[i];
    if (ki != 0) s += static_cast<double>(ki > 0 ? ki : 0) + static_cast<double>(ki) * static_cast<double>(x[i]);
  }
  return s;
}

[[noreturn]] void range_error(int64_t C) {
  TORCH_CHECK(false, "multilabel_margin_loss: argument #2 'target' is out of range (every entry, even after the "
                     "first -1, must be a class index in [0, ", C - 1, "] or -1)");
}

}  // namespace

struct MultiLabelMargin : public torch::autograd::Function<MultiLabelMargin> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                            int64_t reduction) {
    const bool batched = input.dim() == 2;
    const int64_t C = input.size(-1);
    const int64_t N = batched ? input.size(0) : 1;
    at::Tensor out = reduction == kNone && batched ? at::empty({N}, input.options())
                                                   : at::empty({}, input.options());
    const int64_t R = rows_per_block(C);
    const int64_t blocks = (N + R - 1) / R;
    std::atomic<bool> bad{false};
    double total = 0;
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_multilabel_margin_forward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const int64_t* t = target.data_ptr<int64_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      std::vector<double> partial(reduction == kNone ? 0 : blocks, 0.0);
      at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
        RowScratch<scalar_t> s(C);
        for (int64_t b = b0; b < b1; ++b) {
          double acc = 0;
          for (int64_t n = b * R; n < std::min(N, (b + 1) * R); ++n) {
            if (!row_counts(x + n * C, t + n * C, C, s)) {
              bad = true;
              return;
            }
            const double l = row_loss(x + n * C, s.k.data(), C);
            if (reduction == kNone) {
              o[n] = static_cast<scalar_t>(l / static_cast<double>(C));
            } else {
              acc += l;
            }
          }
          if (reduction != kNone) partial[b] = acc;
        }
      });
      if (!bad && reduction != kNone) {
        for (double p : partial) total += p;
        // 'mean': sum_n C l_n / (N C) ('mean' of nothing: 0/0 = NaN, as the reference)
        o[0] = static_cast<scalar_t>(total / static_cast<double>(reduction == kMean ? N * C : C));
      }
    });
    if (bad) range_error(C);
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
    if (!ctx->needs_input_grad(0) || !grad.defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    if (hand_over(grad)) {
      return reference_backward("multilabel_margin_loss", {input, target}, {static_cast<double>(reduction)}, grad,
                                3);
    }
    const bool batched = input.dim() == 2;
    const int64_t C = input.size(-1);
    const int64_t N = batched ? input.size(0) : 1;
    at::Tensor gx = at::empty_like(input, at::MemoryFormat::Contiguous);
    if (N == 0) return {gx, at::Tensor(), at::Tensor()};  // (and the upstream gradient may be empty)
    const int64_t R = rows_per_block(C);
    const int64_t blocks = (N + R - 1) / R;
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "torchloss_multilabel_margin_backward", [&] {
      const scalar_t* x = input.data_ptr<scalar_t>();
      const int64_t* t = target.data_ptr<int64_t>();
      const at::Tensor go_t = grad.scalar_type() == input.scalar_type() ? grad : grad.to(input.scalar_type());
      const scalar_t* go = go_t.data_ptr<scalar_t>();
      const int64_t gs = (reduction == kNone && go_t.dim() == 1) ? go_t.stride(0) : 0;
      // 'mean': fl(g / N), as the reference's unreduce rounds it
      const scalar_t g0 = reduction == kNone ? scalar_t(0) : reduction == kMean ? static_cast<scalar_t>(go[0] / static_cast<scalar_t>(N)) : go[0];
      const scalar_t c = static_cast<scalar_t>(C);
      scalar_t* g = gx.data_ptr<scalar_t>();
      at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
        RowScratch<scalar_t> s(C);
        for (int64_t n = b0 * R; n < std::min(N, b1 * R); ++n) {
          row_counts(x + n * C, t + n * C, C, s);  // checked by the forward
          const scalar_t gn = reduction == kNone ? go[n * gs] : g0;
          const int32_t* k = s.k.data();
          scalar_t* gr = g + n * C;
          for (int64_t i = 0; i < C; ++i) gr[i] = gn * (static_cast<scalar_t>(k[i]) / c);
        }
      });
    });
    return {gx, at::Tensor(), at::Tensor()};
  }
};

at::Tensor multilabel_margin_loss(const at::Tensor& input, const at::Tensor& target, int64_t reduction) {
  check_float_cpu(input, "input");
  TORCH_CHECK((input.dim() == 1 || input.dim() == 2) && input.is_contiguous() && input.size(-1) > 0 &&
                  input.size(-1) <= kMaxClasses,
              "torchloss native: multilabel_margin_loss expects a contiguous (N, C) or (C) input with 0 < C <= ",
              kMaxClasses);
  TORCH_CHECK(target.scalar_type() == at::kLong && target.is_contiguous() && target.sizes() == input.sizes() &&
                  target.device().is_cpu(),
              "torchloss native: multilabel_margin_loss expects a contiguous int64 target of the input's shape");
  TORCH_CHECK(reduction == kNone || reduction == kMean || reduction == kSum,
              "torchloss native: unknown reduction ", reduction);
  return MultiLabelMargin::apply(input, target, reduction);
}

void register_multilabel(py::module& m) {
  m.def("multilabel_margin_loss", &multilabel_margin_loss,
        "multilabel margin: (N, C) or (C) input, int64 target of its shape, reduction code");
  m.attr("multilabel_margin_max_classes") = kMaxClasses;
}

}  // namespace torchloss
