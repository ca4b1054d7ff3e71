// "zoolib": a tiny C++ library that both extensions compile in, at different versions (as two
// wheels each statically linking their own protobuf or abseil would). Its functions have
// default visibility, so each extension exports them under the same mangled names:
// _ZN6zoolib7versionEv, _ZN6zoolib5scaleEi.
#ifndef ZOOLIB_VERSION
#error "define ZOOLIB_VERSION"
#endif

namespace zoolib {

__attribute__((noinline)) int version() { return ZOOLIB_VERSION; }

// Version 1 doubles, version 2 triples: a behaviour change between releases.
__attribute__((noinline)) int scale(int value) { return value * (ZOOLIB_VERSION + 1); }

}  // namespace zoolib
