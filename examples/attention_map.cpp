// attention_map: a small app of the kind HalideMHA users write.
//
// It loads a PyTorch checkpoint of an nn.MultiheadAttention (the module's
// state_dict saved with safetensors.torch.save_file) and a batch of inputs,
// runs self-attention over the batch with the inputs' key_padding_mask,
// prints what came out, and draws the attention map of one head as a PNG
// heatmap: rows are queries, columns are keys, colour is the weight (viridis,
// from 0 to the map's largest weight, shown by the colour bar on the right).
//
//   attention_map [WEIGHTS INPUTS] [--num-heads H] [--batch-first|--seq-first]
//                 [--batch B] [--head H] [--png FILE] [--save FILE] [--device cpu|opencl|cuda]
//
// Defaults: the repository's demo/weights.safetensors and demo/inputs.safetensors
// (4 heads, batch_first), batch 0, head 0, attention_map.png. --save also writes
// the result as safetensors (attn_output, attn_output_weights averaged over the
// heads as PyTorch returns by default, attn_output_weights_per_head), which
// `hmha compare` can check against PyTorch's own output.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <png.h>

#include <hmha/hmha.h>
#include <hmha/safetensors.h>

#ifndef HMHA_DEMO_DIR
#define HMHA_DEMO_DIR "demo"
#endif

namespace {

struct Args {
    std::string weights = HMHA_DEMO_DIR "/weights.safetensors";
    std::string inputs = HMHA_DEMO_DIR "/inputs.safetensors";
    int64_t num_heads = 4;
    bool batch_first = true;
    int64_t batch = 0;
    int64_t head = 0;
    std::string png = "attention_map.png";
    std::string save;
    std::string device = "cpu";
};

const char *const kUsage =
    "usage: attention_map [WEIGHTS INPUTS] [--num-heads H] [--batch-first|--seq-first]\n"
    "                     [--batch B] [--head H] [--png FILE] [--save FILE] [--device cpu|opencl|cuda]\n";

int64_t to_int(const std::string &flag, const std::string &s) {
    char *end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || v < 0) throw hmha::Error(flag + ": expected an integer >= 0, got '" + s + "'");
    return v;
}

Args parse_args(int argc, char **argv) {
    Args a;
    std::vector<std::string> paths;
    for (int i = 1; i < argc; i++) {
        std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw hmha::Error(arg + ": expected a value");
            return argv[++i];
        };
        if (arg == "--help" || arg == "-h") {
            std::cout << kUsage;
            std::exit(0);
        } else if (arg == "--num-heads") {
            a.num_heads = to_int(arg, value());
        } else if (arg == "--batch-first") {
            a.batch_first = true;
        } else if (arg == "--seq-first") {
            a.batch_first = false;
        } else if (arg == "--batch") {
            a.batch = to_int(arg, value());
        } else if (arg == "--head") {
            a.head = to_int(arg, value());
        } else if (arg == "--png") {
            a.png = value();
        } else if (arg == "--save") {
            a.save = value();
        } else if (arg == "--device") {
            a.device = value();
        } else if (!arg.empty() && arg[0] == '-') {
            throw hmha::Error("unknown option '" + arg + "'\n" + kUsage);
        } else {
            paths.push_back(arg);
        }
    }
    if (paths.size() == 2) {
        a.weights = paths[0];
        a.inputs = paths[1];
    } else if (!paths.empty()) {
        throw hmha::Error("expected WEIGHTS and INPUTS (two paths) or neither\n" + std::string(kUsage));
    }
    return a;
}

std::string fmt(double v, int decimals = 4) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return buf;
}

std::string first_values(const hmha::Tensor &t, int64_t n = 6) {
    std::string s;
    for (int64_t i = 0; i < std::min(n, t.numel()); i++) s += (i ? " " : "") + fmt(t.at(i));
    return s + (t.numel() > n ? " ..." : "");
}

// ---- the PNG: a heatmap, a colour bar and its two labels ---------------------

struct RGB {
    uint8_t r, g, b;
};

// matplotlib's viridis at 9 evenly spaced points, linearly interpolated.
RGB viridis(double t) {
    static const RGB stops[] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},  {44, 113, 142}, {33, 144, 141},
                                {39, 173, 129}, {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};
    t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * 8.0;
    int i = std::min((int)t, 7);
    double f = t - i;
    auto mix = [f](uint8_t a, uint8_t b) { return (uint8_t)std::lround(a + (b - a) * f); };
    return {mix(stops[i].r, stops[i + 1].r), mix(stops[i].g, stops[i + 1].g), mix(stops[i].b, stops[i + 1].b)};
}

