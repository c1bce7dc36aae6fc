// torchloss native kernels: CTC (see common.h), the eager CPU fast path of
// torchloss/_autograd/ctc.py's CTCLossFunction, whose docstring derives everything used here.
//
// Takes: (T, N, C) or unbatched (T, C) contiguous float/double log-probabilities, padded (N, S)
// int64 targets (any strides; labels clamped into [0, C) as the reference clamps them), int64
// input and target lengths of N elements (any strides), any blank, reduction and zero_infinity.
// Everything else (float16/bfloat16, CUDA, torch.compile, torch.func, forward AD) runs the
// reference; a create_graph backward hands the saved inputs to it (reference_backward).
//
// Per sample n, with the extended target l' (blank, l_1, blank, ..., blank) of L'_n = 2 L_n + 1
// states and the emissions e_t(s) = x[t, n, l'_s], in log space (lse = log-sum-exp):
//
//   alpha_0(0) = e_0(0), alpha_0(1) = e_0(1), alpha_0(s) = -inf (s >= 2);
//   alpha_t(s) = e_t(s) + lse(alpha_{t-1}(s), alpha_{t-1}(s-1), [skip ok] alpha_{t-1}(s-2)),
//   log p_n    = lse(alpha_{Tn-1}(L'-1), alpha_{Tn-1}(L'-2)),
//
// the skip s-2 -> s allowed iff s >= 2 and l'_s != l'_{s-2} (never for a blank state). The
// mirrored recursion, without the emission of its own frame,
//
//   b~_{Tn-1}(s) = 0 for s in {L'-1, L'-2}, -inf elsewhere;
//   b~_t(s) = lse(beta_{t+1}(s), beta_{t+1}(s+1), [skip ok] beta_{t+1}(s+2)),  beta_t = b~_t + e_t,
//
// gives the joint log-probability of the paths through state s at frame t, emission counted once,
// j_t(s) = alpha_t(s) + b~_t(s) (no -inf - -inf anywhere), and the posterior of class c
//
//   gamma_t(c) = sum_{s: l'_s = c} exp(j_t(s) - log p_n).
//
// The gradient is torch's, G[t, n, c] = exp(x[t, n, c]) - gamma_t(c) for t < Tn, 0 beyond. As in
// the reference, the state posteriors of a frame are normalised by their sum (1 in exact
// arithmetic; the division cancels the rounding drift that alpha and beta share), which is the
// same as exp(j_t(s) - m_t) / sum_s exp(j_t(s) - m_t) with the frame's maximum m_t (used here: it
// does not depend on the rounding of log p). An impossible sample (log p = -inf) gets a NaN
// gradient on its frames t < Tn (torch's), or 0 with zero_infinity (and a zero loss). A NaN or
// +inf emission that the sample reads (a class of its target on a frame t < Tn) makes its loss
// and gradient NaN, as in the reference (_sanitise_): it is read as -inf in the recursions, so
// that nothing else depends on where the NaN sits.
//
// Work and memory. The samples run in parallel (at::parallel_for over the batch); each sample is
// computed whole by one thread, in a fixed order, and the reductions over samples are summed in
// sample order afterwards: results do not depend on the number of threads. A thread keeps the
// alpha of the sample it works on (Tn L'_n values, reused for its next sample) and two rolling
// rows; beta is never stored. When the loss is differentiated, the forward computes G as well
// (both recursions run once) and saves it -- T N C values, no more than torch's saved log_alpha
// (T N (2S+1)) when C <= 2S + 1 -- and the backward only scales it. With more classes than
// that, the forward computes the loss alone (one recursion, two rolling rows) and saves nothing
// beyond the inputs, and the backward computes G into the buffer it returns. Either way the peak
// stays below torch's (its log_alpha and log_beta, T N (2S+1) each, and its T N C gradient).
//
// float: the exponentials and logarithms of the recursions are branch-free polynomials (about 1
// ulp, as glibc's and torch's vectorised ones) that the compiler vectorises over the states of a
// frame; double: the C library's exp and log.
#include "common.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace torchloss {

