"""Dataset adapters: each evaluation file becomes a list of Problems (question, gold answer, optional gold ARS)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks import visual
from benchmarks.problem import Problem  # re-exported: importers know it as datasets.Problem

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def _number(value: float | str) -> str:
    f = float(value)
    return str(int(f)) if f.is_integer() else str(f)


_CALC = re.compile(r"<<[^=>]*=([^>]*)>>")


def _gsm8k_socratic(row: dict, i: int) -> Problem:
    lines = row["answer"].strip().splitlines()
    final = lines[-1].split("####")[-1].strip().replace(",", "")
    subs, values = [], []
    for line in lines[:-1]:
        if " ** " not in line:
            continue
        sub, step = line.split(" ** ", 1)
        calcs = _CALC.findall(step)
        numbers = re.findall(r"-?\d[\d,]*\.?\d*", step)
        value = calcs[-1] if calcs else (numbers[-1] if numbers else "")
        subs.append(sub.strip())
        values.append(value.replace(",", "").strip())
    return Problem(f"gsm8k-{i}", row["question"], final, tuple(subs), tuple(values))


def _gsm8k_plain(row: dict, i: int) -> Problem:
    final = row["answer"].strip().splitlines()[-1].split("####")[-1].strip().replace(",", "")
    return Problem(f"gsm8k-train-{i}", row["question"], final)


def _svamp(row: dict, i: int) -> Problem:
    body = row["Body"].strip()
    question = f"{body}{'' if body.endswith('.') else '.'} {row['Question'].strip()}"
    return Problem(row.get("ID", f"svamp-{i}"), question, _number(row["Answer"]))


def _multiarith(row: dict, i: int) -> Problem:
    return Problem(f"multiarith-{row.get('iIndex', i)}", row["sQuestion"].strip(), _number(row["lSolutions"][0]))


def _visual(row: dict, i: int) -> Problem:
    import base64

    images = tuple((base64.b64decode(img["data"]), img["mime_type"]) for img in row.get("images", []))
    return Problem(
        row.get("id", f"visual-{i}"), row["question"], str(row["answer"]),
        tuple(row.get("sub_questions", ())), tuple(str(a) for a in row.get("sub_answers", ())), images,
    )


# File name (relative to the data dir) or format name -> row adapter.
ADAPTERS: dict[str, Callable[[dict, int], Problem]] = {
    "gsm8k/socratic_dev.jsonl": _gsm8k_socratic,
    "gsm8k/train.jsonl": _gsm8k_plain,
    "svamp/dev.jsonl": _svamp,
    "multiarith/dev.jsonl": _multiarith,
    "visual": _visual,
}


def _generated_words(name: str, limit: int | None) -> list[Problem]:
    from benchmarks import words  # imported late: it imports Problem from here (benchmarks.datasets)

    return words.load(name, limit)


# Datasets generated on the fly rather than read from a file, by the name's first word.
GENERATED: dict[str, Callable[[str, int | None], list[Problem]]] = {
    "visual": visual.load,  # visual[-TASK][@SEED], see benchmarks/visual.py
    "words": _generated_words,  # words[-Nstep][@SEED], see benchmarks/words.py
}
ALIASES = {
    "gsm8k": "gsm8k/socratic_dev.jsonl",
    "gsm8k-train": "gsm8k/train.jsonl",
    "svamp": "svamp/dev.jsonl",
    "multiarith": "multiarith/dev.jsonl",
}


def _adapter_for(path: Path) -> Callable[[dict, int], Problem]:
    for suffix, adapter in ADAPTERS.items():
        if str(path).endswith(suffix):
            return adapter
    return ADAPTERS["visual"]  # our own JSONL format: question, answer, sub_questions, images


def load(name_or_path: str, data_dir: Path = DEFAULT_DATA_DIR, limit: int | None = None) -> list[Problem]:
    """Load a dataset by alias ("gsm8k", "svamp", "multiarith", "gsm8k-train"), generated name
    ("visual", "visual-count@7", "words", "words-3step@7") or JSONL path."""
    path = Path(name_or_path)
    generator = GENERATED.get(re.split(r"[-@]", name_or_path, maxsplit=1)[0])
    if generator is not None and not path.exists():
        return generator(name_or_path, limit)
    if not path.exists():
        path = data_dir / ALIASES.get(name_or_path, name_or_path)
    adapter = _adapter_for(path)
    return list(_iter(path, adapter, limit))


def _iter(path: Path, adapter, limit: int | None) -> Iterator[Problem]:
    with path.open() as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                return
            if line.strip():
                yield adapter(json.loads(line), i)
