#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <numeric>
#include <sstream>
#include <vector>

#include "hmha/hmha.h"

namespace hmha {

const char *to_string(DType d) {
    return d == DType::F32 ? "float32" : "bool";
}

const char *to_string(Device d) {
    switch (d) {
    case Device::CPU: return "cpu";
    case Device::CUDA: return "cuda";
    case Device::OpenCL: return "opencl";
    }
    return "?";
}

Device parse_device(const std::string &name) {
    if (name == "cpu") return Device::CPU;
    if (name == "cuda") return Device::CUDA;
    if (name == "opencl") return Device::OpenCL;
    throw Error("device: expected one of cpu, cuda, opencl, got '" + name + "'");
}

static size_t element_size(DType d) {
    return d == DType::F32 ? sizeof(float) : 1;
}

static int64_t checked_numel(const std::vector<int64_t> &shape) {
    int64_t n = 1;
    for (int64_t s : shape) {
        if (s < 0) {
            std::ostringstream os;
            os << "tensor shape: expected non-negative sizes, got " << s;
            throw Error(os.str());
        }
        if (s != 0 && n > std::numeric_limits<int64_t>::max() / s) {
            throw Error("tensor shape: element count overflows int64");
        }
        n *= s;
    }
    return n;
}

Tensor::Tensor(std::vector<int64_t> shape, DType dtype) : Tensor(uninitialized(std::move(shape), dtype)) {
    std::memset(data_, 0, nbytes());
}

namespace {

// Owning tensors of kStorageCacheMinBytes or more hand their storage, when the
// last copy goes, to a process-wide cache of at most kStorageCacheMaxBytes,
// from which the next owning tensor of exactly that many bytes takes it. A
// forward's outputs are such tensors: fresh from the allocator, every 4 KiB
// page of them faults on its first write (glibc returns large freed blocks to
// the kernel), and a caller that runs forward() in a loop would pay for it
// each time. Measured on a 2-core Zen 5 VM (2026-11-28), forward with averaged
// weights, fresh / reused outputs: (4, 512, 512, 512, 8) 20.7-23.3 / 16.6-16.7
// ms, (1, 2048, 2048, 1024, 16) 117-121 / 104-105 (the reuse then measured by
// keeping glibc from trimming); need_weights=false with its one output: a tie.
constexpr size_t kStorageCacheMinBytes = size_t(1) << 20;
constexpr size_t kStorageCacheMaxBytes = size_t(256) << 20;

class StorageCache {
public:
    // Never destroyed: tensors released during static destruction still find it.
    static StorageCache &get() {
        static StorageCache *cache = new StorageCache;
        return *cache;
    }

    std::unique_ptr<uint8_t[]> take(size_t bytes) {
        std::lock_guard<std::mutex> lock(mu_);
        for (size_t i = free_.size(); i-- > 0;) {  // the newest first: likelier in cache
            if (free_[i].bytes != bytes) continue;
            std::unique_ptr<uint8_t[]> block = std::move(free_[i].data);
            free_.erase(free_.begin() + (std::ptrdiff_t)i);
            held_ -= bytes;
            return block;
        }
        return nullptr;
    }

    // Keeps `data` if it fits beside what is held, dropping the oldest blocks
    // to make room; else frees it.
    void give(uint8_t *data, size_t bytes) {
        std::unique_ptr<uint8_t[]> block(data);
        if (bytes > kStorageCacheMaxBytes) return;
        std::vector<Free> dropped;  // freed outside the lock
        std::lock_guard<std::mutex> lock(mu_);
        while (held_ + bytes > kStorageCacheMaxBytes) {
            held_ -= free_.front().bytes;
            dropped.push_back(std::move(free_.front()));
            free_.erase(free_.begin());
        }
        free_.push_back({bytes, std::move(block)});
        held_ += bytes;
    }

