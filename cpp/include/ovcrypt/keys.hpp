// Master keys: parsing them, and finding the one a file needs by its key id, from the same sources as
// the Python runtime (ovcrypt_runtime/_keys/sources.py), in the same order:
//
//   1. keys the caller added (add_hex, add),
//   2. the environment variable (OVCRYPT_KEY unless the caller names another): one key, or several
//      separated by commas or whitespace ("new,old" during a key rotation),
//   3. the file named by <variable>_FILE,
//   4. the manifest's key holders, in order (holders.hpp: an age identity from <variable>_AGE_IDENTITY
//      or <variable>_AGE_IDENTITY_FILE; holders of other schemes are named in the error).
//
// The variable's name comes from the caller, never from the manifest: a manifest is read before its MAC
// can be checked, so nothing in it may steer where keys come from. Every key held here, and every buffer
// that held key text, is wiped with OPENSSL_cleanse. No message ever contains key material.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "crypto.hpp"
#include "detail/text.hpp"
#include "errors.hpp"
#include "format.hpp"
#include "holders.hpp"

namespace ovcrypt {

constexpr const char* DEFAULT_KEY_ENV = "OVCRYPT_KEY";
/// A key file larger than this is refused unread beyond it (KeyFormatError), as by the Python runtime
/// (ovcrypt_runtime/_keys/sources.py MAX_KEY_FILE_BYTES): a key file holds a few keys, and a path such as /dev/zero must
/// end in one line, not in exhausted memory.
constexpr std::size_t MAX_KEY_FILE_BYTES = 64 << 10;

namespace detail {

/// A std::string that holds key text: wiped before it is freed.
struct WipedString {
    std::string text;
    ~WipedString() {
        if (!text.empty()) OPENSSL_cleanse(&text[0], text.size());
    }
};

}  // namespace detail

/// One key as 64 hex characters (surrounding whitespace ignored). `source` names where it came from.
inline format::MasterKey parse_key_hex(std::string_view value, const std::string& source) {
    const std::string_view text = detail::strip(value);
    if (text.empty()) {
        throw KeyFormatError(source + " is empty; it must hold a 64-hex-character key (make one with "
                                      "`hatch-ovcrypt keygen`)");
    }
    format::MasterKey key;
    if (!crypto::from_hex(text, key.data(), key.size())) {
        bool all_hex = true;
        for (char c : text) all_hex = all_hex && crypto::hex_value(c) >= 0;
        throw KeyFormatError(source + " is not a key: expected 64 hex characters (32 bytes), got " +
                             std::to_string(text.size()) + " characters" + (all_hex ? "" : " including non-hex ones"));
    }
    return key;
}

/// One key or several, separated by commas or whitespace (as in OVCRYPT_KEY="new,old").
inline std::vector<format::MasterKey> parse_key_list(std::string_view text, const std::string& source) {
    std::vector<std::string_view> items;
    std::size_t start = 0;
    for (std::size_t i = 0; i <= text.size(); ++i) {
        if (i == text.size() || text[i] == ',' || detail::is_space(text[i])) {
            if (i > start) items.push_back(text.substr(start, i - start));
            start = i + 1;
        }
    }
    if (items.empty()) return {parse_key_hex(text, source)};  // throws the "is empty" error
    std::vector<format::MasterKey> keys;
    for (std::size_t i = 0; i < items.size(); ++i) {
        const std::string where = items.size() > 1 ? source + " (key " + std::to_string(i + 1) + " of " +
                                                         std::to_string(items.size()) + ")"
                                                   : source;
        keys.push_back(parse_key_hex(items[i], where));
    }
    return keys;
}

/// Keys from a key file (ASCII text: one key or a list), at most MAX_KEY_FILE_BYTES of it. Like the Python
/// runtime, any file that can be read is read (a pipe such as bash's `<(...)`, /dev/stdin), within that bound.
inline std::vector<format::MasterKey> read_key_file(const std::string& path, const std::string& source) {
    int fd;
    do {
        fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0 && errno == ENOENT) throw KeyMissingError(source + ": key file " + path + " does not exist");
    if (fd < 0) throw KeyFormatError(source + ": cannot read key file " + path + " (" + std::strerror(errno) + ")");
    detail::WipedString content;
    // Room for the bound and one byte more, reserved at once: no reallocation leaves key text behind.
    content.text.reserve(MAX_KEY_FILE_BYTES + 1);
    char chunk[4096];
    while (content.text.size() <= MAX_KEY_FILE_BYTES) {
        const std::size_t room = MAX_KEY_FILE_BYTES + 1 - content.text.size();
        const ssize_t n = ::read(fd, chunk, std::min(sizeof chunk, room));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int error = errno;
            OPENSSL_cleanse(chunk, sizeof chunk);
            ::close(fd);
            throw KeyFormatError(source + ": cannot read key file " + path + " (" + std::strerror(error) + ")");
        }
        if (n == 0) break;
        content.text.append(chunk, static_cast<std::size_t>(n));
    }
    OPENSSL_cleanse(chunk, sizeof chunk);
    ::close(fd);
    if (content.text.size() > MAX_KEY_FILE_BYTES) {
        throw KeyFormatError(source + ": key file " + path + " is larger than " + std::to_string(MAX_KEY_FILE_BYTES) +
                             " bytes: it is not a key file");
    }
    for (char c : content.text) {
        if (static_cast<unsigned char>(c) > 0x7f) {
            throw KeyFormatError(source + ": cannot read key file " + path + " (it is not ASCII text)");
        }
    }
    return parse_key_list(content.text, source + " (" + path + ")");
}

