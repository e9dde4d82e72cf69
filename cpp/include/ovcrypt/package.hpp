// A folder of encrypted models: a package's `_ovcrypt` folder (manifest.json and models/), or a plain
// folder of .ovc files such as `hatch-ovcrypt encrypt MODEL.xml --out DIR` writes.
//
// With a manifest, every file is bound to it before any AES operation: the file must be exactly where
// the manifest's naming rules put it (no symbolic links), its header must carry the expected model
// name, role, key id and the salt the signed manifest recorded (so a file of another build is refused),
// and the manifest's MAC is checked with the first key found. A plain folder has no manifest, so there
// is no MAC and no salt to check: each file is still authenticated under the key and bound to its model
// name and role by its header, but a file from another build under the same key is not detected.
#pragma once

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "errors.hpp"
#include "file.hpp"
#include "keys.hpp"
#include "manifest.hpp"
#include "model.hpp"
#include "signature.hpp"

namespace ovcrypt {

class Package {
public:
    /// Open `dir`: a package's `_ovcrypt` folder when it holds manifest.json or a models/ folder (then
    /// the manifest must be there and valid: ManifestError otherwise), else a plain folder of .ovc files.
    static Package open(const std::filesystem::path& dir, KeyRing keys = KeyRing()) {
        std::error_code ec;
        const bool package = std::filesystem::exists(std::filesystem::symlink_status(dir / layout::MANIFEST_NAME, ec)) ||
                             std::filesystem::exists(std::filesystem::symlink_status(dir / layout::MODELS_DIR, ec));
        return package ? open_package(dir, std::move(keys)) : open_folder(dir, std::move(keys));
    }

    /// A package's `_ovcrypt` folder; its manifest is parsed now (ManifestError if missing or invalid).
    static Package open_package(const std::filesystem::path& dir, KeyRing keys = KeyRing()) {
        Package package(dir, std::move(keys));
        const std::filesystem::path path = dir / layout::MANIFEST_NAME;
        package.manifest_text_ = std::make_shared<const std::string>(read_manifest(path));
        package.manifest_ = std::make_shared<const Manifest>(Manifest::parse(*package.manifest_text_));
        package.models_dir_ = dir / layout::MODELS_DIR;
        return package;
    }

    /// A plain folder of .ovc files, read like a package's models/ folder without its manifest:
    /// NAME.xml.ovc and NAME.bin.ovc form the IR model NAME; a subfolder NAME/ of .ovc files is the
    /// folder model NAME (kind "files").
    static Package open_folder(const std::filesystem::path& dir, KeyRing keys = KeyRing()) {
        if (!std::filesystem::is_directory(dir)) throw Error(dir.string() + " is not a folder");
        Package package(dir, std::move(keys));
        package.models_dir_ = dir;
        package.folder_models_ = std::make_shared<const std::map<std::string, Model>>(scan_folder(dir));
        return package;
    }

    /// Pin the publisher's public keys (PEM, ECDSA P-256) and check the package's model.sig under them now:
    /// SignatureError unless one verifies it and it signs this manifest. From then on every file opened must
    /// have exactly the SHA-256 the manifest lists, checked before its key is looked up. Call it right after
    /// open(): a holder of the model key can forge a manifest and files, but not the publisher's signature.
    void require_publisher(const std::vector<std::string>& publisher_keys) {
        if (!manifest_) throw SignatureError(dir_.string() + ": has no manifest.json, so nothing a publisher signed");
        const std::filesystem::path sig = dir_ / signature::SIGNATURE_NAME;
        std::error_code ec;
        const bool present = std::filesystem::exists(std::filesystem::symlink_status(sig, ec));
        signature::verify(present, present ? read_manifest(sig) : std::string(), *manifest_text_, publisher_keys,
                          dir_.string());
        signed_ = true;
    }

    const std::filesystem::path& path() const noexcept { return dir_; }
    bool has_manifest() const noexcept { return manifest_ != nullptr; }
    /// The parsed manifest (not yet authenticated until a file has been opened), or null.
    const Manifest* manifest() const noexcept { return manifest_.get(); }
    KeyRing& keys() noexcept { return *keys_; }

    /// Decryption threads per file; 0 (the default) is default_threads().
    void set_threads(unsigned threads) noexcept { threads_ = threads; }
    unsigned threads() const noexcept { return threads_; }

    std::vector<std::string> model_names() const {
        std::vector<std::string> names;
        for (const auto& item : models()) names.push_back(item.first);
        return names;
    }

