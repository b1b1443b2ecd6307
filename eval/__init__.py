"""Evaluation runners built on the biolingual library.

``python -m eval.zero_shot``   zero-shot classification from a CSV, a BEANS task or shards
``python -m eval.retrieval``   text<->audio retrieval on webdataset shards
``python -m eval.beans``       the BEANS benchmark: zero-shot, linear probe and fine-tuning
``python -m eval.beans_zero``  BEANS-Zero (zero-shot classification and detection components)
``python -m eval.birdset``     BirdSet configs (multi-label bird detection in soundscapes)
``python -m eval.probe``       layer-wise probing of speech SSL models (HuBERT, wav2vec2, WavLM, AVES) and ours

Installed, these are the package ``biolingual_eval`` and the command ``biolingual-eval RUNNER`` (``__main__.py``),
which runs them from any folder; ``python -m eval.RUNNER`` needs the repository root as the working folder.

Metrics come from :mod:`biolingual.metrics`, audio from :mod:`biolingual.audio`, embeddings from the
model; the modules here only read datasets (:mod:`.types` holds what the readers share), cache
embeddings, train heads and write reports.
"""