namespace {

#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")

constexpr float kNegInfF = -std::numeric_limits<float>::infinity();

inline int32_t f2i(float f) {
  int32_t i;
  std::memcpy(&i, &f, 4);
  return i;
}
inline float i2f(int32_t i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}

// exp(x), float, any x: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, the degree-6 minimax
// polynomial of the Cephes expf (about 1 ulp), 2^n built in the exponent bits (in two halves, so
// that n down to -150 works). Below -103.97 it returns 0, above 88.72 +inf; NaN stays NaN.
inline float ctc_exp(float x) {
  const float lo = -103.972077f, hi = 88.7228394f;
  const bool under = x < lo, over = x > hi;
  const float xc = under ? lo : (over ? hi : x);
  const float nf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  float r = xc - nf * 0.693359375f;
  r = r - nf * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t n = static_cast<int32_t>(nf);   // in [-150, 128]
  const int32_t n1 = n >> 1, n2 = n - n1;       // each in [-75, 64]
  const float v = (p * i2f((n1 + 127) << 23)) * i2f((n2 + 127) << 23);
  return under ? 0.0f : (over ? std::numeric_limits<float>::infinity() : v);
}

// exp(x) for x <= 0 (or -inf, or NaN): common.h's exp_nonpositive (ctc_exp without the overflow
// branch; 0 below ln(FLT_MIN) = -87.34: no subnormal results, whose arithmetic is slow on some
// CPUs; they are below float rounding next to the 1 of a log-sum-exp's largest term).
inline float ctc_exp_neg(float x) { return exp_nonpositive(x); }

// log(x) for a positive normal float (here the sum of a log-sum-exp, in [1, 3]): x = 2^k m with
// m in [sqrt(1/2), sqrt(2)), log m by the Cephes logf polynomial (about 1 ulp).
inline float ctc_log(float x) {
  const int32_t i = f2i(x);
  int32_t k = ((i >> 23) & 0xff) - 127;
  float m = i2f((i & 0x007fffff) | 0x3f800000);  // [1, 2)
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  k = big ? k + 1 : k;
  const float f = m - 1.0f;
  const float z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  const float kf = static_cast<float>(k);
  y = y + kf * -2.12194440e-4f;
  y = y - 0.5f * z;
  return (f + y) + kf * 0.693359375f;
}

inline double ctc_exp(double x) { return std::exp(x); }
inline double ctc_exp_neg(double x) { return std::exp(x); }
inline double ctc_log(double x) { return std::log(x); }

// One step of a recursion over a frame: out[s] = lse(a[s], b[s], c[s] + mask[s]) + e[s], s < n,
// where a, b, c are the same row at three offsets (s, s -+ 1, s -+ 2). -inf where all three are.
template <typename T>
__attribute__((always_inline)) inline void lse3_row_impl(const T* a, const T* b, const T* c, const T* mask,
                                                         const T* e, T* __restrict out, int64_t n) {
  const T ninf = -std::numeric_limits<T>::infinity();
  for (int64_t s = 0; s < n; ++s) {
    // m = the largest of the three, whose exp(m - m) = 1 is not computed; u, v the others
    const T va = a[s], vb = b[s], vc = c[s] + mask[s];
    const T hi = va > vb ? va : vb, u = va > vb ? vb : va;
    const T m = vc > hi ? vc : hi, v = vc > hi ? hi : vc;
    const bool fin = m > ninf;
    const T mm = fin ? m : T(0);
    const T sum = (T(1) + ctc_exp_neg(u - mm)) + ctc_exp_neg(v - mm);
    const T r = mm + ctc_log(sum);
    out[s] = (fin ? r : ninf) + e[s];
  }
}

// Posteriors of one frame: w[s] = exp(j[s] - max_s j), j = a[s] + b[s]; returns their sum (in
// double). Fixed lanes for the maximum and the sum, so that the compiler vectorises both
// without reordering anything (the same result on every machine).
constexpr int kLanes = 16;

template <typename T>
__attribute__((always_inline)) inline double posterior_row_impl(const T* a, const T* b, T* __restrict w, int64_t n) {
  const T ninf = -std::numeric_limits<T>::infinity();
  T mx[kLanes];
  for (int k = 0; k < kLanes; ++k) mx[k] = ninf;
  int64_t s = 0;
  for (; s + kLanes <= n; s += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const T j = a[s + k] + b[s + k];
      w[s + k] = j;
      mx[k] = j > mx[k] ? j : mx[k];
    }
  }
  T m = ninf;
  for (int k = 0; k < kLanes; ++k) m = mx[k] > m ? mx[k] : m;
  for (; s < n; ++s) {
    const T j = a[s] + b[s];
    w[s] = j;
    m = j > m ? j : m;
  }
  double acc[kLanes] = {};
  s = 0;
  for (; s + kLanes <= n; s += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const T v = ctc_exp_neg(w[s + k] - m);
      w[s + k] = v;
      acc[k] += static_cast<double>(v);
    }
  }
  double sum = 0;
  for (int k = 0; k < kLanes; ++k) sum += acc[k];
  for (; s < n; ++s) {
    const T v = ctc_exp_neg(w[s] - m);
    w[s] = v;
    sum += static_cast<double>(v);
  }
  return sum;
}

