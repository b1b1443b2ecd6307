"""BirdSet (github.com/DBD-research-group/BirdSet): multi-label bird classification of 5 s soundscape windows,
zero-shot, linear probe or fine-tuned, scored with BirdSet's cmAP, AUROC and top-1 accuracy.

    python -m eval.birdset --model M --data data/birdset --task HSN --mode zero-shot --names ebird_names.json \
        --out results/birdset
    python -m eval.birdset --model M --data data/birdset --task HSN --mode linear --out results/birdset   # or finetune
    python -m eval.birdset --write-example-fixture DIR     # a small config in BirdSet's schema, synthetic audio

data.py reads the published Arrow/parquet splits into windows and targets, fixture.py writes the example,
runner.py is the command; the metrics are in biolingual.metrics.
"""

from .runner import main, run

__all__ = ["main", "run"]
