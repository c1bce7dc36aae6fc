// torchloss native kernels: binary family (see common.h). Nothing here yet.
#include "common.h"

namespace torchloss {

void register_binary(py::module& m) {}

}  // namespace torchloss