// g[c] = exp(x[c]).
template <typename T>
__attribute__((always_inline)) inline void exp_row_impl(const T* __restrict x, T* __restrict g, int64_t n) {
  for (int64_t c = 0; c < n; ++c) g[c] = ctc_exp(x[c]);
}

#define TORCHLOSS_CTC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
TORCHLOSS_CTC_CLONES void lse3_row(const float* a, const float* b, const float* c, const float* mask, const float* e,
                                   float* __restrict out, int64_t n) {
  lse3_row_impl(a, b, c, mask, e, out, n);
}
TORCHLOSS_CTC_CLONES double posterior_row(const float* a, const float* b, float* __restrict w, int64_t n) {
  return posterior_row_impl(a, b, w, n);
}
TORCHLOSS_CTC_CLONES void exp_row(const float* __restrict x, float* __restrict g, int64_t n) { exp_row_impl(x, g, n); }
#undef TORCHLOSS_CTC_CLONES
void lse3_row(const double* a, const double* b, const double* c, const double* mask, const double* e,
              double* __restrict out, int64_t n) {
  lse3_row_impl(a, b, c, mask, e, out, n);
}
double posterior_row(const double* a, const double* b, double* __restrict w, int64_t n) {
  return posterior_row_impl(a, b, w, n);
}
void exp_row(const double* __restrict x, double* __restrict g, int64_t n) { exp_row_impl(x, g, n); }

#pragma GCC pop_options

// Everything one call shares: the layout and the arguments.
struct Problem {
  int64_t T, N, C, S;  // S: the padded target length (columns of targets)
  const int64_t* targets;
  int64_t ts0, ts1;  // targets' strides
  const int64_t* il;
  int64_t ils;
  const int64_t* tl;
  int64_t tls;
  int64_t blank;

  int64_t Tn(int64_t n) const { return il[n * ils]; }
  int64_t Ln(int64_t n) const { return 2 * tl[n * tls] + 1; }
  int64_t label(int64_t n, int64_t j) const {
    const int64_t v = targets[n * ts0 + j * ts1];
    return v < 0 ? 0 : (v >= C ? C - 1 : v);
  }
};

