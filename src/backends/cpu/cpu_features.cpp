// CPU feature detection with cpuid and xgetbv. A feature counts only when the
// CPU has it AND the OS saves its register state (XCR0); a VM or kernel can
// hide AVX-512 state even when cpuid lists the instructions.
#include "backends/cpu/cpu_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace tandem::cpu {

namespace {

#if defined(__x86_64__) || defined(__i386__)
struct CpuidRegs {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
};

CpuidRegs cpuid(unsigned leaf, unsigned subleaf) {
  CpuidRegs r;
  if (!__get_cpuid_count(leaf, subleaf, &r.eax, &r.ebx, &r.ecx, &r.edx)) return CpuidRegs{};
  return r;
}

// XCR0: which register states the OS saves on context switch. Only valid
// when CPUID.1:ECX.OSXSAVE is set.
uint64_t read_xcr0() {
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

bool bit(unsigned reg, int n) { return (reg >> n) & 1u; }
#endif

}  // namespace

CpuFeatures detect_cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  const unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 1) return f;
  const CpuidRegs l1 = cpuid(1, 0);
  const bool osxsave = bit(l1.ecx, 27);
  if (!osxsave) return f;
  const uint64_t xcr0 = read_xcr0();
  const bool os_avx = (xcr0 & 0x6) == 0x6;           // XMM and YMM state
  const bool os_avx512 = (xcr0 & 0xe6) == 0xe6;      // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;   // XTILECFG and XTILEDATA
  const CpuidRegs l7 = max_leaf >= 7 ? cpuid(7, 0) : CpuidRegs{};
  const CpuidRegs l7s1 = (max_leaf >= 7 && l7.eax >= 1) ? cpuid(7, 1) : CpuidRegs{};

  const bool fma = bit(l1.ecx, 12);
  const bool f16c = bit(l1.ecx, 29);
  const bool avx = bit(l1.ecx, 28);
  f.avx2 = os_avx && avx && fma && f16c && bit(l7.ebx, 5);
  const bool avx512f = bit(l7.ebx, 16), avx512dq = bit(l7.ebx, 17);
  const bool avx512bw = bit(l7.ebx, 30), avx512vl = bit(l7.ebx, 31);
  f.avx512 = f.avx2 && os_avx512 && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512_vnni = f.avx512 && bit(l7.ecx, 11);
  f.avx512_bf16 = f.avx512 && bit(l7s1.eax, 5);
  // AMX-TILE, AMX-INT8, AMX-BF16 with OS state support. Tandem does not use AMX;
  // using it would also need arch_prctl(ARCH_REQ_XCOMP_PERM) per process.
  f.amx = os_amx && bit(l7.edx, 24) && bit(l7.edx, 25) && bit(l7.edx, 22);
#endif
  return f;
}

std::string CpuFeatures::describe() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(avx2, "avx2");
  add(avx512, "avx512");
  add(avx512_bf16, "avx512_bf16");
  add(avx512_vnni, "avx512_vnni");
  add(amx, "amx");
  if (s.empty()) s = "generic";
  return s;
}

}  // namespace tandem::cpu
