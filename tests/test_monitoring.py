"""Recordings as deployments (site, place, recorder, clock time) and species lists by place and season."""

import datetime as dt
import json
import struct
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import soundfile as sf

from biolingual.deployments import DeploymentsError, describe_recording, file_name_time, read_deployments
from biolingual.species_lists import SpeciesListError, months_around, read_species_list, species_near

AUDIOMOTH_COMMENT = (
    "Recorded at 05:00:00 12/05/2024 (UTC-5) by AudioMoth 24F319055FDF2F5B at medium gain while battery "
    "was 4.2V and temperature was 12.3C."
)


def audiomoth_wav(path, seconds: float = 1.0, rate: int = 48000, comment: str = AUDIOMOTH_COMMENT, samples=None):
    """A WAV laid out as an AudioMoth writes it: fmt, a LIST/INFO chunk with the comment (ICMT, a fixed
    384-byte field) and the artist (IART), then the samples."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return tag + struct.pack("<I", len(data)) + data

    if samples is None:
        samples = np.sin(np.arange(int(seconds * rate)) * 0.05) * 0.25
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    info = (
        b"INFO"
        + chunk(b"ICMT", comment.encode().ljust(384, b"\0"))
        + chunk(b"IART", b"AudioMoth 24F319055FDF2F5B".ljust(32, b"\0"))
    )
    body = b"WAVE" + chunk(b"fmt ", fmt) + chunk(b"LIST", info) + chunk(b"data", pcm)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def guano_wav(path, stamp: dt.datetime, position=(4.6097, -74.0817)):
    import guano

    sf.write(path, np.zeros(4800, np.float32), 48000)
    meta = guano.GuanoFile(str(path))
    meta["Timestamp"], meta["Loc Position"] = stamp, position
    meta["Make"], meta["Model"], meta["Serial"] = "Wildlife Acoustics", "SM4", "S4A01234"
    meta.write(make_backup=False)
    return path


def test_site_place_recorder_and_clock_time_come_from_metadata_names_and_deployments(tmp_path):
    bogota = dt.timezone(dt.timedelta(hours=-5))
    root = tmp_path / "archive"
    (root / "site-a").mkdir(parents=True)
    (root / "site-b").mkdir()
    moth = audiomoth_wav(root / "site-b" / "20240512_050000.WAV")  # configured at UTC-5, as its comment says
    meter = guano_wav(root / "site-a" / "SITE-A_20240512_050000.wav", dt.datetime(2024, 5, 12, 5, 0, tzinfo=bogota))
    plain = root / "site-a" / "SITE-A_20240513_050000.wav"
    sf.write(plain, np.zeros(4800, np.float32), 48000)
    loose = tmp_path / "loose_20240512_050000.wav"
    sf.write(loose, np.zeros(4800, np.float32), 48000)
    table = tmp_path / "deployments.csv"
    table.write_text(
        "site,latitude,longitude,folder,timezone,recorder\n"
        "Quebrada A,4.61,-74.08,site-a,America/Bogota,\n"
        "Ridge B,4.70,-74.10,site-b,-05:00,\n"
    )
    deployments = read_deployments(table)

    info = describe_recording(moth, root, deployments)
    assert info.path == "site-b/20240512_050000.WAV" and info.site == "Ridge B"
    assert info.start == dt.datetime(2024, 5, 12, 5, 0, tzinfo=bogota) and info.sources["start"] == "AudioMoth comment"
    assert info.recorder == "AudioMoth 24F319055FDF2F5B" and (info.latitude, info.longitude) == (4.70, -74.10)
    assert info.at(90).isoformat() == "2024-05-12T05:01:30-05:00"
    assert info.problems == []

    info = describe_recording(meter, root, deployments)
    assert info.site == "Quebrada A" and info.sources["site"] == "deployments row 2"
    assert info.start.utcoffset() == dt.timedelta(hours=-5) and info.start.hour == 5
    assert info.recorder == "Wildlife Acoustics SM4 S4A01234"
    assert (info.latitude, info.longitude) == (4.61, -74.08)  # the user's table wins over GUANO's 4.6097, -74.0817 ...
    assert any("latitude 4.6097 from GUANO differs" in p for p in info.problems)  # ... and the difference is said
    assert not any("site" in p for p in info.problems)  # the name's prefix (often the recorder's) only fills a gap

    info = describe_recording(plain, root, deployments)  # no metadata: the name's time in the deployment's zone
    assert info.start == dt.datetime(2024, 5, 13, 5, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert info.start.tzinfo.key == "America/Bogota" and info.sources["start"] == "file name"

    info = describe_recording(loose, tmp_path / "elsewhere")  # nothing says which zone: reported, never guessed
    assert info.start is None and info.site == "loose"
    assert any("no timezone is known" in p for p in info.problems)
    assert file_name_time("20240512_050000.WAV") == (None, dt.datetime(2024, 5, 12, 5, 0))
    assert file_name_time("recording.wav") is None and file_name_time("X_20241399_050000.wav") is None


def test_clock_time_in_a_recording_crosses_a_daylight_saving_change():
    """A night recorder started at 01:30 EST on the night clocks go forward: an hour in, the clock reads 03:30 EDT
    (02:30 does not exist that night), and in autumn the hour after 01:30 EDT is 01:30 EST."""
    from biolingual.deployments import RecordingInfo

    zone = ZoneInfo("America/New_York")
    spring = RecordingInfo("a.wav", start=dt.datetime(2024, 3, 10, 1, 30, tzinfo=zone))
    assert spring.at(3600).isoformat() == "2024-03-10T03:30:00-04:00"
    autumn = RecordingInfo("b.wav", start=dt.datetime(2024, 11, 3, 1, 30, tzinfo=zone))
    assert (
        autumn.at(3600).isoformat() == "2024-11-03T01:30:00-05:00"
        and autumn.at(0).utcoffset().total_seconds() == -4 * 3600
    )


def test_an_index_copied_without_its_deployments_table_keeps_its_sites_and_clock_times(tmp_path):
    """recordings.json beside the index says what is known of each recording: an index copied elsewhere for review,
    its deployments CSV left behind, still has its sites and clock times (the table is read only to describe a
    recording the file lacks)."""
    from biolingual.search.recordings import recordings_of

    wavs = [str(tmp_path / "rec" / site / f"{site.upper()}_20240512_050000.wav") for site in ("a", "b")]
    for wav in wavs:
        Path(wav).parent.mkdir(parents=True)
        sf.write(wav, np.zeros(4800, np.float32), 48000)
    table = tmp_path / "deployments.csv"
    table.write_text("site,latitude,longitude,folder,timezone\nQuebrada A,4.61,-74.08,a,America/Bogota\n")
    (tmp_path / "index").mkdir()
    first = recordings_of(tmp_path / "index", wavs, table)
    assert first[wavs[0]].site == "Quebrada A" and first[wavs[0]].start.hour == 5 and first[wavs[1]].start is None
    table.unlink()
    assert recordings_of(tmp_path / "index", wavs) == first


def test_a_bad_deployments_file_names_the_file_and_every_row(tmp_path):
    table = tmp_path / "deployments.csv"
    table.write_text("site,latitude,longitude,folder,timezone\nA,95,-74,a,UTC\nB,4,-74,b,Mars/Olympus\n,4,-74,c,UTC\n")
    with pytest.raises(DeploymentsError) as info:
        read_deployments(table)
    message = str(info.value)
    assert f"'{table}', row 2: latitude 95.0 is outside -90..90" in message
    assert "row 3: unknown timezone 'Mars/Olympus'" in message and "row 4: no site name" in message
    table.write_text("name,latitude\nA,4\n")
    with pytest.raises(DeploymentsError, match="lacks the column.*site.*folder or pattern"):
        read_deployments(table)


def gbif_handler(seen: list):
    counts = {212: [("2480528", 40), ("5231190", 12), ("9999", 2)], 131: [("2427091", 7)], 359: [], 216: []}
    species = {
        "2480528": {"canonicalName": "Strix varia", "vernacularName": "Barred Owl"},
        "5231190": {"canonicalName": "Turdus migratorius", "vernacularName": ""},
        "2427091": {"canonicalName": "Lithobates catesbeianus"},
    }

    class GBIF(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urlparse(self.path)
            q = parse_qs(url.query)
            seen.append((url.path, q))
            if url.path == "/v1/occurrence/search":
                assert q["facet"] == ["speciesKey"] and q["limit"] == ["0"] and q["hasCoordinate"] == ["true"]
                body = {
                    "offset": 0,
                    "limit": 0,
                    "endOfRecords": False,
                    "count": 61,
                    "results": [],
                    "facets": [
                        {
                            "field": "SPECIES_KEY",
                            "counts": [{"name": k, "count": n} for k, n in counts[int(q["taxonKey"][0])]],
                        }
                    ],
                }
            elif url.path.startswith("/v1/species/") and url.path.endswith("/vernacularNames"):
                robin = url.path == "/v1/species/5231190/vernacularNames"
                body = {
                    "results": [
                        {"vernacularName": "Wanderdrossel", "language": "deu"},
                        {"vernacularName": "American Robin", "language": "eng"},
                    ]
                    if robin
                    else []
                }
            elif url.path.startswith("/v1/species/"):
                body = {"key": url.path.rsplit("/", 1)[1], **species[url.path.rsplit("/", 1)[1]]}
            else:
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return GBIF


def test_species_near_a_site_in_a_season_from_gbif_cached_and_offline(http_server, tmp_path):
    seen = []
    server = http_server(gbif_handler(seen), quiet=True)
    api = server.url + "/v1"
    found = species_near(
        42.44,
        -76.50,
        dt.date(2024, 5, 12),
        weeks=3,
        radius_km=25,
        taxa=("birds", "amphibians"),
        min_records=5,
        cache_dir=tmp_path / "cache",
        api=api,
    )
    assert found.names == ["Barred Owl", "American Robin", "Lithobates catesbeianus"]  # no English name: the scientific
    assert found.records == {"Barred Owl": 40, "American Robin": 12, "Lithobates catesbeianus": 7}
    assert found.scientific["American Robin"] == "Turdus migratorius"
    assert found.query["dropped"] == 1 and "at least 5 GBIF occurrence records within 25 km" in found.describe()
    searches = [q for path, q in seen if path == "/v1/occurrence/search"]
    assert sorted(q["taxonKey"][0] for q in searches) == ["131", "212"] and searches[0]["month"] == ["4,6"]
    lat = [float(v) for v in searches[0]["decimalLatitude"][0].split(",")]
    assert lat[0] == pytest.approx(42.44 - 25 / 111.32) and lat[1] == pytest.approx(42.44 + 25 / 111.32)

    server.close()  # offline from here: the cache answers the same query, at another threshold too
    again = species_near(
        42.44,
        -76.50,
        dt.date(2024, 5, 12),
        weeks=3,
        radius_km=25,
        taxa=("birds", "amphibians"),
        min_records=10,
        cache_dir=tmp_path / "cache",
        api=api,
    )
    assert again.names == ["Barred Owl", "American Robin"]
    with pytest.raises(SpeciesListError, match="GBIF could not be asked .* work offline with --species-list FILE"):
        species_near(42.44, -76.50, dt.date(2024, 8, 1), cache_dir=tmp_path / "cache", api=api)

    saved = found.save(tmp_path / "species.csv")  # written beside results; read back as the same list
    back = read_species_list(saved)
    assert back.names == found.names and back.records == found.records and back.query["months"] == "4,6"
    own = tmp_path / "mine.txt"
    own.write_text("# my site's list\nBarred Owl\nSpring Peeper\n\n")
    assert read_species_list(own).names == ["Barred Owl", "Spring Peeper"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(SpeciesListError, match="empty.txt' holds no name"):
        read_species_list(tmp_path / "empty.txt")
    assert months_around(dt.date(2024, 12, 24), 3) == "12,12;1,1"


def test_detections_per_site_night_and_hour_with_plots(tmp_path):
    """A night runs noon to noon in the recording's own timezone; hours are local; rows without a site or
    time are counted as unplaced, not guessed."""
    from biolingual.search.summary import read_detections, summarise, write_summary

    rows = [
        "site,start_time,label,probability",
        "Quebrada A,2024-05-12T22:10:00-05:00,Barred Owl,0.91",
        "Quebrada A,2024-05-13T03:40:00-05:00,Barred Owl,0.88",  # after midnight: still the night of the 12th
        "Quebrada A,2024-05-13T05:30:00-05:00,Spring Peeper,0.70",
        "Ridge B,2024-05-13T05:31:00+02:00,Barred Owl,0.75",  # another zone: its own local hour (5)
        "Ridge B,2024-05-14T21:00:00+02:00,Barred Owl,0.80",
        ",2024-05-14T21:00:00+02:00,Barred Owl,0.80",
        "Ridge B,,Barred Owl,0.80",
    ]
    (tmp_path / "detections.csv").write_text("\n".join(rows) + "\n")
    summary = summarise(read_detections(tmp_path / "detections.csv"))
    assert summary["unplaced"] == 2
    owl_nights = [(r["site"], r["night"], r["detections"]) for r in summary["per_night"] if r["label"] == "Barred Owl"]
    assert owl_nights == [("Quebrada A", "2024-05-12", 2), ("Ridge B", "2024-05-12", 1), ("Ridge B", "2024-05-14", 1)]
    assert {(r["site"], r["hour"]) for r in summary["per_hour"] if r["label"] == "Barred Owl"} == {
        ("Quebrada A", 22),
        ("Quebrada A", 3),
        ("Ridge B", 5),
        ("Ridge B", 21),
    }
    assert [(r["date"], r["detections"]) for r in summary["per_date"] if r["label"] == "Barred Owl"] == [
        ("2024-05-12", 1),
        ("2024-05-13", 2),
        ("2024-05-14", 1),
    ]
    written = write_summary(summary, tmp_path / "summary", parquet=True)
    names = {p.name for p in written}
    assert {"per_night.csv", "per_hour.csv", "per_night.parquet", "activity.png", "season.png"} <= names
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "summary" / "per_night.parquet").num_rows == len(summary["per_night"])
    assert (tmp_path / "summary" / "activity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_with_the_species_of_a_place_and_season(http_server, saved_model, clips, tmp_path, capsys):
    """`predict --species-near LAT,LON --date D` asks GBIF (here a server on 127.0.0.1), prints the list's size
    and threshold, ranks those species, and writes the list beside the CSV; `--species-list` reads it back
    offline. Mistakes are one error line."""
    from biolingual.cli import main

    server = http_server(gbif_handler([]), quiet=True)
    clip = str(clips["owl_stereo.flac"])
    common = ["--model", str(saved_model), "--device", "cpu", "--species-cache", str(tmp_path / "cache")]
    out = tmp_path / "predictions.csv"
    assert (
        main(
            [
                "predict",
                clip,
                "--species-near",
                "42.44,-76.50",
                "--date",
                "2024-05-12",
                "--min-records",
                "5",
                "--taxa",
                "birds,amphibians",
                "--gbif-api",
                server.url + "/v1",
                "--csv",
                str(out),
                *common,
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "3 candidate species with at least 5 GBIF occurrence records within 50 km" in err
    predicted = {line.split(",")[2] for line in out.read_text().splitlines()[1:]}
    assert predicted == {"Barred Owl", "American Robin", "Lithobates catesbeianus"}
    saved = tmp_path / "predictions.csv.species.csv"
    assert read_species_list(saved).names == ["Barred Owl", "American Robin", "Lithobates catesbeianus"]
    server.close()
    assert main(["predict", clip, "--species-list", str(saved), "--top-k", "1", *common]) == 0  # offline
    assert "3 candidate species" in capsys.readouterr().err
    assert main(["predict", clip, "--species-near", "42.44", *common]) == 1
    assert "error: --species-near takes LAT,LON" in capsys.readouterr().err
    assert main(["predict", clip, "--species-list", str(saved), "--labels", "Owl", *common]) == 1
    assert "leave out --labels" in capsys.readouterr().err


def test_zero_shot_eval_restricted_to_the_species_of_a_place_and_season(http_server, saved_model, tmp_path, capsys):
    """`eval.zero_shot --species-near` keeps the classes on GBIF's list (matched by common or scientific name),
    says how many classes and clips were left out as off the list, scores the rest, and writes the list (with
    its threshold) beside the results; a saved list gives the same offline, --min-records moves the threshold,
    and a list with no class of the data is one error line."""
    from biolingual.synthetic import synth_call
    from eval import zero_shot

    rows = ["path,label"]
    # 'Strix varia' is on the list as Barred Owl (scientific name); Lithobates catesbeianus has no English name
    # on GBIF, so it is listed by its scientific one; Spring Peeper was not recorded there then
    for i, (call, label) in enumerate(
        [("Barred Owl", "Strix varia"), ("American Bullfrog", "Lithobates catesbeianus"), ("Spring Peeper",) * 2] * 2
    ):
        sf.write(tmp_path / f"c{i}.wav", synth_call(call, 1.0, 16000, seed=i), 16000)
        rows.append(f"c{i}.wav,{label}")
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n")
    server = http_server(gbif_handler([]), quiet=True)
    out = tmp_path / "zs"
    common = ["--model", str(saved_model), "--device", "cpu", "--workers", "0", "--data", str(tmp_path / "clips.csv")]
    near = ["--species-near", "42.44,-76.50", "--date", "2024-05-12", "--taxa", "birds,amphibians"]
    near += ["--gbif-api", server.url + "/v1", "--species-cache", str(tmp_path / "cache")]
    assert zero_shot.main([*common, *near, "--min-records", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "3 candidate species with at least 5 GBIF occurrence records within 50 km" in printed.err
    assert "2 of 3 classes on the species list; 1 class (2 clips) off the list left out: Spring Peeper" in printed.out
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 4 and m["n_labels"] == 2 and 0 <= m["top1"] <= 1
    assert [c["label"] for c in m["per_class"]] == ["Lithobates catesbeianus", "Strix varia"]
    listed = m["species_list"]
    assert listed["classes_dropped"] == ["Spring Peeper"] and listed["samples_dropped"] == 2
    assert listed["matched"] == {"Strix varia": "Barred Owl", "Lithobates catesbeianus": "Lithobates catesbeianus"}
    assert listed["query"]["min_records"] == 5 and listed["file"] == "species.csv"
    assert "at least 5 GBIF occurrence records" in (out / "results.md").read_text()
    saved = read_species_list(out / "species.csv")
    assert saved.names == ["Barred Owl", "American Robin", "Lithobates catesbeianus"]

    server.close()  # offline from here: the saved list, and GBIF's cached answer at a higher threshold
    again, common = tmp_path / "zs2", [*common, "--cache", str(out / "embeddings.sqlite")]  # embedded once
    assert zero_shot.main([*common, "--species-list", str(out / "species.csv"), "--out", str(again)]) == 0
    assert json.loads((again / "metrics.json").read_text())["top1"] == m["top1"]
    assert zero_shot.main([*common, *near, "--min-records", "10", "--out", str(tmp_path / "zs3")]) == 0
    m3 = json.loads((tmp_path / "zs3" / "metrics.json").read_text())
    assert m3["n"] == 2 and m3["species_list"]["classes_dropped"] == ["Lithobates catesbeianus", "Spring Peeper"]
    capsys.readouterr()

    (tmp_path / "loons.txt").write_text("Common Loon\n")
    assert zero_shot.main([*common, "--species-list", str(tmp_path / "loons.txt"), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "error: no class of the data is on the species list" in err and "Traceback" not in err
    assert zero_shot.main([*common, "--species-near", "42.44", "--out", str(tmp_path / "x")]) == 1
    assert "error: --species-near takes LAT,LON" in capsys.readouterr().err


def test_the_summary_command_writes_tables_and_plots(tmp_path, capsys):
    from biolingual.cli import main

    (tmp_path / "d.csv").write_text(
        "site,start_time,label,probability\n"
        "A,2024-05-12T22:10:00-05:00,Owl,0.9\nA,2024-05-13T02:10:00-05:00,Owl,0.8\nB,,Owl,0.7\n"
    )
    assert main(["summary", str(tmp_path / "d.csv"), "--out", str(tmp_path / "s"), "--no-plots"]) == 0
    assert "2 detections over 1 site-nights" in capsys.readouterr().out
    assert (tmp_path / "s" / "per_night.csv").read_text().splitlines()[1].startswith("A,2024-05-12,Owl,2,")
    (tmp_path / "none.csv").write_text("site,start_time,label\n,,Owl\n")
    assert main(["summary", str(tmp_path / "none.csv"), "--out", str(tmp_path / "t")]) == 1
    assert "error: no detection in" in capsys.readouterr().err


def test_a_monitoring_season_from_recorders_to_a_per_site_night_table(saved_model, tmp_path, capsys):
    """Two sites, AudioMoth-layout recordings (clock time in their comment) and Song Meter-style names (clock time
    from the name and the site's timezone), synthetic calls: index with the deployments, detect with a species
    list, and every row carries its site and clock time; the summary counts detections per site and night."""
    from biolingual.cli import main
    from biolingual.synthetic import synth_call

    rate, archive = 48000, tmp_path / "archive"
    (archive / "site-a").mkdir(parents=True)
    (archive / "site-b").mkdir()
    for hour in (21, 22):
        audiomoth_wav(
            archive / "site-a" / f"20240512_{hour}0000.WAV",
            rate=rate,
            comment=AUDIOMOTH_COMMENT.replace("05:00:00", f"{hour}:00:00"),
            samples=synth_call("Barred Owl", 20.0, rate, seed=hour),
        )
        sf.write(
            archive / "site-b" / f"SITE-B_20240512_{hour}0000.wav",
            synth_call("Spring Peeper", 20.0, rate, seed=hour),
            rate,
        )
    table = tmp_path / "deployments.csv"
    table.write_text(
        "site,latitude,longitude,folder,timezone\nQuebrada A,4.61,-74.08,site-a,America/Bogota\n"
        "Ridge B,4.70,-74.10,site-b,America/Bogota\n"
    )
    species = tmp_path / "species.txt"
    species.write_text("Barred Owl\nSpring Peeper\n")
    model = ["--model", str(saved_model), "--device", "cpu"]
    assert main(["index", str(archive), "--out", str(tmp_path / "idx"), "--deployments", str(table), *model]) == 0
    assert "4 of 4 recordings have a site and a clock time" in capsys.readouterr().err
    assert (
        main(
            [
                "detect",
                str(tmp_path / "idx"),
                "--species-list",
                str(species),
                "--threshold",
                "0.0",
                "--csv",
                str(tmp_path / "detections.csv"),
                *model,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Quebrada A, 2024-05-12 21:00:" in out and "Ridge B, 2024-05-12 22:00:" in out
    import csv

    rows = list(csv.DictReader(open(tmp_path / "detections.csv")))
    assert rows and all(r["site"] in ("Quebrada A", "Ridge B") and r["start_time"].endswith("-05:00") for r in rows)
    first = next(r for r in rows if r["recording"] == "site-a/20240512_210000.WAV" and float(r["start_s"]) == 0.0)
    assert first["start_time"] == "2024-05-12T21:00:00-05:00" and first["latitude"] == "4.610000"
    assert all(float(r["end_s"]) - float(r["start_s"]) <= 30.0 for r in rows)  # calls, capped in length
    assert main(["summary", str(tmp_path / "detections.csv"), "--out", str(tmp_path / "summary"), "--no-plots"]) == 0
    nights = list(csv.DictReader(open(tmp_path / "summary" / "per_night.csv")))
    assert {(r["site"], r["night"]) for r in nights} == {("Quebrada A", "2024-05-12"), ("Ridge B", "2024-05-12")}
