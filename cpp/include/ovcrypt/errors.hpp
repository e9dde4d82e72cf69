// The one error hierarchy of the C++ reader, mirroring the Python runtime's (ovcrypt_runtime/_errors.py):
//
//   Error
//   ├── KeyMissingError      no key was offered at all
//   ├── KeyFormatError       a key was offered but is not 32 bytes / 64 hex characters
//   ├── WrongKeyError        keys were offered, but none has the file's key id
//   ├── IntegrityError       a file or the manifest failed authentication or is malformed
//   │   ├── FormatError      the bytes are not a file of this format at all
//   │   └── ManifestError    the manifest is missing, malformed, edited, or points outside its package
//   ├── ModelNotFoundError   no model (or file, or part) of that name
//   └── UnsafeConfigError    a compile option that would write decrypted weights to disk
//
// Messages never contain key material: they name environment variables, files and key ids only.
// kind() returns the class name, as the Python runtime's type(error).__name__ does.
#pragma once

#include <stdexcept>
#include <string>

namespace ovcrypt {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}
    virtual const char* kind() const noexcept { return "OvcryptError"; }
};

#define OVCRYPT_DEFINE_ERROR(Name, Base)                                      \
    class Name : public Base {                                               \
    public:                                                                  \
        explicit Name(const std::string& message) : Base(message) {}         \
        const char* kind() const noexcept override { return #Name; }         \
    };

OVCRYPT_DEFINE_ERROR(KeyMissingError, Error)
OVCRYPT_DEFINE_ERROR(KeyFormatError, Error)
OVCRYPT_DEFINE_ERROR(WrongKeyError, Error)
OVCRYPT_DEFINE_ERROR(IntegrityError, Error)
OVCRYPT_DEFINE_ERROR(FormatError, IntegrityError)
OVCRYPT_DEFINE_ERROR(ManifestError, IntegrityError)
OVCRYPT_DEFINE_ERROR(ModelNotFoundError, Error)
OVCRYPT_DEFINE_ERROR(UnsafeConfigError, Error)
OVCRYPT_DEFINE_ERROR(SignatureError, Error)

#undef OVCRYPT_DEFINE_ERROR

}  // namespace ovcrypt
