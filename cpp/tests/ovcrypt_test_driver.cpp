// The C++ side of tests/test_cpp.py: small commands over the ovcrypt headers, whose output the Python
// tests compare with FORMAT.md's test vectors and with the Python runtime (the oracle).
//
//   ovcrypt_test_driver vector FILE       decrypt one .ovc file (key from $OVCRYPT_KEY); print its fields
//   ovcrypt_test_driver check             for each "DIR<TAB>MODEL" line on stdin, decrypt every file of
//                                         the model and print one line: "OK relpath=sha256 ..." or
//                                         "ERR <ErrorKind> <wiped|-|NOT-WIPED> <message>"
//   ovcrypt_test_driver infer DIR MODEL INPUT OUTPUT
//                                         compile MODEL on CPU, run it on INPUT (raw bytes of its one
//                                         input tensor), write its first output's raw bytes to OUTPUT
//   ovcrypt_test_driver manifest DIR      print the manifest's canonical body (the bytes its MAC covers)
//                                         and each model's kind, parts and files
//   ovcrypt_test_driver unsafe-config DIR MODEL CACHE_DIR
//                                         compile_model with CACHE_DIR in its config, then with it set on
//                                         the core: print what each raised
//
// `check` keeps one process for many tamper cases, so that sweeping every header byte costs file I/O,
// not a process start each. In it, a failed decryption's buffer is pre-filled with 0xA5 and then
// checked: "wiped" means every byte was zero afterwards.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <iterator>
#include <ovcrypt/ovcrypt.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace {

using ovcrypt::crypto::to_hex;

std::string one_line(std::string text) {
    std::replace(text.begin(), text.end(), '\n', ' ');
    return text;
}

std::string sha256_hex(const void* data, std::size_t size) { return to_hex(ovcrypt::crypto::sha256(data, size)); }

int vector_command(const std::string& path) {
    ovcrypt::EncryptedFile file = ovcrypt::EncryptedFile::open(path, path);
    const ovcrypt::format::Header& h = file.header();
    const ovcrypt::format::MasterKey key = ovcrypt::KeyRing().key_for(h.key_id, path);
    file.unlock(key);
    std::vector<std::uint8_t> plain(h.plaintext_length);
    file.decrypt_into(plain.data(), plain.size());
    std::cout << "role = " << static_cast<int>(h.role) << "\n"
              << "name = " << h.name << "\n"
              << "segment_size = " << h.segment_size << "\n"
              << "plaintext_length = " << h.plaintext_length << "\n"
              << "plaintext_sha256 = " << sha256_hex(plain.data(), plain.size()) << "\n"
              << "key_id = " << to_hex(ovcrypt::format::key_id(key)) << "\n"
              << "salt = " << to_hex(h.salt) << "\n"
              << "file_key = " << [&] {
                     const ovcrypt::crypto::Key256 k = ovcrypt::format::file_key(key, h.salt);
                     return to_hex(k.data(), k.size());
                 }() << "\n"
              << "header = " << to_hex(h.raw.data(), h.raw.size()) << "\n"
              << "header_nonce = " << to_hex(ovcrypt::format::header_nonce()) << "\n"
              << "header_tag = " << to_hex(h.tag) << "\n"
              << "segment_count = " << h.segment_count() << "\n"
              << "file_size = " << file.file_size() << "\n";
    for (std::uint64_t i = 0; i < h.segment_count(); ++i) {
        std::cout << "nonce_" << i << " = " << to_hex(ovcrypt::format::segment_nonce(i, h.segment_count())) << "\n";
    }
    return 0;
}

/// Decrypt every file of one model, as a tamper case needs: the first failure is the answer.
std::string check_one(const std::string& dir, const std::string& model_name) {
    std::string wiped = "-";
    try {
        const ovcrypt::Package package = ovcrypt::Package::open(dir);
        const ovcrypt::Model& model = package.model(model_name);
        std::string result = "OK";
        for (const ovcrypt::ModelFile& spec : model.files) {
            const ovcrypt::EncryptedFile file = package.open_file(model_name, spec.relpath);
            std::vector<std::uint8_t> out(file.header().plaintext_length, 0xA5);
            try {
                file.decrypt_into(out.data(), out.size());
            } catch (const ovcrypt::Error&) {
                wiped = std::all_of(out.begin(), out.end(), [](std::uint8_t b) { return b == 0; }) ? "wiped"
                                                                                                   : "NOT-WIPED";
                throw;
            }
            result += " " + spec.relpath + "=" + sha256_hex(out.data(), out.size());
        }
        return result;
    } catch (const ovcrypt::Error& e) {
        return std::string("ERR ") + e.kind() + " " + wiped + " " + one_line(e.what());
    } catch (const std::exception& e) {
        return std::string("ERR std::exception - ") + one_line(e.what());
    }
}

