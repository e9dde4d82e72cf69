// The publisher's signature of a package (docs/FORMAT.md section 5.3): `model.sig` beside manifest.json, a
// Sigstore bundle v0.3 (the OpenSSF model-signing format) whose DSSE envelope holds an ECDSA P-256 / SHA-256
// signature over the pre-authentication encoding of an in-toto statement that names every file of the
// folder by SHA-256, manifest.json among them. The caller pins the publisher's public keys (PEM); a
// signature that verifies under one of them authenticates manifest.json, whose entries then authenticate
// each encrypted file's SHA-256 (Package::require_publisher). OpenSSL EVP does the ECDSA verification.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "crypto.hpp"
#include "errors.hpp"

namespace ovcrypt {
namespace signature {

constexpr const char* SIGNATURE_NAME = "model.sig";
constexpr const char* BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json";
constexpr const char* PAYLOAD_TYPE = "application/vnd.in-toto+json";
constexpr const char* STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
constexpr const char* PREDICATE_TYPE = "https://model_signing/signature/v1.0";
constexpr std::size_t MAX_SIGNATURE_BYTES = std::size_t(16) << 20;

/// DSSE v1 pre-authentication encoding: "DSSEv1 <len(type)> <type> <len(payload)> <payload>".
inline std::string pae(const std::string& type, const std::string& payload) {
    return "DSSEv1 " + std::to_string(type.size()) + " " + type + " " + std::to_string(payload.size()) + " " + payload;
}

/// Standard base64 with padding; throws std::invalid_argument when it is not.
inline std::string base64_decode(const std::string& text) {
    if (text.size() % 4 != 0) throw std::invalid_argument("base64 length");
    std::string out(text.size() / 4 * 3, '\0');
    const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(&out[0]),
                                  reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
    if (n < 0) throw std::invalid_argument("base64");
    std::size_t pad = 0;
    if (!text.empty() && text.back() == '=') pad = (text.size() > 1 && text[text.size() - 2] == '=') ? 2 : 1;
    out.resize(static_cast<std::size_t>(n) - pad);
    return out;
}

struct PkeyFree {
    void operator()(EVP_PKEY* key) const noexcept { EVP_PKEY_free(key); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

/// A PEM public key; SignatureError unless it is ECDSA P-256 (the key type model-signing verifies).
inline Pkey load_public_key(const std::string& pem, const std::string& label) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
    if (!bio) crypto::openssl_failed("BIO_new_mem_buf");
    Pkey key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
    if (!key) throw SignatureError(label + ": is not a PEM public key");
    char group[64] = {0};
    std::size_t length = 0;
    if (!EVP_PKEY_is_a(key.get(), "EC") ||
        EVP_PKEY_get_group_name(key.get(), group, sizeof group, &length) != 1 || std::string(group) != "prime256v1") {
        throw SignatureError(label + ": is not an ECDSA P-256 public key");
    }
    return key;
}

/// ECDSA-SHA256 verification of a DER signature; false when it does not verify.
inline bool verifies(EVP_PKEY* key, const std::string& message, const std::string& der) {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1) {
        crypto::openssl_failed("EVP_DigestVerifyInit");
    }
    return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(der.data()), der.size(),
                            reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
}

/// Check `signature` (the bytes of model.sig; `present` false when there is none) and `manifest` (the bytes of
/// manifest.json) under the pinned publisher keys (PEM). Returns when one key verifies the DSSE signature and the
/// signed statement names exactly this manifest's SHA-256; throws SignatureError (one line) otherwise.
inline void verify(bool present, const std::string& signature, const std::string& manifest,
                   const std::vector<std::string>& publisher_keys, const std::string& label) {
    const std::string count = std::to_string(publisher_keys.size());
    if (!present) {
        throw SignatureError(label + ": has no " + SIGNATURE_NAME + ", but " + count +
                             " publisher key(s) are pinned: it was not built by its publisher; reinstall it");
    }
    std::string payload;
    std::vector<std::string> signatures;
    try {
        if (signature.size() > MAX_SIGNATURE_BYTES) throw std::invalid_argument("too large");
        const nlohmann::json doc = nlohmann::json::parse(signature);
        const nlohmann::json& envelope = doc.at("dsseEnvelope");
        if (doc.at("mediaType") != BUNDLE_MEDIA_TYPE || envelope.at("payloadType") != PAYLOAD_TYPE) {
            throw std::invalid_argument("not a bundle");
        }
        payload = base64_decode(envelope.at("payload").get<std::string>());
        for (const auto& sig : envelope.at("signatures")) signatures.push_back(base64_decode(sig.at("sig").get<std::string>()));
    } catch (const std::exception&) {
        throw SignatureError(label + ": " + SIGNATURE_NAME + " is not a Sigstore bundle v0.3 with a DSSE envelope");
    }
    const std::string message = pae(PAYLOAD_TYPE, payload);
    bool verified = false;
    for (std::size_t i = 0; i < publisher_keys.size() && !verified; ++i) {
        const Pkey key = load_public_key(publisher_keys[i], label + ": pinned publisher key " + std::to_string(i + 1));
        for (const auto& der : signatures) verified = verified || verifies(key.get(), message, der);
    }
    if (!verified) {
        throw SignatureError(label + ": " + SIGNATURE_NAME + " does not verify under any of the " + count +
                             " publisher key(s) pinned: it was not signed by its publisher; reinstall it");
    }
    std::string signed_digest;
    try {
        const nlohmann::json doc = nlohmann::json::parse(payload);
        if (doc.at("_type") != STATEMENT_TYPE || doc.at("predicateType") != PREDICATE_TYPE) {
            throw std::invalid_argument("statement");
        }
        for (const auto& resource : doc.at("predicate").at("resources")) {
            if (resource.at("name") == "manifest.json" && resource.at("algorithm") == "sha256") {
                signed_digest = resource.at("digest").get<std::string>();
            }
        }
    } catch (const std::exception&) {
        throw SignatureError(label + ": the statement " + SIGNATURE_NAME + " signs is not model-signing's");
    }
    if (signed_digest != crypto::to_hex(crypto::sha256(manifest.data(), manifest.size()))) {
        throw SignatureError(label + ": manifest.json is not the one the publisher signed (its SHA-256 differs from " +
                             SIGNATURE_NAME + "'s); reinstall the package");
    }
}

}  // namespace signature
}  // namespace ovcrypt
