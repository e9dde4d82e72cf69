// Key holders (docs/FORMAT.md section 5.3): the manifest's list of who can unwrap the package's data key,
// and the one holder this reader unwraps itself: an age X25519 recipient (https://age-encryption.org/v1),
// with OpenSSL only (X25519, HKDF-SHA256, ChaCha20-Poly1305, HMAC-SHA256), as the Python runtime's
// runtime/_holders/age.py does. The identity (AGE-SECRET-KEY-1...) comes from <key-env>_AGE_IDENTITY or
// the file named by <key-env>_AGE_IDENTITY_FILE: the variable's name is the caller's, never the manifest's.
// Holders of the other schemes (transit, pkcs11, awskms) are named in errors but not contacted here.
//
// Every secret (identity scalars, shared secrets, file keys, the payload) is wiped; no message holds one.
#pragma once

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "crypto.hpp"
#include "detail/text.hpp"
#include "errors.hpp"
#include "format.hpp"

namespace ovcrypt {

/// One holder of the manifest: its URI and its stanza (field -> string).
struct HolderEntry {
    std::string uri;
    std::map<std::string, std::string> stanza;
};

/// `age` for an age recipient (age1...), otherwise the text before the first ':' ("" if none).
inline std::string holder_scheme(const std::string& uri) {
    if (uri.rfind("age1", 0) == 0) return "age";
    const std::size_t colon = uri.find(':');
    return colon == std::string::npos ? std::string() : uri.substr(0, colon);
}

inline bool is_known_holder_scheme(const std::string& scheme) {
    return scheme == "age" || scheme == "transit" || scheme == "pkcs11" || scheme == "awskms";
}

namespace age {

using Scalar = crypto::Secret<32>;
constexpr std::size_t FILE_KEY_SIZE = 16;
constexpr std::size_t TAG_SIZE = 16;
constexpr std::size_t CHUNK_SIZE = 64 << 10;
constexpr std::size_t MAX_AGE_FILE = 16 << 10;
constexpr const char* ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----";
constexpr const char* ARMOR_END = "-----END AGE ENCRYPTED FILE-----";

/// Bytes that hold secrets, wiped when destroyed.
struct WipedBytes {
    std::vector<std::uint8_t> bytes;
    ~WipedBytes() {
        if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
    }
};

// --- bech32 (BIP-173) ---------------------------------------------------------------------------

inline std::uint32_t bech32_polymod(const std::vector<std::uint8_t>& values) {
    static const std::uint32_t gen[5] = {0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3};
    std::uint32_t chk = 1;
    for (std::uint8_t v : values) {
        const std::uint32_t top = chk >> 25;
        chk = ((chk & 0x1ffffff) << 5) ^ v;
        for (int i = 0; i < 5; ++i) {
            if ((top >> i) & 1) chk ^= gen[i];
        }
    }
    return chk;
}

/// The bytes of a bech32 string whose human-readable part is `hrp` (any case); "" or why it is not one.
/// Never puts the text into the reason (an identity is a secret key).
inline std::string bech32_decode(std::string_view text, std::string_view hrp, WipedBytes& out) {
    static const std::string charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    if (text.size() > 90) return "is longer than 90 characters";
    bool lower = false, upper = false;
    for (char c : text) {
        if (c < 33 || c > 126) return "has a character outside ASCII 33..126";
        lower = lower || (c >= 'a' && c <= 'z');
        upper = upper || (c >= 'A' && c <= 'Z');
    }
    if (lower && upper) return "mixes upper and lower case";
    std::string low(text);
    for (char& c : low) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    const std::size_t sep = low.rfind('1');
    if (sep == std::string::npos || sep < 1 || sep + 7 > low.size()) {
        return "has no human-readable part, separator `1` and 6-character checksum";
    }
    std::string want(hrp);
    for (char& c : want) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    if (low.compare(0, sep, want) != 0 || sep != want.size()) return "does not start with " + std::string(hrp) + "1";
    std::vector<std::uint8_t> values;
    for (char c : want) values.push_back(static_cast<std::uint8_t>(static_cast<unsigned char>(c) >> 5));
    values.push_back(0);
    for (char c : want) values.push_back(static_cast<std::uint8_t>(static_cast<unsigned char>(c) & 31));
    WipedBytes words;
    for (std::size_t i = sep + 1; i < low.size(); ++i) {
        const std::size_t v = charset.find(low[i]);
        if (v == std::string::npos) return "has a character that bech32 does not use after the separator";
        words.bytes.push_back(static_cast<std::uint8_t>(v));
        values.push_back(static_cast<std::uint8_t>(v));
    }
    OPENSSL_cleanse(&low[0], low.size());
    const bool ok = bech32_polymod(values) == 1;
    OPENSSL_cleanse(values.data(), values.size());
    if (!ok) return "has a wrong checksum (mistyped or truncated)";
    std::uint32_t acc = 0;
    int bits = 0;
    for (std::size_t i = 0; i + 6 < words.bytes.size(); ++i) {
        acc = ((acc << 5) | words.bytes[i]) & 0xfff;
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            out.bytes.push_back(static_cast<std::uint8_t>((acc >> bits) & 0xff));
        }
    }
    if (bits >= 5 || ((acc << (8 - bits)) & 0xff) != 0) return "has non-zero padding bits";
    return "";
}

// --- base64 --------------------------------------------------------------------------------------

/// Standard base64. `padded`: the armor's form (length a multiple of 4, `=` padding); otherwise age's
/// header form (no padding). Either way only the canonical encoding is accepted. False if not base64.
inline bool base64_decode(std::string_view text, bool padded, std::vector<std::uint8_t>& out) {
    auto value = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    if (padded) {
        if (text.size() % 4 != 0) return false;
        std::size_t pad = 0;
        while (pad < 2 && !text.empty() && text.back() == '=') {
            text.remove_suffix(1);
            ++pad;
        }
    }
    if (text.size() % 4 == 1) return false;
    std::uint32_t acc = 0;
    int bits = 0;
    for (char c : text) {
        const int v = value(c);
        if (v < 0) return false;
        acc = ((acc << 6) | static_cast<std::uint32_t>(v)) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<std::uint8_t>((acc >> bits) & 0xff));
        }
    }
    return (acc & ((1u << bits) - 1)) == 0;  // canonical: the unused low bits are zero
}