int check_command() {
    std::string line;
    while (std::getline(std::cin, line)) {
        const std::size_t tab = line.find('\t');
        if (tab == std::string::npos) {
            std::cout << "ERR usage - expected DIR<TAB>MODEL" << std::endl;
            continue;
        }
        std::cout << check_one(line.substr(0, tab), line.substr(tab + 1)) << std::endl;
    }
    return 0;
}

int infer_command(const std::string& dir, const std::string& model, const std::string& input_path,
                  const std::string& output_path) {
    const ovcrypt::Package package = ovcrypt::Package::open(dir);
    ov::Core core;
    ov::CompiledModel compiled = ovcrypt::compile_model(core, package, model);
    ov::InferRequest request = compiled.create_infer_request();
    ov::Tensor input = request.get_input_tensor();
    std::ifstream in(input_path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.size() != input.get_byte_size()) {
        std::cerr << "input is " << bytes.size() << " bytes, the model wants " << input.get_byte_size() << "\n";
        return 2;
    }
    std::copy(bytes.begin(), bytes.end(), static_cast<char*>(input.data()));
    request.infer();
    const ov::Tensor output = request.get_output_tensor(0);
    std::ofstream(output_path, std::ios::binary)
        .write(static_cast<const char*>(output.data()), static_cast<std::streamsize>(output.get_byte_size()));
    return 0;
}

int manifest_command(const std::string& dir) {
    const ovcrypt::Package package = ovcrypt::Package::open_package(dir);
    std::cout << "canonical " << package.manifest()->canonical_body() << "\n";
    for (const auto& name : package.model_names()) {
        const ovcrypt::Model& model = package.model(name);
        std::cout << "model " << name << " kind " << model.kind << " default "
                  << model.default_part().value_or("-") << "\n";
        for (const auto& part : model.parts) {
            std::cout << "part " << name << " " << part.first << " " << part.second.xml << " "
                      << (part.second.bin.empty() ? "-" : part.second.bin) << "\n";
        }
        for (const auto& file : model.files) {
            std::cout << "file " << name << " " << file.relpath << " " << file.file << " "
                      << ovcrypt::format::role_label(file.role) << " " << file.header_name << "\n";
        }
    }
    return 0;
}

int unsafe_config_command(const std::string& dir, const std::string& model, const std::string& cache_dir) {
    const ovcrypt::Package package = ovcrypt::Package::open(dir);
    ov::Core core;
    for (int on_core = 0; on_core < 2; ++on_core) {
        ov::AnyMap config;
        if (on_core) {
            core.set_property(ov::cache_dir(cache_dir));
        } else {
            config.emplace("cache_dir", cache_dir);
        }
        try {
            ovcrypt::compile_model(core, package, model, "CPU", config);
            std::cout << "compiled\n";
        } catch (const ovcrypt::Error& e) {
            std::cout << e.kind() << "\n";
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::vector<std::string> args(argv + 1, argv + argc);
    try {
        if (args.size() == 2 && args[0] == "vector") return vector_command(args[1]);
        if (args.size() == 1 && args[0] == "check") return check_command();
        if (args.size() == 5 && args[0] == "infer") return infer_command(args[1], args[2], args[3], args[4]);
        if (args.size() == 2 && args[0] == "manifest") return manifest_command(args[1]);
        if (args.size() == 4 && args[0] == "unsafe-config") return unsafe_config_command(args[1], args[2], args[3]);
    } catch (const ovcrypt::Error& e) {
        std::cerr << e.kind() << ": " << one_line(e.what()) << std::endl;
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "error: " << one_line(e.what()) << std::endl;
        return 1;
    }
    std::cerr << "usage: ovcrypt_test_driver vector FILE | check | infer DIR MODEL INPUT OUTPUT | manifest DIR"
                 " | unsafe-config DIR MODEL CACHE_DIR\n";
    return 2;
}