class Image {
public:
    Image(int w, int h) : w_(w), h_(h), px_((size_t)w * h * 3, 255) {}
    int width() const { return w_; }
    int height() const { return h_; }
    void fill(int x0, int y0, int w, int h, RGB c) {
        for (int y = std::max(y0, 0); y < std::min(y0 + h, h_); y++) {
            for (int x = std::max(x0, 0); x < std::min(x0 + w, w_); x++) {
                uint8_t *p = &px_[((size_t)y * w_ + x) * 3];
                p[0] = c.r, p[1] = c.g, p[2] = c.b;
            }
        }
    }
    // Digits and '.' in a 3x5 pixel font, each font pixel drawn scale x scale.
    void text(int x, int y, const std::string &s, int scale, RGB c) {
        static const char *const glyphs[] = {"111101101101111", "010110010010111", "111001111100111",
                                             "111001111001111", "101101111001001", "111100111001111",
                                             "111100111101111", "111001001001001", "111101111101111",
                                             "111101111001111"};
        for (char ch : s) {
            const char *g = ch == '.' ? "000000000000010" : (ch >= '0' && ch <= '9') ? glyphs[ch - '0'] : nullptr;
            for (int i = 0; g && i < 15; i++) {
                if (g[i] == '1') fill(x + (i % 3) * scale, y + (i / 3) * scale, scale, scale, c);
            }
            x += 4 * scale;
        }
    }
    void write_png(const std::string &path) const {
        FILE *f = std::fopen(path.c_str(), "wb");
        if (!f) throw hmha::Error("cannot write '" + path + "'");
        png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
        png_infop info = png ? png_create_info_struct(png) : nullptr;
        if (!png || !info || setjmp(png_jmpbuf(png))) {
            png_destroy_write_struct(&png, &info);
            std::fclose(f);
            std::remove(path.c_str());
            throw hmha::Error("libpng failed to write '" + path + "'");
        }
        png_init_io(png, f);
        png_set_IHDR(png, info, w_, h_, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                     PNG_FILTER_TYPE_DEFAULT);
        png_write_info(png, info);
        for (int y = 0; y < h_; y++) png_write_row(png, &px_[(size_t)y * w_ * 3]);
        png_write_end(png, nullptr);
        png_destroy_write_struct(&png, &info);
        if (std::fclose(f) != 0) throw hmha::Error("cannot write '" + path + "'");
    }

private:
    int w_, h_;
    std::vector<uint8_t> px_;
};

// Draws an L x S map (row-major) of values in [0, vmax]. Returns the image size.
Image draw_heatmap(const float *map, int64_t L, int64_t S, double vmax, int *cell_out) {
    const int margin = 8, gap = 12, bar_w = 20, label_gap = 6, label_scale = 2;
    const int label_w = 4 * 4 * label_scale;  // "0.00": 4 characters
    // 32 x 32 pixels per cell, smaller for long sequences (at most ~512 pixels a side).
    const int cell = (int)std::clamp<int64_t>(512 / std::max<int64_t>({L, S, 1}), 1, 32);
    const int map_w = (int)S * cell, map_h = (int)L * cell;
    Image img(margin + map_w + gap + bar_w + label_gap + label_w + margin, margin + map_h + margin);
    for (int64_t i = 0; i < L; i++) {
        for (int64_t j = 0; j < S; j++) {
            img.fill(margin + (int)j * cell, margin + (int)i * cell, cell, cell, viridis(map[i * S + j] / vmax));
        }
    }
    // Colour bar: 0 at the bottom, vmax at the top, with a thin dark frame.
    const int bx = margin + map_w + gap;
    const RGB ink{40, 40, 40};
    img.fill(bx - 1, margin - 1, bar_w + 2, map_h + 2, ink);
    for (int y = 0; y < map_h; y++) {
        img.fill(bx, margin + y, bar_w, 1, viridis(map_h > 1 ? 1.0 - (double)y / (map_h - 1) : 1.0));
    }
    const int lx = bx + bar_w + label_gap;
    img.text(lx, margin, fmt(vmax, 2), label_scale, ink);
    if (map_h >= 4 * 5 * label_scale) img.text(lx, margin + map_h - 5 * label_scale, "0.00", label_scale, ink);
    *cell_out = cell;
    return img;
}

