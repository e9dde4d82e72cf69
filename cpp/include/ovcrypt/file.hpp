// Reading one .ovc file in the validation order of FORMAT.md section 4:
//
//   EncryptedFile::open      1. size and structure (no key)
//   EncryptedFile::unlock    2. key id, 3. header tag, 4. exact file size
//   EncryptedFile::decrypt_into   5. segments, read with pread straight into the caller's buffer and
//                                   decrypted there in place, on several threads; wiped on any failure
//
// The caller allocates the output buffer only after unlock(), so a size in a forged header never
// decides how much memory is allocated.
//
// Why pread into the output and not a memory map of the file: decrypting straight from a mapping would
// save one copy (measured here: 0.13 s instead of 0.21-0.37 s for 512 MiB on one core), but the bytes
// AES-GCM authenticates and the bytes it decrypts are then read from memory that another process can
// still change by writing the file, so a tag could verify over different ciphertext than the one
// decrypted. Once read into our own buffer, the ciphertext cannot change under the check.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "crypto.hpp"
#include "errors.hpp"
#include "format.hpp"

namespace ovcrypt {

/// Two workers per core, up to 8, as the Python reader: from a cold page cache each worker waits on
/// its reads and more reads in flight load faster; from a warm cache the extra workers cost little.
inline unsigned default_threads() noexcept {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    return std::max(2u, std::min(2 * cores, 8u));
}

namespace detail {

/// An open file descriptor, closed on destruction.
class FileDescriptor {
public:
    FileDescriptor() = default;
    explicit FileDescriptor(int fd) noexcept : fd_(fd) {}
    FileDescriptor(FileDescriptor&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    FileDescriptor& operator=(FileDescriptor&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    FileDescriptor(const FileDescriptor&) = delete;
    FileDescriptor& operator=(const FileDescriptor&) = delete;
    ~FileDescriptor() { reset(); }

    int get() const noexcept { return fd_; }

private:
    void reset() noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    int fd_ = -1;
};

/// Open `path` read-only without ever blocking: without O_NONBLOCK, open() of a FIFO waits for a writer
/// forever. The caller then fstat()s the descriptor and refuses anything but a regular file (a FIFO, a
/// device such as /dev/zero, a socket), as the Python runtime does. -1 with errno set when open() fails.
inline int open_nonblocking(const char* path, int extra_flags = 0) noexcept {
    int fd;
    do {
        fd = ::open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | extra_flags);
    } while (fd < 0 && errno == EINTR);
    return fd;
}

/// True when `fd` is a regular file; its status is left in `st`.
inline bool is_regular_file(int fd, struct stat& st) noexcept { return ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode); }

/// Read up to `size` bytes at `offset`; fewer only at the end of the file.
inline std::size_t pread_up_to(int fd, std::uint8_t* out, std::size_t size, std::uint64_t offset,
                               const std::string& label) {
    std::size_t done = 0;
    while (done < size) {
        const ssize_t n = ::pread(fd, out + done, size - done, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            throw Error(label + ": cannot read the file (" + std::strerror(errno) + ")");
        }
        if (n == 0) break;
        done += static_cast<std::size_t>(n);
    }
    return done;
}

/// Read exactly `size` bytes at `offset`; a file that shrank since its size was checked is truncated.
inline void pread_exact(int fd, std::uint8_t* out, std::size_t size, std::uint64_t offset, const std::string& label) {
    if (pread_up_to(fd, out, size, offset, label) != size) {
        throw IntegrityError(label + ": file is truncated");
    }
}

/// Overwrite plaintext that must not be seen (it failed authentication, or a sibling segment did).
inline void wipe(std::uint8_t* data, std::size_t size) noexcept {
    if (size) OPENSSL_cleanse(data, size);
}

}  // namespace detail

/// Decrypted bytes that are wiped when destroyed or moved from. Backed by a std::string because
/// that is what OpenVINO's read_model takes for an IR's xml: it is read from here, with no copy.
class Plaintext {
public:
    Plaintext() = default;
    explicit Plaintext(std::size_t size) : bytes_(size, '\0') {}
    Plaintext(Plaintext&& other) noexcept : bytes_(std::move(other.bytes_)) { other.wipe(); }
    Plaintext& operator=(Plaintext&& other) noexcept {
        if (this != &other) {
            wipe();
            bytes_ = std::move(other.bytes_);
            other.wipe();
        }
        return *this;
    }
    Plaintext(const Plaintext&) = delete;
    Plaintext& operator=(const Plaintext&) = delete;
    ~Plaintext() { wipe(); }

