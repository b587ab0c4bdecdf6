// Registration of every reference kernel, in table order.
#include "reference/ref_util.h"

namespace bbits::kernels::ref {

void register_all(std::vector<KernelInfo>& table) {
  register_conv_fc(table);
  register_pool(table);
  register_eltwise(table);
}

}  // namespace bbits::kernels::ref
