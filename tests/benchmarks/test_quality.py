"""The quality benchmark's sampling options on the scripted engine."""

from __future__ import annotations

from benchmarks import quality
from tests.scripted_engine import ScriptedEngine


async def test_adaptive_sampling_records_fewer_paths_under_their_own_name(tmp_path, monkeypatch):
    from guard.engine import vllm_engine

    monkeypatch.setattr(vllm_engine, "VllmEngine", lambda *a, **kw: ScriptedEngine(paths=(" 2 + 3 = 5.\nAnswer: 5",)))
    argv = ["--data", "words:gold", "--limit", "3", "--out", str(tmp_path), "--model", str(tmp_path),
            "--num-paths", "8", "--max-tokens", "16", "--seed", "0"]
    fixed = await quality.sample_all(quality.build_parser().parse_args(argv), [("words", "gold")])
    args = quality.build_parser().parse_args([*argv, "--adaptive"])
    adaptive = await quality.sample_all(args, [("words", "gold")])
    assert {len(r.answers) for r in fixed["words:gold"].values()} == {8}
    # Unanimous paths: the vote settles at min_paths (4).
    assert {len(r.answers) for r in adaptive["words:gold"].values()} == {4}
    name = quality.records_file_name("words", "gold", args)
    assert "adaptive-m4-p4-s0.95" in name and (tmp_path / name).exists()
    # Generated tokens: the scripted engine has no prefix cache, so each single-path request of an adaptive
    # run would count its prompt again, which vLLM serves from the cache.
    assert sum(r.generated_tokens for r in adaptive["words:gold"].values()) < sum(
        r.generated_tokens for r in fixed["words:gold"].values())


def test_records_of_each_score_mode_have_their_own_cache_file():
    argv = ["--data", "words:gold"]
    names = {m: quality.records_file_name("words", "gold", quality.build_parser().parse_args([*argv, "--score-mode", m]))
             for m in ("hard", "contested", "full")}
    assert len(set(names.values())) == 3
    # Caches made before `hard` became the default (contested scores, no suffix) keep their name.
    assert "score-" not in names["contested"] and "score-hard" in names["hard"]
