// y = x W^T + b: the q/k/v input projections and the output projection.
// Rows are whatever the caller's layout makes them ((L,N,E) and (N,L,E) are both
// E-wide rows), so one kernel serves every layout. W arrives transposed (O, K)
// once, at construction, so the schedule can vectorize over output features.
#include "Halide.h"
#include "generators/estimates.h"
#include "schedules/cpu/defaults.h"
#include "schedules/cpu/linear.h"
#include "schedules/gpu/linear.h"

namespace hmha_gen {

using namespace Halide;

enum class PackW { Auto, Yes, No };

class Linear : public Generator<Linear> {
public:
    // 0 = derived from the target (schedules/cpu/defaults.h).
    GeneratorParam<int> tile_o{"tile_o", 0, 0, 256};
    GeneratorParam<int> tile_r{"tile_r", 0, 0, 1024};
    GeneratorParam<int> unroll_r{"unroll_r", 0, 0, 16};
    // auto: pack W's panels where the target has 16 vector registers (schedules/cpu/linear.h).
    GeneratorParam<PackW> pack_w{"pack_w", PackW::Auto, {{"auto", PackW::Auto}, {"true", PackW::Yes}, {"false", PackW::No}}};
    GeneratorParam<int> vector_width{"vector_width", 0, 0, 64};
    GeneratorParam<int> gpu_threads_o{"gpu_threads_o", 64, 1, 1024};
    GeneratorParam<int> gpu_threads_r{"gpu_threads_r", 4, 1, 1024};
    GeneratorParam<int> gpu_rows_per_thread{"gpu_rows_per_thread", 4, 1, 64};
    GeneratorParam<int> gpu_cols_per_thread{"gpu_cols_per_thread", 1, 1, 16};
    GeneratorParam<bool> gpu_vector_loads{"gpu_vector_loads", false};  // schedules/gpu/linear.h
    GeneratorParam<int> gpu_k_unroll{"gpu_k_unroll", 1, 1, 16};
    GeneratorParam<bool> gpu_vector_x{"gpu_vector_x", false};  // schedules/gpu/linear.h
    GeneratorParam<int> gpu_split_k{"gpu_split_k", 1, 1, 256};  // > 1: schedule_linear_split_k
    GeneratorParam<std::string> estimate{"estimate", kDefaultEstimate};  // autoschedulers: generators/estimates.h

    Input<Buffer<float, 2>> x{"x"};                // (K, R)
    Input<Buffer<float, 2>> weight_t{"weight_t"};  // (O, K)
    Input<Buffer<float, 1>> bias{"bias"};          // (O)
    Output<Buffer<float, 2>> y{"y"};               // (O, R)

    void generate() {
        RDom rk(0, x.dim(0).extent(), "rk");
        // x through a wrapper that a GPU schedule may stage (gpu_vector_x).
        const bool vector_x = gpu_vector_x && get_target().has_gpu_feature() && !using_autoscheduler();
        Func x_rows = vector_x ? x.in() : Func(x);
        prod(o, r) = 0.0f;
        prod(o, r) += weight_t(o, rk) * x_rows(rk, r);
        y(o, r) = prod(o, r) + bias(o);

        const ShapeEstimate e = parse_estimate(estimate);
        x.set_estimates(e.rows());
        weight_t.set_estimates(ShapeEstimate::extents({e.e, e.e}));
        bias.set_estimates(ShapeEstimate::extents({e.e}));
        y.set_estimates(e.rows());

        if (using_autoscheduler()) {
            return;
        }
        if (get_target().has_gpu_feature() && gpu_split_k > 1) {
            schedules::gpu::schedule_linear_split_k(y, prod, o, r, rk, x.dim(0).extent(), gpu_threads_o, gpu_split_k);
            return;
        }
        if (get_target().has_gpu_feature()) {
            // CUDA only: the vectorized features' guarded tail (O not a multiple
            // of cols_per_thread) becomes predicated vector code, which Halide
            // 21's OpenCL C backend rejects ("Unhandled intrinsic in C backend:
            // extract_mask_element"); OpenCL runs the same tiles unrolled.
            const bool vector_loads = gpu_vector_loads && get_target().has_feature(Target::CUDA);
            schedules::gpu::schedule_linear(y, prod, x_rows, o, r, rk,
                                            {gpu_threads_o, gpu_threads_r, gpu_rows_per_thread, gpu_cols_per_thread,
                                             vector_loads, gpu_k_unroll, vector_x});
            // Aligned vector loads of Wt need its rows 16-byte aligned: a whole
            // allocation (the runtime's weights are) with a stride that is a
            // multiple of 4, and output features numbered from 0; of x along k
            // (vector_x) the same of x's rows (the runtime checks the device
            // address). Other strides run the same schedule with scalar loads.
            const Expr w_rows = weight_t.dim(1).stride() % 4 == 0, x_rows_aligned = x.dim(1).stride() % 4 == 0;
            if (vector_loads) {
                weight_t.set_host_alignment(16).dim(0).set_min(0);
                y.dim(0).set_min(0);  // so that each thread's features start at a multiple of 4
            }
            if (vector_x) x.set_host_alignment(16).dim(0).set_min(0);
            if (vector_loads && vector_x) y.specialize(w_rows && x_rows_aligned);
            if (vector_x) y.specialize(x_rows_aligned);
            if (vector_loads) y.specialize(w_rows);
            return;
        }
        using namespace schedules::cpu;
        const Target t = get_target();
        const int vw = or_default(vector_width, natural_vector_width(t));
        // Tiles by the register file (schedules/cpu/defaults.h, default_linear_tile); W packed with 16 registers.
        const LinearTile tile = fitting_linear_tile(tile_o, unroll_r, tile_r, vw, t);
        const bool pack = pack_w == PackW::Auto ? !has_32_vector_registers(t) : pack_w == PackW::Yes;
        LinearParams p{tile.tile_o, tile.tile_r, tile.unroll_r, vw, pack};
        schedules::cpu::schedule_linear(y, prod, o, r, rk, p, weight_t);
    }

private:
    Var o{"o"}, r{"r"};
    Func prod{"prod"};
};

}  // namespace hmha_gen

HALIDE_REGISTER_GENERATOR(hmha_gen::Linear, linear)