// Per-thread buffers, reused from one sample to the next.
template <typename T>
struct Scratch {
  std::vector<int64_t> ext;    // l'
  std::vector<T> mask_a;       // 0 where s-2 -> s is allowed, -inf elsewhere (L' + 2, two -inf in front)
  std::vector<T> mask_b;       // 0 where s+2 -> s is allowed (L')
  std::vector<T> e;            // emissions of one frame (L')
  std::vector<T> rows;         // two rolling rows of L' + 4 (two -inf on each side)
  std::vector<T> alpha;        // Tn x L' (when the gradient is computed)
  std::vector<T> w;            // posteriors of one frame (L')
  std::vector<T> zero;         // L' zeros (no emission)

  void setup(const Problem& P, int64_t n) {
    const int64_t L = P.Ln(n);
    const T ninf = -std::numeric_limits<T>::infinity();
    ext.resize(L);
    for (int64_t s = 0; s < L; ++s) ext[s] = (s & 1) ? P.label(n, s >> 1) : P.blank;
    mask_a.assign(L, ninf);
    mask_b.assign(L, ninf);
    for (int64_t s = 2; s < L; ++s) {
      if (ext[s] != ext[s - 2]) {
        mask_a[s] = T(0);
        mask_b[s - 2] = T(0);
      }
    }
    e.resize(L);
    w.resize(L);
    zero.assign(L, T(0));
    rows.assign(2 * (L + 4), ninf);
  }
};

// The emissions of frame t of sample n into S.e; returns false when one is NaN or +inf (read
// as -inf).
template <typename T>
inline bool gather(const Problem& P, const T* x, int64_t t, int64_t n, Scratch<T>& S, int64_t L) {
  const T* row = x + (t * P.N + n) * P.C;
  const T inf = std::numeric_limits<T>::infinity();
  bool ok = true;
  for (int64_t s = 0; s < L; ++s) {
    const T v = row[S.ext[s]];
    const bool good = v < inf;
    ok = ok && good;
    S.e[s] = good ? v : -inf;
  }
  return ok;
}

inline double lse2(double a, double b) {
  const double m = a > b ? a : b;
  if (!(m > -std::numeric_limits<double>::infinity())) return m;
  return m + std::log(std::exp(a - m) + std::exp(b - m));
}

// The alpha recursion of sample n (Tn >= 1); when `store`, alpha_t is kept in S.alpha row t.
// Returns log p, or NaN when an emission read is NaN or +inf.
template <typename T>
double alpha_pass(const Problem& P, const T* x, int64_t n, Scratch<T>& S, bool store) {
  const int64_t Tn = P.Tn(n), L = P.Ln(n), W = L + 4;
  const T ninf = -std::numeric_limits<T>::infinity();
  if (store) S.alpha.resize(static_cast<size_t>(Tn * L));
  bool ok = gather(P, x, 0, n, S, L);
  T* cur = S.rows.data() + 2;  // cur[-2], cur[-1]: -inf
  for (int64_t s = 0; s < L; ++s) cur[s] = s < 2 ? S.e[s] : ninf;
  if (store) std::copy(cur, cur + L, S.alpha.data());
  for (int64_t t = 1; t < Tn; ++t) {
    T* prev = cur;
    cur = S.rows.data() + 2 + ((t & 1) ? W : 0);
    ok = gather(P, x, t, n, S, L) && ok;
    lse3_row(prev, prev - 1, prev - 2, S.mask_a.data(), S.e.data(), cur, L);
    if (store) std::copy(cur, cur + L, S.alpha.data() + t * L);
  }
  if (!ok) return std::numeric_limits<double>::quiet_NaN();
  return L >= 2 ? lse2(cur[L - 1], cur[L - 2]) : static_cast<double>(cur[L - 1]);
}

