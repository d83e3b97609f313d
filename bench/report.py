#!/usr/bin/env python3
"""Runs the whole CPU bench of issue 4 and writes the report.

    make bench-report       # builds build-bench/ with -DHMHA_BENCH_AUTOSCHEDULERS=ON, then runs this
    python bench/report.py --build-dir build-bench [--quick] [--from-json FILE]

Every measurement is one case in a fresh process, printing one JSON line:
`hmha_bench --case ours` (which also dumps the inputs, parameters and our
output), then each peer on the same inputs (`hmha_bench --case blas|<kernel set>`,
`torch_mha.py --case mha|sdpa`), each checked against our output before it is
timed. Time is the median of the timed runs after warm-up; peak memory is the
process's peak resident set (VmHWM) minus its resident set before the inputs and
parameters were made. The CPU use of anything else on the machine is measured
during every case (/proc/stat minus the case's own CPU time) and reported.

Writes bench/results/<machine>-<date>.md (+ .json with every record, and PNG
charts), and copies the .md and charts to bench/results/latest* for the README to embed. A file
<base>-notes.md beside them (analysis written after the run) is appended to the report.
Needs matplotlib (bench/requirements-report.txt) for the charts.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (N, L, S, E, H) of issue 4; cross-attention uses S = L / 2.
SHAPES = [(4, 512, 512, 512, 8), (1, 2048, 2048, 1024, 16), (1, 4096, 4096, 512, 8), (32, 128, 128, 256, 4)]
VARIANTS = [  # (label, need_weights, causal, cross)
    ("self", False, False, False),
    ("self, need_weights", True, False, False),
    ("causal", False, True, False),
    ("causal, need_weights", True, True, False),
    ("cross S=L/2", False, False, True),
    ("cross S=L/2, need_weights", True, False, True),
]
SWEEP_E, SWEEP_H = 512, 8
SWEEP_L = [128, 256, 512, 1024, 2048, 4096, 8192]
AUTOSCHEDULERS = ["Adams2019", "Li2018", "Mullapudi2016"]
# --isa avx2: every implementation held to AVX2 + FMA on an AVX-512 machine, for
# the users whose CPUs stop there. Ours: a build whose CPU kernels are for an AVX2
# target (make bench-report-avx2); the peers: these, in every case's environment.
ISA_ENV = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                    "ONEDNN_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}}
KERNELS = ["linear", "sdpa", "masked_softmax", "attend", "head_mean"]
PEER_NAMES = {
    "ours": "ours (hmha)",
    "torch.nn.MultiheadAttention": "nn.MultiheadAttention",
    "torch F.sdpa": "F.linear + F.sdpa",
    "blas": "OpenBLAS + softmax (hand-written)",
    "ours-kernels": "ours' kernels, bench driver",
    "ours-untuned": "ours, untuned defaults",
}
TARGET_NW_FALSE, TARGET_NW_TRUE, TARGET_SGEMM, TARGET_MEM = 1.3, 2.0, 0.70, 1.2


# ---- machine state ------------------------------------------------------------------

def cpu_busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    return v[0] + v[1] + v[2] + v[5] + v[6], v[7] if len(v) > 7 else 0


def children_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def others_cores(seconds):
    """Cores' worth of CPU used by other processes over `seconds` (we run nothing)."""
    hz = os.sysconf("SC_CLK_TCK")
    b0, s0 = cpu_busy_ticks()
    time.sleep(seconds)
    b1, s1 = cpu_busy_ticks()
    return (b1 - b0) / hz / seconds, (s1 - s0) / hz / seconds


def wait_quiet(max_load, max_others, max_wait, log):
    """Waits until the 1-minute load and others' CPU use are low; returns what it saw."""
    t0 = time.time()
    while True:
        busy, steal = others_cores(2.0)
        la = loadavg()
        if (la[0] <= max_load and busy <= max_others) or time.time() - t0 > max_wait:
            waited = time.time() - t0
            if waited > 5:
                log(f"  waited {waited:.0f} s for a quiet machine (load {la[0]:.2f}, others {busy:.2f} cores)")
            return {"load": la, "others_cores": busy, "steal_cores": steal, "waited_s": waited,
                    "quiet": la[0] <= max_load and busy <= max_others}
        log(f"  machine busy (load {la[0]:.2f}, others {busy:.2f} cores): waiting")
        time.sleep(15)


