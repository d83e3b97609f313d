// safetensors I/O (SPEC.md §4): 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}} (optional __metadata__), then the
// raw little-endian data.
#pragma once

#include <map>
#include <string>

#include "hmha/hmha.h"

namespace hmha::safetensors {

// Reads every tensor. F32 and BOOL load as they are; F16 and BF16 are widened to
// F32. Throws hmha::Error naming the file and what is wrong with it.
std::map<std::string, Tensor> load(const std::string &path);

// Writes F32 and Bool tensors. The file appears only when complete (written
// to a temporary beside it, then renamed); on error nothing is left behind.
void save(const std::string &path, const std::map<std::string, Tensor> &tensors);

}  // namespace hmha::safetensors
