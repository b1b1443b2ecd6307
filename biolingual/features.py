"""The one front end: batched log-mel spectrograms on the model's device.

It computes what transformers' ``ClapFeatureExtractor`` computes for a clip that is already the
model's length (Hann-windowed STFT, power spectrum, mel filterbank, 10*log10 with a 1e-10 floor), but
for a whole batch at once in torch, so it runs on a GPU and out of the data-loader workers. Cropping
and padding happen before, in :mod:`biolingual.audio`.

Precision: the reference works in float64. In float32 (the default, somewhat faster: see
docs/performance.md) the FFT's rounding error is about 1e-7 of a frame's energy, so only mel cells far
below the frame's loudest band show it. Measured by ``benchmarks/bench_front_end.py --precision-only``
(max |ours - reference|): float32 within 2.3e-4 dB on full-band clips and on the cells above -60 dB of
audio recorded at 16 kHz, 2.1e-2 dB in the empty upper band of that audio (near the -100 dB floor);
``precision="float64"`` within 7.6e-6 dB everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import ClapFeatureExtractor
from transformers.audio_utils import mel_filter_bank

from .audio import repeat_pad

MEL_FLOOR = 1e-10
# Clips per STFT call on a CPU. A batch's frames, spectrum and power (~12 MB per 10 s clip) fall out of
# cache when many clips go at once: 2 at a time is ~3x faster per clip than 24 (measured on 2 cores,
# identical output). A GPU takes the whole batch in one call.
CPU_CLIPS_PER_CALL = 2


@dataclass(frozen=True)
class FrontEndConfig:
    """The settings of the published BioLingual / LAION-CLAP processor."""

    sampling_rate: int = 48_000
    n_fft: int = 1024
    hop_length: int = 480
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 14_000.0
    max_length_s: float = 10.0
    fusion: bool = False  # fused CLAP models take 4 stacked mels and HTK filters

    @property
    def window_samples(self) -> int:
        return int(round(self.max_length_s * self.sampling_rate))

    @classmethod
    def from_feature_extractor(cls, fe: ClapFeatureExtractor, fusion: bool | None = None) -> FrontEndConfig:
        return cls(
            sampling_rate=int(fe.sampling_rate),
            n_fft=int(fe.fft_window_size),
            hop_length=int(fe.hop_length),
            n_mels=int(fe.feature_size),
            f_min=float(fe.frequency_min),
            f_max=float(fe.frequency_max),
            max_length_s=float(fe.max_length_s),
            fusion=(fe.truncation == "fusion") if fusion is None else fusion,
        )

    def to_feature_extractor(self) -> ClapFeatureExtractor:
        """The transformers feature extractor with the same settings (saved with every model)."""
        return ClapFeatureExtractor(
            feature_size=self.n_mels,
            sampling_rate=self.sampling_rate,
            hop_length=self.hop_length,
            max_length_s=int(self.max_length_s),
            fft_window_size=self.n_fft,
            frequency_min=self.f_min,
            frequency_max=self.f_max,
            truncation="fusion" if self.fusion else "rand_trunc",
            padding="repeatpad",
        )

    def to_dict(self) -> dict:
        return asdict(self)


class LogMelFrontEnd(nn.Module):
    """[batch, samples] waveforms -> [batch, channels, frames, n_mels] CLAP input features."""

    def __init__(self, config: FrontEndConfig | None = None, precision: str = "float32"):
        super().__init__()
        if precision not in ("float32", "float64"):
            raise ValueError(f"precision must be 'float32' or 'float64', got '{precision}'")
        self.config = config or FrontEndConfig()
        self.precision = precision
        c = self.config
        # The same filterbank transformers builds: Slaney mel with Slaney norm for unfused models
        # (librosa's, as LAION's HTSAT used), HTK without norm for fused ones (torchaudio's).
        filters = mel_filter_bank(
            num_frequency_bins=c.n_fft // 2 + 1,
            num_mel_filters=c.n_mels,
            min_frequency=c.f_min,
            max_frequency=c.f_max,
            sampling_rate=c.sampling_rate,
            norm=None if c.fusion else "slaney",
            mel_scale="htk" if c.fusion else "slaney",
        )
        # Kept in float64 too: a window rounded to float32 alone leaks noise 140 dB down, which is
        # above the true level of the empty upper band of upsampled 16 kHz audio.
        window = torch.hann_window(c.n_fft, periodic=True, dtype=torch.float64)
        # Only the FFT bins some filter covers (50 Hz-14 kHz: bins 2-298 of 513) enter the power and the
        # filterbank product: ~30% less front-end time, output the same to a few 1e-6 dB.
        used = torch.from_numpy(filters).abs().sum(dim=1).nonzero().flatten()
        self.bins = slice(int(used.min()), int(used.max()) + 1) if len(used) else slice(0, 1)
        filters = filters[self.bins]
        self.register_buffer("mel_filters_64", torch.from_numpy(filters), persistent=False)
        self.register_buffer("window_64", window, persistent=False)
        self.register_buffer("mel_filters", self.mel_filters_64.float(), persistent=False)
        self.register_buffer("window", window.float(), persistent=False)

    @torch.no_grad()
    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.ndim == 1:
            waveforms = waveforms[None]
        if self.window.device.type == "cpu" and waveforms.shape[0] > CPU_CLIPS_PER_CALL:
            return torch.cat([self._features(chunk) for chunk in waveforms.split(CPU_CLIPS_PER_CALL)])
        return self._features(waveforms)

    @torch.no_grad()
    def fusion_input(self, samples: np.ndarray) -> tuple[torch.Tensor, bool]:
        """One whole clip (1-D, any length, at the model's rate) -> ([4, frames, n_mels], is_longer) for a
        fused model, by transformers' ``ClapFeatureExtractor(truncation="fusion")`` rule.

        A clip whose mel has more frames than one window (``window_samples // hop + 1``) is "longer": its
        channels are the whole clip's mel squeezed to one window's frames (bilinear, as transformers), then
        three window-long crops. transformers draws each crop at random from the first, middle and last
        third of the possible starts, so the same clip embeds differently on every call; here the crops are
        the clip's first 10 s, its central one and its last 10 s, so the answer is deterministic (the same
        crops transformers can draw: a clip with three possible starts gets exactly its features).
        Any other clip is repeat-padded to one window and its mel repeated four times, ``is_longer`` False.

        transformers also sets ``is_longer`` True on one random clip of a batch in which no clip is longer
        (LAION-CLAP does it in training so the fusion layers always get a gradient). That flag makes a short
        clip's embedding depend on its batch and on chance; it is not followed here: a short clip is never
        "longer", which is what transformers gives it in any batch holding a longer clip.
        """
        c = self.config
        window = c.window_samples
        chunk_frames = window // c.hop_length + 1
        if len(samples) > window:
            mel = self.log_mel(torch.from_numpy(samples)[None])[0]  # [frames, mels] of the whole clip
            total = mel.shape[0]
            if total != chunk_frames:
                starts = np.array_split(np.arange(total - chunk_frames + 1), 3)
                picks = [
                    int(starts[0][0]),
                    int(starts[1][len(starts[1]) // 2]) if len(starts[1]) else 0,
                    int(starts[2][-1]) if len(starts[2]) else 0,
                ]
                squeezed = F.interpolate(
                    mel[None, None], size=[chunk_frames, c.n_mels], mode="bilinear", align_corners=False
                )[0, 0]
                crops = [mel[p : p + chunk_frames] for p in picks]
                return torch.stack([squeezed, *crops]), True
            # longer than a window by less than a hop: the same number of frames, used whole (as transformers)
            return mel[None].expand(4, -1, -1).contiguous(), False
        padded = torch.from_numpy(repeat_pad(samples, window))
        return self.log_mel(padded[None])[0][None].expand(4, -1, -1).contiguous(), False

    @torch.no_grad()
    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """[batch, samples] of any length -> [batch, frames, n_mels] float32 log-mel (one channel)."""
        return self._log_mel(waveforms)

    def _features(self, waveforms: torch.Tensor) -> torch.Tensor:
        features = self._log_mel(waveforms)[:, None]
        if self.config.fusion:  # a clip no longer than the window: the fused model sees four copies of it
            features = features.expand(-1, 4, -1, -1).contiguous()
        return features

    def _log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        exact = self.precision == "float64"
        dtype = torch.float64 if exact else torch.float32
        window, mel_filters = (self.window_64, self.mel_filters_64) if exact else (self.window, self.mel_filters)
        waveforms = waveforms.to(device=window.device, dtype=dtype)
        c = self.config
        spec = torch.stft(
            waveforms,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            window=window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )[:, self.bins]  # [B, freq, frames]
        parts = torch.view_as_real(spec)  # re^2 + im^2 with one fused kernel: the fastest power on CPU
        power = torch.addcmul(parts[..., 0].square(), parts[..., 1], parts[..., 1])
        mel = torch.matmul(power.transpose(1, 2), mel_filters)  # [B, frames, mels]
        return (10.0 * torch.log10(mel.clamp_min(MEL_FLOOR))).float()
