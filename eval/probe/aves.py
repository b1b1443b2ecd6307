"""AVES in transformers: torchaudio-format AVES weights (``*.torchaudio.pt`` + ``*.model_config.json``, as
Earth Species Project publishes them) loaded into a ``transformers.HubertModel``, so AVES runs beside HuBERT,
wav2vec2 and WavLM without fairseq or torchaudio.

Layer indices then follow transformers: ``hidden_states[0]`` is the encoder input (after the positional
convolution and LayerNorm) and ``hidden_states[i + 1]`` equals torchaudio's ``extract_features()[i]``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from biolingual.atomic import atomic_write
from biolingual.extras import MissingExtraError, require

log = logging.getLogger(__name__)

AVES_BASE_URL = "https://storage.googleapis.com/esp-public-files/ported_aves"
AVES_MODELS = {
    "aves": "aves-base-bio",
    "aves-bio": "aves-base-bio",
    "aves-core": "aves-base-core",
    "aves-nonbio": "aves-base-nonbio",
    "aves-all": "aves-base-all",
}
WEIGHTS_SUFFIX, CONFIG_SUFFIX = ".torchaudio.pt", ".torchaudio.model_config.json"
KEY_PREFIXES = {"encoder.feature_projection.": "feature_projection.", "encoder.transformer.": "encoder."}
# torch's two spellings of a weight-normalised convolution: old weight_g/weight_v, new parametrizations
WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


class AvesError(ValueError):
    pass


def hubert_config(ta: dict):
    """A ``HubertConfig`` equal to a torchaudio ``wav2vec2_model`` config (the inverse of torchaudio's
    ``import_huggingface._get_config``)."""
    from transformers import HubertConfig

    mode = ta.get("extractor_mode", "group_norm")
    if mode not in ("group_norm", "layer_norm"):
        raise AvesError(f"unknown extractor_mode '{mode}'")
    conv = ta["extractor_conv_layer_config"] or [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2
    return HubertConfig(
        feat_extract_norm=mode.removesuffix("_norm"),
        conv_dim=[c[0] for c in conv],
        conv_kernel=[c[1] for c in conv],
        conv_stride=[c[2] for c in conv],
        conv_bias=ta["extractor_conv_bias"],
        hidden_size=ta["encoder_embed_dim"],
        feat_proj_dropout=ta.get("encoder_projection_dropout", 0.0),
        num_conv_pos_embeddings=ta["encoder_pos_conv_kernel"],
        num_conv_pos_embedding_groups=ta["encoder_pos_conv_groups"],
        num_hidden_layers=ta["encoder_num_layers"],
        num_attention_heads=ta["encoder_num_heads"],
        attention_dropout=ta.get("encoder_attention_dropout", 0.0),
        intermediate_size=ta["encoder_ff_interm_features"],
        activation_dropout=ta.get("encoder_ff_interm_dropout", 0.0),
        hidden_dropout=ta.get("encoder_dropout", 0.0),
        do_stable_layer_norm=ta["encoder_layer_norm_first"],
        layerdrop=ta.get("encoder_layer_drop", 0.0),
        feat_extract_activation="gelu",
        hidden_act="gelu",
    )


def convert_state_dict(state: dict[str, torch.Tensor], target_keys) -> dict[str, torch.Tensor]:
    """Rename torchaudio keys to ``HubertModel`` keys: two prefixes, and the positional convolution's
    weight-norm spelling to whichever the installed torch/transformers use (``target_keys``)."""
    target_keys = set(target_keys)
    out = {}
    for key, value in state.items():
        if key.startswith("aux."):  # a CTC head: not part of the encoder
            continue
        new = key
        for old, repl in KEY_PREFIXES.items():
            if new.startswith(old):
                new = repl + new[len(old) :]
                break
        if new not in target_keys:
            for a, b in list(WEIGHT_NORM.items()) + [(b, a) for a, b in WEIGHT_NORM.items()]:
                if new.endswith("." + a) and new[: -len(a)] + b in target_keys:
                    new = new[: -len(a)] + b
                    break
        out[new] = value
    return out


def load_aves(weights: str | os.PathLike, config: str | os.PathLike | None = None):
    """A ``HubertModel`` (eval mode) from torchaudio-format AVES files. ``config`` defaults to the
    ``.model_config.json`` beside the weights."""
    from transformers import HubertModel

    weights = Path(weights)
    config = (
        Path(config)
        if config
        else weights.with_name(weights.name.removesuffix(WEIGHTS_SUFFIX).removesuffix(".pt") + CONFIG_SUFFIX)
    )
    for p, what in ((weights, "weights"), (config, "config")):
        if not p.is_file():
            raise AvesError(f"AVES {what} file not found: {p}")
    try:
        ta_config = json.loads(config.read_text())
        hf_config = hubert_config(ta_config)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise AvesError(f"{config}: not a torchaudio wav2vec2 model config ({e!r})") from e
    model = HubertModel(hf_config)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    converted = convert_state_dict(state, model.state_dict().keys())
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [k for k in missing if k != "masked_spec_embed"]  # used only in pre-training
    if missing or unexpected:
        raise AvesError(
            f"{weights}: does not match its config {config.name}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    if (
        getattr(model, "masked_spec_embed", None) is not None
    ):  # pre-training only; fixed so the weights' digest is stable
        torch.nn.init.zeros_(model.masked_spec_embed)
    model.name_or_path = str(weights)
    return model.eval()


def find_aves_files(folder: str | os.PathLike) -> tuple[Path, Path] | None:
    """(weights, config) of the single torchaudio-format model in ``folder``, or None."""
    folder = Path(folder)
    weights = sorted(folder.glob("*" + WEIGHTS_SUFFIX))
    if len(weights) > 1:
        raise AvesError(f"{folder}: holds several AVES weight files ({', '.join(p.name for p in weights)}); name one")
    if not weights:
        return None
    config = weights[0].with_name(weights[0].name.removesuffix(WEIGHTS_SUFFIX) + CONFIG_SUFFIX)
    return weights[0], config


def cache_dir() -> Path:
    return Path(os.environ.get("BIOLINGUAL_AVES_DIR", Path.home() / ".cache" / "biolingual" / "aves"))


def fetch_aves(name: str) -> Path:
    """The local weights of a published AVES model (``aves`` = AVES-bio), downloaded once into
    ``$BIOLINGUAL_AVES_DIR`` (default ``~/.cache/biolingual/aves``)."""
    stem = AVES_MODELS[name]
    folder = cache_dir()
    base = os.environ.get("BIOLINGUAL_AVES_URL", AVES_BASE_URL).rstrip("/")
    for suffix in (CONFIG_SUFFIX, WEIGHTS_SUFFIX):
        path = folder / (stem + suffix)
        if path.is_file():
            continue
        try:  # only a download needs requests (the eval extra); files already there do not
            requests = require("requests", "eval", f"downloading the {name} weights")
        except MissingExtraError as e:  # an AvesError: the probe reports it as one line, with the other way
            raise AvesError(
                f"{e}; or download {stem}{WEIGHTS_SUFFIX} and {stem}{CONFIG_SUFFIX} from {AVES_BASE_URL}/ into {folder}"
            ) from e
        url = f"{base}/{stem}{suffix}"
        folder.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s", url)
        try:
            with requests.get(url, stream=True, timeout=60) as r:
                r.raise_for_status()
                atomic_write(path, lambda f: f.writelines(r.iter_content(1 << 20)))
        except requests.RequestException as e:
            raise AvesError(
                f"could not download {name} ({url}): {e}. Download {stem}{WEIGHTS_SUFFIX} and "
                f"{stem}{CONFIG_SUFFIX} from {AVES_BASE_URL}/ into {folder}, or pass their folder "
                f"to --models"
            ) from e
    return folder / (stem + WEIGHTS_SUFFIX)
