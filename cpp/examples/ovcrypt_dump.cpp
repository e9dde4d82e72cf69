// ovcrypt_dump DIR NAME [PART]: decrypt every file of model NAME in memory, print the SHA-256 of each
// (never the plaintext), then compile the model's IR on CPU and print its inputs and outputs.
//
// DIR is a package's _ovcrypt folder or a plain folder of .ovc files. The key comes from $OVCRYPT_KEY
// (or the variable named by --key-env), or the file named by $OVCRYPT_KEY_FILE. The IR compiled is PART,
// else the model's default part: the one IR of a kind "ir" model, or "openvino_model" in a folder model
// (a folder without one is only hashed). Exit status: 0 on success; 1 with one line on stderr when a
// file fails authentication, the key is wrong or missing, or anything else fails; 2 on a usage error.
// With --publisher-key PEM (repeatable), the package's model.sig must verify under one of those keys first.
#include <openssl/crypto.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <iostream>
#include <optional>
#include <ovcrypt/ovcrypt.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace {

const char* const USAGE =
    "usage: ovcrypt_dump [--key-env VAR] [--threads N] [--device DEVICE] [--publisher-key PEM]... DIR NAME [PART]";

/// One line for stderr: OpenVINO's messages span several lines.
std::string one_line(const std::string& text) {
    std::string out;
    bool space = false;
    for (char c : text) {
        if (c == '\n' || c == '\r' || c == '\t') {
            space = !out.empty();
            continue;
        }
        if (space) out += ' ';
        space = false;
        out += c;
    }
    return out;
}

std::string sha256_hex(const void* data, std::size_t size) {
    return ovcrypt::crypto::to_hex(ovcrypt::crypto::sha256(data, size));
}

std::string port_line(const char* what, const ov::Output<const ov::Node>& port) {
    std::ostringstream line;
    std::string names;
    for (const auto& name : port.get_names()) names += (names.empty() ? "" : ",") + name;
    line << what << " " << (names.empty() ? "(unnamed)" : names) << " " << port.get_element_type() << " "
         << port.get_partial_shape();
    return line.str();
}

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ovcrypt::Error("--publisher-key " + path + ": cannot be read");
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

int dump(const std::string& dir, const std::string& name, const std::string& part_name, const std::string& key_env,
         unsigned threads, const std::string& device, const std::vector<std::string>& publisher_keys) {
    ovcrypt::Package package = ovcrypt::Package::open(dir, ovcrypt::KeyRing(key_env));
    if (!publisher_keys.empty()) {
        std::vector<std::string> pems;
        for (const auto& path : publisher_keys) pems.push_back(read_text(path));
        package.require_publisher(pems);  // before any key is looked up or anything decrypted
    }
    package.set_threads(threads);
    const ovcrypt::Model& model = package.model(name);
    if (const ovcrypt::Manifest* manifest = package.manifest()) {
        std::cout << "package " << dir << " (manifest format " << manifest->version << ")\n";
    } else {
        std::cout << "folder " << dir << " (no manifest: no MAC and no salts to check)\n";
    }
    std::cout << "model " << name << " (kind " << model.kind << ", " << model.files.size() << " files)\n";

    // The part to compile is decrypted once: its weights and xml are hashed and then kept for OpenVINO.
    std::optional<ovcrypt::ModelPart> part;
    if (!part_name.empty() || model.default_part()) part = ovcrypt::find_part(model, part_name);
    ov::Tensor weights;
    ovcrypt::Plaintext xml;
    for (const ovcrypt::ModelFile& file : model.files) {
        std::string digest;
        std::uint64_t size = 0;
        if (part && file.relpath == part->bin) {
            weights = ovcrypt::read_weights(package, name, file.relpath);
            digest = sha256_hex(weights.data(), weights.get_byte_size());
            size = weights.get_byte_size();
        } else {
            ovcrypt::Plaintext plain = package.read_file(name, file.relpath);
            digest = sha256_hex(plain.data(), plain.size());
            size = plain.size();
            if (part && file.relpath == part->xml) xml = std::move(plain);
        }
        std::cout << digest << "  " << file.relpath << "  " << size << " bytes\n";
    }
    if (!part) {
        std::cout << "no IR part compiled (the model has no default part; name one of its parts)\n";
        return 0;
    }
    ov::Core core;
    ovcrypt::check_config(core, device, {});
    std::shared_ptr<ov::Model> ov_model = ovcrypt::model_from_memory(core, std::move(xml), weights);
    ov::CompiledModel compiled = core.compile_model(ov_model, device);
    std::cout << "compiled " << part->xml.substr(0, part->xml.size() - 4) << " on " << device << "\n";
    for (const auto& input : compiled.inputs()) std::cout << port_line("input", input) << "\n";
    for (const auto& output : compiled.outputs()) std::cout << port_line("output", output) << "\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> positional;
    std::string key_env = ovcrypt::DEFAULT_KEY_ENV, device = "CPU";
    unsigned threads = 0;
    std::vector<std::string> publisher_keys;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if ((arg == "--key-env" || arg == "--threads" || arg == "--device" || arg == "--publisher-key") && i + 1 < argc) {
            const std::string value = argv[++i];
            if (arg == "--publisher-key") publisher_keys.push_back(value);
            if (arg == "--key-env") key_env = value;
            if (arg == "--device") device = value;
            if (arg == "--threads") threads = static_cast<unsigned>(std::strtoul(value.c_str(), nullptr, 10));
        } else if (arg == "-h" || arg == "--help") {
            std::cout << USAGE << "\n";
            return 0;
        } else if (!arg.empty() && arg[0] == '-') {
            std::cerr << USAGE << "\n";
            return 2;
        } else {
            positional.push_back(arg);
        }
    }
    if (positional.size() < 2 || positional.size() > 3) {
        std::cerr << USAGE << "\n";
        return 2;
    }
    try {
        return dump(positional[0], positional[1], positional.size() > 2 ? positional[2] : "", key_env, threads, device,
                    publisher_keys);
    } catch (const ovcrypt::Error& e) {
        std::cout.flush();
        std::cerr << "ovcrypt_dump: " << e.kind() << ": " << one_line(e.what()) << std::endl;
    } catch (const std::exception& e) {
        std::cout.flush();
        std::cerr << "ovcrypt_dump: error: " << one_line(e.what()) << std::endl;
    }
    return 1;
}
