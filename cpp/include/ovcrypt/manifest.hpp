// manifest.json (docs/FORMAT.md section 5), formats "hatch-ovcrypt-manifest/1" and "/2". The manifest is
// public and untrusted until its MAC verifies: parse() checks its structure and that every file it
// names is exactly where the naming rules put it (model.hpp), so it can never point elsewhere;
// verify() checks the MAC once a key is at hand. JSON itself is parsed by nlohmann::json.
//
// Only authenticated fields are ever acted on. In particular the v1 fields key_env and key_provider
// are checked (they are under the MAC) but never used: the key's source is the caller's choice.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "crypto.hpp"
#include "detail/text.hpp"
#include "errors.hpp"
#include "format.hpp"
#include "holders.hpp"
#include "model.hpp"

namespace ovcrypt {

constexpr const char* MANIFEST_FORMAT_V1 = "hatch-ovcrypt-manifest/1";
constexpr const char* MANIFEST_FORMAT_V2 = "hatch-ovcrypt-manifest/2";

class Manifest {
public:
    int version = 0;        // 1 or 2
    std::string generator;  // "hatch-ovcrypt 1.2.3"
    format::KeyId key_id{};
    std::map<std::string, Model> models;
    std::vector<HolderEntry> holders;  // section 5.3: who can unwrap the key (empty without `data-key`)
    std::string product;               // the holders' context; set exactly when holders are

    /// Parse and check the structure (ManifestError); the MAC is checked later by verify().
    static Manifest parse(const std::string& text);

    /// The exact bytes the MAC covers: the body as Python's json.dumps(body, sort_keys=True,
    /// separators=(",", ":"), ensure_ascii=True) writes it (section 5.2).
    const std::string& canonical_body() const noexcept { return canonical_; }