    std::uint8_t* data() noexcept { return reinterpret_cast<std::uint8_t*>(&bytes_[0]); }
    const std::uint8_t* data() const noexcept { return reinterpret_cast<const std::uint8_t*>(bytes_.data()); }
    std::size_t size() const noexcept { return bytes_.size(); }
    const std::string& str() const noexcept { return bytes_; }

    /// Zero every byte this object holds (including a short string's inline buffer) and empty it.
    void wipe() noexcept {
        bytes_.resize(bytes_.capacity());
        if (!bytes_.empty()) OPENSSL_cleanse(&bytes_[0], bytes_.size());
        bytes_.clear();
    }

private:
    std::string bytes_;
};

/// One encrypted file, opened and checked step by step (see the top of this file).
class EncryptedFile {
public:
    /// Step 1: open `path` and parse its header; needs no key. `label` prefixes every message
    /// ("model 'detector' file detector.bin.ovc"). With `no_follow`, a symbolic link is refused. Anything but
    /// a regular file (a FIFO, a device) is refused at once (IntegrityError), never read or waited on.
    static EncryptedFile open(const std::filesystem::path& path, std::string label, bool no_follow = false) {
        const int fd = detail::open_nonblocking(path.c_str(), no_follow ? O_NOFOLLOW : 0);
        if (fd < 0) {
            if (errno == ENOENT) throw IntegrityError(label + ": is missing");
            if (errno == ELOOP) throw ManifestError(label + ": is a symbolic link; encrypted files must be regular files");
            throw Error(label + ": cannot open the file (" + std::strerror(errno) + ")");
        }
        EncryptedFile file(detail::FileDescriptor(fd), std::move(label));
        struct stat st {};
        if (!detail::is_regular_file(fd, st)) {  // a FIFO, a device: refused before any read
            throw IntegrityError(file.label_ + ": is not a regular file");
        }
        file.file_size_ = static_cast<std::uint64_t>(st.st_size);
        std::uint8_t head[format::MAX_HEADER_SIZE];
        const std::size_t got = detail::pread_up_to(fd, head, sizeof head, 0, file.label_);
        file.header_ = format::parse_header(head, got, file.label_);
        return file;
    }

    const format::Header& header() const noexcept { return header_; }
    const std::string& label() const noexcept { return label_; }
    std::uint64_t file_size() const noexcept { return file_size_; }
    bool unlocked() const noexcept { return unlocked_; }

    /// Steps 2 to 4: the key id (WrongKeyError, before any AES), the header tag (IntegrityError) and
    /// the exact file size (IntegrityError: truncated, or bytes appended).
    void unlock(const format::MasterKey& key) {
        file_key_ = format::authenticate_header(key, header_, label_);
        const auto expected = header_.file_size();
        if (!expected || file_size_ < *expected) {
            throw IntegrityError(label_ + ": file is truncated (" + std::to_string(file_size_) + " of " +
                                 (expected ? std::to_string(*expected) : std::string("over 2^64")) + " bytes)");
        }
        if (file_size_ > *expected) {
            throw IntegrityError(label_ + ": " + std::to_string(file_size_ - *expected) +
                                 " unexpected bytes after the end of the file");
        }
        unlocked_ = true;
    }