int run(const Args &args) {
    // 1. The checkpoint and the inputs, as PyTorch saved them.
    std::map<std::string, hmha::Tensor> state_dict = hmha::safetensors::load(args.weights);
    std::map<std::string, hmha::Tensor> inputs = hmha::safetensors::load(args.inputs);
    for (const char *name : {"query", "key", "value"}) {
        if (!inputs.count(name)) throw hmha::Error(args.inputs + ": no tensor '" + name + "'");
    }

    // 2. The module: sizes from the state_dict, the rest as the model was built.
    hmha::Options opt = hmha::Options::from_state_dict(state_dict, args.num_heads);
    opt.batch_first = args.batch_first;
    opt.device = hmha::parse_device(args.device);
    hmha::MultiheadAttention mha(opt, state_dict);
    std::cout << "module: embed_dim " << opt.embed_dim << ", num_heads " << opt.num_heads << ", head_dim "
              << mha.head_dim() << (opt.batch_first ? ", batch_first" : "") << ", device "
              << hmha::to_string(opt.device) << "  (" << args.weights << ")\n";
    for (const auto &[name, t] : inputs) {
        std::cout << "input " << name << " " << t.shape_str() << " " << hmha::to_string(t.dtype()) << "\n";
    }

    // 3. Self-attention over the batch; padded keys hidden; weights per head.
    hmha::ForwardOptions f;
    if (inputs.count("key_padding_mask")) f.key_padding_mask = inputs.at("key_padding_mask");
    f.need_weights = true;
    f.average_attn_weights = false;
    hmha::ForwardResult r = mha.forward(inputs.at("query"), inputs.at("key"), inputs.at("value"), f);
    const hmha::Tensor &out = r.attn_output;
    const hmha::Tensor &w = *r.attn_output_weights;  // (N, H, L, S), or (H, L, S) unbatched
    std::cout << "attn_output " << out.shape_str() << ": " << first_values(out) << "\n";
    std::cout << "attn_output_weights " << w.shape_str() << " (per head)\n";

    // 4. One head's map: rows = queries, columns = keys.
    const bool batched = w.dim() == 4;
    const int64_t N = batched ? w.size(0) : 1, H = w.size(-3), L = w.size(-2), S = w.size(-1);
    if (args.batch >= N) throw hmha::Error("--batch: expected < " + std::to_string(N) + ", got " + std::to_string(args.batch));
    if (args.head >= H) throw hmha::Error("--head: expected < " + std::to_string(H) + ", got " + std::to_string(args.head));
    const float *map = w.f32() + (args.batch * H + args.head) * L * S;

    // Keys the key_padding_mask hides in this sequence (bool true, or float -inf).
    std::vector<int64_t> hidden;
    if (f.key_padding_mask) {
        const hmha::Tensor &m = *f.key_padding_mask;
        const int64_t row = m.dim() == 2 ? args.batch : 0;
        for (int64_t j = 0; j < S && j < m.size(-1); j++) {
            float v = m.at(row * m.size(-1) + j);
            if (m.dtype() == hmha::DType::Bool ? v != 0 : std::isinf(v) && v < 0) hidden.push_back(j);
        }
    }
    std::cout << "\nbatch " << args.batch << ", head " << args.head << ": " << L << " queries x " << S
              << " keys; hidden by key_padding_mask:";
    for (int64_t j : hidden) std::cout << " " << j;
    std::cout << (hidden.empty() ? " none\n" : "\n");

    double row_min = INFINITY, row_max = -INFINITY, hidden_max = 0, vmax = 0;
    for (int64_t i = 0; i < L; i++) {
        double sum = 0;
        for (int64_t j = 0; j < S; j++) {
            sum += map[i * S + j];
            vmax = std::max(vmax, (double)map[i * S + j]);
        }
        for (int64_t j : hidden) hidden_max = std::max(hidden_max, (double)map[i * S + j]);
        row_min = std::min(row_min, sum), row_max = std::max(row_max, sum);
        if (i < 8) {
            std::cout << "  query " << i << ":";
            for (int64_t j = 0; j < std::min<int64_t>(S, 8); j++) std::cout << " " << fmt(map[i * S + j]);
            std::cout << (S > 8 ? " ..." : "") << "  | sum " << fmt(sum) << "\n";
        }
    }
    if (L > 8) std::cout << "  ... (" << L - 8 << " more queries)\n";
    std::cout << "row sums: min " << fmt(row_min, 6) << " max " << fmt(row_max, 6) << "\n";
    std::cout << "largest weight on a hidden key: " << fmt(hidden_max, 6) << "\n";

    // 5. The heatmap.
    if (vmax <= 0) vmax = 1;
    int cell = 0;
    Image img = draw_heatmap(map, L, S, vmax, &cell);
    img.write_png(args.png);
    std::cout << "wrote " << args.png << ": " << img.width() << " x " << img.height() << " pixels (" << L
              << " queries x " << S << " keys, " << cell << " px per cell, colour 0 .. " << fmt(vmax, 4)
              << ")\n";

    // 6. Optionally the result, with the head-averaged weights PyTorch returns by default.
    if (!args.save.empty()) {
        hmha::Tensor mean(batched ? std::vector<int64_t>{N, L, S} : std::vector<int64_t>{L, S});
        for (int64_t n = 0; n < N; n++) {
            for (int64_t h = 0; h < H; h++) {
                for (int64_t k = 0; k < L * S; k++) mean.f32()[n * L * S + k] += w.f32()[(n * H + h) * L * S + k] / H;
            }
        }
        hmha::safetensors::save(args.save, {{"attn_output", out},
                                            {"attn_output_weights", mean},
                                            {"attn_output_weights_per_head", w}});
        std::cout << "saved " << args.save
                  << ": attn_output, attn_output_weights (mean over heads), attn_output_weights_per_head\n";
    }
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    try {
        return run(parse_args(argc, argv));
    } catch (const hmha::Error &e) {
        std::cerr << "attention_map: " << e.what() << "\n";
        return 1;
    } catch (const std::exception &e) {
        std::cerr << "attention_map: " << e.what() << "\n";
        return 1;
    }
}