def machine_info():
    info = {"nproc": os.cpu_count(), "kernel": platform.release()}
    flags, family, model, name = "", None, None, "cpu"
    with open("/proc/cpuinfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k == "model name" and name == "cpu":
                name = v
            elif k == "cpu family" and family is None:
                family = int(v)
            elif k == "model" and model is None:
                model = int(v)
            elif k == "flags" and not flags:
                flags = v
    info.update(model_name=name, family=family, model=model, avx512="avx512f" in flags.split(),
                avx2="avx2" in flags.split())
    with open("/proc/meminfo") as f:
        info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for key in ("L1d cache", "L2 cache", "L3 cache", "Hypervisor vendor"):
            m = re.search(rf"^{key}:\s+(.*)$", out, re.M)
            if m:
                info[key] = m.group(1).strip()
    except OSError:
        pass
    uarch = ""
    if "AMD" in name and family == 25:
        uarch = "zen4" if (0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF) else "zen3"
    elif "AMD" in name and family == 26:
        uarch = "zen5"
    info["uarch"] = uarch
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    slug = re.sub(r"-(\d+)-core-processor", "", slug)
    info["slug"] = "-".join(x for x in (slug, uarch, f"{os.cpu_count()}core") if x)
    return info


def git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


# ---- running cases --------------------------------------------------------------------

class Runner:
    def __init__(self, args, log):
        self.args, self.log = args, log
        self.bench = os.path.join(args.build_dir, "bench", "hmha_bench")
        # The same bench built without schedules/tuned/ params (--untuned-build-dir): "ours-untuned".
        self.untuned_bench = (os.path.join(args.untuned_build_dir, "bench", "hmha_bench")
                              if args.untuned_build_dir else None)
        self.records = []
        self.tmp = tempfile.mkdtemp(prefix="hmha-bench-")
        self.hz = os.sysconf("SC_CLK_TCK")

    def run(self, cmd, env_extra=None, timeout=900, meta=None):
        env = dict(os.environ)
        env.update(env_extra or {})
        b0, _ = cpu_busy_ticks()
        c0 = children_cpu_seconds()
        t0 = time.time()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
            out, err, rc = p.stdout, p.stderr, p.returncode
        except subprocess.TimeoutExpired as ex:
            out, err, rc = (ex.stdout or b"").decode() if isinstance(ex.stdout, bytes) else (ex.stdout or ""), \
                "timed out", -1
        wall = time.time() - t0
        b1, _ = cpu_busy_ticks()
        own = children_cpu_seconds() - c0
        others = max(0.0, ((b1 - b0) / self.hz - own) / max(wall, 1e-3))
        rec = None
        for line in reversed(out.strip().splitlines()):
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                    break
                except json.JSONDecodeError:
                    pass
        if rec is None:
            rec = {"ok": False, "error": f"exit {rc}: {(err or out).strip()[-400:]}"}
        rec.update(meta or {})
        rec["wall_s"] = round(wall, 2)
        rec["others_cores"] = round(others, 3)
        rec["command"] = " ".join(os.path.relpath(c, ROOT) if os.path.isabs(c) and c.startswith(ROOT) else c
                                  for c in cmd)
        return rec

    def keep(self, rec):
        self.records.append(rec)
        self.show(rec)
        return rec

    def best_of(self, rounds):
        """The fastest ok round of one implementation (interference only slows things down), with every round's ms."""
        ok = [r for r in rounds if r.get("ok")]
        if not ok:
            return rounds[0]
        best = dict(min(ok, key=lambda r: r["ms"]))
        best["rounds_ms"] = [round(r["ms"], 4) for r in ok]
        best["spread"] = round(max(r["ms"] for r in ok) / min(r["ms"] for r in ok) - 1, 4)
        best["others_cores"] = max(r.get("others_cores", 0) for r in ok) if len(ok) == 1 else best["others_cores"]
        return best

    def show(self, rec):
        tag = rec.get("impl", rec.get("kernel", "?"))
        if rec.get("ok"):
            extra = f"{rec['ms']:.2f} ms" if "ms" in rec else f"{rec.get('gflops', 0):.1f} GFLOP/s"
            if rec.get("peak_delta") is not None:
                extra += f", peak +{rec['peak_delta'] / 2**20:.0f} MiB"
        else:
            extra = "FAILED: " + str(rec.get("error", ""))[:150]
        if rec.get("kernel"):
            tag = f"{rec['kernel']} {tag}"
        self.log(f"    {tag:32s} {extra}  (others {rec.get('others_cores', 0):.2f} cores)")

    def case_cmd(self, impl, shape, nw, causal, cross, dump=None, ref=None, min_time=None):
        cmd = [self.bench, "--case", impl, "--shape", ",".join(map(str, shape)),
               "--min-time", str(min_time or self.args.min_time), "--min-reps", str(self.args.min_reps)]
        if nw:
            cmd.append("--need-weights")
        if causal:
            cmd.append("--causal")
        if cross:
            cmd.append("--cross")
        if dump:
            cmd += ["--dump", dump]
        if ref:
            cmd += ["--ref", ref]
        return cmd

    def forward_case(self, group, shape, nw, causal, cross, impls, min_time=None, skip=None):
        """ours (dumping the reference) then each peer on the same data, in --rounds interleaved rounds
        (ours, peer 1, peer 2, ..., ours, peer 1, ...); each implementation's best round is kept.
        skip(impl) -> reason or None. The autoscheduled forwards (10-20x slower) run one round."""
        n, l, s, e, h = shape
        meta = {"group": group, "variant": variant_label(nw, causal, cross)}
        d = tempfile.mkdtemp(dir=self.tmp)
        self.log(f"  {group} {tuple(shape)} {meta['variant']}")
        rounds = {impl: [] for impl in ["ours"] + impls}
        try:
            for rd in range(self.args.rounds):
                ours = self.measure(self.case_cmd("ours", shape, nw, causal, cross, dump=d if rd == 0 else None,
                                                  min_time=min_time), meta=meta)
                self.show(ours)
                rounds["ours"].append(ours)
                if rd == 0 and not ours.get("ok"):
                    return
                for impl in impls:
                    why = skip(impl) if skip else None
                    if why:
                        if rd == 0:
                            rounds[impl].append({"impl": impl, "shape": list(shape), "need_weights": nw,
                                                 "causal": causal, "cross": cross, "ok": False, "skipped": True,
                                                 "error": why, **meta})
                        continue
                    if rd > 0 and (impl in AUTOSCHEDULERS or not rounds[impl] or not rounds[impl][0].get("ok")):
                        continue
                    if impl == "ours-untuned":
                        cmd = self.case_cmd("ours", shape, nw, causal, cross, ref=d, min_time=min_time)
                        cmd[0] = self.untuned_bench
                        rec = self.measure(cmd, meta=meta)
                        rec["impl"] = "ours-untuned"
                    elif impl in ("mha", "sdpa"):
                        cmd = [self.args.torch_python, os.path.join(ROOT, "bench", "peers", "torch_mha.py"),
                               "--case", impl, "--ref", d, "--threads", str(self.args.threads),
                               "--min-time", str(min_time or self.args.min_time),
                               "--min-reps", str(self.args.min_reps)]
                        rec = self.measure(cmd, meta=meta)
                    else:
                        env = {"OMP_WAIT_POLICY": "passive"} if impl == "blas" else None
                        cmd = self.case_cmd(impl, shape, nw, causal, cross, ref=d, min_time=min_time)
                        if impl in AUTOSCHEDULERS:  # 10-20x slower at the large shapes: 2 timed runs suffice
                            cmd[cmd.index("--min-reps") + 1] = "2"
                        rec = self.measure(cmd, env_extra=env, meta=meta)
                    self.show(rec)
                    rounds[impl].append(rec)
        finally:
            shutil.rmtree(d, ignore_errors=True)
            for impl, rs in rounds.items():
                if rs:
                    best = self.best_of(rs)
                    if impl == "ours":
                        best["check"] = "reference"
                    self.records.append(best)

    def measure(self, cmd, env_extra=None, meta=None):
        """One run; again once after a quiet wait when something else used the CPU meanwhile."""
        env = {"OPENBLAS_NUM_THREADS": str(self.args.threads), "HL_NUM_THREADS": str(self.args.threads)}
        env.update(env_extra or {})
        rec = self.run(cmd, env, meta=meta)
        if rec.get("ok") and rec["others_cores"] > self.args.max_others:
            self.log(f"    (others used {rec['others_cores']:.2f} cores during {rec.get('impl')}: measuring again)")
            wait_quiet(self.args.max_load, self.args.max_others, 120, self.log)
            again = self.run(cmd, env, meta=meta)
            if again.get("ok") and again["others_cores"] < rec["others_cores"]:
                again["rerun"] = True
                rec = again
        return rec


def variant_label(nw, causal, cross):
    for label, v_nw, v_causal, v_cross in VARIANTS:
        if (v_nw, v_causal, v_cross) == (nw, causal, cross):
            return label
    return f"nw={nw} causal={causal} cross={cross}"


def probe_autoschedulers(args, have, log):
    """Runs the generator with each autoscheduler on each kernel this build lacks; records why it failed."""
    gen = os.path.join(args.build_dir, "hmha_generators")
    halide_dir = None
    with open(os.path.join(args.build_dir, "CMakeCache.txt")) as f:
        for line in f:
            if line.startswith("Halide_DIR:"):
                halide_dir = line.split("=", 1)[1].strip()
    libdir = os.path.dirname(os.path.dirname(halide_dir)) if halide_dir else ""
    out = []
    outdir = tempfile.mkdtemp(prefix="hmha-probe-")
    for a in AUTOSCHEDULERS:
        for k in KERNELS:
            if have.get(a, {}).get(k):
                out.append({"autoscheduler": a, "kernel": k, "ok": True, "how": "built by CMake"})
                continue
            plugin = os.path.join(libdir, f"libautoschedule_{a.lower()}.so")
            cmd = [gen, "-g", k, "-f", "probe", "-n", f"probe_{k}_{a}", "-e", "c_header,object", "-o", outdir,
                   "-p", plugin, "target=host-no_runtime", f"autoscheduler={a}",
                   f"autoscheduler.parallelism={args.threads}"]
            t0 = time.time()
            p = subprocess.run(cmd, capture_output=True, text=True)
            lines = [x for x in (p.stdout + p.stderr).splitlines() if x.strip() and not x.startswith("Warning")]
            err = " ".join(lines[-3:]) if p.returncode else ""
            if p.returncode and len(err) < 60:
                # Mullapudi2016's internal errors print their text only with debug output on.
                d = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HL_DEBUG_CODEGEN": "2"})
                dl = [x for x in (d.stdout + d.stderr).splitlines() if x.strip()]
                stage = [x for x in dl if x.endswith("...")]
                err = dl[-1] if dl else err
                if stage:
                    err += f" (during: {stage[-1]})"
            out.append({"autoscheduler": a, "kernel": k, "ok": p.returncode == 0, "seconds": round(time.time() - t0, 1),
                        "error": err, "how": "probed"})
            log(f"  {a} {k}: {'ok' if p.returncode == 0 else 'FAILED: ' + err[:200]}")
    shutil.rmtree(outdir, ignore_errors=True)
    return out


def run_all(args, log):
    r = Runner(args, log)
    listing = json.loads(subprocess.run([r.bench, "--list"], capture_output=True, text=True, check=True).stdout)
    sets = {ks["name"]: ks for ks in listing["kernel_sets"]}
    data = {"machine": machine_info(), "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", ".")),
            "kernel_sets": listing["kernel_sets"], "threads": args.threads, "quick": args.quick,
            "max_others": args.max_others, "rounds": args.rounds, "min_time": args.min_time, "min_reps": args.min_reps, "sweep_min_time": args.sweep_min_time}
    porcelain = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=ROOT, capture_output=True,
                               text=True).stdout
    data["dirty_files"] = [x[3:] for x in porcelain.splitlines() if len(x) > 3]
    cache = {}
    with open(os.path.join(args.build_dir, "CMakeCache.txt")) as f:
        for line in f:
            m_ = re.match(r"^([A-Za-z0-9_]+):[A-Z]+=(.*)$", line.strip())
            if m_:
                cache[m_.group(1)] = m_.group(2)
    data["isa"] = args.isa
    if args.isa != "native":
        cpu_targets = cache.get("HMHA_TARGETS", "")
        if not cpu_targets or "avx512" in cpu_targets or "avx2" not in cpu_targets:
            raise SystemExit(f"--isa {args.isa}: {args.build_dir} must build its CPU kernels for an AVX2 target only "
                             f"(HMHA_TARGETS, as make bench-report-avx2 does), got HMHA_TARGETS='{cpu_targets}'")
        data["cpu_targets"] = cpu_targets
        data["isa_env"] = ISA_ENV[args.isa]
    tuned = cache.get("HMHA_TUNED_FILE") or os.path.join(ROOT, "schedules", "tuned",
                                                          cache.get("HMHA_CPU_TARGET", "host") + ".json")
    data["tuned_params"] = os.path.relpath(tuned, ROOT) if os.path.exists(tuned) else None
    data["cpu_target"] = cache.get("HMHA_CPU_TARGET", "host")
    data["build_dir"] = os.path.relpath(os.path.abspath(args.build_dir), ROOT)
    data["command"] = (("make bench-report" + ("" if args.isa == "native" else f"-{args.isa}"))
                       if os.environ.get("MAKELEVEL") else
                       "python bench/report.py " + " ".join(sys.argv[1:])).strip()
    data["torch"] = subprocess.run([args.torch_python, "-c", "import torch; print(torch.__version__)"],
                                   capture_output=True, text=True).stdout.strip()
    data["torch_capability"] = subprocess.run(
        [args.torch_python, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        capture_output=True, text=True).stdout.strip()
    data["halide"] = subprocess.run([os.path.join(os.environ.get("HMHA_VENV", os.path.expanduser("~/.cache/hmha/venv")),
                                                  "bin", "python"), "-c",
                                     "import importlib.metadata as m; print(m.version('halide'))"],
                                    capture_output=True, text=True).stdout.strip()
    data["compiler"] = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    log(f"machine {data['machine']['slug']}, commit {data['commit']}{' (dirty)' if data['dirty'] else ''}")
    data["quiet_start"] = wait_quiet(args.max_load, args.max_others, args.max_wait, log)
    log(f"load at start {data['quiet_start']['load']}, others {data['quiet_start']['others_cores']:.2f} cores")
    t_start = time.time()

    if not args.skip_probe and sets:
        log("autoschedulers: probing the kernels they could not schedule")
        have = {a: sets.get(a, {}) for a in AUTOSCHEDULERS}
        data["autoscheduler_probe"] = probe_autoschedulers(args, have, log)
    data["quiet_after_probe"] = wait_quiet(args.max_load, args.max_others, args.max_wait, log)

    sgemm_shapes = sorted({(n * l, e) for n, l, s, e, h in SHAPES} | {(n * l // 2, e) for n, l, s, e, h in SHAPES}
                          | {(l, SWEEP_E) for l in SWEEP_L})
    if args.quick:
        sgemm_shapes = [(n * l, e) for n, l, s, e, h in SHAPES[:1]]
    limits = {}

    def measure_limits(when):
        """The FMA peak and sgemm, at the start and at the end of the run: the best of both is kept."""
        log(f"limits ({when}): FMA peak, OpenBLAS sgemm at the projection shapes")
        rec = r.run([r.bench, "--fma-peak"], meta={"group": "limits", "when": when})
        r.show(rec)
        limits.setdefault("fma", []).append(rec)
        for rws, e in sgemm_shapes:
            rec = r.run([r.bench, "--sgemm", f"{rws},{e}", "--min-time", "0.5"],
                        {"OPENBLAS_NUM_THREADS": str(args.threads)}, meta={"group": "limits", "when": when})
            r.show(rec)
            limits.setdefault((rws, e), []).append(rec)

    measure_limits("start")

    shapes = SHAPES[:1] if args.quick else SHAPES
    as_sets = [a for a in AUTOSCHEDULERS if a in sets]
    for shape in shapes:
        n, l, s, e, h = shape
        for label, nw, causal, cross in VARIANTS:
            sh = (n, l, l // 2, e, h) if cross else shape
            impls = (["ours-untuned"] if r.untuned_bench else []) + ["blas", "mha"] + ([] if nw else ["sdpa"])
            if not (causal or cross):
                impls += (["ours-kernels"] if "ours-kernels" in sets else []) + as_sets

            def skip(impl, nw=nw):
                ks = sets.get(impl)
                if ks is None:
                    return None
                need = ["linear", "masked_softmax", "attend", "head_mean"] if nw else ["linear", "sdpa"]
                missing = [k for k in need if not ks.get(k)]
                return f"{impl} failed to schedule {', '.join(missing)}" if missing else None

            r.forward_case("shape", sh, nw, causal, cross, impls, skip=skip)

    if sets:
        log("kernels: ours vs each autoscheduler at each shape's kernel inputs")
        for shape in shapes:
            rounds = {}
            for rd in range(args.rounds):
                for k in KERNELS:
                    for ks in ["ours-kernels"] + as_sets:
                        if not sets[ks].get(k):
                            if rd == 0:
                                rounds[(k, ks)] = [{"kernel": k, "impl": ks, "shape": list(shape), "ok": False,
                                                    "skipped": True, "error": f"{ks} failed to schedule {k}",
                                                    "group": "kernel"}]
                            continue
                        prev = rounds.get((k, ks))
                        if rd > 0 and (ks == "Li2018" or not prev or not prev[0].get("ok")):
                            continue  # Li2018: 10x slower, one round; failures: not again
                        cmd = [r.bench, "--kernel", k, "--impl", ks, "--shape", ",".join(map(str, shape)),
                               "--min-time", str(args.kernel_min_time)]
                        rec = r.measure(cmd, meta={"group": "kernel"})
                        r.show(rec)
                        rounds.setdefault((k, ks), []).append(rec)
            for rs in rounds.values():
                r.records.append(r.best_of(rs))

    log("sweep: L = S, N=1, E=512, H=8")
    sweep = SWEEP_L[:3] if args.quick else SWEEP_L
    last_ms = {}
    for l in sweep:
        for nw in (False, True):
            impls = ["blas", "mha"] + ([] if nw else ["sdpa"])

            def skip(impl, nw=nw, l=l):
                prev = last_ms.get((impl, nw))
                if prev is not None and prev * 4.5 * (args.min_reps + 2) / 1e3 > args.sweep_case_budget:
                    return f"skipped: {prev:.0f} ms at L={l // 2} predicts over {args.sweep_case_budget:.0f} s"
                if nw and l > args.sweep_nw_max:
                    return f"skipped: need_weights sweep stops at L={args.sweep_nw_max}"
                return None

            if nw and l > args.sweep_nw_max:
                continue
            r.forward_case("sweep", (1, l, l, SWEEP_E, SWEEP_H), nw, False, False, impls,
                           min_time=args.sweep_min_time, skip=skip)
            for rec in r.records[-len(impls) - 1:]:
                if rec.get("ok") and rec.get("group") == "sweep":
                    key = ("mha" if rec["impl"].startswith("torch.nn") else "sdpa" if rec["impl"] == "torch F.sdpa"
                           else rec["impl"], nw)
                    last_ms[key] = rec["ms"]

    measure_limits("end")
    for key, rs in limits.items():
        ok = [x for x in rs if x.get("ok")]
        if not ok:
            continue
        best = dict(max(ok, key=lambda x: x["gflops"]))
        best["rounds_gflops"] = [round(x["gflops"], 2) for x in ok]
        if key == "fma":
            best["avx512_all"] = [x.get("avx512_gflops") for x in ok]
            best["avx2_all"] = [x.get("avx2_gflops") for x in ok]
            if args.isa == "avx2":  # the peak of the instructions everyone may use
                best["gflops"] = max(v for v in best["avx2_all"] if v)
        r.records.append(best)
    data["records"] = r.records
    data["bench_seconds"] = round(time.time() - t_start)
    data["quiet_end"] = {"load": loadavg()}
    shutil.rmtree(r.tmp, ignore_errors=True)
    return data


# ---- the report -----------------------------------------------------------------------------

def fmt_ms(v):
    return "—" if v is None else (f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:.0f}")


def mib(b):
    return "—" if b is None else f"{b / 2**20:.0f}" if b >= 10 * 2**20 else f"{b / 2**20:.1f}"


def impl_label(impl):
    return PEER_NAMES.get(impl, impl + " (autoscheduled)" if impl in AUTOSCHEDULERS else impl)


def find(records, **kw):
    # Lists and tuples compare alike; a record of a run that died before
    # printing (a signal) may lack the key (None matches nothing asked for).
    def norm(x):
        return list(x) if isinstance(x, (list, tuple)) else x
    return [r for r in records if all(norm(r.get(k)) == norm(v) for k, v in kw.items())]


def sgemm_rate(records, rows, e):
    rs = [r for r in find(records, impl="openblas_sgemm", rows=rows, E=e) if r.get("ok", True)]
    return rs[0]["gflops"] if rs else None


def charts(data, base):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    recs = [r for r in data["records"] if r.get("group") == "sweep" and r.get("ok")]
    styles = {"ours": ("tab:blue", "o"), "torch.nn.MultiheadAttention": ("tab:red", "s"),
              "torch F.sdpa": ("tab:orange", "^"), "blas": ("tab:green", "D")}
    paths = {}
    for what in ("time", "memory"):
        fig, ax = plt.subplots(figsize=(8, 5.2), dpi=110)
        for impl, (color, marker) in styles.items():
            for nw in (False, True):
                pts = sorted((r["shape"][1], r["ms"] if what == "time" else r["peak_delta"] / 2**20)
                             for r in recs if r["impl"] == impl and r["need_weights"] == nw)
                if not pts:
                    continue
                xs, ys = zip(*pts)
                ax.plot(xs, ys, color=color, marker=marker, linestyle="--" if nw else "-",
                        label=f"{impl_label(impl)}{', need_weights' if nw else ''}")
        if what == "memory":
            ls = sorted({r["shape"][1] for r in recs})
            ess = [4.0 * (2 * l * SWEEP_E + 4 * SWEEP_E * SWEEP_E + 4 * SWEEP_E) / 2**20 for l in ls]
            ax.plot(ls, ess, color="black", linestyle=":", label="inputs + outputs + weights")
            ax.plot(ls, [TARGET_MEM * x for x in ess], color="gray", linestyle="-.",
                    label=f"{TARGET_MEM} x that (target, need_weights=false)")
            ls_nw = sorted({r["shape"][1] for r in recs if r["need_weights"]})
            if ls_nw:
                ax.plot(ls_nw, [4.0 * (2 * l * SWEEP_E + l * l + 4 * SWEEP_E * SWEEP_E + 4 * SWEEP_E) / 2**20
                                for l in ls_nw], color="black", linestyle=(0, (1, 4)),
                        label="... + averaged weights (L x S), need_weights=true")
            ax.set_ylabel("peak resident memory above the process baseline (MiB)")
            ax.set_title("Peak memory vs L = S (N=1, E=512, H=8, self-attention)")
        else:
            ax.set_ylabel("forward time, median (ms)")
            ax.set_title("MHA forward time vs L = S (N=1, E=512, H=8, self-attention)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        sweep_ls = sorted({r["shape"][1] for r in recs})
        ax.set_xticks(sweep_ls)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("L = S")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper left")
        fig.text(0.99, 0.01, f"{data['machine']['slug']}, {data['started'][:10]}, {data['threads']} threads",
                 ha="right", fontsize=7, color="gray")
        fig.tight_layout()
        path = f"{base}-{what}.png"
        fig.savefig(path)
        plt.close(fig)
        paths[what] = path
    return paths


def write_report(data, md_path, chart_paths, command):
    recs = data["records"]
    m = data["machine"]
    L = []
    w = L.append
    w(f"<!-- generated by bench/report.py -->")
    w(f"# CPU bench report, {data['started'][:10]}")
    w("")
    w(f"- Machine: {m['model_name']} ({m.get('uarch') or 'uarch unknown'}, family {m['family']} model {m['model']}), "
      f"{m['nproc']} CPUs, {'AVX-512' if m['avx512'] else 'AVX2' if m['avx2'] else 'no AVX2'}, "
      f"L1d {m.get('L1d cache', '?')}, L2 {m.get('L2 cache', '?')}, L3 {m.get('L3 cache', '?')}, {m['mem_gib']} GiB RAM"
      + (f", {m['Hypervisor vendor']} guest" if m.get("Hypervisor vendor") else "") + f"; Linux {m['kernel']}.")
    dirty = data.get("dirty_files") or []
    w(f"- Date: {data['started']}; commit {data['commit']}"
      + (f" + uncommitted changes in {len(dirty)} files ({', '.join(dirty[:8])}{', ...' if len(dirty) > 8 else ''})"
         if dirty else "") + ".")
    if data.get("isa", "native") != "native":
        env = ", ".join(f"{k}={v}" for k, v in data["isa_env"].items())
        w(f"- **{data['isa'].upper()} only**: our CPU kernels built for `{data['cpu_targets']}` (HMHA_TARGETS); every "
          f"case runs with {env} (torch reports CPU capability {data.get('torch_capability') or '?'}; MKL, oneDNN "
          f"and OpenBLAS are held to AVX2 by the other three); the FMA peak below is the AVX2 one.")
    w(f"- Our CPU kernels: HMHA_CPU_TARGET={data.get('cpu_target', 'host')}, schedule params "
      + (f"tuned ({data['tuned_params']})" if data.get("tuned_params") else "at their target-derived defaults "
         "(no schedules/tuned/ file)") + ".")
    w(f"- Toolchain: Halide {data['halide']} (kernels for `{data.get('cpu_targets') or 'host'}`), {data['compiler']}, OpenBLAS (Debian, pthreads), "
      f"torch {data['torch']} (CPU; MKL/oneDNN inside).")
    w(f"- Command: `{command}` ({data['bench_seconds'] // 60} min {data['bench_seconds'] % 60} s of cases). "
      f"Each case is a fresh process: `{data.get('build_dir', 'build-bench')}/bench/hmha_bench --case IMPL ...` or "
      f"`bench/peers/torch_mha.py --case mha|sdpa ...` (the exact command of every case is in the .json).")
    qs = data["quiet_start"]
    others = [r.get("others_cores", 0) for r in recs if r.get("ok")]
    w(f"- Threads: {data['threads']} everywhere (HL_NUM_THREADS, OPENBLAS_NUM_THREADS, torch.set_num_threads; "
      f"the BLAS baseline's softmax uses OpenMP with OMP_WAIT_POLICY=passive). "
      f"Load average at start {qs['load'][0]:.2f} / {qs['load'][1]:.2f} / {qs['load'][2]:.2f}, at end "
      f"{data['quiet_end']['load'][0]:.2f}; other processes used at most {max(others or [0]):.2f} cores "
      f"(median {statistics.median(others or [0]):.2f}) during a case (cases above {data.get('max_others', 0.25):.2f} were measured again).")
    rounds = data.get("rounds", 1)
    w("- Method: inputs N(0,1), parameters N(0, 1/E) (biases N(0, 0.1)), float32, batch_first. "
      + (f"Each case runs in {rounds} interleaved rounds (ours, peer 1, peer 2, ..., then again; each a fresh "
         "process) and every implementation's fastest round is reported: this VM's speed drifts by up to ~25% "
         "over minutes with nothing else visible on it (the FMA peak below, measured at the start and the end, "
         "shows it), and interference only ever slows a run down. Autoscheduled forwards and Li2018 kernels: "
         "one round. " if rounds > 1 else "")
      + "A round's ms = median of "
      f"the timed runs (at least {data.get('min_reps', 3)} runs and {data.get('min_time', 1.0):g} s; "
      f"{data.get('sweep_min_time', 0.5):g} s in the sweep) after untimed runs: the first is checked against our "
      "output (max |diff| / max |ours| <= 1e-4, attention weights too), then at least 1 more and 0.25 s of "
      "warm-up (the autoscheduled forwards: at least 2 timed runs; a first run of over 2 s is the only warm-up). "
      "GFLOP/s = "
      "(2·N·E²·(2L+2S) + 4·N·L·S·E, attention halved when causal) / time. Speed-up = peer ms / our ms. "
      "Peak memory = the process's peak RSS (VmHWM) minus its RSS before the inputs and parameters were made; "
      "'x ess.' divides it by inputs + outputs (+ averaged weights) + parameters.")
    w("- Causal: ours gets `is_causal=True` alone; nn.MultiheadAttention needs the (L, S) bool mask with it; "
      "F.sdpa gets `is_causal=True`. Cross-attention: key = value, a separate (N, L/2, E) tensor.")
    w("")

    fma = find(recs, impl="fma_peak")
    fma = fma[0] if fma else {}
    w("## Practical limits")
    w("")
    if fma:
        allv = [v for v in (fma.get("avx512_all") or []) + (fma.get("avx2_all") or []) if v]
        w(f"- FMA peak (independent FMA chains on all {fma.get('threads')} threads): {fma.get('gflops', 0):.0f} GFLOP/s"
          + (f" (AVX-512 {', '.join(f'{v:.0f}' for v in fma['avx512_all'])}; AVX2 "
             f"{', '.join(f'{v:.0f}' for v in fma['avx2_all'])} at the start and the end)" if allv else
             f" (AVX-512 {fma.get('avx512_gflops', 0):.0f}, AVX2 {fma.get('avx2_gflops', 0):.0f})") + ".")
    sg = sorted(find(recs, impl="openblas_sgemm"), key=lambda r: (r["E"], r["rows"]))
    w("- OpenBLAS sgemm (rows x E) @ (E x E)^T, " + f"{data['threads']} threads: " +
      ", ".join(f"{r['rows']}x{r['E']}: {r['gflops']:.0f}" for r in sg if r.get("gflops")) + " GFLOP/s.")
    w("")

    # ---- headline: ours vs nn.MultiheadAttention, the targets
    w("## Headline: ours vs nn.MultiheadAttention")
    w("")
    w("| (N, L, S, E, H) | case | ours ms | ours GFLOP/s | % of sgemm | nn.MHA ms | speed-up | target | met |")
    w("|---|---|---:|---:|---:|---:|---:|---:|:-:|")
    head_rows = []
    for shape in SHAPES:
        n, l, s, e, h = shape
        for label, nw, causal, cross in VARIANTS:
            sh = [n, l, l // 2, e, h] if cross else list(shape)
            ours = [r for r in find(recs, group="shape", impl="ours", shape=sh, need_weights=nw, causal=causal) if r.get("ok")]
            mha = [r for r in find(recs, group="shape", impl="torch.nn.MultiheadAttention", shape=sh, need_weights=nw,
                                   causal=causal) if r.get("ok")]
            if not ours:
                continue
            o = ours[0]
            rate = sgemm_rate(recs, n * l, e)
            pct = f"{100 * o['gflops'] / rate:.0f}%" if rate else "—"
            target = TARGET_NW_TRUE if nw else TARGET_NW_FALSE
            if mha:
                sp = mha[0]["ms"] / o["ms"]
                met = "yes" if sp >= target else "**no**"
                head_rows.append((tuple(sh), label, sp, target))
                w(f"| {', '.join(map(str, sh))} | {label} | {fmt_ms(o['ms'])} | {o['gflops']:.0f} | {pct} | "
                  f"{fmt_ms(mha[0]['ms'])} | {sp:.2f}x | {target}x | {met} |")
            else:
                err = find(recs, group="shape", impl="torch.nn.MultiheadAttention", shape=sh, need_weights=nw, causal=causal)
                w(f"| {', '.join(map(str, sh))} | {label} | {fmt_ms(o['ms'])} | {o['gflops']:.0f} | {pct} | "
                  f"failed: {err[0].get('error', '?')[:60] if err else 'not run'} | — | {target}x | — |")
    w("")

    # ---- per shape, every implementation
    w("## Every implementation, per shape")
    w("")
    w("Speed-up is the implementation's time divided by ours (above 1: ours is faster). "
      "Autoscheduled rows run the same generators with no hand schedule, in a driver that mirrors "
      "runtime/src/mha.cpp (bench/peers/kernel_mha.cpp); 'ours' kernels, bench driver' is that driver with our kernels. "
      "With need_weights, the driver runs masked_softmax, attend and head_mean, the kernels the autoschedulers can "
      "schedule; the runtime runs them fused on the CPU (softmax_attend_mean, which averages the heads' weights "
      "without writing them, or softmax_attend for per-head weights; no autoscheduler takes these: each has two "
      "outputs computed in one loop nest).")
    w("")
    for shape in SHAPES:
        n, l, s, e, h = shape
        rate = sgemm_rate(recs, n * l, e)
        w(f"### (N, L, S, E, H) = ({', '.join(map(str, shape))})")
        w("")
        w(f"OpenBLAS sgemm at the projection shape ({n * l} x {e}) x ({e} x {e}): "
          + (f"{rate:.0f} GFLOP/s." if rate else "not measured."))
        w("")
        w("| case | implementation | ms | GFLOP/s | % of sgemm | speed-up of ours | peak MiB | x ess. | check |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---|")
        for label, nw, causal, cross in VARIANTS:
            sh = [n, l, l // 2, e, h] if cross else list(shape)
            rows = [r for r in find(recs, group="shape", shape=sh, need_weights=nw, causal=causal)]
            ours = [r for r in rows if r.get("impl") == "ours" and r.get("ok")]
            o_ms = ours[0]["ms"] if ours else None
            for r in rows:
                name = impl_label(r.get("impl", "?"))
                if not r.get("ok"):
                    w(f"| {label} | {name} | — | — | — | — | — | — | {('skipped: ' if r.get('skipped') else 'failed: ') + str(r.get('error', ''))[:90]} |")
                    continue
                pct = f"{100 * r['gflops'] / rate:.0f}%" if rate else "—"
                sp = "—" if r["impl"] == "ours" or not o_ms else f"{r['ms'] / o_ms:.2f}x"
                ess = r["peak_delta"] / r["essential_bytes"] if r.get("essential_bytes") else None
                chk = "reference" if r["impl"] == "ours" else f"ok ({max(r.get('rel_diff_out', 0), r.get('rel_diff_weights', 0)):.0e})"
                noisy = " (others {:.2f} cores)".format(r["others_cores"]) if r.get("others_cores", 0) > 0.25 else ""
                w(f"| {label} | {name} | {fmt_ms(r['ms'])} | {r['gflops']:.0f} | {pct} | {sp} | {mib(r['peak_delta'])} | "
                  f"{ess:.2f} | {chk}{noisy} |")
        w("")

    # ---- autoschedulers
    w("## Halide's autoschedulers on our generators")
    w("")
    probe = data.get("autoscheduler_probe")
    if probe:
        shapes = sorted({ks["scheduled_for"] for ks in data.get("kernel_sets", []) if ks.get("scheduled_for")})
        if shapes:
            est = ("each kernel scheduled once per shape with its estimates at that shape (" +
                   "; ".join(f"({x.replace(',', ', ')})" for x in shapes) +
                   "; the need_weights kernels at the driver's query chunk of min(L, 1024)), and a case runs the "
                   "set of its self-attention shape (cross-attention's S = L/2 runs that shape's schedules)")
        else:
            est = "the generators' estimates (those of (4, 512, 512, 512, 8))"
        w(f"Halide {data['halide']}, `autoscheduler.parallelism={data['threads']}`, {est}. "
          "Which kernels each could schedule (the probe runs at the generators' default estimates):")
        w("")
        w("| autoscheduler | " + " | ".join(KERNELS) + " |")
        w("|---|" + "---|" * len(KERNELS))
        for a in AUTOSCHEDULERS:
            cells = []
            for k in KERNELS:
                p = [x for x in probe if x["autoscheduler"] == a and x["kernel"] == k]
                cells.append("yes" if p and p[0]["ok"] else "**failed**" if p else "?")
            w(f"| {a} | " + " | ".join(cells) + " |")
        w("")
        fails = [x for x in probe if not x["ok"]]
        if fails:
            w("The failures (the generator's own error, unchanged):")
            w("")
            for x in fails:
                w(f"- {x['autoscheduler']} on `{x['kernel']}` (after {x.get('seconds', '?')} s): `{x['error'][:400]}`")
            w("")
        w("So the full forward runs autoscheduled where every kernel of its path scheduled: need_weights=false "
          "(linear + sdpa) with Li2018 only; need_weights=true (linear + masked_softmax + attend + head_mean) "
          "with Li2018 and Adams2019. Mullapudi2016 has no complete path.")
        w("")
    kern = [r for r in recs if r.get("group") == "kernel"]
    if kern:
        w("### Each kernel alone: ours vs each autoscheduler (ms, median)")
        w("")
        w("At each shape's kernel inputs: linear (N·L x E) @ (E x E); sdpa over all queries; masked_softmax, "
          "attend and head_mean over one query chunk of min(L, 1024), as the runtime calls them. Every output "
          "is checked against our kernel's.")
        w("")
        cols = ["ours-kernels"] + [a for a in AUTOSCHEDULERS]
        w("| (N, L, S, E, H) | kernel | " + " | ".join("ours" if c == "ours-kernels" else c for c in cols) + " | best |")
        w("|---|---|" + "---:|" * len(cols) + "---|")
        for shape in SHAPES:
            for k in KERNELS:
                cells, best = [], None
                for c in cols:
                    rr = find(kern, kernel=k, impl=c, shape=list(shape))
                    if rr and rr[0].get("ok"):
                        cells.append(fmt_ms(rr[0]["ms"]))
                        if best is None or rr[0]["ms"] < best[1]:
                            best = (c, rr[0]["ms"])
                    else:
                        cells.append("failed" if rr else "—")
                if best is None:
                    continue
                w(f"| {', '.join(map(str, shape))} | {k} | " + " | ".join(cells) +
                  f" | {'ours' if best[0] == 'ours-kernels' else best[0]} |")
        w("")

    if kern:
        w("### Where our forward's time goes (self-attention, from the kernel times above)")
        w("")
        w("The runtime calls linear 4 times (q, k, v, out); need_weights=false: sdpa once; need_weights=true: "
          "masked_softmax, attend and head_mean once per query chunk of 1024. The sum is set against the "
          "measured forward; the rest is the runtime (views, workspace, output allocation) and run-to-run noise.")
        w("")
        w("| (N, L, S, E, H) | path | linear x4 | attention kernels | sum | forward (measured) | "
          "attention GFLOP/s | linear GFLOP/s |")
        w("|---|---|---:|---:|---:|---:|---:|---:|")
        for shape in SHAPES:
            n, l, s_, e, h = shape
            kt = {}
            for k in KERNELS:
                rr = [x for x in find(kern, kernel=k, impl="ours-kernels", shape=list(shape)) if x.get("ok")]
                if rr:
                    kt[k] = rr[0]["ms"]
            if "linear" not in kt:
                continue
            chunks = -(-l // 1024)
            for nw in (False, True):
                parts = ["sdpa"] if not nw else ["masked_softmax", "attend", "head_mean"]
                if any(p_ not in kt for p_ in parts):
                    continue
                att = kt["sdpa"] if not nw else chunks * (kt["masked_softmax"] + kt["attend"] + kt["head_mean"])
                fw = [x for x in find(recs, group="shape", impl="ours", shape=list(shape), need_weights=nw,
                                      causal=False) if x.get("ok")]
                lin = 4 * kt["linear"]
                att_flops = 4.0 * n * l * s_ * e
                how = "sdpa" if not nw else (f"{chunks} x (masked_softmax {fmt_ms(kt['masked_softmax'])} + "
                                             f"attend {fmt_ms(kt['attend'])} + head_mean {fmt_ms(kt['head_mean'])})")
                w(f"| {', '.join(map(str, shape))} | {'need_weights' if nw else 'fused'} | {fmt_ms(lin)} | "
                  f"{fmt_ms(att)} ({how}) | {fmt_ms(lin + att)} | {fmt_ms(fw[0]['ms']) if fw else '—'} | {att_flops / (att * 1e6):.0f} | "
                  f"{2.0 * n * e * e * (2 * l + 2 * s_) / (lin * 1e6):.0f} |")
        w("")

    # ---- sweep
    sw = [r for r in recs if r.get("group") == "sweep"]
    if sw:
        w("## Sweep: L = S (N = 1, E = 512, H = 8, self-attention)")
        w("")
        if chart_paths:
            for what, p in chart_paths.items():
                w(f"![{what} vs L]({os.path.basename(p)})")
                w("")
        impls = ["ours", "torch.nn.MultiheadAttention", "torch F.sdpa", "blas"]
        for nw in (False, True):
            ls = sorted({r["shape"][1] for r in sw if r["need_weights"] == nw})
            if not ls:
                continue
            w(f"need_weights={'true' if nw else 'false'}: ms / peak MiB above baseline (x inputs+outputs+weights)")
            w("")
            present = [i for i in impls if any(r.get("impl") == i and r["need_weights"] == nw for r in sw)]
            w("| L = S | " + " | ".join(impl_label(i) for i in present) + " |")
            w("|---:|" + "---:|" * len(present))
            for l in ls:
                cells = []
                for i in present:
                    rr = [r for r in sw if r.get("impl") == i and r["shape"][1] == l and r["need_weights"] == nw]
                    if rr and rr[0].get("ok"):
                        x = rr[0]
                        cells.append(f"{fmt_ms(x['ms'])} ms / {mib(x['peak_delta'])} ({x['peak_delta'] / x['essential_bytes']:.2f}x)")
                    elif rr:
                        cells.append("skipped" if rr[0].get("skipped") else "failed")
                    else:
                        cells.append("—")
                w(f"| {l} | " + " | ".join(cells) + " |")
            w("")
    w("## Targets of issue 4")
    w("")
    for line in targets(data, head_rows):
        w(line)
    w("")
    return L, head_rows


def targets(data, head_rows):
    recs = data["records"]
    out = []
    for target, what in ((TARGET_NW_FALSE, "need_weights=false"), (TARGET_NW_TRUE, "need_weights=true")):
        rows = [x for x in head_rows if x[3] == target]
        if not rows:
            continue
        miss = [x for x in rows if x[2] < target]
        worst = min(rows, key=lambda x: x[2])
        out.append(f"- CPU, {what}, at least {target}x nn.MultiheadAttention on every shape and case: "
                   + ("**met**" if not miss else f"**missed** on {len(miss)} of {len(rows)}")
                   + f" (lowest {worst[2]:.2f}x at {worst[0]}, {worst[1]}; highest {max(x[2] for x in rows):.2f}x)."
                   + ("" if not miss else " Missed: " + "; ".join(f"{x[0]} {x[1]}: {x[2]:.2f}x" for x in miss) + "."))
        fma = find(recs, impl="fma_peak")
        peak = fma[0].get("gflops") if fma else None
        for sh, label, sp, tgt in miss:
            nw = "need_weights" in label
            causal = label.startswith("causal")
            o = [r for r in find(recs, group="shape", impl="ours", shape=list(sh), need_weights=nw, causal=causal)
                 if r.get("ok")][0]
            t = [r for r in find(recs, group="shape", impl="torch.nn.MultiheadAttention", shape=list(sh),
                                 need_weights=nw, causal=causal) if r.get("ok")][0]
            need_ms = t["ms"] / tgt
            need_rate = o["flops"] / (need_ms * 1e6)
            msg = (f"  - {sh} {label}: {tgt}x needs {need_ms:.1f} ms, i.e. {need_rate:.0f} GFLOP/s of counted work; "
                   f"ours runs {o['gflops']:.0f} GFLOP/s")
            if peak:
                msg += (f", {100 * o['gflops'] / peak:.0f}% of the measured FMA peak ({peak:.0f} GFLOP/s)"
                        + (f"; the target is {need_rate / peak:.2f}x that peak, out of reach without doing less "
                           "work than the counted FLOPs" if need_rate > peak else
                           f"; the target needs {100 * need_rate / peak:.0f}% of it"))
            out.append(msg + ".")
    o = [r for r in find(recs, group="shape", impl="ours", shape=[4, 512, 512, 512, 8], need_weights=False,
                         causal=False) if r.get("ok")]
    rate = sgemm_rate(recs, 2048, 512)
    if o and rate:
        frac = o[0]["gflops"] / rate
        out.append(f"- CPU, full forward at >= {TARGET_SGEMM:.0%} of OpenBLAS sgemm's rate at (4, 512, 512, 512, 8): "
                   + ("**met**" if frac >= TARGET_SGEMM else "**missed**")
                   + f" ({o[0]['gflops']:.0f} GFLOP/s = {frac:.0%} of sgemm's {rate:.0f} GFLOP/s at 2048 x 512 x 512).")
    sw = sorted((r for r in recs if r.get("group") == "sweep" and r.get("impl") == "ours" and not r["need_weights"]
                 and r.get("ok")), key=lambda r: r["shape"][1])
    if sw:
        last = sw[-1]
        ratio = last["peak_delta"] / last["essential_bytes"]
        growth = ", ".join(f"{b['shape'][1]}: x{b['peak_delta'] / a['peak_delta']:.2f}" for a, b in zip(sw, sw[1:]))
        out.append(f"- Memory, need_weights=false: peak grows linearly in L (per doubling of L: {growth}; "
                   f"no L x S buffer), and at L = S = {last['shape'][1]} stays within {TARGET_MEM}x of inputs + "
                   f"outputs + weights: " + ("**met**" if ratio <= TARGET_MEM else "**missed**")
                   + f" ({mib(last['peak_delta'])} MiB peak = {ratio:.2f}x of {mib(last['essential_bytes'])} MiB).")
        if ratio > TARGET_MEM:
            _, _, s_, e, h = last["shape"]
            d = e // h
            group = min(h, -(-64 // d))
            per_head = 4.0 * 2 * s_ * group * d
            out.append(f"  - What the runtime holds besides them at this length (runtime/src/mha.cpp, the per-head "
                       f"path of Scratch::Auto; the module's parameters, kept transposed, are the essential ones): "
                       f"one head group's K^T and V ({group} x {d} columns, {mib(per_head)} MiB), so "
                       f"{mib(last['essential_bytes'])} + {mib(per_head)} = "
                       f"{mib(last['essential_bytes'] + per_head)} MiB expected, {mib(last['peak_delta'])} measured; "
                       f"the budget is {mib(TARGET_MEM * last['essential_bytes'])} MiB.")
    def vs_ours(impls):
        """(cases ours beats, cases it does not), each (the peer's record, peer ms / our ms), over the shape cases."""
        won, lost = [], []
        for r in recs:
            if r.get("group") != "shape" or r.get("impl") not in impls or not r.get("ok"):
                continue
            o = [x for x in find(recs, group="shape", impl="ours", shape=r["shape"], need_weights=r["need_weights"],
                                 causal=r["causal"]) if x.get("ok")]
            if o:
                (won if o[0]["ms"] < r["ms"] else lost).append((r, r["ms"] / o[0]["ms"]))
        return won, lost

    beats, loses = vs_ours(AUTOSCHEDULERS)
    faster, slower = vs_ours(["ours-untuned"])
    if faster or slower:
        allx = [x for _, x in faster + slower]
        tuned_vs = (f"tuned ({data.get('tuned_params')}) vs untuned defaults: faster in {len(faster)} of "
                    f"{len(allx)} cases (speed-up {min(allx):.2f}x to {max(allx):.2f}x, median "
                    f"{sorted(allx)[len(allx) // 2]:.2f}x)"
                    + ("" if not slower else "; not faster in: " + "; ".join(
                        f"{tuple(r['shape'])} {variant_label(r['need_weights'], r['causal'], r['cross'])} ({x:.2f}x)"
                        for r, x in slower)))
    else:
        tuned = data.get("tuned_params")
        tuned_vs = ("tuned vs untuned **not measured here** (run with --untuned-build-dir; our kernels were built "
                    f"with {'tuned params from ' + tuned if tuned else 'default params'})")
    if beats or loses:
        out.append("- Tuned schedules beat the untuned defaults and every autoscheduler on every shape: "
                   f"{tuned_vs}. Ours vs "
                   f"the autoscheduled forwards (every autoscheduler that scheduled the path): faster in {len(beats)} of {len(beats) + len(loses)} cases"
                   + ("" if not loses else "; slower in: " + "; ".join(
                       f"{tuple(r['shape'])} {variant_label(r['need_weights'], r['causal'], r['cross'])} vs "
                       f"{r['impl']} ({x:.2f}x)" for r, x in loses)) + ".")
    out.append("- GPU targets: not measured here (this report is the CPU machine's).")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--untuned-build-dir", help="a bench build without tuned params (HMHA_TUNED_FILE set to a missing file, as make bench-report does): "
                    "its forward runs as 'ours, untuned defaults' in every headline case")
    ap.add_argument("--torch-python", default=os.path.expanduser("~/.cache/hmha/torchenv/bin/python"))
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--machine", help="name for the results files (default: from /proc/cpuinfo)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--min-reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds per case; each implementation's fastest round is reported")
    ap.add_argument("--kernel-min-time", type=float, default=0.3)
    ap.add_argument("--sweep-min-time", type=float, default=0.3)
    ap.add_argument("--sweep-case-budget", type=float, default=40.0,
                    help="skip a sweep case predicted to take longer than this (s)")
    ap.add_argument("--sweep-nw-max", type=int, default=4096, help="largest L of the need_weights=true sweep")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--max-others", type=float, default=0.25, help="others' CPU use (cores) counted as quiet")
    ap.add_argument("--max-wait", type=float, default=900)
    ap.add_argument("--skip-probe", action="store_true", help="do not re-run the failing autoschedulers")
    ap.add_argument("--quick", action="store_true", help="one shape, a short sweep: to try the script")
    ap.add_argument("--isa", choices=["native", "avx2"], default="native",
                    help="avx2: hold every implementation to AVX2 (--build-dir built for an AVX2 target: "
                         "make bench-report-avx2); its files are named <machine>-avx2-<date>")
    ap.add_argument("--from-json", help="rewrite the report from a .json of an earlier run")
    args = ap.parse_args()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
        base = os.path.splitext(args.from_json)[0]
    else:
        os.environ.update(ISA_ENV.get(args.isa, {}))  # every case's environment
        data = run_all(args, log)
        name = (args.machine or data["machine"]["slug"]) + ("" if args.isa == "native" else f"-{args.isa}")
        os.makedirs(args.out_dir, exist_ok=True)
        base = os.path.join(args.out_dir, f"{name}-{data['started'][:10]}" + ("-quick" if args.quick else ""))
        # Never overwrite an earlier results file: a second run on one day is -v2, -v3, ...
        k = 2
        while os.path.exists(base + ".md"):
            base = re.sub(r"-v\d+$", "", base) + f"-v{k}"
            k += 1
        with open(base + ".json", "w") as f:
            json.dump(data, f, indent=1)
    data.setdefault("command", "python bench/report.py")
    try:
        chart_paths = charts(data, base)
    except ImportError as ex:
        log(f"no charts: {ex} (pip install -r bench/requirements-report.txt)")
        chart_paths = {}
    lines, head = write_report(data, base + ".md", chart_paths, data["command"])
    notes = base + "-notes.md"  # analysis written by hand after the run, kept when the report is rewritten
    if os.path.exists(notes):
        with open(notes) as f:
            lines += ["", f"<!-- from {os.path.basename(notes)} -->", f.read().rstrip()]
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    latest_md = os.path.join(os.path.dirname(base), "latest.md")
    source = f"<!-- latest of: {os.path.basename(base)} -->"
    refresh = not args.quick and not args.from_json and data.get("isa", "native") == "native"
    if args.from_json and os.path.exists(latest_md):
        with open(latest_md) as f:
            refresh = source in f.read()  # rewriting the run that latest.* shows
    if refresh:
        for ext in [".md"] + [f"-{w}.png" for w in chart_paths]:
            src = base + ext
            dst = os.path.join(os.path.dirname(base), "latest" + ext)
            if ext == ".md":
                with open(src) as f:
                    text = f.read()
                for w_ in chart_paths:
                    text = text.replace(os.path.basename(base) + f"-{w_}.png", f"latest-{w_}.png")
                with open(dst, "w") as f:
                    f.write(source + "\n" + text)
            else:
                shutil.copyfile(src, dst)
    log(f"wrote {base}.md")


if __name__ == "__main__":
    main()
