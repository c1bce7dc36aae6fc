// The Python module of torchloss's native kernels, and the bridge to the Python reference for
// create_graph backwards (see common.h).
#include "common.h"

namespace torchloss {

namespace {
// Set once by the Python side (torchloss._native); never freed, so that no Python object is
// destroyed after the interpreter has gone at exit.
py::object* reference = nullptr;
}  // namespace

variable_list reference_backward(const char* name, const std::vector<at::Tensor>& tensors,
                                 const std::vector<double>& scalars, const at::Tensor& grad,
                                 size_t n_args) {
  TORCH_CHECK(reference != nullptr, "torchloss native: no reference registered for ", name);
  py::gil_scoped_acquire gil;
  py::object result = (*reference)(std::string(name), tensors, scalars, grad);
  auto grads = result.cast<std::vector<std::optional<at::Tensor>>>();
  variable_list out(n_args);
  for (size_t i = 0; i < grads.size() && i < n_args; ++i) {
    if (grads[i].has_value()) out[i] = *grads[i];
  }
  return out;
}

// Weak: a family left out of the build (TORCHLOSS_NATIVE_FILES) is a null pointer here.
__attribute__((weak)) void register_classification(py::module& m);
__attribute__((weak)) void register_binary(py::module& m);
__attribute__((weak)) void register_regression(py::module& m);
__attribute__((weak)) void register_margin(py::module& m);
__attribute__((weak)) void register_multilabel(py::module& m);
__attribute__((weak)) void register_ctc(py::module& m);
// (declared here, not in common.h: only bindings.cpp calls it)
void register_linear(py::module& m);
__attribute__((weak)) void register_linear(py::module& m);

}  // namespace torchloss

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "torchloss's native CPU kernels (see torchloss/_native)";
  m.def("set_reference", [](py::object f) {
    if (torchloss::reference == nullptr) torchloss::reference = new py::object();
    *torchloss::reference = std::move(f);
  });
  for (auto reg : {&torchloss::register_classification, &torchloss::register_binary,
                   &torchloss::register_regression, &torchloss::register_margin,
                   &torchloss::register_multilabel, &torchloss::register_ctc,
                   &torchloss::register_linear}) {
    if (reg != nullptr) reg(m);
  }
}