// Sample n's loss (-log p, before zero_infinity) and, when `g` is given, its gradient rows
// G[t, n, :] (all T of them) in g (the (T, N, C) buffer).
template <typename T>
double sample(const Problem& P, const T* x, int64_t n, Scratch<T>& S, T* g, bool zero_infinity) {
  const int64_t Tn = P.Tn(n), T_ = P.T, N = P.N, C = P.C;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  if (g != nullptr) {
    for (int64_t t = Tn; t < T_; ++t) std::fill(g + (t * N + n) * C, g + (t * N + n + 1) * C, T(0));
  }
  if (Tn == 0) return P.tl[n * P.tls] == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  S.setup(P, n);
  const int64_t L = P.Ln(n), W = L + 4;
  const double logp = alpha_pass(P, x, n, S, g != nullptr);
  if (g == nullptr) return -logp;
  if (!(logp > -std::numeric_limits<double>::infinity())) {
    // impossible (NaN with zero_infinity stays NaN) or NaN
    const T fill = (std::isnan(logp) || !zero_infinity) ? nan : T(0);
    for (int64_t t = 0; t < Tn; ++t) std::fill(g + (t * N + n) * C, g + (t * N + n + 1) * C, fill);
    return -logp;
  }
  const T ninf = -std::numeric_limits<T>::infinity();
  // beta rows: b[s], b[s+1], b[s+2] read from a row with two -inf after its L states
  T* rows = S.rows.data();
  std::fill(rows, rows + 2 * W, ninf);
  T* nxt = rows;        // beta_{t+1}
  T* yb = rows + W;     // b~_t
  for (int64_t t = Tn - 1; t >= 0; --t) {
    if (t == Tn - 1) {
      std::fill(yb, yb + L, ninf);
      yb[L - 1] = T(0);
      if (L >= 2) yb[L - 2] = T(0);
    } else {
      // yb = lse(nxt[s], nxt[s+1], nxt[s+2] + mask_b[s]); no emission yet
      lse3_row(nxt, nxt + 1, nxt + 2, S.mask_b.data(), S.zero.data(), yb, L);
    }
    // posteriors of frame t, then G[t, n, :] = exp(x) - class sums
    const double sum = posterior_row(S.alpha.data() + t * L, yb, S.w.data(), L);
    const T inv = static_cast<T>(1.0 / sum);
    const T* xr = x + (t * N + n) * C;
    T* gr = g + (t * N + n) * C;
    exp_row(xr, gr, C);
    for (int64_t s = 0; s < L; ++s) gr[S.ext[s]] -= S.w[s] * inv;
    if (t > 0) {
      // beta_t = b~_t + e_t, the next step's input
      gather(P, x, t, n, S, L);
      for (int64_t s = 0; s < L; ++s) nxt[s] = yb[s] + S.e[s];
    }
  }
  return -logp;
}

void check_lengths(const Problem& P) {
  for (int64_t n = 0; n < P.N; ++n) {
    const int64_t a = P.il[n * P.ils], b = P.tl[n * P.tls];
    TORCH_CHECK(a >= 0 && a <= P.T, "torchloss native: ctc_loss: input length ", a, " outside [0, ", P.T, "]");
    TORCH_CHECK(b >= 0 && b <= P.S, "torchloss native: ctc_loss: target length ", b, " outside [0, ", P.S, "]");
  }
}

// Runs every sample (in parallel); fills loss[n] (= -log p_n, before zero_infinity) and, when g is
// given, G.
template <typename T>
void run(const Problem& P, const T* x, double* loss, T* g, bool zero_infinity) {
  at::parallel_for(0, P.N, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> S;
    for (int64_t n = begin; n < end; ++n) loss[n] = sample(P, x, n, S, g, zero_infinity);
  });
}

Problem make_problem(const at::Tensor& x, const at::Tensor& targets, const at::Tensor& il, const at::Tensor& tl,
                     int64_t blank) {
  Problem P;
  P.T = x.size(0);
  P.N = x.size(1);
  P.C = x.size(2);
  P.S = targets.size(1);
  P.targets = targets.data_ptr<int64_t>();
  P.ts0 = targets.stride(0);
  P.ts1 = targets.stride(1);
  P.il = il.data_ptr<int64_t>();
  P.ils = il.stride(0);
  P.tl = tl.data_ptr<int64_t>();
  P.tls = tl.stride(0);
  P.blank = blank;
  return P;
}