// --- primitives ----------------------------------------------------------------------------------

/// X25519(scalar, peer) into `shared`, and the scalar's own public key into `ours`; false for a
/// low-order peer (an all-zero shared secret).
inline bool x25519(const Scalar& scalar, const std::uint8_t* peer, std::uint8_t* shared, std::uint8_t* ours) {
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> priv(
        EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, scalar.data(), 32), EVP_PKEY_free);
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> pub(
        EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer, 32), EVP_PKEY_free);
    if (!priv || !pub) crypto::openssl_failed("X25519 keys");
    std::size_t length = 32;
    if (EVP_PKEY_get_raw_public_key(priv.get(), ours, &length) != 1 || length != 32) {
        crypto::openssl_failed("X25519 public key");
    }
    std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new(priv.get(), nullptr),
                                                                    EVP_PKEY_CTX_free);
    if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 || EVP_PKEY_derive_set_peer(ctx.get(), pub.get()) != 1) {
        crypto::openssl_failed("X25519 setup");
    }
    length = 32;
    if (EVP_PKEY_derive(ctx.get(), shared, &length) != 1 || length != 32) return false;  // OpenSSL refuses all-zero
    std::uint8_t any = 0;
    for (int i = 0; i < 32; ++i) any |= shared[i];
    return any != 0;
}

/// ChaCha20-Poly1305 decryption of `data` (ciphertext || 16-byte tag) into `out`; false if it does not verify.
inline bool chacha_open(const std::uint8_t* key, const std::uint8_t* nonce, const std::uint8_t* data, std::size_t size,
                        std::vector<std::uint8_t>& out) {
    if (size < TAG_SIZE) return false;
    std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
    const std::size_t length = size - TAG_SIZE;
    out.assign(length + 16, 0);
    int n = 0, end = 0;
    if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_chacha20_poly1305(), nullptr, nullptr, nullptr) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_IVLEN, 12, nullptr) != 1 ||
        EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key, nonce) != 1) {
        crypto::openssl_failed("ChaCha20-Poly1305 setup");
    }
    if (length && EVP_DecryptUpdate(ctx.get(), out.data(), &n, data, static_cast<int>(length)) != 1) {
        crypto::openssl_failed("ChaCha20-Poly1305 decryption");
    }
    if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_TAG, TAG_SIZE, const_cast<std::uint8_t*>(data + length)) != 1) {
        crypto::openssl_failed("ChaCha20-Poly1305 tag");
    }
    const bool ok = EVP_DecryptFinal_ex(ctx.get(), out.data() + n, &end) == 1;
    if (!ok) OPENSSL_cleanse(out.data(), out.size());
    out.resize(ok ? length : 0);
    return ok;
}

