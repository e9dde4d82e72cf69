// Small text helpers shared by the key parser and the manifest reader (ASCII rules only).
#pragma once

#include <string>
#include <string_view>

namespace ovcrypt {
namespace detail {

/// Python's str.strip() and str.split() whitespace, for the ASCII range.
inline bool is_space(char c) noexcept { return c == ' ' || (c >= '\t' && c <= '\r'); }

inline std::string_view strip(std::string_view text) noexcept {
    while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
    while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
    return text;
}

/// An ASCII identifier, [A-Za-z_][A-Za-z0-9_]*: model names and environment variable names.
inline bool is_identifier(std::string_view name) noexcept {
    if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
    for (char c : name) {
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
    }
    return true;
}

/// Lowercase hexadecimal of exactly `size` characters, as the manifest writes digests, salts and ids.
inline bool is_lower_hex(std::string_view text, std::size_t size) noexcept {
    if (text.size() != size) return false;
    for (char c : text) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

/// `text` in single quotes for a message, with control bytes escaped (\xNN): names read from an
/// unauthenticated header or manifest must not write escape sequences to a terminal.
inline std::string quoted(std::string_view text) {
    static const char digits[] = "0123456789abcdef";
    std::string out = "'";
    for (char c : text) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte < 0x20 || byte == 0x7f) {
            out += "\\x";
            out += digits[byte >> 4];
            out += digits[byte & 0xf];
        } else {
            out += c;
        }
    }
    return out + "'";
}

inline bool ends_with(std::string_view text, std::string_view suffix) noexcept {
    return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace detail
}  // namespace ovcrypt
