"""Layer-wise probing of pre-trained audio encoders (HuBERT, wav2vec2, WavLM, AVES, BioLingual) with an MLP,
after Sarkar & Magimai-Doss (ICASSP 2025). Run ``python -m eval.probe --help``; see docs/probing.md."""
