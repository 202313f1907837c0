"""Two-processor /proc/cpuinfo texts of three kinds of CPU, for the tests of the hardware record:
a Sapphire Rapids Xeon (AMX), an AMD EPYC Zen 4 (AVX512-BF16, no AMX) and an AVX2-only CPU."""

BASE_FLAGS = ('fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush '
              'mmx fxsr sse sse2 ht syscall nx lm constant_tsc rep_good nopl pni pclmulqdq ssse3 '
              'fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor avx2 '
              'bmi1 bmi2')
AVX512_FLAGS = 'avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_vbmi2'


def cpuinfo(model: str, flags: str, processors: int = 2) -> str:
    """A /proc/cpuinfo text: ``processors`` entries of one socket, one core each."""
    return ''.join(f'processor\t: {index}\nvendor_id\t: x\nmodel name\t: {model}\n'
                   f'physical id\t: 0\ncore id\t\t: {index}\ncpu cores\t: {processors}\n'
                   f'flags\t\t: {flags}\n\n' for index in range(processors))


XEON_AMX = cpuinfo('Intel(R) Xeon(R) Platinum 8480+',
                   f'{BASE_FLAGS} {AVX512_FLAGS} avx512_bf16 avx512_fp16 amx_bf16 amx_tile '
                   'amx_int8')
EPYC_AVX512_BF16 = cpuinfo('AMD EPYC 9654 96-Core Processor',
                           f'{BASE_FLAGS} {AVX512_FLAGS} avx512_bf16 avx512_bitalg')
AVX2_ONLY = cpuinfo('Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz', BASE_FLAGS)
