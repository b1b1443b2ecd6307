"""Writes the demo clips in demo/clips/ (run once; the clips are committed).

Synthetic calls of six species at the sample rates, channel counts, formats and lengths that real
archives hand out, so the demo exercises decoding, resampling, mono mixing and long-clip windowing.
"""

from pathlib import Path

import numpy as np
import soundfile as sf

from biolingual.synthetic import SPECIES, synth_call

OUT = Path(__file__).parent / "clips"
# (species, file stem, seconds, sample rate, channels, format)
CLIPS = [
    ("Spring Peeper", "spring_peeper", 6.0, 22050, 1, "flac"),
    ("Barred Owl", "barred_owl", 14.0, 16000, 1, "flac"),
    ("Common Loon", "common_loon", 8.0, 32000, 2, "flac"),
    ("American Bullfrog", "american_bullfrog", 5.0, 16000, 1, "wav"),
    ("Field Cricket", "field_cricket", 4.0, 44100, 1, "ogg"),
    ("Humpback Whale", "humpback_whale", 12.0, 8000, 1, "flac"),
]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for i, (species, stem, seconds, rate, channels, fmt) in enumerate(CLIPS):
        mono = synth_call(species, seconds, rate, seed=100 + i)
        data = np.stack([mono, 0.8 * mono], axis=1) if channels == 2 else mono
        sf.write(OUT / f"{stem}.{fmt}", data, rate, subtype="PCM_16" if fmt == "wav" else None)
    (OUT.parent / "labels.txt").write_text("\n".join(SPECIES) + "\n")
    print(f"wrote {len(CLIPS)} clips to {OUT}")


if __name__ == "__main__":
    main()