    /// A model's kind, files and IR parts, or ModelNotFoundError.
    const Model& model(const std::string& name) const {
        const auto& all = models();
        const auto it = all.find(name);
        if (it == all.end()) {
            std::string known;
            for (const auto& item : all) known += (known.empty() ? "" : ", ") + item.first;
            throw ModelNotFoundError(dir_.string() + " has no model " + detail::quoted(name) + " (models: " +
                                     (known.empty() ? "none" : known) + ")");
        }
        return it->second;
    }

    /// Open one file of a model and take it through steps 1 to 4 of FORMAT.md section 4, with the
    /// manifest's checks in between: afterwards its header is authenticated, its size exact, and its
    /// plaintext length can be trusted to size a buffer for decrypt_into().
    EncryptedFile open_file(const std::string& model_name, const std::string& relpath) const {
        const Model& m = model(model_name);
        const ModelFile* spec = m.find(relpath);
        if (!spec) throw ModelNotFoundError("model '" + model_name + "' has no file " + detail::quoted(relpath));
        const std::string label = "model '" + model_name + "' file " + spec->file;
        const std::filesystem::path path = checked_path(*spec, label);
        if (signed_ && spec->entry && file_sha256(path, label) != spec->entry->sha256) {
            // A holder of the model key can write other ciphertext with this header's salt and size.
            throw SignatureError(label + ": is not the file the publisher signed (its SHA-256 differs from the "
                                 "signed manifest's); reinstall the package");
        }
        EncryptedFile file = EncryptedFile::open(path, label, has_manifest());  // 1. structure
        const format::Header& header = file.header();
        if (header.name != spec->header_name || header.role != spec->role) {
            // A file moved to another model or role is refused before any decryption (the AEAD would too).
            throw IntegrityError(label + ": holds the " + format::role_label(header.role) + " of model " +
                                 detail::quoted(header.name) + ", not the " + format::role_label(spec->role) +
                                 " of model " + detail::quoted(spec->header_name));
        }
        if (spec->entry && header.salt != spec->entry->salt) {
            // Same key, name and role but another build's file: every segment key derives from the salt,
            // so matching the salt that the signed manifest recorded binds the whole file.
            throw IntegrityError(label + ": is not the file this package was built with (it comes from another build)");
        }
        file.unlock(key_for(header.key_id, label));  // 2. key id, 3. header tag, 4. exact size
        if (spec->entry && file.file_size() != spec->entry->size) {
            throw IntegrityError(label + ": is " + std::to_string(file.file_size()) + " bytes, but the manifest lists " +
                                 std::to_string(spec->entry->size));
        }
        return file;
    }

    /// Decrypt one file of a model into memory (step 5), e.g. a tokenizer.json of a folder model.
    Plaintext read_file(const std::string& model_name, const std::string& relpath) const {
        const EncryptedFile file = open_file(model_name, relpath);
        Plaintext out(static_cast<std::size_t>(file.header().plaintext_length));
        file.decrypt_into(out.data(), out.size(), threads_);
        return out;
    }

private:
    Package(std::filesystem::path dir, KeyRing keys)
        : dir_(std::move(dir)),
          keys_(std::make_shared<KeyRing>(std::move(keys))),
          verified_(std::make_shared<Verified>()) {}

    struct Verified {
        std::mutex mutex;
        bool done = false;
    };

    const std::map<std::string, Model>& models() const { return manifest_ ? manifest_->models : *folder_models_; }

    /// The master key for a file, checked against the manifest: the key id it was built under, and
    /// (once per package) the manifest's MAC.
    format::MasterKey key_for(const format::KeyId& wanted, const std::string& label) const {
        if (manifest_ && wanted != manifest_->key_id) {
            throw IntegrityError(label + ": encrypted under key id " + crypto::to_hex(wanted) +
                                 ", but this package was built under " + crypto::to_hex(manifest_->key_id) +
                                 "; the file comes from another build");
        }
        format::MasterKey key = manifest_ ? keys_->key_for(wanted, label, manifest_->holders) : keys_->key_for(wanted, label);
        if (manifest_) {
            std::lock_guard<std::mutex> lock(verified_->mutex);
            if (!verified_->done) {
                manifest_->verify(key);
                verified_->done = true;
            }
        }
        return key;
    }

    /// The file's path; in a package, refuse symbolic links anywhere below models/ (one could lead
    /// outside the package) and report a missing file as an integrity failure.
    std::filesystem::path checked_path(const ModelFile& spec, const std::string& label) const {
        const std::filesystem::path path = models_dir_ / spec.file;
        if (!has_manifest()) return path;
        std::filesystem::path walk = models_dir_;
        std::vector<std::filesystem::path> steps{walk};
        for (const auto& part : std::filesystem::path(spec.file)) steps.push_back(walk /= part);
        for (const auto& step : steps) {
            struct stat st {};
            if (::lstat(step.c_str(), &st) != 0) {
                if (errno == ENOENT || errno == ENOTDIR) {
                    throw IntegrityError(label + ": is missing from the package; reinstall it");
                }
                throw Error(label + ": cannot open the file (" + std::strerror(errno) + ")");
            }
            if (S_ISLNK(st.st_mode)) {
                throw ManifestError(label + ": is a symbolic link; encrypted files must be regular files in the package");
            }
        }
        return path;
    }

