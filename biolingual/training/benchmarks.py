"""Zero-shot bioacoustic benchmarks during training (``valid.benchmarks``), scored by the eval runners.

Each entry of ``valid.benchmarks`` names a local copy of a benchmark:

* ``beans_zero:FOLDER`` scores every classification and detection component of a BEANS-Zero copy (a
  ``save_to_disk`` folder, the Hub's parquet files, or one file); ``beans_zero:FOLDER:C1+C2`` only those;
* ``birdset:FOLDER:TASK`` scores one BirdSet config zero-shot (``FOLDER`` holds ``TASK/`` or is it), its
  prompts the eBird codes, or the names of ``FOLDER/ebird_names.json`` when there is one.

The reading, prompting and scoring are the runners' own (``eval.beans_zero.runner.run_component``,
``eval.birdset.runner.run_task``), with their command-line defaults, so a figure logged during training is
the figure ``python -m eval.beans_zero`` / ``python -m eval.birdset --mode zero-shot`` gives for the same
weights. BEANS-Zero copies are read once per run; embeddings go through the runners' cache in a temporary
folder of the run, emptied after each evaluation (the weights change between two, so nothing is reused).

The eval runners live in the checkout (``eval/``, not installed with the library): ``train.py`` run from
a checkout finds them. In: the entries, the run folder, a model. Out: ``{"benchmark/<kind>/<name>/<metric>":
value}``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("biolingual.train")

KINDS = ("beans_zero", "birdset")


@dataclass(frozen=True)
class Benchmark:
    kind: str
    folder: Path
    names: tuple[str, ...]  # BEANS-Zero components (empty: all in scope) or the one BirdSet task


def parse(entry: str) -> Benchmark:
    """One ``valid.benchmarks`` entry, or a ValueError saying what is wrong with it."""
    kind, _, rest = entry.partition(":")
    if kind not in KINDS or not rest:
        raise ValueError(
            f"{entry!r} is not KIND:FOLDER[:NAMES] with KIND one of {', '.join(KINDS)} "
            "(e.g. beans_zero:data/beans_zero or birdset:data/birdset:HSN)"
        )
    folder, _, names = rest.partition(":")
    if not Path(folder).exists():
        raise ValueError(f"{entry!r}: no local copy at '{folder}'")
    parts = tuple(n.strip() for n in names.split("+") if n.strip())
    if kind == "birdset" and len(parts) != 1:
        raise ValueError(f"{entry!r}: give one BirdSet config after the folder, e.g. birdset:{folder}:HSN")
    return Benchmark(kind, Path(folder), parts)


def _runners():
    try:
        from eval.beans_zero import runner as beans_zero
        from eval.birdset import runner as birdset
    except ImportError as e:
        raise ImportError(
            "valid.benchmarks scores with the eval/ runners of a BioLingual checkout: run train.py from "
            f"the checkout ({e})"
        ) from None
    return beans_zero, birdset


class Benchmarks:
    """The run's benchmarks, read once; :meth:`run` scores a model on all of them (on one process)."""

    def __init__(self, entries: list[str], run_folder: Path, batch_size: int, workers: int):
        self.items = [parse(e) for e in entries]
        self.run_folder, self.batch_size, self.workers = Path(run_folder), batch_size, workers
        beans_zero, _ = _runners()
        from eval.beans_zero.data import LocalCopy

        self.beans = {}  # folder -> (the runner's options, its components)
        for item in self.items:
            if item.kind == "beans_zero" and item.folder not in self.beans:
                copy = LocalCopy(item.folder)
                components = beans_zero.group(copy.examples)
                unknown = [n for n in item.names if n not in components]
                if unknown:
                    raise ValueError(
                        f"beans_zero:{item.folder}: no component {unknown}; it holds {', '.join(components)}"
                    )
                self.beans[item.folder] = (copy, components)

    def _options(self, parse_args, argv: list[str], work: Path):
        return parse_args(
            [*argv, "--out", str(work), "--batch-size", str(self.batch_size), "--workers", str(self.workers)]
        )

    def run(self, model) -> dict[str, float]:
        beans_zero, birdset = _runners()
        from eval.embedding_cache import EmbeddingCache

        scores: dict[str, float] = {}
        self.run_folder.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".benchmarks.", dir=self.run_folder))
        try:
            with EmbeddingCache(work / "embeddings.sqlite") as cache:
                for item in self.items:
                    if item.kind == "beans_zero":
                        copy, components = self.beans[item.folder]
                        args = self._options(
                            beans_zero.parse_args, ["--data", str(item.folder), "--model", "training"], work
                        )
                        for name in item.names or list(components):
                            task = components[name][0].task
                            if task not in beans_zero.IN_SCOPE:
                                continue  # captioning: out of scope, as the runner says
                            result, _ = beans_zero.run_component(name, task, components[name], copy, model, cache, args)
                            for metric, value in result["metrics"].items():
                                scores[f"benchmark/beans_zero/{name}/{metric}"] = float(value)
                    else:
                        (task,) = item.names
                        names = item.folder / "ebird_names.json"
                        argv = [
                            "--data",
                            str(item.folder),
                            "--task",
                            task,
                            "--mode",
                            "zero-shot",
                            "--model",
                            "training",
                            *(["--names", str(names)] if names.is_file() else []),
                        ]
                        result = birdset.run_task(
                            task, "zero-shot", model, cache, self._options(birdset.parse_args, argv, work)
                        )
                        for metric in ("cmap", "auroc", "top1"):
                            scores[f"benchmark/birdset/{task}/{metric}"] = float(result[metric])
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return scores
