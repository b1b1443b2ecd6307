"""Reading a local copy of BEANS-Zero with pyarrow (no ``datasets`` package needed).

In: ``--data``, one of the layouts BEANS-Zero is published or saved in:

- a folder written by ``datasets``' ``save_to_disk`` for one split: ``state.json`` (listing the data
  files), ``dataset_info.json`` and ``data-XXXXX-of-XXXXX.arrow`` (Arrow IPC stream files);
- a ``save_to_disk`` folder of a ``DatasetDict``: ``dataset_dict.json`` and one such folder per split
  (the ``test`` split is read: BEANS-Zero has no other);
- the Hub repository as ``huggingface-cli download`` leaves it: parquet files (its data files match
  ``shard*``), or any folder of ``.parquet`` or ``.arrow`` files (read in name order), or one such file.

Out: :class:`LocalCopy`: every example's component, task and true ``output`` (read without touching
the audio), and :meth:`LocalCopy.iter_audio`, which reads the audio of chosen examples file by file.

The columns used (beans-zero's README and the dataset card; ``sample_rate`` as NatureLM-audio's
``NatureLMInferenceDataset`` reads it): ``dataset_name`` (the component, e.g. "esc50"), ``task``
("classification", "detection" or "captioning"), ``output`` (the true label text), ``metadata`` (a
JSON string whose ``sample_rate`` is the audio's rate in Hz), ``audio`` (the samples, a list of
numbers) and ``id`` (used to name an example in messages). An example whose label columns are empty
or whose metadata has no usable rate is reported by file and row and skipped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biolingual.extras import require

from ..runtime import InputError

log = logging.getLogger(__name__)

REQUIRED = ("dataset_name", "task", "output", "metadata", "audio")
LABEL_COLUMNS = ("dataset_name", "task", "output", "metadata", "id")


class BeansZeroDataError(InputError):
    """``--data`` cannot be read as BEANS-Zero: the message names the path and what is wrong."""


def _pa():
    return require("pyarrow", "eval", "reading BEANS-Zero's Arrow and parquet files")


def _pq():
    return require("pyarrow.parquet", "eval", "reading BEANS-Zero's parquet files")


@dataclass(frozen=True)
class Example:
    """One row of the benchmark, without its audio."""

    file: int  # index into LocalCopy.files
    row: int  # row within that file
    id: str
    component: str
    task: str
    output: str
    sample_rate: int


def find_files(data: Path) -> list[Path]:
    """The data files of ``data`` in reading order; :class:`BeansZeroDataError` when there are none."""
    if not data.exists():
        raise BeansZeroDataError(
            f"--data '{data}' does not exist; give a BEANS-Zero folder (save_to_disk or the Hub's parquet files)"
        )
    if data.is_file():
        if data.suffix not in (".arrow", ".parquet"):
            raise BeansZeroDataError(f"--data '{data}' is neither a .parquet nor an .arrow file")
        return [data]
    if (data / "dataset_dict.json").is_file():
        splits = json.loads((data / "dataset_dict.json").read_text()).get("splits", [])
        split = "test" if "test" in splits else (splits[0] if len(splits) == 1 else None)
        if split is None:
            raise BeansZeroDataError(f"'{data / 'dataset_dict.json'}' lists splits {splits} and none is 'test'")
        return find_files(data / split)
    if (data / "state.json").is_file():
        try:
            names = [f["filename"] for f in json.loads((data / "state.json").read_text())["_data_files"]]
        except (ValueError, KeyError, TypeError) as e:
            raise BeansZeroDataError(
                f"'{data / 'state.json'}' is not a datasets save_to_disk state file ({e})"
            ) from None
        missing = [n for n in names if not (data / n).is_file()]
        if missing:
            raise BeansZeroDataError(f"'{data}': data files {missing} listed in state.json are missing")
        return [data / n for n in names]
    files = sorted(data.rglob("*.parquet")) or sorted(data.rglob("*.arrow"))
    if not files:
        raise BeansZeroDataError(f"--data '{data}' holds no .parquet or .arrow file, nor a save_to_disk state.json")
    return files


def _open_arrow(path: Path):
    """A memory-mapped table of an Arrow IPC file: the stream format save_to_disk writes, or the file format."""
    pa = _pa()
    source = pa.memory_map(str(path))
    try:
        return pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        source.seek(0)
        try:
            return pa.ipc.open_file(source).read_all()
        except pa.ArrowInvalid as e:
            raise BeansZeroDataError(f"'{path}' is not an Arrow IPC file ({e})") from None


def _read_columns(path: Path, columns: list[str]):
    """The ``columns`` of a data file that it has, and the names of all its columns."""
    if path.suffix == ".parquet":
        try:
            pf = _pq().ParquetFile(str(path))
            present = set(pf.schema_arrow.names)
            return pf.read(columns=[c for c in columns if c in present]), present
        except (OSError, _pa().ArrowException) as e:  # not parquet, or damaged: name the file, not a traceback
            raise BeansZeroDataError(f"'{path}' cannot be read as parquet ({e})") from None
    table = _open_arrow(path)
    present = set(table.column_names)
    return table.select([c for c in columns if c in present]), present


def _sample_rate(metadata) -> int:
    value = json.loads(metadata)["sample_rate"]
    rate = int(value)
    if rate <= 0 or rate != value:
        raise ValueError(f"sample_rate {value!r} is not a positive whole number")
    return rate


class LocalCopy:
    """A local copy of BEANS-Zero: its files, its examples (``examples``), and the rows skipped (``problems``)."""

    def __init__(self, data: str | Path):
        self.data = Path(data)
        self.files = find_files(self.data)
        self.examples: list[Example] = []
        self.problems: list[str] = []
        for f, path in enumerate(self.files):
            table, present = _read_columns(path, list(LABEL_COLUMNS))
            missing = [c for c in REQUIRED if c not in present]
            if missing:
                raise BeansZeroDataError(
                    f"'{path}' has no column(s) {missing}: not BEANS-Zero's schema (columns: {sorted(present)})"
                )
            cols = {c: table.column(c).to_pylist() for c in table.column_names}
            for row in range(table.num_rows):
                where = f"'{path}' row {row}"
                values = {c: cols[c][row] for c in cols}
                if any(values[c] in (None, "") for c in ("dataset_name", "task", "output")):
                    self.problems.append(f"{where}: empty dataset_name, task or output; skipped")
                    continue
                try:
                    rate = _sample_rate(values["metadata"])
                except (TypeError, ValueError, KeyError) as e:
                    self.problems.append(
                        f"{where} ({values['dataset_name']}): metadata has no usable sample_rate "
                        f"({type(e).__name__}: {e}); skipped"
                    )
                    continue
                self.examples.append(
                    Example(
                        f,
                        row,
                        str(values.get("id") or f"{path.name}:{row}"),
                        str(values["dataset_name"]),
                        str(values["task"]),
                        str(values["output"]),
                        rate,
                    )
                )
        for p in self.problems:
            log.warning(p)

    def name(self, example: Example) -> str:
        """How messages name an example: its file, row and id."""
        return f"'{self.files[example.file]}' row {example.row} (id {example.id})"

    def iter_audio(self, examples: list[Example]) -> Iterator[tuple[Example, np.ndarray | Exception]]:
        """(example, samples at its ``sample_rate``) for each of ``examples``, in file and row order, or
        (example, the error) for audio that cannot be read. Only the parts of a file that hold a wanted
        row are read (a parquet row group, or rows of a memory-mapped Arrow file)."""
        by_file: dict[int, list[Example]] = {}
        for e in sorted(examples, key=lambda e: (e.file, e.row)):
            by_file.setdefault(e.file, []).append(e)
        for f, wanted in by_file.items():
            path = self.files[f]
            if path.suffix == ".parquet":
                pf = _pq().ParquetFile(str(path))
                starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
                groups: dict[int, list[Example]] = {}
                for e in wanted:
                    groups.setdefault(int(np.searchsorted(starts, e.row, side="right") - 1), []).append(e)
                for g, members in groups.items():
                    try:
                        audio = pf.read_row_group(g, columns=["audio"]).column("audio")
                    except (OSError, _pa().ArrowException) as error:  # a damaged row group: its rows are skipped
                        for e in members:
                            yield e, ValueError(f"row group {g} of the file cannot be read ({error})")
                        continue
                    for e in members:
                        yield e, _samples(audio, e.row - int(starts[g]))
            else:
                audio = _open_arrow(path).column("audio")
                for e in wanted:
                    yield e, _samples(audio, e.row)


def _samples(column, index: int) -> np.ndarray | Exception:
    """Row ``index`` of an ``audio`` list column as a 1-D numpy array, or the error that prevents it."""
    try:
        values = column[index].values
        if values is None:
            return ValueError("its audio is empty (null)")
        return values.to_numpy(zero_copy_only=False)
    except Exception as e:  # an unexpected type in the column: reported for this row, the run goes on
        return ValueError(f"its audio column cannot be read as a list of numbers ({e})")