    /// Compare the MAC in constant time; ManifestError if it does not verify under `key`.
    void verify(const format::MasterKey& key) const {
        crypto::Key256 mac_key = format::manifest_mac_key(key);
        const crypto::Sha256 mac = crypto::hmac_sha256(mac_key.data(), mac_key.size(), canonical_.data(),
                                                       canonical_.size());
        const std::string expected = crypto::to_hex(mac);
        if (mac_.size() != expected.size() ||
            !crypto::equal_constant_time(mac_.data(), expected.data(), expected.size())) {
            throw ManifestError(std::string(layout::MANIFEST_NAME) +
                                " failed authentication: it was edited or does not belong to these files; "
                                "reinstall the package");
        }
    }

private:
    std::string canonical_;
    std::string mac_;
};

namespace detail {

using nlohmann::json;

[[noreturn]] inline void invalid(const std::string& problem) {
    throw ManifestError(std::string(layout::MANIFEST_NAME) + " is invalid: " + problem + "; reinstall the package");
}

inline const json& field(const json& object, const char* key) {
    static const json missing;
    const auto it = object.find(key);
    return it == object.end() ? missing : *it;
}

inline std::set<std::string> keys_of(const json& object) {
    std::set<std::string> keys;
    for (const auto& item : object.items()) keys.insert(item.key());
    return keys;
}

/// A Python provider reference, "module.path:function" (v1 only; checked, never used).
inline bool is_provider_ref(const std::string& ref) {
    const std::size_t colon = ref.find(':');
    if (colon == std::string::npos || !is_identifier(std::string_view(ref).substr(colon + 1))) return false;
    std::size_t start = 0;
    const std::string_view module = std::string_view(ref).substr(0, colon);
    while (start <= module.size()) {
        const std::size_t dot = std::min(module.find('.', start), module.size());
        if (!is_identifier(module.substr(start, dot - start))) return false;
        start = dot + 1;
    }
    return true;
}

/// A project name, [A-Za-z0-9][A-Za-z0-9._-]{0,127}.
inline bool is_product_name(const std::string& name) {
    if (name.empty() || name.size() > 128) return false;
    for (std::size_t i = 0; i < name.size(); ++i) {
        const char c = name[i];
        const bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) return false;
    }
    return true;
}

/// The `holders` list (section 5.3), checked as the Python runtime checks it; an unknown scheme is refused.
inline std::vector<HolderEntry> parse_holders(const json& value) {
    if (!value.is_array() || value.empty() || value.size() > 64) invalid("`holders` must be a list of 1 to 64 holders");
    std::vector<HolderEntry> out;
    for (std::size_t i = 0; i < value.size(); ++i) {
        const std::string label = "holder " + std::to_string(i + 1);
        const json& item = value[i];
        if (!item.is_object() || keys_of(item) != std::set<std::string>{"stanza", "uri"}) {
            invalid(label + " must have exactly uri and stanza");
        }
        if (!item["uri"].is_string()) invalid(label + " uri must be printable ASCII without spaces");
        HolderEntry entry;
        entry.uri = item["uri"].get<std::string>();
        bool printable = !entry.uri.empty() && entry.uri.size() <= 2048;
        std::string lower;
        for (char c : entry.uri) {
            printable = printable && c > ' ' && c < 0x7f;
            lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
        }
        if (!printable) invalid(label + " uri must be printable ASCII without spaces");
        if (lower.find("pin-value=") != std::string::npos) invalid(label + " uri holds a pin-value: a PIN is never stored");
        const std::string scheme = holder_scheme(entry.uri);
        if (!is_known_holder_scheme(scheme)) {
            throw ManifestError(std::string(layout::MANIFEST_NAME) + ": " + label + " has scheme " +
                                detail::quoted(scheme.empty() ? entry.uri.substr(0, 16) : scheme) +
                                ", which this reader does not know (it knows age, transit, pkcs11, awskms); "
                                "upgrade hatch-ovcrypt");
        }
        for (const auto& earlier : out) {
            if (earlier.uri == entry.uri) invalid(label + " repeats uri " + detail::quoted(entry.uri));
        }
        const json& stanza = item["stanza"];
        if (!stanza.is_object() || stanza.empty()) invalid(label + " stanza must be a non-empty object");
        for (const auto& field_item : stanza.items()) {
            const std::string& name = field_item.key();
            bool ok = !name.empty() && name.size() <= 64;
            for (char c : name) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-');
            if (!ok) invalid(label + " stanza field " + detail::quoted(name.substr(0, 64)) + " is not a-z, 0-9, _ or -");
            if (!field_item.value().is_string() || field_item.value().get<std::string>().size() > 65536) {
                invalid(label + " stanza field " + detail::quoted(name) + " must be a string of at most 65536 chars");
            }
            entry.stanza[name] = field_item.value().get<std::string>();
        }
        out.push_back(std::move(entry));
    }
    return out;
}

/// One file entry: exactly file, size, sha256 and salt, with `file` exactly where `expected` puts it.
inline ManifestEntry parse_entry(const json& entry, const ModelFile& expected, const std::string& what) {
    if (!entry.is_object() || keys_of(entry) != std::set<std::string>{"file", "size", "sha256", "salt"}) {
        invalid(what + " entry must have file, size, sha256 and salt");
    }
    const json& file = entry["file"];
    if (!file.is_string() || file.get<std::string>() != expected.file) {
        invalid(what + " file must be '" + expected.file + "'");
    }
    const json& size = entry["size"];
    // JSON true/false and floats are not integers; nor is a number too large for 64 bits.
    if (!(size.is_number_unsigned() || (size.is_number_integer() && size.get<std::int64_t>() >= 0))) {
        invalid(what + " size must be a non-negative integer");
    }
    const json& sha = entry["sha256"];
    if (!sha.is_string() || !is_lower_hex(sha.get<std::string>(), 64)) {
        invalid(what + " sha256 must be 64 hex characters");
    }
    const json& salt = entry["salt"];
    if (!salt.is_string() || !is_lower_hex(salt.get<std::string>(), 64)) {
        invalid(what + " salt must be 64 hex characters");
    }
    ManifestEntry out{file.get<std::string>(), size.get<std::uint64_t>(), sha.get<std::string>(), {}};
    crypto::from_hex(salt.get<std::string>(), out.salt.data(), out.salt.size());
    return out;
}

/// v1: model -> {"xml": entry, "bin": entry}.
inline Model parse_model_v1(const std::string& name, const json& files) {
    if (!files.is_object() || keys_of(files) != std::set<std::string>{"xml", "bin"}) {
        invalid("model '" + name + "' must list exactly its xml and bin files");
    }
    std::vector<ModelFile> out;
    for (const auto role : {format::Role::xml, format::Role::bin}) {
        ModelFile file = layout::ir_file(name, role);
        const std::string label = format::role_label(role);
        file.entry = parse_entry(files[label], file, "model '" + name + "' " + label);
        out.push_back(std::move(file));
    }
    return layout::make_model(name, layout::KIND_IR, std::move(out));
}

/// v2: model -> {"kind": kind, "files": {relpath: entry}}.
inline Model parse_model_v2(const std::string& name, const json& model) {
    if (!model.is_object() || keys_of(model) != std::set<std::string>{"kind", "files"}) {
        invalid("model '" + name + "' must have exactly kind and files");
    }
    const json& kind = model["kind"];
    if (!kind.is_string() ||
        (kind.get<std::string>() != layout::KIND_IR && !layout::is_folder_kind(kind.get<std::string>()))) {
        invalid("model '" + name + "' kind must be ir, llm, vlm, text2image or files");
    }
    const json& files = model["files"];
    if (!files.is_object() || files.empty()) invalid("model '" + name + "' files must be a non-empty object");
    const bool ir = kind.get<std::string>() == layout::KIND_IR;
    if (ir && keys_of(files) != std::set<std::string>{name + ".xml", name + ".bin"}) {
        invalid("model '" + name + "' of kind ir must list exactly " + name + ".xml and " + name + ".bin");
    }
    std::vector<ModelFile> out;
    for (const auto& item : files.items()) {
        const std::string& relpath = item.key();
        ModelFile file;
        if (ir) {
            file = layout::ir_file(name, layout::role_of(relpath));
        } else {
            if (!layout::is_relpath(relpath)) {
                invalid("model '" + name + "' file path " + detail::quoted(relpath) + " is not allowed");
            }
            file = layout::folder_file(name, relpath);
            if (file.header_name.size() > format::MAX_NAME_BYTES) {
                invalid("model '" + name + "' file path '" + relpath + "' is too long");
            }
        }
        file.entry = parse_entry(item.value(), file, "model '" + name + "' file '" + relpath + "'");
        out.push_back(std::move(file));
    }
    return layout::make_model(name, kind.get<std::string>(), std::move(out));
}

/// Deeper than any manifest goes: refuse it before building it (a huge nesting costs memory, and
/// Python's reader refuses it too).
constexpr int MAX_JSON_DEPTH = 64;

}  // namespace detail

