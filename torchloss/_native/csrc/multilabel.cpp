// torchloss native kernels: multilabel family (see common.h). Nothing here yet.
#include "common.h"

namespace torchloss {

void register_multilabel(py::module& m) {}

}  // namespace torchloss
