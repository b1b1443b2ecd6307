"""The BEANS task registry (after earthspecies/beans ``datasets.yml``) and published reference figures.

Each task holds what evaluation needs: where its split files live relative to the BEANS checkout,
its type (classification or detection), sample rate, clip length or detection window, its labels
in class-id order, the label that unknown labels map to, and the zero-shot prompt of each label.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

CLASSIFICATION, DETECTION = "classification", "detection"


@dataclass(frozen=True)
class Task:
    name: str
    type: str
    splits: dict[str, str]  # split -> file path relative to the BEANS checkout root (datasets.yml)
    labels: tuple[str, ...]  # position = class id; stored as strings, as CSV/JSON cells are compared
    sample_rate: int
    max_duration: float | None = None  # classification: clips are cut / zero-padded to this (s)
    window_width: float | None = None  # detection: window length and hop (s)
    window_shift: float | None = None
    unknown_label: str | None = None
    prompt: Callable[[str], str] = field(default=lambda label: label, compare=False)

    @property
    def metric(self) -> str:
        return "acc" if self.type == CLASSIFICATION else "map"

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def prompts(self) -> list[str]:
        """The zero-shot prompt of each class, in class-id order."""
        return [self.prompt(label) for label in self.labels]


def _cls_splits(folder: str, pattern: str = "annotations.{}.csv") -> dict[str, str]:
    return {s: f"data/{folder}/{pattern.format(s)}" for s in ("train", "valid", "test")}


def _det_splits(folder: str) -> dict[str, str]:
    return {s: f"data/{folder}/{s}.jsonl" for s in ("train", "valid", "test")}


def _words(label: str) -> str:
    return label.replace(",_", ", ").replace("_", " ")


_WATKINS = (
    "Clymene_Dolphin Bottlenose_Dolphin Spinner_Dolphin Beluga,_White_Whale Bearded_Seal Minke_Whale "
    "Humpback_Whale Southern_Right_Whale White-sided_Dolphin Narwhal White-beaked_Dolphin Northern_Right_Whale "
    "Frasers_Dolphin Grampus,_Rissos_Dolphin Harp_Seal Atlantic_Spotted_Dolphin Fin,_Finback_Whale Ross_Seal "
    "Rough-Toothed_Dolphin Killer_Whale Pantropical_Spotted_Dolphin Short-Finned_Pacific_Pilot_Whale Bowhead_Whale "
    "False_Killer_Whale Melon_Headed_Whale Long-Finned_Pilot_Whale Striped_Dolphin Leopard_Seal Walrus Sperm_Whale "
    "Common_Dolphin"
).split()
_CBI = (
    "aldfly ameavo amebit amecro amegfi amekes amepip amered amerob amewig amewoo amtspa annhum astfly baisan baleag "
    "balori banswa barswa bawwar belkin1 belspa2 bewwre bkbcuc bkbmag1 bkbwar bkcchi bkchum bkhgro bkpwar bktspa "
    "blkpho blugrb1 blujay bnhcow boboli bongul brdowl brebla brespa brncre brnthr brthum brwhaw btbwar btnwar "
    "btywar buffle buggna buhvir bulori bushti buwtea buwwar cacwre calgul calqua camwar cangoo canwar canwre "
    "carwre casfin caster1 casvir cedwax chispa chiswi chswar chukar clanut cliswa comgol comgra comloo commer "
    "comnig comrav comred comter comyel coohaw coshum cowscj1 daejun doccor dowwoo dusfly eargre easblu easkin "
    "easmea easpho eastow eawpew eucdov eursta evegro fiespa fiscro foxspa gadwal gcrfin gnttow gnwtea gockin "
    "gocspa goleag grbher3 grcfly greegr greroa greyel grhowl grnher grtgra grycat gryfly haiwoo hamfly hergul "
    "herthr hoomer hoowar horgre horlar houfin houspa houwre indbun juntit1 killde labwoo larspa lazbun leabit "
    "leafly leasan lecthr lesgol lesnig lesyel lewwoo linspa lobcur lobdow logshr lotduc louwat macwar magwar "
    "mallar3 marwre merlin moublu mouchi moudov norcar norfli norhar2 normoc norpar norpin norsho norwat nrwswa "
    "nutwoo olsfly orcwar osprey ovenbi1 palwar pasfly pecsan perfal phaino pibgre pilwoo pingro pinjay pinsis "
    "pinwar plsvir prawar purfin pygnut rebmer rebnut rebsap rebwoo redcro redhea reevir1 renpha reshaw rethaw "
    "rewbla ribgul rinduc robgro rocpig rocwre rthhum ruckin rudduc rufgro rufhum rusbla sagspa1 sagthr savspa "
    "saypho scatan scoori semplo semsan sheowl shshaw snobun snogoo solsan sonspa sora sposan spotow stejay "
    "swahaw swaspa swathr treswa truswa tuftit tunswa veery vesspa vigswa warvir wesblu wesgre weskin wesmea "
    "wessan westan wewpew whbnut whcspa whfibi whtspa whtswi wilfly wilsni1 wiltur winwre3 wlswar wooduc wooscj2 "
    "woothr y00475 yebfly yebsap yehbla yelwar yerwar yetvir"
).split()
_SPEECH = (
    "backward bed bird cat dog down eight five follow forward four go happy house learn left marvin nine no off on "
    "one right seven sheila six stop three tree two up visual wow yes zero"
).split()
_HUMBUG = [
    "non-mosquito",
    "an arabiensis",
    "others",
    "an gambiae ss",
    "culex quinquefasciatus",
    "culex pipiens complex",
    "an funestus ss",
    "an squamosus",
    "ma uniformis",
    "an dirus",
    "ae aegypti",
    "an harrisoni",
    "an maculatus",
    "an funestus sl",
]
_DCASE = "AMRE BBWA BTBW CALL CCMK CHSP COYE GCTH GIG GRN OVEN Q RBGR SAVS SNMK SQT SWTH WTSP".split()
# What each dcase code stands for, as BioLingual's zero-shot prompts name it (david-rx/BioLingual
# beans/datasets.yml, dcase ``human_labels``): the DCASE 2021 few-shot sets' birds (BirdVox 4-letter codes),
# jackdaw calls, meerkat and hyena call types, and Q, the "other animal" class. A text tower knows the
# names, not the codes, so the prompts must be these.
DCASE_NAMES = {
    "AMRE": "American Redstart",
    "BBWA": "Bay-breasted Warbler",
    "BTBW": "Black-throated Blue Warbler",
    "CALL": "Jackdaw call",
    "CCMK": "Meerkat close call",
    "CHSP": "Chipping Sparrow",
    "COYE": "Common Yellowthroat",
    "GCTH": "Gray-cheeked Thrush",
    "GIG": "Hyena giggle",
    "GRN": "Hyena groan and moo",
    "OVEN": "Ovenbird",
    "Q": "Other Animal",
    "RBGR": "Rose-breasted Grosbeak",
    "SAVS": "Savannah Sparrow",
    "SNMK": "Meerkat short note",
    "SQT": "Hyena squitter",
    "SWTH": "Swainson's Thrush",
    "WTSP": "White-throated Sparrow",
}
_ENABIRDS = (
    "AMCR AMGO AMRE AMRO BAWW BCCH BGGN BHCO BHVI BLJA BTNW BWWA CARW COYE EATO HETH HOWA KEWA LOWA NOCA NOFL OVEN "
    "RBGR RBWO RCKI REVI SCTA SWTH TUTI WBNU WITU WOTH YBCU OTHR"
).split()
_GIBBONS = {"1": "Single pulse gibbon call", "2": "Multiple pulse gibbon call", "3": "Gibbon duet"}
_BATS = ["111", "210", "211", "215", "216", "220", "226", "228", "230", "231"]

TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("watkins", CLASSIFICATION, _cls_splits("watkins"), tuple(_WATKINS), 44100, max_duration=3, prompt=_words),
        Task(
            "bats",
            CLASSIFICATION,
            _cls_splits("egyptian_fruit_bats"),
            tuple(_BATS),
            250000,
            max_duration=5,
            prompt=lambda label: f"bat {_BATS.index(label) + 1}",
        ),
        Task("cbi", CLASSIFICATION, _cls_splits("cbi"), tuple(_CBI), 44100, max_duration=10),
        Task(
            "dogs",
            CLASSIFICATION,
            _cls_splits("dogs"),
            ("Farley", "Freid", "Keri", "Louie", "Luke", "Mac", "Roodie", "Rudy", "Siggy", "Zoe"),
            44100,
            max_duration=10,
            prompt=lambda label: f"{label} the dog barking",
        ),
        Task(
            "humbugdb",
            CLASSIFICATION,
            {s: f"data/HumBugDB/data/metadata/{s}.csv" for s in ("train", "valid", "test")},
            tuple(_HUMBUG),
            44100,
            max_duration=3,
        ),
        Task(
            "esc50",
            CLASSIFICATION,
            {s: f"data/esc50/meta/esc50.{s}.csv" for s in ("train", "valid", "test")},
            tuple(str(i) for i in range(50)),
            44100,
            max_duration=5,
            prompt=lambda label: f"Sound of {label}",
        ),
        Task(
            "speech-commands",
            CLASSIFICATION,
            {s: f"data/speech_commands/{s}.csv" for s in ("train", "valid", "test")},
            tuple(_SPEECH),
            16000,
            max_duration=1,
            prompt=lambda label: f"The spoken word '{label}'",
        ),
        Task(
            "dcase",
            DETECTION,
            _det_splits("dcase"),
            tuple(_DCASE),
            16000,
            window_width=2,
            window_shift=1,
            prompt=DCASE_NAMES.__getitem__,
        ),
        Task(
            "enabirds",
            DETECTION,
            _det_splits("enabirds"),
            tuple(_ENABIRDS),
            32000,
            window_width=2,
            window_shift=1,
            unknown_label="OTHR",
        ),
        Task(
            "hiceas",
            DETECTION,
            _det_splits("hiceas"),
            ("1",),
            22050,
            window_width=10,
            window_shift=5,
            prompt=lambda label: "Minke Whale 'boing' call",
        ),
        Task(
            "rfcx",
            DETECTION,
            _det_splits("rfcx"),
            tuple(str(i) for i in range(24)),
            48000,
            window_width=10,
            window_shift=5,
            prompt=lambda label: f"species {label}",
        ),
        Task(
            "hainan-gibbons",
            DETECTION,
            _det_splits("hainan_gibbons"),
            ("1", "2", "3"),
            9600,
            window_width=4,
            window_shift=2,
            unknown_label="1",
            prompt=_GIBBONS.__getitem__,
        ),
    ]
}
MAIN_TASKS = ["watkins", "bats", "cbi", "dogs", "humbugdb", "dcase", "enabirds", "hiceas", "rfcx", "hainan-gibbons"]
ALL_TASKS = MAIN_TASKS + ["esc50", "speech-commands"]


def parse_tasks(spec: str) -> list[str]:
    """``"all"``, ``"main"`` or a comma-separated list of task names -> task names (unknown names fail here)."""
    names = (
        ALL_TASKS
        if spec == "all"
        else MAIN_TASKS
        if spec == "main"
        else [t.strip() for t in spec.split(",") if t.strip()]
    )
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise ValueError(
            f"unknown BEANS task(s) {unknown or spec!r}: choose from {', '.join(ALL_TASKS)}, 'main' or 'all'"
        )
    return names


# Published test-set figures (accuracy for classification, mAP for detection); REFERENCE_SOURCES names
# where each row is printed. Each row: (model, protocol, {task: value}).
REFERENCE_SOURCES = (
    "Sources of the published rows: BioLingual, arXiv 2308.04978 Table 3; BioFoundation protocol, "
    "github.com/DBD-research-group/BioFoundation `projects/biofoundation/results/latex/beans_table.tex`; "
    "AVES-bio and the vggish baseline, AVES paper arXiv 2210.14493 Table 2."
)
REFERENCES: list[tuple[str, str, dict[str, float]]] = [
    (
        "BioLingual (paper, Table 3)",
        "finetune",
        {
            "watkins": 0.894,
            "bats": 0.766,
            "cbi": 0.744,
            "humbugdb": 0.817,
            "dogs": 0.971,
            "dcase": 0.475,
            "enabirds": 0.688,
            "hiceas": 0.677,
            "rfcx": 0.178,
            "hainan-gibbons": 0.376,
        },
    ),
    (
        "BioLingual (BioFoundation protocol)",
        "linear",
        {"watkins": 0.779, "bats": 0.535, "cbi": 0.186, "dogs": 0.669, "humbugdb": 0.757},
    ),
    (
        "BioLingual (BioFoundation protocol)",
        "finetune",
        {"watkins": 0.917, "bats": 0.742, "cbi": 0.643, "dogs": 0.935, "humbugdb": 0.813},
    ),
    (
        "AVES-bio (AVES paper, Table 2)",
        "BEANS",
        {
            "watkins": 0.879,
            "bats": 0.748,
            "cbi": 0.598,
            "humbugdb": 0.810,
            "dogs": 0.950,
            "dcase": 0.392,
            "enabirds": 0.555,
            "hiceas": 0.629,
            "rfcx": 0.130,
            "hainan-gibbons": 0.284,
            "esc50": 0.773,
            "speech-commands": 0.964,
        },
    ),
    (
        "vggish (BEANS)",
        "BEANS",
        {
            "watkins": 0.847,
            "bats": 0.743,
            "cbi": 0.440,
            "humbugdb": 0.808,
            "dogs": 0.906,
            "dcase": 0.335,
            "enabirds": 0.535,
            "hiceas": 0.463,
            "rfcx": 0.140,
            "hainan-gibbons": 0.150,
            "esc50": 0.705,
            "speech-commands": 0.948,
        },
    ),
]
