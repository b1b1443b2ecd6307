"""``biolingual-eval RUNNER [ARGS]`` (installed) or ``python -m eval RUNNER [ARGS]`` (a checkout): run one benchmark
runner, e.g. ``biolingual-eval zero_shot --data clips.csv --model out/ --out results/``.

In: the runner's name (``zero_shot``, ``retrieval``, ``beans``, ``beans_zero``, ``birdset``, ``probe``; ``-`` for
``_`` is accepted) and its own arguments. Out: the runner's exit status (0 done, 2 rows skipped, 1 an error), or 2
with one ``error:`` line for a name that is no runner.

Why a command: the runners live in the top-level folder ``eval/``, which the wheel installs as the package
``biolingual_eval`` (a top-level ``eval`` in site-packages would shadow other projects' modules), so
``python -m eval.zero_shot`` works only with the repository root as the working folder; this command runs the
same code from any folder.
"""

from __future__ import annotations

import importlib
import sys

# runner -> (its module, relative to this package; what it does)
RUNNERS = {
    "zero_shot": (".zero_shot", "zero-shot classification from a CSV, a BEANS task or shards"),
    "retrieval": (".retrieval", "text<->audio retrieval on webdataset shards"),
    "beans": (".beans", "the BEANS benchmark: zero-shot, linear probe and fine-tuning"),
    "beans_zero": (".beans_zero.runner", "BEANS-Zero (zero-shot classification and detection components)"),
    "birdset": (".birdset.runner", "BirdSet configs (multi-label bird detection in soundscapes)"),
    "probe": (".probe.__main__", "layer-wise probing of HuBERT, wav2vec2, WavLM, AVES and BioLingual"),
}
USAGE = (
    "usage: biolingual-eval RUNNER [ARGS ...]   (from a checkout: python -m eval RUNNER, or python -m eval.RUNNER)\n\n"
    "Runs one benchmark runner; `biolingual-eval RUNNER --help` shows its options. Runners:\n"
    + "".join(f"  {name:<11} {what}\n" for name, (_, what) in RUNNERS.items())
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    name = argv[0].replace("-", "_")
    if name not in RUNNERS:
        print(
            f"error: no benchmark runner '{argv[0]}'; choose one of {', '.join(RUNNERS)} "
            "(biolingual-eval --help says what each does)",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(RUNNERS[name][0], __package__)
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
