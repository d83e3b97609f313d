// The need_weights=true path, part 2: out(d, h, i, n) = sum_j w(j, i, h, n) v(d, h, j, n).
#include "Halide.h"
#include "generators/estimates.h"
#include "schedules/cpu/defaults.h"
#include "schedules/cpu/attend.h"
#include "schedules/gpu/attend.h"

namespace hmha_gen {

using namespace Halide;

class Attend : public Generator<Attend> {
public:
    GeneratorParam<int> query_block{"query_block", 32, 1, 4096};
    GeneratorParam<int> vector_width{"vector_width", 0, 0, 64};  // 0 = natural for the target
    GeneratorParam<int> gpu_threads_d{"gpu_threads_d", 32, 1, 1024};
    GeneratorParam<int> gpu_threads_i{"gpu_threads_i", 8, 1, 1024};
    GeneratorParam<int> gpu_tile_i{"gpu_tile_i", 1, 1, 16};  // schedules/gpu/attend.h
    GeneratorParam<int> gpu_key_unroll{"gpu_key_unroll", 1, 1, 16};
    GeneratorParam<int> gpu_tile_d{"gpu_tile_d", 1, 1, 16};
    GeneratorParam<bool> gpu_vector_loads{"gpu_vector_loads", false};
    GeneratorParam<std::string> estimate{"estimate", kDefaultEstimate};  // autoschedulers: generators/estimates.h

    Input<Buffer<float, 4>> weights{"weights"};  // (S', L, H, N)
    Input<Buffer<float, 4>> v{"v"};              // (D, H, S', N)
    Output<Buffer<float, 4>> out{"out"};         // (D, H, L, N)

    void generate() {
        RDom rj(0, v.dim(2).extent(), "rj");
        acc(d, i, h, n) = 0.0f;
        acc(d, i, h, n) += weights(rj, i, h, n) * v(d, h, rj, n);
        out(d, h, i, n) = acc(d, i, h, n);

        const ShapeEstimate e = parse_estimate(estimate);
        weights.set_estimates(e.weights());
        v.set_estimates(e.heads(e.s));
        out.set_estimates(e.heads(e.l));
        if (using_autoscheduler()) {
            return;
        }
        if (get_target().has_gpu_feature()) {
            // CUDA only, as in generators/linear.cpp: Halide 21's OpenCL C
            // backend rejects the guarded tail's predicated vector code.
            const bool vector_loads =
                gpu_vector_loads && gpu_tile_d > 1 && get_target().has_feature(Target::CUDA);
            schedules::gpu::schedule_attend(out, acc, d, i, h, n, rj,
                                            {gpu_threads_d, gpu_threads_i, gpu_tile_i, gpu_key_unroll, gpu_tile_d,
                                             vector_loads});
            if (vector_loads) {
                // Aligned vectors of V need every head's rows 16-byte aligned:
                // a whole allocation (the runtime's projections are) and
                // strides that are multiples of 4 floats; others run the same
                // schedule with scalar loads.
                v.set_host_alignment(16).dim(0).set_min(0);
                out.dim(0).set_min(0);
                out.specialize(v.dim(1).stride() % 4 == 0 && v.dim(2).stride() % 4 == 0 &&
                               v.dim(3).stride() % 4 == 0);
            }
            return;
        }
        const Target t = get_target();
        schedules::cpu::schedule_attend(out, acc, d, i, h, n, rj,
                                        {query_block,
                                         schedules::cpu::or_default(vector_width, schedules::cpu::natural_vector_width(t)),
                                         schedules::cpu::register_tile_rows(t)});
    }

private:
    Var d{"d"}, i{"i"}, h{"h"}, n{"n"};
    Func acc{"acc"};
};

// Averages per-head weights (S', L, H, N) over heads into (S', L, N).
class HeadMean : public Generator<HeadMean> {
public:
    GeneratorParam<int> query_block{"query_block", 8, 1, 4096};  // rows per parallel task
    GeneratorParam<int> key_chunk{"key_chunk", 0, 0, 4096};      // keys summed in registers (0: whole rows)
    GeneratorParam<int> vector_width{"vector_width", 0, 0, 64};  // 0 = natural for the target
    GeneratorParam<int> gpu_threads{"gpu_threads", 128, 1, 1024};
    GeneratorParam<std::string> estimate{"estimate", kDefaultEstimate};  // autoschedulers: generators/estimates.h
    Input<Buffer<float, 4>> weights{"weights"};
    Output<Buffer<float, 3>> mean{"mean"};

    void generate() {
        Expr heads = weights.dim(2).extent();
        RDom rh(0, heads, "rh");
        total(j, i, n) = 0.0f;
        total(j, i, n) += weights(j, i, rh, n);
        mean(j, i, n) = total(j, i, n) * (1.0f / cast<float>(heads));
        const ShapeEstimate e = parse_estimate(estimate);
        weights.set_estimates(e.weights());
        mean.set_estimates(e.mean());
        if (using_autoscheduler()) {
            return;
        }
        if (get_target().has_gpu_feature()) {
            schedules::gpu::schedule_head_mean(mean, total, j, i, n, gpu_threads);
            return;
        }
        schedules::cpu::AttendParams prm{
            query_block, schedules::cpu::or_default(vector_width, schedules::cpu::natural_vector_width(get_target()))};
        prm.key_chunk = key_chunk;
        schedules::cpu::schedule_head_mean(mean, total, j, i, n, rh.x, prm);
    }

private:
    Var j{"j"}, i{"i"}, n{"n"};
    Func total{"total"};
};

}  // namespace hmha_gen

HALIDE_REGISTER_GENERATOR(hmha_gen::Attend, attend)
HALIDE_REGISTER_GENERATOR(hmha_gen::HeadMean, head_mean)