/// The keys offered to one reader, looked up by key id. Thread-safe.
class KeyRing {
public:
    /// `env_name`: the environment variable to read keys from (and `<env_name>_FILE`);
    /// `use_environment = false` takes keys from the caller only.
    explicit KeyRing(std::string env_name = DEFAULT_KEY_ENV, bool use_environment = true)
        : env_name_(std::move(env_name)), use_environment_(use_environment) {
        if (!detail::is_identifier(env_name_)) {
            throw KeyFormatError("'" + env_name_ + "' is not an environment variable name");
        }
    }
    KeyRing(const KeyRing& other) : env_name_(other.env_name_), use_environment_(other.use_environment_) {
        std::lock_guard<std::mutex> lock(other.mutex_);
        keys_ = other.keys_;
    }

    const std::string& env_name() const noexcept { return env_name_; }

    /// Offer a key as 64 hex characters; returns its key id (hex). Adds to the keys, never replaces.
    std::string add_hex(std::string_view hex) { return add_key(parse_key_hex(hex, "the key given to add_hex()")); }

    /// Offer a key as 32 raw bytes; returns its key id (hex).
    std::string add(const std::uint8_t* key, std::size_t size) {
        if (size != format::KEY_SIZE) {
            throw KeyFormatError("a key is 32 bytes or 64 hex characters, got " + std::to_string(size) + " bytes");
        }
        format::MasterKey copy;
        std::memcpy(copy.data(), key, size);
        return add_key(copy);
    }

    /// The key whose id is `wanted`; otherwise KeyMissingError (no key anywhere), KeyFormatError (a
    /// source holds something that is not a key) or WrongKeyError naming the key ids offered. `holders`
    /// (a manifest's, not yet authenticated: the key they give must have the id `wanted`) are tried last.
    format::MasterKey key_for(const format::KeyId& wanted, const std::string& label,
                              const std::vector<HolderEntry>& holders = {}) const {
        std::vector<std::string> offered;
        auto matches = [&](const format::MasterKey& key) {
            const format::KeyId id = format::key_id(key);
            if (id == wanted) return true;
            const std::string hex = crypto::to_hex(id);
            if (std::find(offered.begin(), offered.end(), hex) == offered.end()) offered.push_back(hex);
            return false;
        };
        {
            std::lock_guard<std::mutex> lock(mutex_);
            for (const auto& key : keys_) {
                if (matches(key)) return key;
            }
        }
        if (use_environment_) {
            try {
                if (const char* value = std::getenv(env_name_.c_str())) {
                    for (const auto& key : parse_key_list(value, "environment variable " + env_name_)) {
                        if (matches(key)) return key;
                    }
                }
                const std::string file_var = env_name_ + "_FILE";
                const char* file = std::getenv(file_var.c_str());
                if (file && *file) {
                    for (const auto& key : read_key_file(file, "environment variable " + file_var)) {
                        if (matches(key)) return key;
                    }
                }
            } catch (const KeyFormatError& e) {  // say which file needed the key
                throw KeyFormatError(label + ": " + e.what());
            } catch (const KeyMissingError& e) {
                throw KeyMissingError(label + ": " + e.what());
            }
        }
        std::string holders_failed;
        bool holders_wrong = false;
        if (use_environment_ && !holders.empty()) {
            try {
                return unwrap_first(holders, wanted, env_name_, label);
            } catch (const WrongKeyError& e) {
                holders_failed = std::string(e.what()).substr(label.size() + 2);
                holders_wrong = true;
            } catch (const KeyMissingError& e) {
                holders_failed = std::string(e.what()).substr(label.size() + 2);
            }
        }
        const std::string raw_sources = env_name_ + " (or " + env_name_ + "_FILE, a path to a file holding the key)";
        if (offered.empty() && !holders_failed.empty()) {
            const std::string message = label + ": " + holders_failed + "; or set the environment variable " + raw_sources;
            if (holders_wrong) throw WrongKeyError(message);
            throw KeyMissingError(message);
        }
        if (offered.empty()) {
            throw KeyMissingError(label + ": no key found; " +
                                  (use_environment_ ? "set the environment variable " + env_name_ + " (or " + env_name_ +
                                                          "_FILE, a path to a file holding the key), or "
                                                    : std::string()) +
                                  "give the reader a key");
        }
        std::string ids;
        for (const auto& id : offered) ids += (ids.empty() ? "" : ", ") + id;
        throw WrongKeyError(label + ": needs key id " + crypto::to_hex(wanted) +
                            ", but the keys offered have key ids " + ids +
                            (holders_failed.empty() ? std::string() : "; and " + holders_failed));
    }

private:
    std::string add_key(const format::MasterKey& key) {
        const format::KeyId id = format::key_id(key);
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto& held : keys_) {
            if (format::key_id(held) == id) return crypto::to_hex(id);
        }
        keys_.push_back(key);
        return crypto::to_hex(id);
    }

    std::string env_name_;
    bool use_environment_;
    mutable std::mutex mutex_;
    std::vector<format::MasterKey> keys_;  // each wiped when destroyed (Secret)
};

}  // namespace ovcrypt
