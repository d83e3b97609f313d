#include "hmha/hmha.h"

namespace hmha {

static const Tensor &require(const std::map<std::string, Tensor> &sd, const std::string &name, int64_t rank) {
    auto it = sd.find(name);
    if (it == sd.end()) {
        throw Error("state_dict: missing tensor '" + name + "'");
    }
    if (it->second.dim() != rank) {
        throw Error("state_dict['" + name + "']: expected a " + std::to_string(rank) + "-D tensor, got shape " +
                    it->second.shape_str());
    }
    return it->second;
}

Options Options::from_state_dict(const std::map<std::string, Tensor> &sd, int64_t num_heads) {
    Options o;
    o.num_heads = num_heads;
    o.embed_dim = require(sd, "out_proj.weight", 2).size(0);
    if (sd.count("in_proj_weight")) {
        o.kdim = o.vdim = o.embed_dim;
    } else {
        o.kdim = require(sd, "k_proj_weight", 2).size(1);
        o.vdim = require(sd, "v_proj_weight", 2).size(1);
    }
    o.bias = sd.count("in_proj_bias") > 0 || sd.count("out_proj.bias") > 0;
    o.add_bias_kv = sd.count("bias_k") > 0 || sd.count("bias_v") > 0;
    return o;
}

const char *to_string(Scratch s) {
    switch (s) {
        case Scratch::Auto: return "auto";
        case Scratch::Sequence: return "sequence";
        case Scratch::PerHead: return "per-head";
    }
    return "?";
}

Scratch parse_scratch(const std::string &name) {
    for (Scratch s : {Scratch::Auto, Scratch::Sequence, Scratch::PerHead}) {
        if (name == to_string(s)) return s;
    }
    throw Error("scratch: expected one of auto, sequence, per-head, got '" + name + "'");
}

const char *to_string(GpuAttention a) {
    return a == GpuAttention::Fused ? "fused" : "unfused";
}

GpuAttention parse_gpu_attention(const std::string &name) {
    for (GpuAttention a : {GpuAttention::Fused, GpuAttention::Unfused}) {
        if (name == to_string(a)) return a;
    }
    throw Error("gpu_attention: expected one of fused, unfused, got '" + name + "'");
}

}  // namespace hmha
