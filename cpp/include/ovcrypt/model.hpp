// What a model is made of, and where its files sit under a package's models/ folder. These naming rules
// come from the manifest's schema (docs/FORMAT.md section 5 and the manifest v2 design), and are the
// same whether a model comes from a manifest or from a plain folder of .ovc files:
//
//   kind "ir"      one IR: files "<model>.xml" and "<model>.bin", stored as "<model>.xml.ovc" and
//                  "<model>.bin.ovc", each header named "<model>"; its one part is "<model>".
//   other kinds    a folder: each file's relpath ("tokenizer.json", "unet/openvino_model.bin") is
//                  stored as "<model>/<relpath>.ovc" with the header name "<model>/<relpath>"; role xml
//                  for ".xml", bin for ".bin", data otherwise. Each ".xml" is an IR part named by its
//                  relpath without ".xml", whose weights are "<part>.bin" when that file is listed.
#pragma once

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "format.hpp"
#include "detail/text.hpp"

namespace ovcrypt {

/// A file's record in a signed manifest. `sha256` and `size` describe the encrypted file.
struct ManifestEntry {
    std::string file;
    std::uint64_t size = 0;
    std::string sha256;
    format::Salt salt{};
};

/// One file of a model, and what its header must say.
struct ModelFile {
    std::string relpath;      // "detector.xml", "tokenizer.json", "unet/openvino_model.bin"
    std::string file;         // where it is stored, relative to the models folder
    format::Role role{};      // the role its header must carry
    std::string header_name;  // the model name its header must carry
    std::optional<ManifestEntry> entry;  // from the signed manifest; none in a plain folder
};

/// An IR inside a model: the relpaths of its graph and of its weights (empty: it has none).
struct ModelPart {
    std::string xml;
    std::string bin;
};

struct Model {
    std::string name;
    std::string kind;                        // "ir", "llm", "vlm", "text2image" or "files"
    std::vector<ModelFile> files;            // sorted by relpath
    std::map<std::string, ModelPart> parts;  // part name -> IR files

    const ModelFile* find(std::string_view relpath) const {
        for (const auto& f : files) {
            if (f.relpath == relpath) return &f;
        }
        return nullptr;
    }

    /// The part that read_model() and ovcrypt_dump use when none is named: the one IR of kind "ir",
    /// else "openvino_model" when the folder has it (what an exported LLM's main IR is called), else none.
    std::optional<std::string> default_part() const {
        if (kind == "ir") return name;
        if (parts.count("openvino_model")) return std::string("openvino_model");
        return std::nullopt;
    }
};

namespace layout {

constexpr const char* MANIFEST_NAME = "manifest.json";
constexpr const char* MODELS_DIR = "models";
constexpr const char* SUFFIX = ".ovc";
constexpr const char* KIND_IR = "ir";
constexpr const char* FOLDER_KINDS[] = {"llm", "vlm", "text2image", "files"};

/// A model name: an ASCII identifier [A-Za-z_][A-Za-z0-9_]*.
inline bool is_model_name(std::string_view name) noexcept { return detail::is_identifier(name); }

inline bool is_folder_kind(std::string_view kind) noexcept {
    return std::find(std::begin(FOLDER_KINDS), std::end(FOLDER_KINDS), kind) != std::end(FOLDER_KINDS);
}

/// A file's path inside a folder model: '/'-separated components of [A-Za-z0-9_.-]+, none "." or "..".
inline bool is_relpath(std::string_view relpath) noexcept {
    if (relpath.empty()) return false;
    std::size_t start = 0;
    while (start <= relpath.size()) {
        const std::size_t slash = std::min(relpath.find('/', start), relpath.size());
        const std::string_view part = relpath.substr(start, slash - start);
        if (part.empty() || part == "." || part == "..") return false;
        for (char c : part) {
            const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                            c == '.' || c == '-';
            if (!ok) return false;
        }
        start = slash + 1;
    }
    return true;
}

inline format::Role role_of(std::string_view relpath) noexcept {
    if (detail::ends_with(relpath, ".xml")) return format::Role::xml;
    if (detail::ends_with(relpath, ".bin")) return format::Role::bin;
    return format::Role::data;
}

/// The xml or bin file of a kind "ir" model.
inline ModelFile ir_file(const std::string& model, format::Role role) {
    const std::string ext = format::role_label(role);
    return ModelFile{model + "." + ext, model + "." + ext + SUFFIX, role, model, std::nullopt};
}

/// A file of a folder model; the caller has checked is_relpath(relpath).
inline ModelFile folder_file(const std::string& model, const std::string& relpath) {
    return ModelFile{relpath, model + "/" + relpath + SUFFIX, role_of(relpath), model + "/" + relpath, std::nullopt};
}

/// A model from its files: sorted, with its IR parts found.
inline Model make_model(std::string name, std::string kind, std::vector<ModelFile> files) {
    Model model{std::move(name), std::move(kind), std::move(files), {}};
    std::sort(model.files.begin(), model.files.end(),
              [](const ModelFile& a, const ModelFile& b) { return a.relpath < b.relpath; });
    for (const auto& f : model.files) {
        if (f.role != format::Role::xml) continue;
        const std::string part = f.relpath.substr(0, f.relpath.size() - 4);
        model.parts[part] = ModelPart{f.relpath, model.find(part + ".bin") ? part + ".bin" : std::string()};
    }
    return model;
}

}  // namespace layout
}  // namespace ovcrypt
