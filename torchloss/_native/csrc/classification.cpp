// Plain negative log-likelihood: l_n = -x[n, t_n] for a contiguous (N, C) input and an (N,)
// int64 target with every t_n in [0, C) (the Python side routes weights, ignore_index and other
// layouts to the reference, as torchloss.functional's plain NLL path does).
//
// Gradient: dl_n/dx[n, c] = -[c = t_n]; scaled by the upstream gradient (and 1/N for 'mean'),
// it is scattered into zeros.
#include "common.h"

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
    if (at::GradMode::is_enabled()) {
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

void register_classification(py::module& m) {
  m.def("nll_loss", &nll_loss, "plain NLL: (N, C) input, (N,) int64 target, reduction code");
}

}  // namespace torchloss
