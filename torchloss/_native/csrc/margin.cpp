// torchloss native kernels: margin family (see common.h). Nothing here yet.
#include "common.h"

namespace torchloss {

void register_margin(py::module& m) {}

}  // namespace torchloss
