"""`biolingual agile ...` and `biolingual detect --head` end to end on a real tiny-model index of short synthetic
recordings (owl calls planted at known times among other species' calls): target, propose, label, fit (AP on
held-out windows improves over zero-shot), undo, Raven import with overlap, exports, detection with heads
(Annotation column), and a head refused against another model."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf
import torch

import biolingual
from biolingual.agile import AgileSession
from biolingual.cli import main
from biolingual.metrics import detection_average_precision
from biolingual.search.export import RAVEN_COLUMNS, read_raven
from biolingual.synthetic import synth_call

RATE = 16_000
WINDOW = 4.0
SECONDS = 40.0
OWL = "Barred Owl"
# recording -> [(start, end, species)]: owls to find, other species as distractors, noise elsewhere
CALLS = {
    "a.wav": [(8.0, 16.0, OWL), (24.0, 28.0, "Spring Peeper")],
    "b.wav": [(20.0, 28.0, OWL), (0.0, 8.0, "Field Cricket")],
    "c.wav": [(0.0, 4.0, OWL), (32.0, 36.0, OWL), (12.0, 20.0, "Common Loon")],
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The tiny preset, random except for its audio input normalisation, which is set from the kind of audio it
    will see (a random model's leaves all embeddings nearly equal, see tests/test_search_workflow.py)."""
    torch.manual_seed(0)
    model = biolingual.create(
        "tiny", tokenizer_texts=[f"The sound of a {OWL} hooting", "background noise"], seed=0, device="cpu"
    )
    rng = np.random.default_rng(0)
    species = [OWL, "Spring Peeper", "Field Cricket", "Common Loon", None]
    waves = [
        synth_call(s, 10, model.sampling_rate, seed=i)
        if s
        else (0.02 * rng.standard_normal(10 * model.sampling_rate)).astype(np.float32)
        for i, s in enumerate(species * 2)
    ]
    with torch.no_grad():
        norm = model.clap.audio_model.audio_encoder.batch_norm
        norm.reset_running_stats()
        norm.momentum = None
        model.clap.audio_model.train()
        model.clap.audio_model(input_features=model.front_end(torch.from_numpy(np.stack(waves))))
    model.eval()
    path = tmp_path_factory.mktemp("agile_model") / "model"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    d = tmp_path_factory.mktemp("agile_recordings")
    for i, (name, calls) in enumerate(CALLS.items()):
        rng = np.random.default_rng(10 + i)
        audio = (0.02 * rng.standard_normal(int(SECONDS * RATE))).astype(np.float32)
        for j, (a, b, species) in enumerate(calls):
            audio[int(a * RATE) : int(b * RATE)] += synth_call(species, b - a, RATE, seed=20 + 3 * i + j, noise=0)[
                : int((b - a) * RATE)
            ]
        sf.write(d / name, audio, RATE)
    return d


