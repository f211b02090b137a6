"""The target description: read from the code numba emits, and part of the fingerprint."""
from autotune import machine

X86_AVX2 = "vfmadd231ps %ymm1, %ymm2, %ymm15\n vmovups %ymm3, (%rax)"
X86_AVX512_YMM = "vfmadd231ps %ymm17, %ymm2, %ymm31"  # AVX-512 target preferring 256-bit vectors
X86_AVX512 = "vfmadd231ps %zmm1, %zmm2, %zmm3"
AARCH64 = "fmla v0.4s, v1.4s, v2.s[0]\n ldr q3, [x0]"


def test_vector_unit_from_assembly():
    assert machine.read_vector_unit(X86_AVX2) == (256, 16)
    assert machine.read_vector_unit(X86_AVX512_YMM) == (256, 32)
    assert machine.read_vector_unit(X86_AVX512) == (512, 32)
    assert machine.read_vector_unit(AARCH64) == (128, 32)


def test_this_target_is_described_and_fingerprinted():
    target = machine.target()
    assert target.lanes in (4, 8, 16) and target.registers in (16, 32)
    assert machine.fingerprint()["target"] == machine.target_label(target)


def test_full_vector_width_only_where_avx512_code_would_be_256_bits_wide():
    assert machine.wants_full_width("+avx2,+avx512f,+fma", 256)  # Intel AVX-512: LLVM prefers 256 bits
    assert not machine.wants_full_width("+avx2,+avx512f,+fma", 512)  # Zen 4 and 5 already get 512
    assert not machine.wants_full_width("+avx2,-avx512f,+fma", 256)  # no AVX-512 to widen to


def test_the_label_names_the_full_width_choice():
    wide = machine.Target("x86_64", "rocketlake", f"host,{machine.FULL_WIDTH}", 512, 32)
    assert machine.target_label(wide) == "rocketlake (host features,-prefer-256-bit), 512-bit vectors, 32 registers"
