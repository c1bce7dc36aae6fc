// ============================================================================================
// Linear cross entropy, one block (issue 13): the native twin of the Python lean path
// (torchloss/_autograd/linear.py, LinearCrossEntropyLean) for a contiguous float/double/
// bfloat16/float16 (N, K) input, a (C, K) linear weight and an optional (C,) bias of its dtype,
// an (N,) int64 target, optional (C,) class weights of the input's dtype or float32, any
// ignore_index and label smoothing, every reduction, when the whole call's logits fit the byte
// budget as one block. The Python side decides that (torchloss._autograd.linear.lean);
// everything else runs the Python Functions. bfloat16/float16 operands are upcast to float32
// (the computation dtype, as the lean path's): every product and the loss run in float32, and
// the loss and the gradients are rounded to the input's dtype once, at the end.
//
// Per row n, with the log-softmax lp = log_softmax(z_n) of the logits z_n = W x_n + b (ATen's
// kernel, the accuracy of torch's log_softmax), valid_n = [t_n != ignore_index], w_t = valid_n
// w[t_n] (1 without weights), W = sum_c w_c (C without weights):
//
//     l_n = -(1 - eps) w_t lp[t_n] - (eps / C) valid_n sum_c w_c lp[c]
//
// (summed in double; 'mean' divides by D = sum_n w_t). The gradient of the loss for the
// per-row upstream coefficient a_n (g / D' for 'mean', D' = D plus 1 when no target is valid,
// as the reference's safe denominator; g for 'sum'; 1 for 'none', scaled in backward):
//
//     G[n, c] = a_s softmax[n, c] - a_t [c = t_n] - a_r w_c,
//     a_t = (1 - eps) w_t a_n,  a_r = valid_n (eps / C) a_n,  a_s = a_t + a_r W
//
// formed in place on exp(lp), then dL/dx = G W, dL/dW = G^T X, dL/db = sum_n G: one logits
// product and two gradient products, as torch's unfused path. 'mean'/'sum' form the gradients
// in the forward (for a unit upstream gradient) and backward scales them; 'none' keeps G and
// backward scales its rows and multiplies. A backward that is differentiated (create_graph) or
// given a batched gradient hands the saved inputs to the Python reference (hand_over).
// ============================================================================================

#include "common.h"