// The gradient's coefficient of sample n: g_n ('none'), g ('sum'), g / (max(L_n, 1) N) ('mean'),
// rounded in T as the reference rounds it.
template <typename T>
T coefficient(const Problem& P, const T* go, int64_t gs, int64_t n, int64_t reduction) {
  if (reduction == kNone) return go[n * gs];
  if (reduction == kSum) return go[0];
  const int64_t len = std::max<int64_t>(P.tl[n * P.tls], 1);
  return go[0] / (static_cast<T>(len) * static_cast<T>(P.N));
}

}  // namespace

struct CTCLossNative : public torch::autograd::Function<CTCLossNative> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& log_probs, const at::Tensor& targets,
                            const at::Tensor& input_lengths, const at::Tensor& target_lengths, int64_t blank,
                            int64_t reduction, bool zero_infinity, bool with_grad) {
    const bool unbatched = log_probs.dim() == 2;
    const at::Tensor x = unbatched ? log_probs.unsqueeze(1) : log_probs;
    const Problem P = make_problem(x, targets, input_lengths, target_lengths, blank);
    check_lengths(P);
    // G in the forward when it costs no more than torch's saved log_alpha (see the top)
    const bool precompute = with_grad && P.C <= 2 * P.S + 1;
    std::vector<double> loss(P.N);
    at::Tensor G;
    at::Tensor out;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "torchloss_ctc_forward", [&] {
      const scalar_t* xp = x.data_ptr<scalar_t>();
      if (precompute) G = at::empty({P.T, P.N, P.C}, x.options());
      run<scalar_t>(P, xp, loss.data(), precompute ? G.data_ptr<scalar_t>() : nullptr, zero_infinity);
      // the reference's -log p in T, then inf -> 0 (zero_infinity), then the reduction
      std::vector<scalar_t> l(P.N);
      for (int64_t n = 0; n < P.N; ++n) {
        scalar_t v = static_cast<scalar_t>(loss[n]);
        if (zero_infinity && v == std::numeric_limits<scalar_t>::infinity()) v = scalar_t(0);
        l[n] = v;
      }
      if (reduction == kNone) {
        out = unbatched ? at::empty({}, x.options()) : at::empty({P.N}, x.options());
        std::copy(l.begin(), l.end(), out.data_ptr<scalar_t>());
        return;
      }
      double total = 0;
      for (int64_t n = 0; n < P.N; ++n) {
        if (reduction == kMean) {
          const int64_t len = std::max<int64_t>(P.tl[n * P.tls], 1);
          total += static_cast<double>(l[n] / static_cast<scalar_t>(len));
        } else {
          total += static_cast<double>(l[n]);
        }
      }
      out = at::empty({}, x.options());
      *out.data_ptr<scalar_t>() =
          static_cast<scalar_t>(reduction == kMean ? total / static_cast<double>(P.N) : total);
    });
    if (with_grad) {
      if (precompute) {
        ctx->save_for_backward({log_probs, targets, input_lengths, target_lengths, G});
      } else {
        ctx->save_for_backward({log_probs, targets, input_lengths, target_lengths});
      }
    }
    ctx->saved_data["blank"] = blank;
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["zero_infinity"] = zero_infinity;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const size_t n_args = 8;
    if (!ctx->needs_input_grad(0)) return variable_list(n_args);
    auto saved = ctx->get_saved_variables();
    TORCH_CHECK(saved.size() >= 4, "torchloss native: ctc_loss: backward without saved inputs");
    const at::Tensor& log_probs = saved[0];
    const at::Tensor& targets = saved[1];
    const at::Tensor& il = saved[2];
    const at::Tensor& tl = saved[3];
    const int64_t blank = ctx->saved_data["blank"].toInt();
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    const bool zero_infinity = ctx->saved_data["zero_infinity"].toBool();
    const at::Tensor& grad = grads[0];
    if (hand_over(grad)) {
      return reference_backward("ctc_loss", {log_probs, targets, il, tl},
                                {static_cast<double>(blank), static_cast<double>(reduction),
                                 zero_infinity ? 1.0 : 0.0},
                                grad, n_args);
    }
    const at::Tensor x = log_probs.dim() == 2 ? log_probs.unsqueeze(1) : log_probs;
    const Problem P = make_problem(x, targets, il, tl, blank);
    at::Tensor out;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "torchloss_ctc_backward", [&] {
      const at::Tensor go_t = grad.to(x.scalar_type());
      const scalar_t* go = go_t.data_ptr<scalar_t>();
      const int64_t gs = go_t.dim() > 0 ? go_t.stride(0) : 0;
      const int64_t TN = P.T * P.N, C = P.C;
      scalar_t* gp;
      const scalar_t* src;
      if (saved.size() == 5) {  // G from the forward
        out = at::empty({P.T, P.N, P.C}, x.options());
        gp = out.data_ptr<scalar_t>();
        src = saved[4].data_ptr<scalar_t>();
      } else {  // G now, into the buffer returned
        out = at::empty({P.T, P.N, P.C}, x.options());
        gp = out.data_ptr<scalar_t>();
        std::vector<double> loss(P.N);
        run<scalar_t>(P, x.data_ptr<scalar_t>(), loss.data(), gp, zero_infinity);
        src = gp;
      }
      std::vector<scalar_t> coef(P.N);
      for (int64_t n = 0; n < P.N; ++n) coef[n] = coefficient(P, go, gs, n, reduction);
      at::parallel_for(0, TN, std::max<int64_t>(1, kBlock / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const scalar_t k = coef[r % P.N];
          const scalar_t* s = src + r * C;
          scalar_t* d = gp + r * C;
          for (int64_t c = 0; c < C; ++c) d[c] = s[c] * k;
        }
      });
    });
    variable_list result(n_args);
    result[0] = log_probs.dim() == 2 ? out.squeeze(1) : out;
    return result;
  }
};

