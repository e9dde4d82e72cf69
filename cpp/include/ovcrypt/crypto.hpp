// FORMAT.md section 1, the primitives, each a thin call into OpenSSL's libcrypto: SHA-256, HMAC-SHA256,
// HKDF-SHA256 and AES-256-GCM. Nothing here implements cryptography itself; it only owns OpenSSL
// objects and wipes key bytes (OPENSSL_cleanse) when they go out of scope.
#pragma once

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "errors.hpp"

namespace ovcrypt {
namespace crypto {

constexpr std::size_t SHA256_SIZE = 32;
constexpr std::size_t GCM_TAG_SIZE = 16;
constexpr std::size_t GCM_NONCE_SIZE = 12;
constexpr std::size_t AES256_KEY_SIZE = 32;

using Sha256 = std::array<std::uint8_t, SHA256_SIZE>;
using GcmTag = std::array<std::uint8_t, GCM_TAG_SIZE>;
using GcmNonce = std::array<std::uint8_t, GCM_NONCE_SIZE>;

/// Fixed-size secret bytes (a master key or a derived key), wiped when destroyed or overwritten.
template <std::size_t N>
class Secret {
public:
    Secret() { bytes_.fill(0); }
    Secret(const Secret& other) : bytes_(other.bytes_) {}
    Secret& operator=(const Secret& other) {
        bytes_ = other.bytes_;
        return *this;
    }
    ~Secret() { OPENSSL_cleanse(bytes_.data(), N); }

    std::uint8_t* data() noexcept { return bytes_.data(); }
    const std::uint8_t* data() const noexcept { return bytes_.data(); }
    static constexpr std::size_t size() noexcept { return N; }

private:
    std::array<std::uint8_t, N> bytes_;
};

using Key256 = Secret<AES256_KEY_SIZE>;

[[noreturn]] inline void openssl_failed(const char* what) {
    throw Error(std::string("OpenSSL: ") + what + " failed");
}

/// Constant-time comparison, for MACs.
inline bool equal_constant_time(const void* a, const void* b, std::size_t size) noexcept {
    return CRYPTO_memcmp(a, b, size) == 0;
}

inline Sha256 sha256(const void* data, std::size_t size) {
    Sha256 out{};
    unsigned int length = 0;
    if (EVP_Digest(data, size, out.data(), &length, EVP_sha256(), nullptr) != 1 || length != out.size()) {
        openssl_failed("SHA-256");
    }
    return out;
}

/// HMAC-SHA256 (RFC 2104).
inline Sha256 hmac_sha256(const std::uint8_t* key, std::size_t key_size, const void* data, std::size_t size) {
    Sha256 out{};
    unsigned int length = 0;
    if (!HMAC(EVP_sha256(), key, static_cast<int>(key_size), static_cast<const unsigned char*>(data), size,
              out.data(), &length) ||
        length != out.size()) {
        openssl_failed("HMAC-SHA256");
    }
    return out;
}

/// HKDF-SHA256 (RFC 5869), extract then expand, into `out`. A null `salt` is the RFC's default:
/// HashLen zero bytes (FORMAT.md: "salt = none").
inline void hkdf_sha256(const std::uint8_t* ikm, std::size_t ikm_size, const std::uint8_t* salt, std::size_t salt_size,
                        std::string_view info, std::uint8_t* out, std::size_t out_size) {
    static const std::uint8_t zero_salt[SHA256_SIZE] = {};
    if (salt == nullptr) {
        salt = zero_salt;
        salt_size = sizeof zero_salt;
    }
    std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr),
                                                                    EVP_PKEY_CTX_free);
    std::size_t length = out_size;
    if (!ctx || EVP_PKEY_derive_init(ctx.get()) <= 0 || EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) <= 0 ||
        EVP_PKEY_CTX_set1_hkdf_salt(ctx.get(), salt, static_cast<int>(salt_size)) <= 0 ||
        EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), ikm, static_cast<int>(ikm_size)) <= 0 ||
        EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), reinterpret_cast<const unsigned char*>(info.data()),
                                    static_cast<int>(info.size())) <= 0 ||
        EVP_PKEY_derive(ctx.get(), out, &length) <= 0 || length != out_size) {
        openssl_failed("HKDF-SHA256");
    }
}

/// AES-256-GCM decryption under one key: one OpenSSL context, set up once and re-initialised with
/// each nonce, so a worker thread pays the key schedule once per file rather than once per segment.
class GcmDecryptor {
public:
    explicit GcmDecryptor(const Key256& key) : ctx_(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free) {
        if (!ctx_ || EVP_DecryptInit_ex(ctx_.get(), EVP_aes_256_gcm(), nullptr, key.data(), nullptr) != 1) {
            openssl_failed("AES-256-GCM setup");
        }
    }

    /// Decrypt `data` in place (EVP allows the output to be the input) and verify `tag` over the
    /// associated data and the ciphertext. Returns false when the tag does not verify: `data` then
    /// holds unauthenticated bytes that the caller must wipe.
    bool decrypt_in_place(const GcmNonce& nonce, const std::uint8_t* aad, std::size_t aad_size, std::uint8_t* data,
                          std::size_t size, const GcmTag& tag) {
        EVP_CIPHER_CTX* ctx = ctx_.get();
        int length = 0;
        if (EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce.data()) != 1) {
            openssl_failed("AES-256-GCM nonce");
        }
        if (aad_size && EVP_DecryptUpdate(ctx, nullptr, &length, aad, static_cast<int>(aad_size)) != 1) {
            openssl_failed("AES-256-GCM associated data");
        }
        // A segment is at most 4 MiB (FORMAT.md section 7), well within EVP's int lengths.
        if (size && EVP_DecryptUpdate(ctx, data, &length, data, static_cast<int>(size)) != 1) {
            openssl_failed("AES-256-GCM decryption");
        }
        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, static_cast<int>(tag.size()),
                                const_cast<std::uint8_t*>(tag.data())) != 1) {
            openssl_failed("AES-256-GCM tag");
        }
        std::uint8_t end[16];
        return EVP_DecryptFinal_ex(ctx, end, &length) == 1;
    }

    /// Verify a GMAC: GCM over an empty plaintext with `aad` as associated data.
    bool verify_gmac(const GcmNonce& nonce, const std::uint8_t* aad, std::size_t aad_size, const GcmTag& tag) {
        return decrypt_in_place(nonce, aad, aad_size, nullptr, 0, tag);
    }

private:
    std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> ctx_;
};

// --- hexadecimal --------------------------------------------------------------------------------

inline std::string to_hex(const std::uint8_t* data, std::size_t size) {
    static const char digits[] = "0123456789abcdef";
    std::string out(2 * size, '\0');
    for (std::size_t i = 0; i < size; ++i) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 0xf];
    }
    return out;
}

template <std::size_t N>
std::string to_hex(const std::array<std::uint8_t, N>& bytes) {
    return to_hex(bytes.data(), N);
}

inline int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/// Decode exactly 2 * size hex digits (either case) into `out`; false if the text is not that.
inline bool from_hex(std::string_view text, std::uint8_t* out, std::size_t size) noexcept {
    if (text.size() != 2 * size) return false;
    for (std::size_t i = 0; i < size; ++i) {
        const int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    return true;
}

}  // namespace crypto
}  // namespace ovcrypt