inline Manifest Manifest::parse(const std::string& text) {
    using detail::field;
    using detail::invalid;
    using nlohmann::json;
    json doc;
    try {
        doc = json::parse(
            text.begin(), text.end(),
            [](int depth, json::parse_event_t, json&) {
                if (depth > detail::MAX_JSON_DEPTH) {
                    throw ManifestError(std::string(layout::MANIFEST_NAME) + " is nested too deeply; reinstall the package");
                }
                return true;
            });
    } catch (const json::exception&) {
        throw ManifestError(std::string(layout::MANIFEST_NAME) +
                            " is not valid JSON (truncated or edited); reinstall the package");
    }
    Manifest manifest;
    const json& format_field = doc.is_object() ? field(doc, "format") : json();
    if (format_field == MANIFEST_FORMAT_V1) {
        manifest.version = 1;
    } else if (format_field == MANIFEST_FORMAT_V2) {
        manifest.version = 2;
    } else {
        invalid(std::string("format is not ") + MANIFEST_FORMAT_V1 + " or " + MANIFEST_FORMAT_V2);
    }
    const bool v1 = manifest.version == 1;
    // FORMAT.md section 5.1: no other top-level field is allowed (version 1 also has key_env, key_provider).
    std::set<std::string> allowed{"_generated", "format", "generator", "key_id", "models", "mac"};
    if (v1) allowed.insert({"key_env", "key_provider"});
    if (!v1) allowed.insert({"holders", "product"});
    for (const auto& item : doc.items()) {
        if (allowed.count(item.key()) == 0) invalid("unknown field " + detail::quoted(item.key()));
    }
    for (const char* name : {"generator", "key_id", "mac"}) {
        if (!field(doc, name).is_string()) invalid(std::string("`") + name + "` must be a string");
    }
    json body = json::object();
    body["format"] = format_field;
    body["generator"] = field(doc, "generator");
    body["key_id"] = field(doc, "key_id");
    if (v1) {
        const json& env = field(doc, "key_env");
        if (!env.is_string()) invalid("`key_env` must be a string");
        if (!detail::is_identifier(env.get<std::string>())) invalid("`key_env` is not an environment variable name");
        const json& provider = field(doc, "key_provider");  // missing reads as null, as in Python
        if (!provider.is_null() && !(provider.is_string() && detail::is_provider_ref(provider.get<std::string>()))) {
            invalid("`key_provider` must be null or 'module:function'");
        }
        body["key_env"] = env;
        body["key_provider"] = provider;
    }
    const std::string key_id = field(doc, "key_id").get<std::string>();
    if (!detail::is_lower_hex(key_id, 2 * format::KEY_ID_SIZE)) invalid("`key_id` is not a key id");
    crypto::from_hex(key_id, manifest.key_id.data(), manifest.key_id.size());
    const json& models = field(doc, "models");
    if (!models.is_object()) invalid("`models` must be an object");
    for (const auto& item : models.items()) {
        if (!layout::is_model_name(item.key())) {
            invalid("model name " + detail::quoted(item.key()) + " is not an identifier");
        }
        manifest.models.emplace(item.key(), v1 ? detail::parse_model_v1(item.key(), item.value())
                                               : detail::parse_model_v2(item.key(), item.value()));
    }
    body["models"] = models;
    if (doc.contains("holders") || doc.contains("product")) {
        manifest.holders = detail::parse_holders(field(doc, "holders"));
        const json& product = field(doc, "product");
        if (!product.is_string() || !detail::is_product_name(product.get<std::string>())) {
            invalid("`product` and `holders` come together, and `product` must be a project name");
        }
        manifest.product = product.get<std::string>();
        body["holders"] = field(doc, "holders");
        body["product"] = product;
    }
    manifest.generator = field(doc, "generator").get<std::string>();
    manifest.mac_ = field(doc, "mac").get<std::string>();
    // nlohmann's objects are sorted by key bytes (UTF-8 byte order is code point order, as Python
    // sorts), dump() without indent uses "," and ":", and ensure_ascii escapes as \uXXXX in lowercase
    // hex with surrogate pairs: exactly the canonical form of section 5.2.
    manifest.canonical_ = body.dump(-1, ' ', true);
    return manifest;
}

}  // namespace ovcrypt
