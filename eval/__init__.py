"""Evaluation runners built on the biolingual library.

``python -m eval.zero_shot``  zero-shot classification from a CSV, a BEANS task or shards
``python -m eval.retrieval``  text<->audio retrieval on webdataset shards
``python -m eval.beans``      the BEANS benchmark: zero-shot, linear probe and fine-tuning

Metrics come from :mod:`biolingual.metrics`, audio from :mod:`biolingual.audio`, embeddings from the
model; the modules here only read datasets, cache embeddings, train heads and write reports.
"""
