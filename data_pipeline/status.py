"""``status``: counts per stage and source, samples per split, shards, and the commonest errors (markdown)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .manifest import Manifest

STAGES = ["listed", "staged", "written", "duplicate", "excluded", "rejected", "failed"]


def collect(out: Path) -> dict:
    """Summaries of every manifest in ``out`` (one per partition), merged. Raises FileNotFoundError when there
    is none, manifest.ManifestError (naming the file) when one cannot be read."""
    paths = sorted(Path(out).glob("manifest*.sqlite"))
    if not paths:
        raise FileNotFoundError(f"no manifest in '{out}': run `python -m data_pipeline build --out {out}` first")
    stages, samples, reasons = defaultdict(int), defaultdict(lambda: [0, 0]), defaultdict(int)
    shards, shard_bytes = 0, 0
    for path in paths:
        m = Manifest(path)
        try:
            s = m.summary()
        finally:
            m.close()
        for source, stage, n in s["stages"]:
            stages[(source, stage)] += n
        for split, written, pending in s["samples"]:
            samples[split][0] += written or 0
            samples[split][1] += pending or 0
        for source, stage, reason, n in s["reasons"]:
            reasons[(source, stage, reason)] += n
        shards += s["shards"][0]
        shard_bytes += s["shards"][1]
    return {
        "manifests": [p.name for p in paths],
        "stages": dict(stages),
        "samples": dict(samples),
        "reasons": dict(reasons),
        "shards": shards,
        "shard_bytes": shard_bytes,
    }


def render(status: dict) -> str:
    lines = [
        f"manifests: {', '.join(status['manifests'])}",
        "",
        "| source | " + " | ".join(STAGES) + " |",
        "|---|" + "---:|" * len(STAGES),
    ]
    for source in sorted({s for s, _ in status["stages"]}):
        lines.append(f"| {source} | " + " | ".join(str(status["stages"].get((source, st), 0)) for st in STAGES) + " |")
    lines += ["", "| split | samples in shards | samples staged |", "|---|---:|---:|"]
    for split, (written, pending) in sorted(status["samples"].items()):
        lines.append(f"| {split} | {written} | {pending} |")
    lines += ["", f"shards: {status['shards']} ({status['shard_bytes'] / 1e6:.1f} MB)"]
    if status["reasons"]:
        lines += ["", "| source | stage | reason | records |", "|---|---|---|---:|"]
        for (source, stage, reason), n in sorted(status["reasons"].items(), key=lambda kv: -kv[1])[:20]:
            lines.append(f"| {source} | {stage} | {reason.replace('|', '/')[:160]} | {n} |")
    return "\n".join(lines)
