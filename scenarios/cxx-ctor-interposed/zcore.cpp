// zcore's implementation. No visibility control: every member function is exported with
// default visibility (interposable), as in a library built without -fvisibility=hidden.
#include "zcore.h"

namespace zcore {

Tensor::Tensor(const Shape &shape) {
    std::int64_t count = 1;
    for (std::int64_t i = 0; i < shape.ndim; i++) count *= shape.dims[i];
#if ZCORE_VERSION == 2
    device_ = "cpu";
    ndim_ = shape.ndim;
#endif
    numel_ = count;
    data_ = new double[count];
    for (std::int64_t i = 0; i < count; i++) data_[i] = 1.0;
}

Tensor::~Tensor() { delete[] data_; }

std::int64_t Tensor::numel() const { return numel_; }

double Tensor::sum() const {
    double total = 0.0;
    for (std::int64_t i = 0; i < numel_; i++) total += data_[i];
    return total;
}

int Tensor::version() { return ZCORE_VERSION; }

}  // namespace zcore
