// The .ovc file format, version 1, as docs/FORMAT.md specifies it: key derivations (section 2), the
// header and its tag (3.1, 3.2), segment nonces (3.3), and the key-free structure check that is step 1
// of the validation order (section 4). Reading a whole file is in file.hpp.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crypto.hpp"
#include "errors.hpp"

namespace ovcrypt {
namespace format {

constexpr std::uint8_t MAGIC[8] = {'O', 'V', 'C', 'R', 'Y', 'P', 'T', 0};
constexpr std::uint8_t VERSION = 1;
constexpr std::size_t KEY_SIZE = 32;
constexpr std::size_t KEY_ID_SIZE = 16;
constexpr std::size_t SALT_SIZE = 32;
constexpr std::size_t TAG_SIZE = crypto::GCM_TAG_SIZE;
constexpr std::size_t FIXED_HEADER_SIZE = 72;
constexpr std::size_t MAX_NAME_BYTES = 255;
constexpr std::size_t MAX_HEADER_SIZE = FIXED_HEADER_SIZE + MAX_NAME_BYTES + TAG_SIZE;  // with the header tag
constexpr std::uint32_t MIN_SEGMENT_SIZE = 1u << 20;
constexpr std::uint32_t MAX_SEGMENT_SIZE = 4u << 20;

// Section 2: every key is derived from the master key with HKDF-SHA256 under its own info string.
constexpr std::string_view INFO_KEY_ID = "hatch-ovcrypt/v1/key-id";
constexpr std::string_view INFO_FILE_KEY = "hatch-ovcrypt/v1/file-key";
constexpr std::string_view INFO_MANIFEST_MAC = "hatch-ovcrypt/v1/manifest-mac";

using MasterKey = crypto::Key256;
using KeyId = std::array<std::uint8_t, KEY_ID_SIZE>;
using Salt = std::array<std::uint8_t, SALT_SIZE>;

/// What an encrypted file holds; bound into every segment's associated data (header byte 9).
enum class Role : std::uint8_t { xml = 1, bin = 2, compiled = 3, data = 4 };

inline const char* role_label(Role role) noexcept {
    switch (role) {
        case Role::xml: return "xml";
        case Role::bin: return "bin";
        case Role::compiled: return "compiled";
        case Role::data: return "data";
    }
    return "unknown";
}

/// The public fingerprint of a master key: HKDF(K, none, "hatch-ovcrypt/v1/key-id", 16). Checking it
/// before any AES operation makes a file committed to one key (AES-GCM alone is not).
inline KeyId key_id(const MasterKey& key) {
    KeyId out{};
    crypto::hkdf_sha256(key.data(), key.size(), nullptr, 0, INFO_KEY_ID, out.data(), out.size());
    return out;
}

/// The key of one file: HKDF(K, salt from its header, "hatch-ovcrypt/v1/file-key", 32).
inline crypto::Key256 file_key(const MasterKey& key, const Salt& salt) {
    crypto::Key256 out;
    crypto::hkdf_sha256(key.data(), key.size(), salt.data(), salt.size(), INFO_FILE_KEY, out.data(), out.size());
    return out;
}

/// The manifest's MAC key: HKDF(K, none, "hatch-ovcrypt/v1/manifest-mac", 32).
inline crypto::Key256 manifest_mac_key(const MasterKey& key) {
    crypto::Key256 out;
    crypto::hkdf_sha256(key.data(), key.size(), nullptr, 0, INFO_MANIFEST_MAC, out.data(), out.size());
    return out;
}

/// Section 3.3: 11-byte big-endian segment index, then a flag byte, 01 for the last segment.
inline crypto::GcmNonce segment_nonce(std::uint64_t index, std::uint64_t count) {
    crypto::GcmNonce nonce{};
    for (int i = 0; i < 8; ++i) nonce[10 - i] = static_cast<std::uint8_t>(index >> (8 * i));
    nonce[11] = index + 1 == count ? 0x01 : 0x00;
    return nonce;
}

/// Section 3.2: ff * 11, then 02. A segment nonce's last byte is 00 or 01, so they never meet.
inline crypto::GcmNonce header_nonce() {
    crypto::GcmNonce nonce{};
    nonce.fill(0xff);
    nonce[11] = 0x02;
    return nonce;
}

/// True if `bytes` is valid UTF-8 as Python's strict decoder sees it: no overlong forms, no
/// surrogates (U+D800..U+DFFF), nothing above U+10FFFF.
inline bool is_utf8(const std::uint8_t* bytes, std::size_t size) noexcept {
    std::size_t i = 0;
    while (i < size) {
        const std::uint8_t c = bytes[i];
        std::size_t extra;
        std::uint8_t lo = 0x80, hi = 0xbf;  // allowed range of the first continuation byte
        if (c < 0x80) {
            ++i;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            extra = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            extra = 2;
            if (c == 0xe0) lo = 0xa0;  // overlong
            if (c == 0xed) hi = 0x9f;  // surrogates
        } else if (c >= 0xf0 && c <= 0xf4) {
            extra = 3;
            if (c == 0xf0) lo = 0x90;  // overlong
            if (c == 0xf4) hi = 0x8f;  // above U+10FFFF
        } else {
            return false;
        }
        if (size - i <= extra) return false;
        if (bytes[i + 1] < lo || bytes[i + 1] > hi) return false;
        for (std::size_t k = 2; k <= extra; ++k) {
            if ((bytes[i + k] & 0xc0) != 0x80) return false;
        }
        i += extra + 1;
    }
    return true;
}

inline bool segment_size_allowed(std::uint32_t size) noexcept {
    return size >= MIN_SEGMENT_SIZE && size <= MAX_SEGMENT_SIZE && size % 4096 == 0;
}

/// A parsed header (section 3.1) with its raw bytes, which are every segment's associated data.
struct Header {
    Role role{};
    std::string name;
    std::uint32_t segment_size = 0;
    std::uint64_t plaintext_length = 0;
    KeyId key_id{};
    Salt salt{};
    std::vector<std::uint8_t> raw;  // bytes [0, 72 + n): the header as authenticated
    crypto::GcmTag tag{};           // the header tag, bytes [72 + n, 88 + n)

