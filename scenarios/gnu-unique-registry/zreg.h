// "zreg": a header-only registry of generated files in the style of protobuf's generated
// descriptor database. Every package that uses it compiles it into its own extension.
//
// The registry's state is an inline static data member of a class template,
// zreg::Registry<zreg::GeneratedFiles>::files (mangled, with its cxx11 ABI tag,
// _ZN4zreg8RegistryINS_14GeneratedFilesEE5filesB5cxx11E). g++ emits such a member as an
// STB_GNU_UNIQUE object when it has default visibility, and the loader binds every reference to
// a GNU_UNIQUE symbol to the first definition in the process, even across objects loaded
// RTLD_LOCAL. So two extensions that each carry zreg share one registry.
#pragma once

#include <cstdio>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace zreg {

class FatalException : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

template <typename Tag>
class Registry {
public:
    static bool Add(const std::string &name) {
        if (files == nullptr) files = new std::set<std::string>;
        return files->insert(name).second;
    }
    static std::vector<std::string> Names() {
        return files ? std::vector<std::string>(files->begin(), files->end())
                     : std::vector<std::string>();
    }

private:
    static inline std::set<std::string> *files = nullptr;
};

struct GeneratedFiles {};
using GeneratedDatabase = Registry<GeneratedFiles>;

// Called by each package's generated code at load time (protobuf:
// DescriptorPool::InternalAddGeneratedFile, whose CHECK throws FatalException).
inline void InternalAddGeneratedFile(const char *name) {
    if (!GeneratedDatabase::Add(name)) {
        std::fprintf(stderr, "[zreg ERROR] File already exists in database: %s\n", name);
        std::fflush(stderr);
        throw FatalException(std::string("CHECK failed: GeneratedDatabase::Add(\"") + name +
                             "\"): File already exists in database");
    }
}

}  // namespace zreg
