"""optillm plugin: optillm's own self-consistency at a chosen N (request key "k").

optillm 0.4 hard-codes 5 samples for its built-in `self_consistency`; the latency benchmark copies
this file into the proxy's working directory (optillm loads plugins from `./optillm/plugins/`) so
the peer runs at the same N as the guard. Imported by optillm only, never by trace-guard.
"""

from optillm.self_consistency import AdvancedSelfConsistency

SLUG = "self_consistency_n"


def run(system_prompt, initial_query, client, model, request_config=None):
    k = int((request_config or {}).get("k", 5))
    sc = AdvancedSelfConsistency(client, model, num_samples=k, request_config=request_config)
    result = sc.evaluate(system_prompt, initial_query)["aggregated_result"]
    answer = result["clusters"][0]["answer"] if result["clusters"] else "No consistent answer found."
    return answer, sc.self_consistency_completion_tokens