    /// Offset of the first ciphertext byte: header and header tag.
    std::uint64_t header_size() const noexcept { return raw.size() + TAG_SIZE; }

    /// Always at least one: an empty plaintext still has its one authenticated, empty, last segment.
    std::uint64_t segment_count() const noexcept {
        const std::uint64_t full = plaintext_length / segment_size;
        const std::uint64_t count = full + (plaintext_length % segment_size ? 1 : 0);
        return count ? count : 1;
    }

    /// Offset of the first segment tag.
    std::uint64_t tags_offset() const noexcept { return header_size() + plaintext_length; }

    /// The exact size of the file this header describes, or nothing if that exceeds 2^64 - 1 bytes
    /// (then no real file can match it).
    std::optional<std::uint64_t> file_size() const noexcept {
        std::uint64_t total = 0;
        if (__builtin_add_overflow(header_size(), plaintext_length, &total) ||
            __builtin_add_overflow(total, TAG_SIZE * segment_count(), &total)) {
            return std::nullopt;
        }
        return total;
    }

    /// Plaintext byte range [first, second) of segment `index`.
    std::pair<std::uint64_t, std::uint64_t> segment_span(std::uint64_t index) const noexcept {
        const std::uint64_t start = index * segment_size;
        const std::uint64_t end = start + segment_size;
        return {start, end < plaintext_length ? end : plaintext_length};
    }
};

inline std::uint64_t read_be(const std::uint8_t* p, int bytes) noexcept {
    std::uint64_t value = 0;
    for (int i = 0; i < bytes; ++i) value = value << 8 | p[i];
    return value;
}

/// Step 1 of the validation order (no key needed): parse the header and header tag from the first
/// `size` bytes of a file. `size` may exceed the header. Throws FormatError with the Python reader's
/// wording ("not a hatch-ovcrypt file", "version not supported", "corrupt header", "truncated").
inline Header parse_header(const std::uint8_t* data, std::size_t size, const std::string& label) {
    if (size < FIXED_HEADER_SIZE) {
        throw FormatError(label + ": file is truncated (" + std::to_string(size) +
                          " bytes), not a hatch-ovcrypt file");
    }
    if (std::memcmp(data, MAGIC, sizeof MAGIC) != 0) {
        throw FormatError(label + ": not a hatch-ovcrypt file (bad magic)");
    }
    if (data[8] != VERSION) {
        throw FormatError(label + ": format version " + std::to_string(data[8]) +
                          " is not supported (this reader reads version " + std::to_string(VERSION) + ")");
    }
    const std::uint8_t role = data[9], flags = data[10], name_size = data[11];
    if (role < 1 || role > 4 || flags != 0 || name_size == 0) {
        throw FormatError(label + ": corrupt header (role, flags or name length)");
    }
    const auto segment_size = static_cast<std::uint32_t>(read_be(data + 12, 4));
    if (!segment_size_allowed(segment_size)) {
        throw FormatError(label + ": corrupt header (segment size " + std::to_string(segment_size) + ")");
    }
    const std::size_t end = FIXED_HEADER_SIZE + name_size;
    if (size < end + TAG_SIZE) {
        throw FormatError(label + ": file is truncated inside its header");
    }
    if (!is_utf8(data + FIXED_HEADER_SIZE, name_size)) {
        throw FormatError(label + ": corrupt header (model name is not UTF-8)");
    }
    Header header;
    header.role = static_cast<Role>(role);
    header.name.assign(reinterpret_cast<const char*>(data + FIXED_HEADER_SIZE), name_size);
    header.segment_size = segment_size;
    header.plaintext_length = read_be(data + 16, 8);
    std::memcpy(header.key_id.data(), data + 24, KEY_ID_SIZE);
    std::memcpy(header.salt.data(), data + 40, SALT_SIZE);
    header.raw.assign(data, data + end);
    std::memcpy(header.tag.data(), data + end, TAG_SIZE);
    return header;
}

/// Steps 2 and 3: check the key id (key commitment, before any AES operation), derive the file key
/// and verify the header tag. Returns the file key.
inline crypto::Key256 authenticate_header(const MasterKey& key, const Header& header, const std::string& label) {
    const KeyId offered = key_id(key);
    if (offered != header.key_id) {
        throw WrongKeyError(label + ": key id " + crypto::to_hex(offered) + " does not match the file's key id " +
                            crypto::to_hex(header.key_id));
    }
    crypto::Key256 fkey = file_key(key, header.salt);
    crypto::GcmDecryptor gcm(fkey);
    if (!gcm.verify_gmac(header_nonce(), header.raw.data(), header.raw.size(), header.tag)) {
        throw IntegrityError(label + ": header failed authentication (the file was modified)");
    }
    return fkey;
}

}  // namespace format
}  // namespace ovcrypt