    size_t held() {
        std::lock_guard<std::mutex> lock(mu_);
        return held_;
    }

private:
    struct Free {
        size_t bytes;
        std::unique_ptr<uint8_t[]> data;
    };
    std::mutex mu_;
    std::vector<Free> free_;  // oldest first
    size_t held_ = 0;
};

}  // namespace

namespace detail {
// Bytes the storage cache holds: a test hook (tests/test_tensor_storage.cpp).
size_t cached_storage_bytes() {
    return StorageCache::get().held();
}
}  // namespace detail

Tensor Tensor::uninitialized(std::vector<int64_t> shape, DType dtype) {
    Tensor t;
    t.shape_ = std::move(shape);
    t.dtype_ = dtype;
    const size_t bytes = std::max<size_t>((size_t)checked_numel(t.shape_) * element_size(dtype), 1);
    if (bytes < kStorageCacheMinBytes) {
        // new[] without () leaves the bytes unwritten, so no page is touched until used.
        t.storage_ = std::shared_ptr<uint8_t[]>(new uint8_t[bytes]);
    } else {
        std::unique_ptr<uint8_t[]> block = StorageCache::get().take(bytes);
        if (!block) block.reset(new uint8_t[bytes]);
        t.storage_ = std::shared_ptr<uint8_t[]>(block.release(),
                                                [bytes](uint8_t *p) { StorageCache::get().give(p, bytes); });
    }
    t.data_ = t.storage_.get();
    return t;
}

Tensor Tensor::from_floats(std::vector<int64_t> shape, const std::vector<float> &values) {
    Tensor t(std::move(shape), DType::F32);
    if ((size_t)t.numel() != values.size()) {
        throw Error("Tensor::from_floats: expected " + std::to_string(t.numel()) + " values for shape " +
                    t.shape_str() + ", got " + std::to_string(values.size()));
    }
    if (!values.empty()) std::memcpy(t.data_, values.data(), values.size() * sizeof(float));
    return t;
}

Tensor Tensor::from_bools(std::vector<int64_t> shape, const std::vector<uint8_t> &values) {
    Tensor t(std::move(shape), DType::Bool);
    if ((size_t)t.numel() != values.size()) {
        throw Error("Tensor::from_bools: expected " + std::to_string(t.numel()) + " values for shape " +
                    t.shape_str() + ", got " + std::to_string(values.size()));
    }
    for (size_t i = 0; i < values.size(); i++) t.bytes()[i] = values[i] ? 1 : 0;
    return t;
}

Tensor Tensor::wrap(void *data, std::vector<int64_t> shape, DType dtype) {
    Tensor t;
    t.shape_ = std::move(shape);
    t.dtype_ = dtype;
    checked_numel(t.shape_);
    t.data_ = data;
    return t;
}

Tensor Tensor::wrap_device(Device device, uint64_t native_handle, std::vector<int64_t> shape, DType dtype) {
    if (device == Device::CPU) {
        throw Error("Tensor::wrap_device: expected device cuda or opencl, got cpu (use Tensor::wrap for host memory)");
    }
    Tensor t;
    t.shape_ = std::move(shape);
    t.dtype_ = dtype;
    checked_numel(t.shape_);
    t.device_ = device;
    t.device_handle_ = native_handle;
    if (native_handle == 0 && t.numel() > 0) {
        throw Error("Tensor::wrap_device: expected a device allocation for shape " + t.shape_str() +
                    ", got a null handle");
    }
    return t;
}

int64_t Tensor::size(int64_t d) const {
    int64_t r = dim();
    int64_t k = d < 0 ? d + r : d;
    if (k < 0 || k >= r) {
        throw Error("Tensor::size: dimension " + std::to_string(d) + " out of range for shape " + shape_str());
    }
    return shape_[k];
}

int64_t Tensor::numel() const {
    return std::accumulate(shape_.begin(), shape_.end(), (int64_t)1, std::multiplies<int64_t>());
}

size_t Tensor::nbytes() const {
    return (size_t)numel() * element_size(dtype_);
}

float *Tensor::f32() {
    return static_cast<float *>(data_);
}
const float *Tensor::f32() const {
    return static_cast<const float *>(data_);
}
uint8_t *Tensor::bytes() {
    return static_cast<uint8_t *>(data_);
}
const uint8_t *Tensor::bytes() const {
    return static_cast<const uint8_t *>(data_);
}

float Tensor::at(int64_t i) const {
    return dtype_ == DType::F32 ? f32()[i] : (bytes()[i] ? 1.0f : 0.0f);
}

Tensor Tensor::reshape(std::vector<int64_t> shape) const {
    Tensor t = *this;
    t.shape_ = std::move(shape);
    if (checked_numel(t.shape_) != numel()) {
        throw Error("Tensor::reshape: cannot view shape " + shape_str() + " as " + t.shape_str());
    }
    return t;
}

std::string Tensor::shape_str() const {
    std::ostringstream os;
    os << "(";
    for (size_t i = 0; i < shape_.size(); i++) os << (i ? ", " : "") << shape_[i];
    os << (shape_.size() == 1 ? ",)" : ")");
    return os.str();
}

}  // namespace hmha