// --- the age file --------------------------------------------------------------------------------

/// The binary age file inside an armored one (whitespace around it allowed); KeyFormatError if it is not one.
inline std::vector<std::uint8_t> dearmor(std::string_view text, const std::string& where) {
    text = detail::strip(text);
    std::vector<std::string_view> lines;
    std::size_t start = 0;
    while (start <= text.size()) {
        std::size_t nl = text.find('\n', start);
        if (nl == std::string_view::npos) nl = text.size();
        std::string_view line = text.substr(start, nl - start);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        lines.push_back(line);
        start = nl + 1;
    }
    if (lines.size() < 3 || lines.front() != ARMOR_BEGIN || lines.back() != ARMOR_END) {
        throw KeyFormatError(where + ": not an armored age file (it must start with " + ARMOR_BEGIN + ")");
    }
    std::string body;
    for (std::size_t i = 1; i + 1 < lines.size(); ++i) {
        const bool last = i + 2 == lines.size();
        if ((!last && lines[i].size() != 64) || lines[i].empty() || lines[i].size() > 64) {
            throw KeyFormatError(where + ": the armored age file's lines are not 64 columns");
        }
        body += lines[i];
    }
    std::vector<std::uint8_t> out;
    if (!base64_decode(body, true, out)) throw KeyFormatError(where + ": the armored age file is not base64");
    if (out.size() > MAX_AGE_FILE) throw KeyFormatError(where + ": the age file is too large");
    return out;
}

/// The payload of a binary age file, into `payload`; false if none of `identities` is one of its X25519
/// recipients. KeyFormatError if it is not an age v1 file, or its header MAC or payload fails authentication.
inline bool decrypt(const std::vector<std::uint8_t>& data, const std::vector<Scalar>& identities,
                    const std::string& where, WipedBytes& payload) {
    auto bad = [&](const std::string& why) { return KeyFormatError(where + ": " + why); };
    const std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
    const std::string version = "age-encryption.org/v1\n";
    const std::size_t end = text.find("\n---");
    if (text.compare(0, version.size(), version) != 0 || end == std::string_view::npos) {
        throw bad("not an age v1 file (age-encryption.org/v1)");
    }
    const std::size_t mac_end = text.find('\n', end + 4);
    if (mac_end == std::string_view::npos || text.substr(end + 4, 1) != " ") throw bad("the age header's MAC line is malformed");
    std::vector<std::uint8_t> mac;
    if (!base64_decode(text.substr(end + 5, mac_end - end - 5), false, mac) || mac.size() != 32) {
        throw bad("the age header's MAC is malformed");
    }
    // Stanzas: "-> type args..." then base64 body lines of 64 columns, the last one shorter.
    std::vector<std::string_view> lines;
    for (std::size_t at = version.size(); at <= end;) {
        const std::size_t nl = text.find('\n', at);
        lines.push_back(text.substr(at, nl - at));
        at = nl + 1;
    }
    WipedBytes file_key;
    bool any_stanza = false;
    for (std::size_t i = 0; i < lines.size();) {
        const std::string_view line = lines[i++];
        if (line.substr(0, 3) != "-> ") throw bad("the age header has a line that is not a stanza");
        std::vector<std::string_view> args;
        for (std::size_t at = 3; at <= line.size();) {
            std::size_t sp = line.find(' ', at);
            if (sp == std::string_view::npos) sp = line.size();
            args.push_back(line.substr(at, sp - at));
            at = sp + 1;
        }
        for (const auto& arg : args) {
            if (arg.empty()) throw bad("an age stanza has an empty argument");
            for (char c : arg) {
                if (c < 33 || c > 126) throw bad("an age stanza has an invalid argument");
            }
        }
        std::string body_text;
        while (true) {
            if (i >= lines.size()) throw bad("an age stanza's body is not terminated by a short line");
            const std::string_view chunk = lines[i++];
            if (chunk.size() > 64) throw bad("an age stanza's body line is longer than 64 columns");
            body_text += chunk;
            if (chunk.size() < 64) break;
        }
        std::vector<std::uint8_t> body;
        if (!base64_decode(body_text, false, body)) throw bad("an age stanza's body is not base64");
        any_stanza = true;
        if (args[0] != "X25519" || !file_key.bytes.empty()) continue;  // grease, another type, or already opened
        std::vector<std::uint8_t> share;
        if (args.size() != 2 || body.size() != FILE_KEY_SIZE + TAG_SIZE || !base64_decode(args[1], false, share) ||
            share.size() != 32) {
            throw bad("an age X25519 stanza is malformed");
        }
        for (const auto& identity : identities) {
            crypto::Secret<32> shared;
            std::uint8_t ours[32];
            if (!x25519(identity, share.data(), shared.data(), ours)) throw bad("an age X25519 share is a low-order point");
            std::uint8_t salt[64];
            std::memcpy(salt, share.data(), 32);
            std::memcpy(salt + 32, ours, 32);
            crypto::Key256 wrap;
            crypto::hkdf_sha256(shared.data(), 32, salt, sizeof salt, "age-encryption.org/v1/X25519", wrap.data(), 32);
            const std::uint8_t zero_nonce[12] = {};
            if (chacha_open(wrap.data(), zero_nonce, body.data(), body.size(), file_key.bytes)) break;
        }
    }
    if (!any_stanza) throw bad("the age header has no recipient stanza");
    if (file_key.bytes.empty()) return false;
    crypto::Key256 header_key;
    crypto::hkdf_sha256(file_key.bytes.data(), FILE_KEY_SIZE, nullptr, 0, "header", header_key.data(), 32);
    const crypto::Sha256 expected = crypto::hmac_sha256(header_key.data(), 32, data.data(), end + 4);
    if (!crypto::equal_constant_time(expected.data(), mac.data(), 32)) {
        throw bad("the age header failed authentication (edited)");
    }
    // Payload: a 16-byte nonce, then 64 KiB chunks, each with its tag; the last one flagged.
    const std::size_t start = mac_end + 1;
    if (data.size() < start + 16 + TAG_SIZE) throw bad("the age payload is truncated");
    crypto::Key256 payload_key;
    crypto::hkdf_sha256(file_key.bytes.data(), FILE_KEY_SIZE, data.data() + start, 16, "payload", payload_key.data(), 32);
    std::size_t at = start + 16;
    for (std::uint64_t index = 0;; ++index) {
        const std::size_t size = std::min(CHUNK_SIZE + TAG_SIZE, data.size() - at);
        const bool last = at + size == data.size();
        std::uint8_t nonce[12] = {};
        for (int b = 0; b < 8; ++b) nonce[10 - b] = static_cast<std::uint8_t>(index >> (8 * b));
        nonce[11] = last ? 1 : 0;
        WipedBytes chunk;
        if (!chacha_open(payload_key.data(), nonce, data.data() + at, size, chunk.bytes)) {
            throw bad("the age payload failed authentication (edited or truncated)");
        }
        if (last && chunk.bytes.empty() && index > 0) throw bad("the age payload ends with an empty chunk");
        payload.bytes.insert(payload.bytes.end(), chunk.bytes.begin(), chunk.bytes.end());
        at += size;
        if (last) return true;
    }
}

