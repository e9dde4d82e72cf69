// hatch-ovcrypt's C++ reader: header-only, C++17, OpenSSL's libcrypto for every primitive.
//
//   #include <ovcrypt/ovcrypt.hpp>
//
//   ovcrypt::Package package = ovcrypt::Package::open(".../site-packages/acme_vision/_ovcrypt");
//   ov::Core core;
//   ov::CompiledModel compiled = ovcrypt::compile_model(core, package, "detector");
//
// The headers follow docs/FORMAT.md:
//   crypto.hpp     section 1, the primitives (OpenSSL calls and key wiping)
//   format.hpp     sections 2-3 and step 1 of section 4: key derivations, header, nonces
//   file.hpp       section 4: reading one file in the validation order, segments in parallel
//   keys.hpp       master keys from the caller, the environment or a key file, picked by key id
//   holders.hpp    section 5.3: the manifest's key holders; age X25519 recipients unwrapped here
//   model.hpp      what a model's files are called (manifest schema, kinds and parts)
//   manifest.hpp   section 5: manifest.json v1 and v2, and its MAC
//   package.hpp    a package's _ovcrypt folder, or a plain folder of .ovc files
//   signature.hpp  section 5.3: the publisher's signature (model.sig), checked under pinned public keys
//   openvino.hpp   decrypted weights in an ov::Tensor, read_model and compile_model
//   errors.hpp     the exception hierarchy, mirroring the Python runtime's
#pragma once

#include "crypto.hpp"
#include "errors.hpp"
#include "file.hpp"
#include "format.hpp"
#include "holders.hpp"
#include "keys.hpp"
#include "manifest.hpp"
#include "model.hpp"
#include "openvino.hpp"
#include "package.hpp"
#include "signature.hpp"
