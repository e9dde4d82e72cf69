// From decrypted files to OpenVINO: the weights are decrypted straight into memory that an ov::Tensor
// owns, and that very tensor is handed to Core::read_model(xml, weights), which keeps it alive for as
// long as any model reads from it. One copy of the weights, nothing on disk. The xml is wiped as soon
// as OpenVINO has parsed it.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <memory>
#include <new>
#include <openvino/runtime/core.hpp>
#include <string>

#include "errors.hpp"
#include "file.hpp"
#include "package.hpp"

namespace ovcrypt {

/// Memory for decrypted weights. Big buffers are placed on 2 MiB boundaries and, up to 1 GiB, advised
/// to transparent huge pages, as numpy does for its big arrays (and as the Python runtime does): the
/// kernel then faults in and zeroes 2 MiB at a time instead of 4 KiB. Beyond 1 GiB the kernel's
/// compaction to find that many huge pages cost more than it saved (benchmarks/RESULTS.md).
struct WeightsAllocator {
    static constexpr std::size_t HUGE_PAGE = 2u << 20;
    static constexpr std::size_t HUGE_PAGE_LIMIT = 1u << 30;

    void* allocate(std::size_t bytes, std::size_t alignment) {
        const bool big = bytes >= 2 * HUGE_PAGE;
        void* memory = nullptr;
        if (::posix_memalign(&memory, std::max(big ? HUGE_PAGE : alignment, sizeof(void*)), std::max<std::size_t>(bytes, 1))) {
            throw std::bad_alloc();
        }
#ifdef MADV_HUGEPAGE
        if (big && bytes <= HUGE_PAGE_LIMIT) {
            ::madvise(memory, bytes / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);  // advice only: ignore failure
        }
#endif
        return memory;
    }
    void deallocate(void* memory, std::size_t, std::size_t) noexcept { std::free(memory); }
    bool is_equal(const WeightsAllocator&) const noexcept { return true; }
};

/// Decrypt a file into a new u8 tensor that owns the plaintext (an IR's weights).
inline ov::Tensor read_weights(const Package& package, const std::string& model, const std::string& relpath) {
    const EncryptedFile file = package.open_file(model, relpath);
    const std::size_t size = static_cast<std::size_t>(file.header().plaintext_length);
    ov::Tensor weights(ov::element::u8, ov::Shape{size}, WeightsAllocator());
    file.decrypt_into(static_cast<std::uint8_t*>(weights.data()), size, package.threads());
    return weights;
}

/// An OpenVINO model from a decrypted xml and its weights tensor (which the model then shares);
/// the xml is wiped once OpenVINO has parsed it. An empty tensor means an IR without weights.
inline std::shared_ptr<ov::Model> model_from_memory(ov::Core& core, Plaintext xml, const ov::Tensor& weights) {
    std::shared_ptr<ov::Model> model = core.read_model(xml.str(), weights);
    xml.wipe();
    return model;
}

/// The part to read: the one named, or the model's default part (see Model::default_part).
inline const ModelPart& find_part(const Model& model, const std::string& part) {
    std::string name = part;
    if (name.empty()) {
        const auto fallback = model.default_part();
        if (!fallback) {
            std::string known;
            for (const auto& item : model.parts) known += (known.empty() ? "" : ", ") + item.first;
            throw ModelNotFoundError("model '" + model.name + "' has no default IR part; name one of: " +
                                     (known.empty() ? "none" : known));
        }
        name = *fallback;
    }
    const auto it = model.parts.find(name);
    if (it == model.parts.end()) throw ModelNotFoundError("model '" + model.name + "' has no IR part '" + name + "'");
    return it->second;
}

/// Decrypt an IR (the model's default part, or `part` of a folder model) into an ov::Model.
/// The weights are read first, then the xml, as the Python runtime does.
inline std::shared_ptr<ov::Model> read_model(ov::Core& core, const Package& package, const std::string& model,
                                             const std::string& part = "") {
    const ModelPart& ir = find_part(package.model(model), part);
    const ov::Tensor weights = ir.bin.empty() ? ov::Tensor() : read_weights(package, model, ir.bin);
    return model_from_memory(core, package.read_file(model, ir.xml), weights);
}

/// Refuse compile options that make OpenVINO write decrypted weights to disk in plaintext: its model
/// cache does so on CPU, even with cache encryption callbacks (which only cover the topology).
inline void check_config(const ov::Core& core, const std::string& device, const ov::AnyMap& config) {
    for (const auto& item : config) {
        std::string key = item.first;
        std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return std::toupper(c); });
        if (key == "CACHE_DIR" || key == "CACHE_ENCRYPTION_CALLBACKS") {
            throw UnsafeConfigError("compile option " + item.first +
                                    " is refused: OpenVINO's cache stores decrypted weights on disk in plaintext");
        }
    }
    std::string cache_dir;
    try {
        cache_dir = core.get_property(device, ov::cache_dir);
    } catch (const ov::Exception&) {  // a device without the property has no cache either
    }
    if (!cache_dir.empty()) {
        throw UnsafeConfigError("the OpenVINO core has a cache_dir set (" + cache_dir +
                                "): it would store decrypted weights on disk in plaintext");
    }
}

/// Decrypt and compile a model, as the Python runtime's compile_model(name) does.
inline ov::CompiledModel compile_model(ov::Core& core, const Package& package, const std::string& model,
                                       const std::string& device = "CPU", const ov::AnyMap& config = {},
                                       const std::string& part = "") {
    check_config(core, device, config);
    return core.compile_model(read_model(core, package, model, part), device, config);
}

}  // namespace ovcrypt
