// safetensors reader/writer (SPEC.md §4). The format is simple, but files come
// from users, so every field of the header is checked before any byte of data
// is trusted: a corrupt file must give an hmha::Error naming the file and the
// problem, never a crash, a huge allocation or silently wrong tensors.
#include "hmha/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

namespace hmha::safetensors {

namespace {

using json = nlohmann::json;

// The Python/Rust safetensors library refuses headers above 100 MB; doing the
// same keeps a corrupt length field from turning into a giant allocation.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

[[noreturn]] void fail(const std::string &path, const std::string &problem) {
    throw Error("safetensors file '" + path + "': " + problem);
}

std::string errno_text(int err) {
    return std::strerror(err);
}

// The file dtypes we accept, with their size in bytes.
enum class FileDType { F32, F16, BF16, Bool };

bool parse_dtype(const std::string &s, FileDType &out, size_t &elem_size) {
    if (s == "F32") {
        out = FileDType::F32;
        elem_size = 4;
    } else if (s == "F16") {
        out = FileDType::F16;
        elem_size = 2;
    } else if (s == "BF16") {
        out = FileDType::BF16;
        elem_size = 2;
    } else if (s == "BOOL") {
        out = FileDType::Bool;
        elem_size = 1;
    } else {
        return false;
    }
    return true;
}

std::string shape_text(const std::vector<int64_t> &shape) {
    std::ostringstream os;
    os << "[";
    for (size_t i = 0; i < shape.size(); i++) os << (i ? ", " : "") << shape[i];
    os << "]";
    return os.str();
}

// Exact: every binary16 value (subnormals included) is representable in binary32.
float f16_to_f32(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        // Inf or NaN; the NaN payload is kept (shifted into the top mantissa bits).
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;  // signed zero
    } else {
        // Subnormal half: renormalise so the leading 1 becomes implicit.
        int shift = std::countl_zero(uint16_t(mant)) - 5;  // bits to move it to position 10
        mant = (mant << shift) & 0x3ffu;
        uint32_t e = uint32_t(127 - 15 + 1 - shift);
        bits = sign | (e << 23) | (mant << 13);
    }
    return std::bit_cast<float>(bits);
}

float bf16_to_f32(uint16_t b) {
    return std::bit_cast<float>(uint32_t(b) << 16);
}

uint16_t load_u16_le(const uint8_t *p) {
    return uint16_t(p[0] | (uint16_t(p[1]) << 8));
}

uint32_t load_u32_le(const uint8_t *p) {
    return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

uint64_t load_u64_le(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

class InputFile {
public:
    explicit InputFile(const std::string &path) : path_(path) {
        fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd_ < 0) fail(path_, "cannot open: " + errno_text(errno));
        struct stat st {};
        if (::fstat(fd_, &st) != 0) fail(path_, "cannot stat: " + errno_text(errno));
        if (S_ISDIR(st.st_mode)) fail(path_, "is a directory, expected a .safetensors file");
        if (!S_ISREG(st.st_mode)) fail(path_, "is not a regular file");
        size_ = uint64_t(st.st_size);
    }
    ~InputFile() {
        if (fd_ >= 0) ::close(fd_);
    }
    InputFile(const InputFile &) = delete;
    InputFile &operator=(const InputFile &) = delete;

    uint64_t size() const { return size_; }

    // Reads exactly n bytes at offset; the size was checked against fstat, so
    // a short read means the file shrank underneath us.
    void read_at(uint64_t offset, void *dst, uint64_t n) const {
        auto *out = static_cast<uint8_t *>(dst);
        while (n > 0) {
            size_t chunk = size_t(std::min<uint64_t>(n, uint64_t(1) << 30));
            ssize_t got = ::pread(fd_, out, chunk, off_t(offset));
            if (got < 0) {
                if (errno == EINTR) continue;
                fail(path_, "read error at byte " + std::to_string(offset) + ": " + errno_text(errno));
            }
            if (got == 0) fail(path_, "file is truncated: unexpected end of file at byte " + std::to_string(offset));
            out += got;
            offset += uint64_t(got);
            n -= uint64_t(got);
        }
    }

private:
    std::string path_;
    int fd_ = -1;
    uint64_t size_ = 0;
};

// nlohmann::json keeps the last of duplicate keys without telling us; a file
// with two tensors of the same name is ambiguous, so detect it while parsing.
json parse_header(const std::string &path, const std::string &text) {
    std::vector<std::set<std::string>> keys_per_object;
    std::string duplicate;
    int duplicate_depth = 0;
    auto callback = [&](int depth, json::parse_event_t event, json &parsed) {
        switch (event) {
            case json::parse_event_t::object_start:
                keys_per_object.emplace_back();
                break;
            case json::parse_event_t::object_end:
                if (!keys_per_object.empty()) keys_per_object.pop_back();
                break;
            case json::parse_event_t::key:
                if (!keys_per_object.empty() && duplicate.empty()) {
                    std::string key = parsed.get<std::string>();
                    if (!keys_per_object.back().insert(key).second) {
                        duplicate = key;
                        duplicate_depth = depth;
                    }
                }
                break;
            default:
                break;
        }
        return true;
    };
    json header;
    try {
        header = json::parse(text, callback);
    } catch (const json::exception &e) {
        fail(path, std::string("header is not valid JSON: ") + e.what());
    }
    if (!duplicate.empty()) {
        if (duplicate_depth == 1) fail(path, "tensor name '" + duplicate + "' appears more than once in the header");
        fail(path, "key '" + duplicate + "' appears more than once in a header entry");
    }
    if (!header.is_object()) {
        fail(path, std::string("header must be a JSON object, got ") + header.type_name());
    }
    return header;
}

struct Entry {
    std::string name;
    FileDType dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0;
    uint64_t end = 0;
};

Entry parse_entry(const std::string &path, const std::string &name, const json &desc, uint64_t data_size) {
    const std::string where = "tensor '" + name + "': ";
    if (!desc.is_object()) {
        fail(path, where + "expected an object with dtype, shape and data_offsets, got " + desc.type_name());
    }
    for (const char *key : {"dtype", "shape", "data_offsets"}) {
        if (!desc.contains(key)) fail(path, where + "missing '" + key + "'");
    }

    Entry e;
    e.name = name;
    const json &dt = desc.at("dtype");
    if (!dt.is_string()) fail(path, where + "dtype must be a string, got " + dt.dump());
    size_t elem_size = 0;
    if (!parse_dtype(dt.get<std::string>(), e.dtype, elem_size)) {
        fail(path, where + "unsupported dtype '" + dt.get<std::string>() + "' (expected F32, F16, BF16 or BOOL)");
    }

    const json &shape = desc.at("shape");
    if (!shape.is_array()) fail(path, where + "shape must be a list of non-negative integers, got " + shape.dump());
    // Counted in uint64 with an overflow check so that absurd shapes are
    // rejected here rather than wrapping around and passing the size check.
    uint64_t numel = 1;
    bool overflow = false;
    for (const json &d : shape) {
        if (!d.is_number_unsigned()) {
            fail(path, where + "shape must be a list of non-negative integers, got " + shape.dump());
        }
        uint64_t v = d.get<uint64_t>();
        if (v > uint64_t(std::numeric_limits<int64_t>::max())) overflow = true;
        e.shape.push_back(int64_t(std::min<uint64_t>(v, uint64_t(std::numeric_limits<int64_t>::max()))));
        if (v != 0 && numel > std::numeric_limits<uint64_t>::max() / v) overflow = true;
        numel = overflow ? numel : numel * v;
    }
    if (!overflow && numel != 0 && uint64_t(elem_size) > uint64_t(std::numeric_limits<int64_t>::max()) / numel) {
        overflow = true;
    }
    bool empty = std::find(e.shape.begin(), e.shape.end(), 0) != e.shape.end();
    if (overflow && !empty) fail(path, where + "shape " + shape.dump() + " is too large (element count overflows)");
    uint64_t nbytes = empty ? 0 : numel * elem_size;

    const json &offs = desc.at("data_offsets");
    if (!offs.is_array() || offs.size() != 2 || !offs[0].is_number_unsigned() || !offs[1].is_number_unsigned()) {
        fail(path, where + "data_offsets must be [begin, end] with non-negative integers, got " + offs.dump());
    }
    e.begin = offs[0].get<uint64_t>();
    e.end = offs[1].get<uint64_t>();
    if (e.begin > e.end) {
        fail(path, where + "data_offsets " + offs.dump() + " have begin > end");
    }
    if (e.end > data_size) {
        fail(path, where + "data_offsets " + offs.dump() + " out of range: the data section has " +
                       std::to_string(data_size) + " bytes (file truncated?)");
    }
    if (e.end - e.begin != nbytes) {
        fail(path, where + "data_offsets " + offs.dump() + " span " + std::to_string(e.end - e.begin) +
                       " bytes, expected " + std::to_string(nbytes) + " for shape " + shape_text(e.shape) + " of " +
                       dt.get<std::string>());
    }
    return e;
}

Tensor read_tensor(const InputFile &file, uint64_t data_start, const Entry &e) {
    const uint64_t nbytes = e.end - e.begin;
    const uint64_t offset = data_start + e.begin;
    switch (e.dtype) {
        case FileDType::F32: {
            Tensor t(e.shape, DType::F32);
            if (nbytes == 0) return t;
            file.read_at(offset, t.f32(), nbytes);
            if constexpr (std::endian::native != std::endian::little) {
                uint8_t *p = t.bytes();
                for (int64_t i = 0; i < t.numel(); i++) {
                    t.f32()[i] = std::bit_cast<float>(load_u32_le(p + 4 * i));
                }
            }
            return t;
        }
        case FileDType::Bool: {
            Tensor t(e.shape, DType::Bool);
            if (nbytes == 0) return t;
            file.read_at(offset, t.bytes(), nbytes);
            // Kernels read masks as 0/1; any other byte value still means true.
            uint8_t *p = t.bytes();
            for (uint64_t i = 0; i < nbytes; i++) p[i] = p[i] ? 1 : 0;
            return t;
        }
        case FileDType::F16:
        case FileDType::BF16: {
            Tensor t(e.shape, DType::F32);
            if (nbytes == 0) return t;
            std::vector<uint8_t> raw(nbytes);
            file.read_at(offset, raw.data(), nbytes);
            float *out = t.f32();
            const bool half = e.dtype == FileDType::F16;
            for (uint64_t i = 0; i < nbytes / 2; i++) {
                uint16_t v = load_u16_le(raw.data() + 2 * i);
                out[i] = half ? f16_to_f32(v) : bf16_to_f32(v);
            }
            return t;
        }
    }
    throw Error("safetensors: internal error: unhandled dtype of tensor '" + e.name + "'");
}

// Writes everything or throws; retries short writes and EINTR.
void write_all(int fd, const std::string &path, const void *data, size_t n) {
    const auto *p = static_cast<const uint8_t *>(data);
    while (n > 0) {
        ssize_t put = ::write(fd, p, std::min<size_t>(n, size_t(1) << 30));
        if (put < 0) {
            if (errno == EINTR) continue;
            fail(path, "write failed: " + errno_text(errno));
        }
        p += put;
        n -= size_t(put);
    }
}

// A temporary file beside the target, removed unless commit() renamed it over
// the target: the target is either untouched or complete, never partial.
class TempFile {
public:
    explicit TempFile(const std::string &target) : target_(target) {
        namespace fs = std::filesystem;
        fs::path t(target);
        if (t.filename().empty()) fail(target, "cannot write: the path names a directory, not a file");
        static std::atomic<uint64_t> counter{0};
        for (int attempt = 0; attempt < 100; attempt++) {
            uint64_t salt = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
            // Built by appending: GCC 12 warns falsely (-Wrestrict) on "literal" + std::string.
            std::string name(".");
            name.append(t.filename().string()).append(".tmp-").append(std::to_string(::getpid()));
            name.append("-").append(std::to_string(counter++));
            name.append("-").append(std::to_string(salt % 1000000));
            fs::path tmp = t.parent_path() / name;
            // 0666 so that the umask decides the final permissions, as for any new file.
            fd_ = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
            if (fd_ >= 0) {
                path_ = tmp.string();
                return;
            }
            if (errno != EEXIST) fail(target, "cannot create a file in its directory: " + errno_text(errno));
        }
        fail(target, "cannot create a temporary file beside it");
    }
    ~TempFile() {
        if (fd_ >= 0) ::close(fd_);
        if (!committed_) ::unlink(path_.c_str());
    }
    TempFile(const TempFile &) = delete;
    TempFile &operator=(const TempFile &) = delete;

    int fd() const { return fd_; }

    void commit() {
        int fd = fd_;
        fd_ = -1;
        // close() can report a deferred write error (e.g. on network filesystems).
        if (::close(fd) != 0) fail(target_, "write failed on close: " + errno_text(errno));
        if (::rename(path_.c_str(), target_.c_str()) != 0) {
            fail(target_, "cannot replace the file: " + errno_text(errno));
        }
        committed_ = true;
    }

private:
    std::string target_;
    std::string path_;
    int fd_ = -1;
    bool committed_ = false;
};

}  // namespace

std::map<std::string, Tensor> load(const std::string &path) {
    InputFile file(path);
    const uint64_t size = file.size();
    if (size < 8) {
        fail(path, "file is truncated: " + std::to_string(size) + " bytes, expected at least 8 for the header length");
    }
    uint8_t len_bytes[8];
    file.read_at(0, len_bytes, 8);
    const uint64_t header_len = load_u64_le(len_bytes);
    if (header_len > size - 8) {
        fail(path, "header length " + std::to_string(header_len) + " is larger than the rest of the file (" +
                       std::to_string(size - 8) + " bytes): truncated or not a safetensors file");
    }
    if (header_len > kMaxHeaderBytes) {
        fail(path, "header length " + std::to_string(header_len) + " exceeds the limit of " +
                       std::to_string(kMaxHeaderBytes) + " bytes");
    }
    if (header_len < 2) {
        fail(path, "header length " + std::to_string(header_len) + " is too small for a JSON object");
    }
    std::string text(size_t(header_len), '\0');
    file.read_at(8, text.data(), header_len);
    const json header = parse_header(path, text);

    const uint64_t data_start = 8 + header_len;
    const uint64_t data_size = size - data_start;
    std::vector<Entry> entries;
    for (const auto &[name, desc] : header.items()) {
        if (name == "__metadata__") {
            if (!desc.is_object()) {
                fail(path, std::string("__metadata__ must be an object of strings, got ") + desc.type_name());
            }
            continue;
        }
        entries.push_back(parse_entry(path, name, desc, data_size));
    }

    // Tensors may not share bytes: an overlap means a corrupt or hand-edited
    // header, and the values of at least one tensor would be garbage.
    std::vector<const Entry *> by_offset;
    for (const Entry &e : entries) {
        if (e.end > e.begin) by_offset.push_back(&e);
    }
    std::sort(by_offset.begin(), by_offset.end(), [](const Entry *a, const Entry *b) {
        return a->begin < b->begin || (a->begin == b->begin && a->end < b->end);
    });
    for (size_t i = 1; i < by_offset.size(); i++) {
        const Entry &a = *by_offset[i - 1];
        const Entry &b = *by_offset[i];
        if (b.begin < a.end) {
            fail(path, "tensors '" + a.name + "' and '" + b.name + "' overlap (data_offsets [" +
                           std::to_string(a.begin) + ", " + std::to_string(a.end) + "] and [" +
                           std::to_string(b.begin) + ", " + std::to_string(b.end) + "])");
        }
    }

    std::map<std::string, Tensor> out;
    for (const Entry &e : entries) out.emplace(e.name, read_tensor(file, data_start, e));
    return out;
}

void save(const std::string &path, const std::map<std::string, Tensor> &tensors) {
    if (path.empty()) throw Error("safetensors: output path is empty");
    json header = json::object();
    uint64_t offset = 0;
    // std::map iterates in name order, the same order nlohmann::json writes
    // the keys in, so the data section follows the header.
    for (const auto &[name, t] : tensors) {
        if (name == "__metadata__") fail(path, "'__metadata__' is reserved and cannot name a tensor");
        if (!t.defined()) fail(path, "tensor '" + name + "' has no data");
        uint64_t nbytes = t.nbytes();
        header[name] = {{"dtype", t.dtype() == DType::F32 ? "F32" : "BOOL"},
                        {"shape", t.shape()},
                        {"data_offsets", {offset, offset + nbytes}}};
        offset += nbytes;
    }
    std::string text;
    try {
        text = header.dump();
    } catch (const json::exception &e) {
        // Tensor names that are not valid UTF-8 cannot be stored in JSON.
        fail(path, std::string("cannot encode the header: ") + e.what());
    }
    // Pad with spaces to a multiple of 8 so that the data section is aligned,
    // exactly as the Python safetensors library does.
    text.append((8 - text.size() % 8) % 8, ' ');

    TempFile tmp(path);
    uint8_t len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
    write_all(tmp.fd(), path, len_bytes, 8);
    write_all(tmp.fd(), path, text.data(), text.size());

    std::vector<uint8_t> chunk;
    constexpr size_t kChunk = size_t(1) << 20;
    for (const auto &[name, t] : tensors) {
        const size_t nbytes = t.nbytes();
        if (nbytes == 0) continue;
        if (t.dtype() == DType::F32 && std::endian::native == std::endian::little) {
            write_all(tmp.fd(), path, t.bytes(), nbytes);
            continue;
        }
        // Bool bytes are normalised to 0/1 (a wrapped buffer may hold other
        // nonzero values); F32 is byte-swapped on big-endian hosts.
        const uint8_t *src = t.bytes();
        for (size_t pos = 0; pos < nbytes; pos += kChunk) {
            size_t n = std::min(kChunk, nbytes - pos);
            chunk.resize(n);
            if (t.dtype() == DType::Bool) {
                for (size_t i = 0; i < n; i++) chunk[i] = src[pos + i] ? 1 : 0;
            } else {
                for (size_t i = 0; i < n; i += 4) {
                    uint32_t v = std::bit_cast<uint32_t>(t.f32()[(pos + i) / 4]);
                    for (int b = 0; b < 4; b++) chunk[i + b] = uint8_t(v >> (8 * b));
                }
            }
            write_all(tmp.fd(), path, chunk.data(), n);
        }
    }
    tmp.commit();
}

}  // namespace hmha::safetensors