namespace torchloss {

namespace {

// (loss, G): the loss (0-d, or (N,) for 'none') and G as described above.
template <typename scalar_t>
std::pair<at::Tensor, at::Tensor> lce_block(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                                            const at::Tensor& target, const at::Tensor& weight, int64_t reduction,
                                            int64_t ignore_index, double eps, bool grads) {
  const int64_t N = x.size(0), C = w.size(0);
  at::Tensor z = b.numel() > 0 ? at::addmm(b, x, w.t()) : at::mm(x, w.t());
  // in place: ATen's row-wise log-softmax reads each row before writing it (bitwise the result of
  // a fresh buffer, without a second N x C buffer at the peak)
  at::Tensor lp = at::_log_softmax_out(z, z, 1, false);
  z.reset();
  const scalar_t* L = lp.data_ptr<scalar_t>();
  const int64_t* t = target.data_ptr<int64_t>();
  const scalar_t* wc = weight.numel() > 0 ? weight.data_ptr<scalar_t>() : nullptr;
  std::vector<scalar_t> wt(N);
  double D = 0;
  bool any = false;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t k = t[n];
    if (k == ignore_index) {
      wt[n] = scalar_t(0);
      continue;
    }
    TORCH_CHECK(k >= 0 && k < C, "Target ", k, " is out of bounds.");
    wt[n] = wc != nullptr ? wc[k] : scalar_t(1);
    D += static_cast<double>(wt[n]);
    any = true;
  }
  std::vector<double> l(N);
  const double keep = 1.0 - eps, eps_c = eps / static_cast<double>(C);
  for (int64_t n = 0; n < N; ++n) {
    if (t[n] == ignore_index) {
      l[n] = 0;
      continue;
    }
    const scalar_t* row = L + n * C;
    double v = -keep * static_cast<double>(wt[n]) * static_cast<double>(row[t[n]]);
    if (eps > 0) {
      double sm = 0;
      if (wc != nullptr) {
        for (int64_t c = 0; c < C; ++c) sm += static_cast<double>(wc[c]) * static_cast<double>(row[c]);
      } else {
        for (int64_t c = 0; c < C; ++c) sm += static_cast<double>(row[c]);
      }
      v -= eps_c * sm;
    }
    l[n] = v;
  }
  at::Tensor loss;
  if (reduction == kNone) {
    loss = at::empty({N}, x.options());
    scalar_t* o = loss.data_ptr<scalar_t>();
    for (int64_t n = 0; n < N; ++n) o[n] = static_cast<scalar_t>(l[n]);
  } else {
    double total = 0;
    for (int64_t n = 0; n < N; ++n) total += l[n];
    loss = at::empty({}, x.options());
    scalar_t value;
    if (reduction == kSum) value = static_cast<scalar_t>(total);
    else if (eps > 0 && D == 0) value = std::numeric_limits<scalar_t>::quiet_NaN();  // torch's 0/0 term
    else value = static_cast<scalar_t>(total / D);
    *loss.data_ptr<scalar_t>() = value;
  }
  if (!grads) return {loss, at::Tensor()};
  at::Tensor G = lp.exp_();
  scalar_t* g = G.data_ptr<scalar_t>();
  // a_n: the per-row coefficient for a unit upstream gradient
  scalar_t a = scalar_t(1);
  if (reduction == kMean) a = static_cast<scalar_t>(1.0 / (any ? D : D + 1.0));
  double Wsum = static_cast<double>(C);
  if (wc != nullptr) {
    Wsum = 0;
    for (int64_t c = 0; c < C; ++c) Wsum += static_cast<double>(wc[c]);
  }
  const scalar_t k_keep = static_cast<scalar_t>(keep), k_eps = static_cast<scalar_t>(eps_c);
  const scalar_t k_W = static_cast<scalar_t>(Wsum);
  at::parallel_for(0, N, rows_per_block(C), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      scalar_t* row = g + n * C;
      const bool valid = t[n] != ignore_index;
      const scalar_t an = valid ? a : scalar_t(0);
      const scalar_t at_ = eps > 0 ? k_keep * (an * wt[n]) : an * wt[n];
      const scalar_t ar = eps > 0 ? k_eps * an : scalar_t(0);
      const scalar_t as = eps > 0 ? at_ + ar * k_W : at_;
      const scalar_t pt = valid ? row[t[n]] : scalar_t(0);
      for (int64_t c = 0; c < C; ++c) row[c] *= as;
      if (eps > 0) {
        if (wc != nullptr) {
          for (int64_t c = 0; c < C; ++c) row[c] -= ar * wc[c];
        } else {
          for (int64_t c = 0; c < C; ++c) row[c] -= ar;
        }
        // the target's entry in one piece, a_s p_t - (a_t + a_r r_t): exactly 0 with one class
        // (a_s is that same sum), as torch's log-softmax backward gives
        if (valid) row[t[n]] = pt * as - (at_ + ar * (wc != nullptr ? wc[t[n]] : scalar_t(1)));
      } else if (valid) {
        row[t[n]] -= at_;
      }
    }
  });
  return {loss, G};
}

}  // namespace