    /// SHA-256 (hex) of a whole file, streamed.
    static std::string file_sha256(const std::filesystem::path& path, const std::string& label) {
        const int fd = detail::open_nonblocking(path.c_str());
        if (fd < 0) throw Error(label + ": cannot open the file (" + std::strerror(errno) + ")");
        const detail::FileDescriptor owner(fd);
        std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
        if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) crypto::openssl_failed("SHA-256");
        std::vector<std::uint8_t> chunk(std::size_t(1) << 20);
        std::uint64_t offset = 0;
        for (;;) {
            const std::size_t got = detail::pread_up_to(fd, chunk.data(), chunk.size(), offset, label);
            if (EVP_DigestUpdate(ctx.get(), chunk.data(), got) != 1) crypto::openssl_failed("SHA-256");
            offset += got;
            if (got < chunk.size()) break;
        }
        crypto::Sha256 out{};
        unsigned int length = 0;
        if (EVP_DigestFinal_ex(ctx.get(), out.data(), &length) != 1) crypto::openssl_failed("SHA-256");
        return crypto::to_hex(out);
    }

    /// The bytes of manifest.json (or model.sig). As in the Python runtime, only a regular file is read: a FIFO there would
    /// block a plain open() forever, a device such as /dev/zero would never end.
    static std::string read_manifest(const std::filesystem::path& path) {
        const int fd = detail::open_nonblocking(path.c_str());
        if (fd < 0 && (errno == ENOENT || errno == ENOTDIR)) {
            throw ManifestError(path.string() + " is missing; reinstall the package");
        }
        if (fd < 0) throw ManifestError(path.string() + " cannot be opened (" + std::strerror(errno) + ")");
        const detail::FileDescriptor owner(fd);
        struct stat st {};
        if (!detail::is_regular_file(fd, st)) {
            throw ManifestError(path.string() + " is not a regular file; reinstall the package");
        }
        std::string text;
        char chunk[1 << 16];
        std::uint64_t offset = 0;
        for (;;) {
            const std::size_t got =
                detail::pread_up_to(fd, reinterpret_cast<std::uint8_t*>(chunk), sizeof chunk, offset, path.string());
            text.append(chunk, got);
            offset += got;
            if (got < sizeof chunk) return text;
        }
    }

    /// The models of a plain folder, by the naming rules of model.hpp.
    static std::map<std::string, Model> scan_folder(const std::filesystem::path& dir) {
        namespace fs = std::filesystem;
        std::map<std::string, Model> found;
        for (const auto& entry : fs::directory_iterator(dir)) {
            const std::string name = entry.path().filename().string();
            for (const char* suffix : {".xml.ovc", ".bin.ovc"}) {
                if (detail::ends_with(name, suffix)) {
                    const std::string model = name.substr(0, name.size() - 8);
                    if (layout::is_model_name(model) && !found.count(model)) {
                        found.emplace(model, layout::make_model(model, layout::KIND_IR,
                                                                {layout::ir_file(model, format::Role::xml),
                                                                 layout::ir_file(model, format::Role::bin)}));
                    }
                }
            }
        }
        for (const auto& entry : fs::directory_iterator(dir)) {
            const std::string model = entry.path().filename().string();
            if (!entry.is_directory() || !layout::is_model_name(model) || found.count(model)) continue;
            std::vector<ModelFile> files;
            for (const auto& item : fs::recursive_directory_iterator(entry.path())) {
                const std::string rel = fs::relative(item.path(), entry.path()).generic_string();
                if (!item.is_regular_file() || !detail::ends_with(rel, layout::SUFFIX)) continue;
                const std::string relpath = rel.substr(0, rel.size() - 4);
                if (layout::is_relpath(relpath)) files.push_back(layout::folder_file(model, relpath));
            }
            if (!files.empty()) found.emplace(model, layout::make_model(model, "files", std::move(files)));
        }
        return found;
    }

    std::filesystem::path dir_;
    std::filesystem::path models_dir_;
    std::shared_ptr<KeyRing> keys_;
    std::shared_ptr<const Manifest> manifest_;
    std::shared_ptr<const std::string> manifest_text_;
    bool signed_ = false;
    std::shared_ptr<const std::map<std::string, Model>> folder_models_;
    std::shared_ptr<Verified> verified_;
    unsigned threads_ = 0;
};

}  // namespace ovcrypt