// --- identities ----------------------------------------------------------------------------------

/// The X25519 scalars of an identity text: AGE-SECRET-KEY-1... lines; blank and '#' lines skipped.
inline void parse_identities(std::string_view text, const std::string& where, std::vector<Scalar>& out) {
    std::size_t start = 0, number = 0, found = 0;
    while (start <= text.size()) {
        std::size_t nl = text.find('\n', start);
        if (nl == std::string_view::npos) nl = text.size();
        const std::string_view line = detail::strip(text.substr(start, nl - start));
        start = nl + 1;
        ++number;
        if (line.empty() || line[0] == '#') continue;
        const std::string at = where + ", line " + std::to_string(number) + ",";
        WipedBytes secret;
        const std::string why = bech32_decode(line, "AGE-SECRET-KEY-", secret);
        if (!why.empty()) throw KeyFormatError(at + " is not an age identity (AGE-SECRET-KEY-1...): it " + why);
        for (char c : line) {
            if (c >= 'a' && c <= 'z') throw KeyFormatError(at + " is not an age identity: it is written in lower case");
        }
        if (secret.bytes.size() != 32) throw KeyFormatError(at + " is not an age X25519 identity");
        Scalar scalar;
        std::memcpy(scalar.data(), secret.bytes.data(), 32);
        out.push_back(scalar);
        ++found;
    }
    if (found == 0) throw KeyFormatError(where + " holds no age identity (AGE-SECRET-KEY-1...); make one with `age-keygen`");
}