struct LinearCrossEntropyBlock : public torch::autograd::Function<LinearCrossEntropyBlock> {
  // bias and weight: empty tensors when absent (an undefined tensor is no argument of apply)
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                            const at::Tensor& target, const at::Tensor& weight, int64_t reduction,
                            int64_t ignore_index, double eps) {
    const bool nx = ctx->needs_input_grad(0), nw = ctx->needs_input_grad(1), nb = ctx->needs_input_grad(2);
    const bool grads = nx || nw || nb;
    at::Tensor xc = upcast(x), wc = upcast(w);
    const at::Tensor bc = upcast(b), weightc = upcast(weight);
    at::Tensor loss, G;
    AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "torchloss_linear_cross_entropy_block", [&] {
      std::tie(loss, G) = lce_block<scalar_t>(xc, wc, bc, target, weightc, reduction, ignore_index, eps, grads);
    });
    ctx->save_for_backward({x, w, b, target, weight});
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["eps"] = eps;
    if (grads) {
      if (reduction == kNone) {
        ctx->saved_data["G"] = G;
      } else {
        if (nx) ctx->saved_data["gx"] = at::mm(G, wc);
        wc.reset();  // (a bfloat16/float16 weight's float32 copy: freed before the next product)
        if (nw) ctx->saved_data["gw"] = at::mm(G.t(), xc);
        xc.reset();
        if (nb) ctx->saved_data["gb"] = G.sum(0);
      }
    }
    return loss.scalar_type() == x.scalar_type() ? loss : loss.to(x.scalar_type());
  }

  // float32 for bfloat16/float16 (the computation dtype), else the tensor itself
  static at::Tensor upcast(const at::Tensor& t) {
    const auto st = t.scalar_type();
    return st == at::kBFloat16 || st == at::kHalf ? t.to(at::kFloat) : t;
  }

  // a gradient formed in the computation dtype, in the dtype of the operand it belongs to
  static at::Tensor as(const at::Tensor& g, const at::Tensor& like) {
    return g.scalar_type() == like.scalar_type() ? g : g.to(like.scalar_type());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const size_t n_args = 8;
    const at::Tensor& grad = grads[0];
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &b = saved[2], &target = saved[3], &weight = saved[4];
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    if (hand_over(grad)) {
      std::vector<at::Tensor> tensors = {x, w, b, target, weight};
      std::vector<double> scalars = {static_cast<double>(reduction),
                                     static_cast<double>(ctx->saved_data["ignore_index"].toInt()),
                                     ctx->saved_data["eps"].toDouble()};
      variable_list out = reference_backward("linear_cross_entropy", tensors, scalars, grad, n_args);
      out[3] = at::Tensor();
      out[4] = at::Tensor();
      return out;
    }
    variable_list out(n_args);
    const at::Tensor g = grad.to(upcast(x).scalar_type());
    if (reduction == kNone) {
      at::Tensor G = ctx->saved_data["G"].toTensor() * g.reshape({-1, 1});
      if (ctx->needs_input_grad(0)) out[0] = as(at::mm(G, upcast(w)), x);
      if (ctx->needs_input_grad(1)) out[1] = as(at::mm(G.t(), upcast(x)), w);
      if (ctx->needs_input_grad(2)) out[2] = as(G.sum(0), b);
      return out;
    }
    if (ctx->needs_input_grad(0)) out[0] = as(ctx->saved_data["gx"].toTensor() * g, x);
    if (ctx->needs_input_grad(1)) out[1] = as(ctx->saved_data["gw"].toTensor() * g, w);
    if (ctx->needs_input_grad(2)) out[2] = as(ctx->saved_data["gb"].toTensor() * g, b);
    return out;
  }
};

namespace {

at::Tensor linear_cross_entropy_block(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                                      const at::Tensor& target, const c10::optional<at::Tensor>& weight,
                                      int64_t reduction, int64_t ignore_index, double eps) {
  TORCH_CHECK(x.device().is_cpu(), "torchloss native: input must be on the CPU");
  const auto st = x.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kBFloat16 || st == at::kHalf,
              "torchloss native: linear_cross_entropy expects a floating input");
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1) && x.size(0) > 0 && w.size(0) > 0,
              "torchloss native: linear_cross_entropy expects (N, K) input and (C, K) weight");
  TORCH_CHECK(w.scalar_type() == x.scalar_type() && x.is_contiguous() && w.is_contiguous() && w.device().is_cpu(),
              "torchloss native: linear_cross_entropy expects contiguous operands of one dtype");
  TORCH_CHECK(target.dim() == 1 && target.size(0) == x.size(0) && target.scalar_type() == at::kLong &&
                  target.is_contiguous(),
              "torchloss native: linear_cross_entropy expects a contiguous (N,) int64 target");
  const int64_t C = w.size(0);
  const bool has_b = b.has_value() && b->defined(), has_w = weight.has_value() && weight->defined();
  if (has_b)
    TORCH_CHECK(b->dim() == 1 && b->size(0) == C && b->scalar_type() == x.scalar_type() && b->is_contiguous(),
                "torchloss native: linear_cross_entropy expects a contiguous (C,) bias of the input's dtype");
  if (has_w)
    TORCH_CHECK(weight->dim() == 1 && weight->size(0) == C && (weight->scalar_type() == st ||
                                                          weight->scalar_type() == LinearCrossEntropyBlock::upcast(x).scalar_type()) &&
                    weight->is_contiguous(),
                "torchloss native: linear_cross_entropy expects a contiguous (C,) weight of the input's dtype");
  TORCH_CHECK(reduction == kNone || reduction == kMean || reduction == kSum,
              "torchloss native: linear_cross_entropy: unknown reduction ", reduction);
  TORCH_CHECK(eps >= 0 && eps <= 1, "torchloss native: label smoothing outside [0, 1]");
  const at::Tensor empty = at::empty({0}, x.options());
  return LinearCrossEntropyBlock::apply(x, w, has_b ? *b : empty, target, has_w ? *weight : empty, reduction,
                                        ignore_index, eps);
}

}  // namespace

void register_linear(py::module& m) {
  m.def("linear_cross_entropy_block", &linear_cross_entropy_block,
        "linear cross entropy of one block: (N, K) input, (C, K) weight, (C,) bias or None, (N,) int64 target, "
        "(C,) weight or None, reduction code, ignore_index, label smoothing");
}

}  // namespace torchloss