at::Tensor ctc_loss(const at::Tensor& log_probs, const at::Tensor& targets, const at::Tensor& input_lengths,
                    const at::Tensor& target_lengths, int64_t blank, int64_t reduction, bool zero_infinity) {
  check_float_cpu(log_probs, "log_probs");
  TORCH_CHECK((log_probs.dim() == 3 || log_probs.dim() == 2) && log_probs.is_contiguous() && log_probs.numel() > 0,
              "torchloss native: ctc_loss expects contiguous, non-empty (T, N, C) or (T, C) log_probs");
  const int64_t N = log_probs.dim() == 3 ? log_probs.size(1) : 1;
  const int64_t C = log_probs.size(-1);
  TORCH_CHECK(targets.dim() == 2 && targets.scalar_type() == at::kLong && targets.size(0) == N && targets.is_cpu(),
              "torchloss native: ctc_loss expects padded (N, S) int64 targets");
  for (const at::Tensor* t : {&input_lengths, &target_lengths}) {
    TORCH_CHECK(t->dim() == 1 && t->scalar_type() == at::kLong && t->size(0) == N && t->is_cpu(),
                "torchloss native: ctc_loss expects (N,) int64 lengths");
  }
  TORCH_CHECK(blank >= 0 && blank < C, "torchloss native: ctc_loss: blank outside [0, C)");
  TORCH_CHECK(reduction == kNone || reduction == kMean || reduction == kSum,
              "torchloss native: ctc_loss: unknown reduction ", reduction);
  const bool with_grad = at::GradMode::is_enabled() && log_probs.requires_grad();
  return CTCLossNative::apply(log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity,
                              with_grad);
}

void register_ctc(py::module& m) {
  m.def("ctc_loss", &ctc_loss,
        "CTC loss: (T, N, C) or (T, C) log-probabilities, padded (N, S) int64 targets, int64 lengths, blank, "
        "reduction code, zero_infinity");
}

}  // namespace torchloss
