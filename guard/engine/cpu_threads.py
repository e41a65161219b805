"""Where the vLLM CPU backend runs its compute threads on a small machine.

vLLM's CPU backend keeps one CPU for its scheduler process (which polls while the model runs) and binds
the model's OpenMP threads to the others. On a 2-CPU machine that halves the compute: binding the
threads to both CPUs sampled 8 paths of the 0.5B at 40 tokens/s against 22, and ran 24 probes in 7.5 s
against 13.7 s (benchmarks/README.md, "Compute threads"). On machines with more CPUs the reserved one
costs little, so vLLM's own placement is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
# Machines with at most this many usable CPUs get every one of them for the model's threads.
SMALL_MACHINE_CPUS = 4


def omp_threads_bind(cpus: Sequence[int], environ: Mapping[str, str]) -> str | None:
    """The value for VLLM_CPU_OMP_THREADS_BIND: every usable CPU ("0,1") on a small machine; None to
    leave vLLM's placement (the variable is already set, or one CPU or more than SMALL_MACHINE_CPUS)."""
    if BIND_ENV in environ or not 1 < len(cpus) <= SMALL_MACHINE_CPUS:
        return None
    return ",".join(str(cpu) for cpu in sorted(cpus))
