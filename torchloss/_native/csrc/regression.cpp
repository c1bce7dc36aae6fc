// torchloss native kernels: regression family (see common.h). Nothing here yet.
#include "common.h"

namespace torchloss {

void register_regression(py::module& m) {}

}  // namespace torchloss