    /// Step 5: read the ciphertext into `out` (exactly plaintext_length bytes) and decrypt it there,
    /// segment by segment, each segment's tag verified. Workers take contiguous runs of segments and
    /// decrypt each one right after reading it, while it is still in the CPU cache. If any segment
    /// fails, every worker stops and the whole of `out` is wiped before IntegrityError is thrown:
    /// the caller never sees unauthenticated plaintext.
    void decrypt_into(std::uint8_t* out, std::uint64_t size, unsigned threads = 0) const {
        if (!unlocked_) throw Error(label_ + ": decrypt_into() before unlock()");
        if (size != header_.plaintext_length) throw Error(label_ + ": output buffer has the wrong size");
        const std::uint64_t count = header_.segment_count();
        std::vector<std::uint8_t> tags(format::TAG_SIZE * count);
        try {
            detail::pread_exact(fd_.get(), tags.data(), tags.size(), header_.tags_offset(), label_);
            const std::uint64_t workers = std::min<std::uint64_t>(threads ? threads : default_threads(), count);
            std::atomic<bool> stop{false};
            if (workers <= 1) {  // one segment (every xml, in practice): no thread to start
                decrypt_run(out, tags, 0, count, stop);
                return;
            }
            std::vector<std::exception_ptr> errors(workers);
            std::vector<std::thread> pool;
            pool.reserve(workers);
            try {
                for (std::uint64_t w = 0; w < workers; ++w) {
                    pool.emplace_back([&, w] {
                        try {
                            decrypt_run(out, tags, count * w / workers, count * (w + 1) / workers, stop);
                        } catch (...) {
                            errors[w] = std::current_exception();
                            stop = true;
                        }
                    });
                }
            } catch (...) {  // a thread could not start: stop the others, then report
                stop = true;
                for (auto& t : pool) t.join();
                throw;
            }
            for (auto& t : pool) t.join();
            for (const auto& error : errors) {
                if (error) std::rethrow_exception(error);
            }
        } catch (...) {
            detail::wipe(out, size);
            throw;
        }
    }

private:
    EncryptedFile(detail::FileDescriptor fd, std::string label) : fd_(std::move(fd)), label_(std::move(label)) {}

    /// Segments [first, stop): read each into place, decrypt it in place. Stops early when another
    /// worker failed (`stop`); a failing segment is wiped here, the rest of the buffer by the caller.
    void decrypt_run(std::uint8_t* out, const std::vector<std::uint8_t>& tags, std::uint64_t first,
                     std::uint64_t stop_at, std::atomic<bool>& stop) const {
        crypto::GcmDecryptor gcm(file_key_);
        const std::uint64_t count = header_.segment_count();
        const std::uint64_t base = header_.header_size();
        for (std::uint64_t index = first; index < stop_at && !stop; ++index) {
            const auto [start, end] = header_.segment_span(index);
            std::uint8_t* segment = out + start;
            const std::size_t length = static_cast<std::size_t>(end - start);
            detail::pread_exact(fd_.get(), segment, length, base + start, label_);
            crypto::GcmTag tag;
            std::memcpy(tag.data(), tags.data() + format::TAG_SIZE * index, format::TAG_SIZE);
            if (!gcm.decrypt_in_place(format::segment_nonce(index, count), header_.raw.data(), header_.raw.size(),
                                      segment, length, tag)) {
                detail::wipe(segment, length);
                throw IntegrityError(label_ + ": segment " + std::to_string(index) + " of " + std::to_string(count) +
                                     " failed authentication (the file was modified, truncated, reordered or "
                                     "belongs to another model or role)");
            }
        }
    }

    detail::FileDescriptor fd_;
    std::string label_;
    std::uint64_t file_size_ = 0;
    format::Header header_;
    crypto::Key256 file_key_;
    bool unlocked_ = false;
};

}  // namespace ovcrypt