@pytest.fixture(scope="module")
def index_dir(model_dir, recordings, tmp_path_factory):
    out = tmp_path_factory.mktemp("agile_index") / "index"
    assert (
        main(
            [
                "index",
                str(recordings),
                "--model",
                str(model_dir),
                "--out",
                str(out),
                "--window",
                str(WINDOW),
                "--hop",
                str(WINDOW),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    return out


def truth_of(index) -> np.ndarray:
    """Whether each window holds (at least half a window of) an owl call."""
    out = np.zeros(len(index), bool)
    for r in range(len(index)):
        name = index.files[int(index.file_ids[r])].rsplit("/", 1)[-1]
        a, b = float(index.starts[r]), float(index.ends[r])
        out[r] = any(s == OWL and min(b, e) - max(a, st) >= WINDOW / 2 for st, e, s in CALLS[name])
    return out


def _rows(stdout: str) -> list[int]:
    return [int(line.split()[0]) for line in stdout.splitlines()[1:] if line.strip()]


def test_target_propose_label_fit_export_and_detect_with_the_head(index_dir, tmp_path, capsys):
    idx = str(index_dir)
    assert (
        main(
            ["agile", "target", idx, "--name", OWL, "--prompt", "The sound of a Barred Owl hooting", "--device", "cpu"]
        )
        == 0
    )
    assert f"target '{OWL}', seeded by the prompt" in capsys.readouterr().out
    session = AgileSession(idx)
    truth = truth_of(session.index)
    assert truth.sum() == 6 and len(truth) == 30
    zero_shot = session.scores(OWL)

    for round_ in range(2):  # two rounds of 5, answered from the ground truth through the CLI
        assert main(["agile", "propose", idx, "--target", OWL, "-n", "5", "--seed", str(round_)]) == 0
        rows = _rows(capsys.readouterr().out)
        assert len(rows) == 5
        for value, chosen in (
            ("positive", [r for r in rows if truth[r]]),
            ("negative", [r for r in rows if not truth[r]]),
        ):
            if chosen:
                assert main(["agile", "label", idx, "--target", OWL, "--value", value, "--row", *map(str, chosen)]) == 0
        capsys.readouterr()
        head_file = tmp_path / "owl.head"
        assert main(["agile", "fit", idx, "--target", OWL, "--out", str(head_file)]) == 0
        printed = capsys.readouterr().out
        assert f"{5 * (round_ + 1)} labels used" in printed and "cross-validated AP" in printed and head_file.is_file()

    labels = session.labels.labels(OWL)
    assert len(labels) == 10 and session.labels.counts(OWL)["positive"] == sum(truth[r] for r in labels)

    # held-out AP: a second target labelled on every window of a.wav and b.wav, scored on c.wav's
    held = OWL + " (held out)"
    assert (
        main(
            ["agile", "target", idx, "--name", held, "--prompt", "The sound of a Barred Owl hooting", "--device", "cpu"]
        )
        == 0
    )
    names = np.array([session.index.files[int(f)].rsplit("/", 1)[-1] for f in session.index.file_ids])
    train = names != "c.wav"
    for value, chosen in (("positive", train & truth), ("negative", train & ~truth)):
        assert (
            main(
                ["agile", "label", idx, "--target", held, "--value", value, "--row", *map(str, np.flatnonzero(chosen))]
            )
            == 0
        )
    assert main(["agile", "fit", idx, "--target", held]) == 0
    capsys.readouterr()

    def ap(scores):
        return float(detection_average_precision(scores[~train], truth[~train].astype(np.int64))[0])

    assert truth[~train].sum() == 2
    assert ap(session.scores(held)) > ap(zero_shot) + 0.2, (ap(zero_shot), ap(session.scores(held)))

    # undo the latest label from the CLI: one label fewer
    assert main(["agile", "undo", idx, "--target", OWL]) == 0
    assert "undid label" in capsys.readouterr().out and len(session.labels.labels(OWL)) == 9

    # exports: every label as CSV, the positives as a Raven table labelled in Annotation
    assert (
        main(
            [
                "agile",
                "export",
                idx,
                "--target",
                OWL,
                "--csv",
                str(tmp_path / "labels.csv"),
                "--raven",
                str(tmp_path / "labels.txt"),
            ]
        )
        == 0
    )
    with open(tmp_path / "labels.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 9 and {r["value"] for r in table} <= {"positive", "negative"}
    raven = read_raven(tmp_path / "labels.txt")
    assert list(raven[0]) == RAVEN_COLUMNS and {r["Annotation"] for r in raven} == {OWL}
    assert len(raven) == sum(r["value"] == "positive" for r in table)

    # detect with the head over the index: no model needed, events in the Annotation column
    assert (
        main(["detect", idx, "--head", str(head_file), "--threshold", "0.5", "--raven", str(tmp_path / "det.txt")]) == 0
    )
    events = read_raven(tmp_path / "det.txt")
    capsys.readouterr()
    assert events and {e["Annotation"] for e in events} == {OWL}
    probs = session.head(OWL).calibrate(session.raw_scores(OWL))
    for e in events:  # every event is a run of windows at or above the threshold, scored by its best
        rows = [
            r
            for r in range(len(truth))
            if session.index.files[int(session.index.file_ids[r])] == e["Begin Path"]
            and float(e["File Offset (s)"]) - 1e-3
            <= session.index.starts[r]  # File Offset: within the file
            < float(e["File Offset (s)"]) + float(e["End Time (s)"]) - float(e["Begin Time (s)"]) - 1e-3
        ]
        assert rows and all(probs[r] >= 0.5 for r in rows)
        assert float(e["Score"]) == pytest.approx(max(probs[r] for r in rows), abs=1e-5)
    hits = [r for r in range(len(truth)) if probs[r] >= 0.5]
    assert truth[hits].mean() > truth.mean()  # detections are owls more often than windows at large are


def test_detect_with_heads_over_recordings_and_a_head_of_another_model_is_refused(
    index_dir, recordings, saved_model, tmp_path, capsys
):
    idx = str(index_dir)
    session = AgileSession(idx)
    session.labels.add_target("loud", text_embedding=np.ones(session.index.embeddings.shape[1], np.float32))
    truth = truth_of(session.index)
    for r in range(10):
        session.label("loud", r, "positive" if truth[r] else "negative")
    head_file = session.fit("loud").path

    # recordings, not an index: embedded with the head's own model (in a temporary index), then detected
    assert (
        main(
            [
                "detect",
                str(recordings),
                "--head",
                str(head_file),
                "--threshold",
                "0.0",
                "--window",
                str(WINDOW),
                "--hop",
                str(WINDOW),
                "--max-call",
                "100000",
                "--device",
                "cpu",
                "--csv",
                str(tmp_path / "all.csv"),
            ]
        )
        == 0
    )
    with open(tmp_path / "all.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["query"] for r in rows} == {"loud"} and len(rows) == 3  # threshold 0, calls uncapped: one per recording
    capsys.readouterr()

    # another model: refused before anything is embedded, naming both
    code = main(
        [
            "detect",
            str(recordings),
            "--head",
            str(head_file),
            "--model",
            str(saved_model),
            "--device",
            "cpu",
            "--csv",
            str(tmp_path / "x.csv"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "was fitted on embeddings of model" in err and str(head_file) in err
    assert "indexed" not in err and not (tmp_path / "x.csv").exists()


def test_import_raven_by_overlap_with_negatives_for_the_rest(index_dir, recordings, tmp_path, capsys):
    idx = str(index_dir)
    table = tmp_path / "a.Table.1.selections.txt"
    lines = [
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tBegin Path\tAnnotation",
        f"1\tSpectrogram 1\t1\t8.5\t14.0\t300\t500\t{recordings / 'a.wav'}\towl",  # 3.5 s of [8,12), 2 s of [12,16)
        f"1\tWaveform 1\t1\t8.5\t14.0\t300\t500\t{recordings / 'a.wav'}\towl",  # the same selection's other view
        f"2\tSpectrogram 1\t1\t33.0\t34.0\t300\t500\t{recordings / 'a.wav'}\towl",  # a 1 s call inside [32,36)
        f"3\tSpectrogram 1\t1\t1.0\t2.0\t300\t500\t{recordings / 'a.wav'}\tfrog",  # another label: not imported
        "4\tSpectrogram 1\t1\t1.0\t3.0\t300\t500\t/elsewhere/zzz.wav\towl",
    ]  # not in the index: skipped
    table.write_text("\n".join(lines) + "\n")
    assert (
        main(
            [
                "agile",
                "import-raven",
                idx,
                str(table),
                "--target",
                "owl calls",
                "--min-overlap",
                "0.5",
                "--negatives-rest",
                "--annotation",
                "owl",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "2 selections -> 3 positive and 7 negative windows" in out and "1 selections skipped" in out
    session = AgileSession(idx)
    rows = {
        (session.window(r)[0].rsplit("/", 1)[-1], session.window(r)[1]): v
        for r, v in session.labels.labels("owl calls").items()
    }
    assert {k for k, v in rows.items() if v == "positive"} == {("a.wav", 8.0), ("a.wav", 12.0), ("a.wav", 32.0)}
    assert sorted(k[1] for k, v in rows.items() if v == "negative") == [0.0, 4.0, 16.0, 20.0, 24.0, 28.0, 36.0]
    assert all(k[0] == "a.wav" for k in rows) and {h.source for h in session.labels.history("owl calls")} == {"raven"}

    # a stricter overlap: [12,16) holds only 2 of its 4 s -> not positive at 0.75 (and not negative: it is touched)
    assert (
        main(
            [
                "agile",
                "import-raven",
                idx,
                str(table),
                "--target",
                "strict",
                "--min-overlap",
                "0.75",
                "--annotation",
                "owl",
            ]
        )
        == 0
    )
    capsys.readouterr()
    strict = AgileSession(idx).labels.labels("strict")
    assert sorted(session.window(r)[1] for r in strict) == [8.0, 32.0]


def test_call_density_from_the_command_line(index_dir, capsys):
    idx = str(index_dir)
    assert (
        main(
            [
                "agile",
                "target",
                idx,
                "--name",
                "owl density",
                "--prompt",
                "The sound of a Barred Owl hooting",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert main(["agile", "density", idx, "--target", "owl density"]) == 1  # nothing drawn yet: says what to do
    assert "density-sample" in capsys.readouterr().err
    assert main(["agile", "density-sample", idx, "--target", "owl density", "-n", "3"]) == 0
    rows = [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()[2:]]
    assert len(rows) == 12  # 3 in each of the 4 score bins
    truth = truth_of(AgileSession(idx).index)
    for value in ("positive", "negative"):
        chosen = [r for r in rows if truth[r] == (value == "positive")]
        if chosen:
            assert (
                main(["agile", "label", idx, "--target", "owl density", "--value", value, "--row", *map(str, chosen)])
                == 0
            )
    capsys.readouterr()
    assert main(["agile", "density", idx, "--target", "owl density"]) == 0
    out = capsys.readouterr().out
    assert "call density" in out and "from 12 labelled windows in 4 score bins" in out


def test_targets_seeded_by_an_example_window_or_clip(index_dir, recordings, tmp_path, capsys):
    idx = str(index_dir)
    assert main(["agile", "target", idx, "--name", "like row 7", "--example-row", "7", "--device", "cpu"]) == 0
    assert "seeded by the example" in capsys.readouterr().out
    session = AgileSession(idx)
    assert session.ranking("like row 7", k=1)[0].row == 7  # query by example: the window itself ranks first
    clip = tmp_path / "owl.wav"
    sf.write(clip, synth_call(OWL, 4.0, RATE, seed=99), RATE)
    assert (
        main(
            [
                "agile",
                "target",
                idx,
                "--name",
                "owl clip",
                "--example-audio",
                str(clip),
                "--prompt",
                "an owl",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "seeded by the prompt and the example" in capsys.readouterr().out
    assert session.labels.target("owl clip").example == f"audio file {clip}"
    assert main(["agile", "targets", idx]) == 0
    assert "owl clip: 0 positive, 0 negative, 0 unsure; not fitted" in capsys.readouterr().out
    assert main(["agile", "target", idx, "--name", "x", "--example-row", "1", "--example-audio", str(clip)]) == 1


def test_fit_warns_when_the_labels_cannot_support_a_calibration(index_dir, capsys):
    """Two positives and two negatives cannot calibrate a head: `agile fit` says so on stderr and the head scores
    windows by their rank in the index (spread out, never every window at 1), which `detect --head` then uses."""
    idx = str(index_dir)
    session = AgileSession(idx)
    truth = truth_of(session.index)
    owls, others = np.flatnonzero(truth), np.flatnonzero(~truth)
    name = "Owl, two labels"
    assert main(["agile", "target", idx, "--name", name, "--example-row", str(owls[0])]) == 0
    assert main(["agile", "label", idx, "--target", name, "--value", "positive", "--row", *map(str, owls[1:3])]) == 0
    assert main(["agile", "label", idx, "--target", name, "--value", "negative", "--row", *map(str, others[:2])]) == 0
    capsys.readouterr()
    assert main(["agile", "fit", idx, "--target", name]) == 0
    captured = capsys.readouterr()
    assert "calibration rank" in captured.out
    assert f"warning: target '{name}': too few labels to calibrate (2 positive, 2 negative" in captured.err
    assert "not probabilities" in captured.err
    probs = session.scores(name)
    assert (probs >= 0.999).sum() <= 1 and len(np.unique(probs)) > len(probs) // 2


def test_label_at_a_recording_and_time(index_dir, capsys):
    """--at RECORDING SECONDS labels the window there; a recording that is not in the index is named as such (it used
    to be reported as wrong syntax), a time outside it says what the windows cover, and only a time that is not a
    number is a syntax error."""
    idx = str(index_dir)
    base = ["agile", "label", idx, "--target", "at test", "--value", "positive", "--at"]
    assert main(["agile", "target", idx, "--name", "at test", "--prompt", "an owl"]) == 0
    capsys.readouterr()
    assert main([*base, "a.wav", "12"]) == 0
    assert "labelled 1 windows positive" in capsys.readouterr().out
    for at, message in (
        (["nosuchfile.flac", "12"], f"error: recording 'nosuchfile.flac' is not in the index '{idx}'"),
        (["a.wav", "99"], "error: 99.0 s is not within 'a.wav'"),
        (["a.wav", "noon"], "error: --at takes a recording and a time in seconds, got 'a.wav' 'noon'"),
    ):
        assert main([*base, *at]) == 1
        assert capsys.readouterr().err.startswith(message), at


def test_threshold_for_a_precision_then_detect_with_it(index_dir, tmp_path, capsys):
    """`agile threshold` gives the zero-shot (cosine) threshold for a precision on the reviewed windows, then the
    fitted head's; `detect --threshold-file` applies the head's per target; a head refitted since is refused."""
    from biolingual.agile.thresholds import read_thresholds

    idx = str(index_dir)
    name = "Owl, thresholded"
    session = AgileSession(idx)
    truth = truth_of(session.index)
    assert (
        main(
            ["agile", "target", idx, "--name", name, "--prompt", "The sound of a Barred Owl hooting", "--device", "cpu"]
        )
        == 0
    )
    owls, others = np.flatnonzero(truth), np.flatnonzero(~truth)
    reviewed = np.r_[owls[:5], others[:12]]
    assert main(["agile", "label", idx, "--target", name, "--value", "positive", "--row", *map(str, owls[:5])]) == 0
    assert main(["agile", "label", idx, "--target", name, "--value", "negative", "--row", *map(str, others[:12])]) == 0
    capsys.readouterr()

    def check(row, scores):  # the printed figures, recomputed from the scores of the reviewed windows
        t = float(row["threshold"])
        above = reviewed[scores[reviewed] >= t]
        assert float(row["precision"]) == pytest.approx(truth[above].mean(), abs=1e-6) and truth[above].mean() >= 0.8
        assert float(row["recall"]) == pytest.approx(truth[above].sum() / 5, abs=1e-6)
        below = scores[reviewed][scores[reviewed] < t]  # a lower threshold would lose the precision
        if len(below):
            lower = reviewed[scores[reviewed] >= below.max()]
            assert truth[lower].mean() < 0.8
        assert (int(row["reviewed"]), int(row["positives"]), int(row["negatives"])) == (17, 5, 12)
        assert float(row["index_share"]) == pytest.approx(np.mean(scores >= t), abs=1e-6)

    table = tmp_path / "thresholds.csv"
    assert main(["agile", "threshold", idx, "--target", name, "--precision", "0.8", "--out", str(table)]) == 0
    out = capsys.readouterr()
    assert (
        f"target '{name}': cosine threshold" in out.out
        and "on 17 reviewed windows (5 positive, 12 negative)" in out.out
    )
    zero_shot = read_thresholds(table)[name]
    assert zero_shot["score"] == "cosine"
    check(zero_shot, session.head(name).scores(session.index.embeddings) / session.head(name).scale)
    if zero_shot["calibration"] == "rank":  # no probability without a calibration the labels support: a warning says so
        assert zero_shot["probability"] == "" and f"warning: target '{name}'" in out.err
    else:
        assert 0.0 < float(zero_shot["probability"]) < 1.0

    assert main(["agile", "fit", idx, "--target", name, "--out", str(tmp_path / "owl.head")]) == 0
    assert main(["agile", "threshold", idx, "--target", name, "--precision", "0.8", "--out", str(table)]) == 0
    row = read_thresholds(table)[name]
    assert row["score"] == "head" and len(read_thresholds(table)) == 1  # the target's row replaced
    raw = session.raw_scores(name)
    check(row, raw)
    capsys.readouterr()
    assert (
        main(
            [
                "detect",
                idx,
                "--head",
                str(tmp_path / "owl.head"),
                "--threshold-file",
                str(table),
                "--raven-per-file",
                str(tmp_path / "det"),
            ]
        )
        == 0
    )
    detected = set()
    for p in (tmp_path / "det").iterdir():
        for e in read_raven(p):
            start, end = (
                float(e["File Offset (s)"]),
                float(e["File Offset (s)"]) + float(e["End Time (s)"]) - float(e["Begin Time (s)"]),
            )
            detected |= {
                r
                for r in range(len(raw))
                if session.index.files[int(session.index.file_ids[r])] == e["Begin Path"]
                and start - 1e-3 <= session.index.starts[r] < end - 1e-3
            }
    assert detected == set(np.flatnonzero(raw >= float(row["threshold"])).tolist())  # the per-target cut, not 0.5

    assert main(["agile", "label", idx, "--target", name, "--value", "positive", "--row", str(owls[5])]) == 0
    assert main(["agile", "fit", idx, "--target", name, "--out", str(tmp_path / "owl.head")]) == 0
    capsys.readouterr()
    assert main(["detect", idx, "--head", str(tmp_path / "owl.head"), "--threshold-file", str(table)]) == 1
    assert f"the threshold of '{name}' was set on another fit of its head" in capsys.readouterr().err


def test_the_label_commands_start_without_torch(index_dir, tmp_path):
    """agile targets, label and undo read and write the label store over an index and need no model: in a fresh
    interpreter they load neither torch nor transformers (their start-up was most of an agile round's time)."""
    import shutil
    import subprocess
    import sys

    from biolingual.agile.labels import LabelStore

    idx = tmp_path / "idx"
    shutil.copytree(index_dir, idx)
    LabelStore(idx).add_target("quiet")  # labels alone (no prompt to embed) make a target too
    code = (
        "import sys\n"
        "from biolingual.cli import main\n"
        f"idx = {str(idx)!r}\n"
        "assert main(['agile', 'label', idx, '--target', 'quiet', '--row', '1', '2', '--value', 'negative']) == 0\n"
        "assert main(['agile', 'undo', idx, '--target', 'quiet']) == 0\n"
        "assert main(['agile', 'targets', idx]) == 0\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "quiet: 0 positive, 1 negative" in out.stdout
