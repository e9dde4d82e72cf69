// One model load in a fresh process, three ways, for benchmarks/bench_cpp.py:
//
//   ovcrypt_bench plain XML                              core.compile_model(path): OpenVINO maps the weights
//   ovcrypt_bench ovcrypt DIR NAME                       this reader: authenticated, parallel, one copy
//   ovcrypt_bench recipe XML.enc BIN.enc KEY_HEX IV_HEX  OpenVINO's model-protection recipe: read each whole
//                                                        file, AES-128-CBC decrypt it with OpenSSL, then
//                                                        core.compile_model(xml_string, weights_tensor)
//
// Each prints one JSON line: the load phase in seconds (from creating the ov::Core to the CompiledModel,
// both included) and the process's peak RSS in KiB (VmHWM).
#include <openssl/evp.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <iterator>
#include <ovcrypt/ovcrypt.hpp>
#include <string>
#include <vector>

namespace {

long peak_rss_kib() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
    }
    return 0;
}

std::vector<std::uint8_t> read_whole(const std::string& path) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) throw std::runtime_error("cannot open " + path);
    std::vector<std::uint8_t> data(static_cast<std::size_t>(in.tellg()));
    in.seekg(0);
    in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data.size()));
    return data;
}

/// `openssl enc -d -aes-128-cbc -K KEY -iv IV`: PKCS#7 padding, no integrity.
std::vector<std::uint8_t> cbc_decrypt(const std::vector<std::uint8_t>& in, const std::string& key_hex,
                                      const std::string& iv_hex) {
    std::uint8_t key[16], iv[16];
    if (!ovcrypt::crypto::from_hex(key_hex, key, 16) || !ovcrypt::crypto::from_hex(iv_hex, iv, 16)) {
        throw std::runtime_error("the recipe's key and IV are 32 hex characters each");
    }
    std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
    std::vector<std::uint8_t> out(in.size() + 16);
    int n = 0, tail = 0;
    if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_128_cbc(), nullptr, key, iv) != 1) {
        throw std::runtime_error("AES-128-CBC setup failed");
    }
    // EVP takes int lengths: decrypt in pieces of 1 GiB (a multiple of the block size).
    std::size_t done = 0, written = 0;
    while (done < in.size()) {
        const std::size_t piece = std::min<std::size_t>(in.size() - done, std::size_t(1) << 30);
        if (EVP_DecryptUpdate(ctx.get(), out.data() + written, &n, in.data() + done, static_cast<int>(piece)) != 1) {
            throw std::runtime_error("AES-128-CBC decryption failed");
        }
        done += piece;
        written += static_cast<std::size_t>(n);
    }
    if (EVP_DecryptFinal_ex(ctx.get(), out.data() + written, &tail) != 1) {
        throw std::runtime_error("AES-128-CBC: bad padding (wrong key or IV?)");
    }
    out.resize(written + static_cast<std::size_t>(tail));
    OPENSSL_cleanse(key, sizeof key);
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    const std::vector<std::string> args(argv + 1, argv + argc);
    try {
        const auto start = std::chrono::steady_clock::now();
        ov::CompiledModel compiled;
        // The recipe's buffers must outlive compile_model: its tensor only wraps them.
        std::vector<std::uint8_t> xml_plain, bin_plain;
        if (args.size() == 2 && args[0] == "plain") {
            ov::Core core;
            compiled = core.compile_model(args[1], "CPU");
        } else if (args.size() == 3 && args[0] == "ovcrypt") {
            ov::Core core;
            const ovcrypt::Package package = ovcrypt::Package::open(args[1]);
            compiled = ovcrypt::compile_model(core, package, args[2]);
        } else if (args.size() == 3 && args[0] == "ovcrypt-phases") {  // where the ovcrypt load spends its time
            std::vector<std::pair<const char*, double>> phases;
            auto mark = [&, last = start](const char* what) mutable {
                const auto now = std::chrono::steady_clock::now();
                phases.emplace_back(what, std::chrono::duration<double>(now - last).count());
                last = now;
            };
            ov::Core core;
            mark("core");
            const ovcrypt::Package package = ovcrypt::Package::open(args[1]);
            const ovcrypt::ModelPart& part = ovcrypt::find_part(package.model(args[2]), "");
            mark("manifest");
            const ov::Tensor weights = ovcrypt::read_weights(package, args[2], part.bin);
            mark("weights");
            ovcrypt::Plaintext xml = package.read_file(args[2], part.xml);
            mark("xml");
            const auto model = ovcrypt::model_from_memory(core, std::move(xml), weights);
            mark("read_model");
            compiled = core.compile_model(model, "CPU");
            mark("compile");
            for (const auto& phase : phases) std::cerr << phase.first << " " << phase.second << "\n";
        } else if (args.size() == 5 && args[0] == "recipe") {
            ov::Core core;
            xml_plain = cbc_decrypt(read_whole(args[1]), args[3], args[4]);
            bin_plain = cbc_decrypt(read_whole(args[2]), args[3], args[4]);
            const std::string xml(xml_plain.begin(), xml_plain.end());
            const ov::Tensor weights(ov::element::u8, ov::Shape{bin_plain.size()}, bin_plain.data());
            compiled = core.compile_model(xml, weights, "CPU");
        } else {
            std::cerr << "usage: ovcrypt_bench plain XML | ovcrypt DIR NAME | recipe XML.enc BIN.enc KEY_HEX IV_HEX\n";
            return 2;
        }
        const double load = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::cout << "{\"load\": " << load << ", \"rss_kib\": " << peak_rss_kib()
                  << ", \"outputs\": " << compiled.outputs().size() << "}" << std::endl;
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "ovcrypt_bench: " << e.what() << std::endl;
        return 1;
    }
}
