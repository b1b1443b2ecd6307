"""The model presets: each is a transformers ClapModel that loads as saved, with the same embeddings."""

import numpy as np
import pytest
import torch
from transformers import ClapModel

import biolingual
from biolingual.presets import PRESETS


@pytest.mark.parametrize("name", ["small"])
def test_a_preset_saves_what_clap_model_loads_with_the_same_embeddings(name, tmp_path):
    """``small``, the student for CPU indexing (issue 29): shallower and narrower HTS-AT than base, base's
    512-d projections (so it distils from the published model's embeddings), still a plain ClapModel."""
    model = biolingual.create(name, tokenizer_texts=["a frog calling", "an owl hooting at night"], seed=0, device="cpu")
    audio = model.clap.config.audio_config
    assert audio.depths == PRESETS[name]["audio"]["depths"] and model.embedding_dim == 512
    model.save_pretrained(tmp_path / name)
    theirs, info = ClapModel.from_pretrained(tmp_path / name, output_loading_info=True)
    assert not any(info.values()), info
    waves = torch.from_numpy(
        np.random.default_rng(0).standard_normal((2, model.window_samples)).astype(np.float32) * 0.1
    )
    with torch.no_grad():
        expected = torch.nn.functional.normalize(
            theirs.eval().get_audio_features(input_features=model.features(waves)).pooler_output, dim=-1
        )
    torch.testing.assert_close(model.encode_audio(waves), expected, rtol=0, atol=1e-6)
    # and it is cheaper: fewer audio parameters than a quarter of base's (28.2 M)
    assert sum(p.numel() for p in model.clap.audio_model.parameters()) < 28.2e6 / 4
