// "zcore": the C++ core of a small framework (think libtorch's c10/ATen or a protobuf
// runtime), in two releases whose ABI differs. Compiled with ZCORE_VERSION=1 or 2.
//
// Both releases declare the same members, so their mangled names are identical, e.g. the
// constructor zcore::Tensor::Tensor(zcore::Shape const&) is _ZN5zcore6TensorC1ERKNS_5ShapeE
// (and _ZN5zcore6TensorC2ERKNS_5ShapeE), but version 2 changed the layout of both classes:
// Shape's fields were reordered (and one added), Tensor gained fields and reordered its own.
#pragma once

#include <cstdint>

#ifndef ZCORE_VERSION
#error "define ZCORE_VERSION"
#endif

namespace zcore {

#if ZCORE_VERSION == 1
struct Shape {
    const std::int64_t *dims;
    std::int64_t ndim;
};
#else
struct Shape {
    std::int64_t ndim;  // moved first in 2.0
    const std::int64_t *dims;
    std::int64_t stride_hint;  // new in 2.0
};
#endif

class Tensor {
public:
    explicit Tensor(const Shape &shape);
    ~Tensor();
    std::int64_t numel() const;
    double sum() const;
    static int version();

private:
#if ZCORE_VERSION == 1
    std::int64_t numel_;
    double *data_;
#else
    const char *device_;  // new in 2.0
    double *data_;
    std::int64_t numel_;
    std::int64_t ndim_;  // new in 2.0
#endif
};

}  // namespace zcore