/// Identities from <env>_AGE_IDENTITY, then the file <env>_AGE_IDENTITY_FILE names; KeyMissingError if neither is set.
inline std::vector<Scalar> identities_from_environment(const std::string& env_name) {
    const std::string var = env_name + "_AGE_IDENTITY", file_var = env_name + "_AGE_IDENTITY_FILE";
    std::vector<Scalar> out;
    if (const char* value = std::getenv(var.c_str()); value && *value) {
        parse_identities(value, "environment variable " + var, out);
    }
    if (const char* path = std::getenv(file_var.c_str()); path && *path) {
        const std::string where = "environment variable " + file_var + ": identity file " + path;
        int fd;
        do {
            fd = ::open(path, O_RDONLY | O_CLOEXEC);
        } while (fd < 0 && errno == EINTR);
        if (fd < 0 && errno == ENOENT) throw KeyMissingError(where + " does not exist");
        if (fd < 0) throw KeyFormatError(where + " cannot be read (" + std::strerror(errno) + ")");
        WipedBytes content;
        content.bytes.reserve(MAX_AGE_FILE + 1);
        std::uint8_t chunk[4096];
        while (content.bytes.size() <= MAX_AGE_FILE) {
            const ssize_t n = ::read(fd, chunk, sizeof chunk);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            content.bytes.insert(content.bytes.end(), chunk, chunk + n);
        }
        OPENSSL_cleanse(chunk, sizeof chunk);
        ::close(fd);
        if (content.bytes.size() > MAX_AGE_FILE) throw KeyFormatError(where + " is too large to be an identity file");
        parse_identities(std::string_view(reinterpret_cast<const char*>(content.bytes.data()), content.bytes.size()),
                         where, out);
    }
    if (out.empty()) {
        throw KeyMissingError("set " + var + " to this device's age identity (AGE-SECRET-KEY-1...), or " + file_var +
                              " to its file");
    }
    return out;
}

/// The DEK an age holder's stanza ({"age": armored age file of 64 hex characters and a newline}) holds.
inline format::MasterKey unwrap(const HolderEntry& holder, const std::string& env_name) {
    const std::string where = "holder " + holder.uri;
    const auto it = holder.stanza.find("age");
    if (it == holder.stanza.end() || holder.stanza.size() != 1) {
        throw KeyFormatError(where + ": its stanza must hold exactly the field 'age'");
    }
    const std::vector<Scalar> identities = identities_from_environment(env_name);
    WipedBytes payload;
    if (!decrypt(dearmor(it->second, where), identities, where, payload)) {
        throw WrongKeyError(where + ": the age identity offered here is not this recipient");
    }
    std::string_view hex(reinterpret_cast<const char*>(payload.bytes.data()), payload.bytes.size());
    if (!hex.empty() && hex.back() == '\n') hex.remove_suffix(1);
    format::MasterKey key;
    if (!crypto::from_hex(hex, key.data(), key.size())) {
        throw KeyFormatError(where + ": the age payload is not a data key (64 hex characters)");
    }
    return key;
}

}  // namespace age

/// The DEK, through the first holder (in order) that this reader can use here, checked against `wanted`.
/// KeyMissingError when none could, WrongKeyError when one was reached but gave no key: one line listing
/// each holder and why.
inline format::MasterKey unwrap_first(const std::vector<HolderEntry>& holders, const format::KeyId& wanted,
                                      const std::string& env_name, const std::string& label) {
    std::string reasons;
    bool wrong = false;
    for (const auto& holder : holders) {
        const std::string prefix = "holder " + holder.uri + ": ";
        std::string why;
        try {
            if (holder_scheme(holder.uri) != "age") {
                why = "the C++ reader unwraps age holders only (use the Python runtime, or give the key)";
            } else {
                format::MasterKey key = age::unwrap(holder, env_name);
                if (format::key_id(key) == wanted) return key;
                wrong = true;
                why = "gave a key of another key id than " + crypto::to_hex(wanted);
            }
        } catch (const WrongKeyError& e) {
            wrong = true;
            why = e.what();
        } catch (const KeyMissingError& e) {
            why = e.what();
        } catch (const KeyFormatError& e) {
            why = e.what();
        }
        if (why.compare(0, prefix.size(), prefix) == 0) why = why.substr(prefix.size());
        reasons += (reasons.empty() ? "" : "; ") + holder.uri + ": " + why;
    }
    const std::string message = label + ": no key holder could unwrap the data key (" + reasons + ")";
    if (wrong) throw WrongKeyError(message);
    throw KeyMissingError(message);
}

}  // namespace ovcrypt
