"""Copies of kernels/attention.cu for attention-chain.cu's measurements (python3
attention-stops.py OUT_DIR): attention-stop{1,2,3}.cu return after a phase, so the chain shows
what each phase adds to a layer; attention-stamps.cu records the global clock at each phase from
lane 0 of every warp (STAMPS in attention-chain.cu prints them)."""
import pathlib
import sys

source = (pathlib.Path(__file__).parent / "../../kernels/attention.cu").read_text()
out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)


def insert(text, anchor, code, after=False):
    assert text.count(anchor) == 1, anchor
    at = text.index(anchor) + (len(anchor) if after else 0)
    return text[:at] + code + text[at:]


# Where each stop goes (before the anchor), and what it keeps live so nothing is optimised away.
stops = [
    ("\n  // The group's queries, rotated", "if (kd[0][0] == 1234.5f) out[0] = kd[0][0];"),
    ("\n  // Each warp walks its positions", "if (sq[0][lane] == 1234.5f) out[0] = 1.0f;"),
    ("\n  // Merge the block's warps", "if (acc[0][0] + m + l == 1234.5f) out[0] = acc[0][0];"),
]
for n, (anchor, keep) in enumerate(stops, 1):
    (out / f"attention-stop{n}.cu").write_text(insert(source, anchor, f"\n  {{ {keep} return; }}"))

PHASES = ["entry", "past the wait", "queries ready", "keys walked", "partials sent", "mail in", "done"]
marks = [  # (anchor, after it?)
    ("const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;\n", True),
    ("  pdl_start();\n", True),
    ("  __syncthreads();\n\n  // Each warp walks", False),
    ("\n  // Merge the block's warps", False),
    ("\n  // This block's chunks", False),
    ("  mail.wait();\n", True),
    ("    if (out_q) quantize32(value / total, out_q, out_qs, i);\n  }\n", True),
]
text = source.replace("  if (!owned) return;\n", "  if (!owned) {\n    STAMP(5);\n    STAMP(6);\n    return;\n  }\n")
for n, (anchor, after) in enumerate(marks):
    text = insert(text, anchor, f"  STAMP({n});\n", after)
stamp = """__device__ unsigned long long stamps[64 * 8 * 8], cycles[64 * 8 * 8];
#define STAMP(n)                                                                             \\
  if ((threadIdx.x & 31) == 0) {                                                            \\
    unsigned long long t;                                                                   \\
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));                                    \\
    const int at = ((blockIdx.y * gridDim.z + blockIdx.z) * 8 + (threadIdx.x >> 5)) * 8 + (n);  \\
    stamps[at] = t, cycles[at] = clock64();                                                 \\
  }
"""
(out / "attention-stamps.cu").write_text(stamp + text)
