"""Where slides come from: a folder, a CSV/TSV manifest, or a GDC download (``<file_id>/<file_name>``).

Every input becomes a list of :class:`SlideRecord` (path + optional mpp override, label, group). Validation
errors name the file (and row) and what was expected.

GDC: the manifest the GDC portal exports is a TSV with columns ``id  filename  md5  size  state``; the GDC data
transfer tool (``gdc-client download -m manifest.txt -d ROOT``) writes each file to ``ROOT/<id>/<filename>``.
TCGA slide file names start with the slide barcode, e.g. ``TCGA-CR-7395-01A-01-TS1.<uuid>.svs``; the last
barcode field says how the slide was made: ``DX`` = FFPE diagnostic slide, ``TS``/``BS`` = frozen top/bottom
section, ``MS`` = frozen middle section.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif")
"""File extensions :func:`find_slides` collects (formats OpenSlide reads)."""


@dataclass
class SlideRecord:
    """One slide and what is known about it.

    Attributes:
        path: slide file path.
        slide_id: identifier (default: file stem; for TCGA the slide barcode).
        mpp: level-0 µm/px override, or None to read it from the slide's metadata.
        label: optional class label (slide-level tasks).
        group: optional grouping key (patient, centre) for leakage-free splits.
        extra: any other manifest columns / parsed metadata (str -> str).
    """

    path: str
    slide_id: str = ""
    mpp: float | None = None
    label: str | None = None
    group: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path = str(self.path)
        if not self.slide_id:
            self.slide_id = Path(self.path).stem
        if self.mpp is not None:
            self.mpp = float(self.mpp)


def given_mpp_source(rec: SlideRecord, mpp_override: float | None) -> str:
    """What the mpp a slide is opened with is (``open_slide``'s ``mpp_source``): ``mpp_override`` (every
    slide), ``catalogue`` (a catalogue row's) or ``manifest`` (the record's own). Only a manifest's is
    compared with the slide's metadata (:func:`pathfm.datasets_scripts.mpp.given_mpp_disagreement`)."""
    if mpp_override is not None:
        return "mpp_override"
    return "catalogue" if rec.extra.get("catalogue") else "manifest"


def find_slides(
    folder: str | os.PathLike, extensions: tuple[str, ...] = SLIDE_EXTENSIONS
) -> list[SlideRecord]:
    """All slide files under a folder (recursive), sorted by path.

    Args:
        folder: root folder.
        extensions: lower-case suffixes to collect.

    Returns:
        records without mpp overrides.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: no slide files found (message lists the extensions searched).
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: slide folder not found")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not paths:
        raise ValueError(f"{root}: no slide files found (searched recursively for {', '.join(extensions)})")
    return [SlideRecord(path=str(p)) for p in paths]


_PATH_COLUMNS = ("path", "slide_path", "file", "filename", "slide")



def read_text_utf8(path: Path, what: str = "manifest") -> str:
    """The text of a CSV/TSV file decoded as UTF-8 (a leading byte-order mark is dropped).

    Raises:
        ValueError: the file is not UTF-8; the message names the file, the byte offset and how to convert it.
    """
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: {what} is not UTF-8 (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
            f"save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`"
        ) from None

def read_manifest(path: str | os.PathLike) -> list[SlideRecord]:
    """Read a CSV/TSV manifest.

    Columns (header required, case-insensitive): ``path`` (or slide_path/file/filename/slide; relative paths
    are resolved against the manifest's folder), optional ``mpp`` (level-0 µm/px override; empty = from
    metadata; a number outside the plausible range is kept here and makes that slide ``no-mpp`` when it is
    opened, :mod:`pathfm.datasets_scripts.mpp`), ``label``, ``group``, ``slide_id``; other columns land in
    ``SlideRecord.extra``.
    The delimiter is a tab for ``.tsv``/``.txt``, else sniffed among comma, tab, semicolon.

    Args:
        path: manifest file.

    Returns:
        records in file order.

    Raises:
        FileNotFoundError: manifest missing.
        ValueError: no path column, an empty path, an mpp that is not a number (messages name file and row).
    """
    mpath = Path(path)
    if not mpath.is_file():
        raise FileNotFoundError(f"{mpath}: manifest not found")
    text = read_text_utf8(mpath)
    if mpath.suffix.lower() in (".tsv", ".txt"):
        delimiter = "\t"
    else:
        try:
            delimiter = csv.Sniffer().sniff(text.splitlines()[0] if text else "", delimiters=",\t;").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    if not reader.fieldnames:
        raise ValueError(f"{mpath}: empty manifest (expected a header with a 'path' column)")
    fields = {name.strip().lower(): name for name in reader.fieldnames}
    path_col = next((fields[c] for c in _PATH_COLUMNS if c in fields), None)
    if path_col is None:
        raise ValueError(
            f"{mpath}: no path column (expected one of {', '.join(_PATH_COLUMNS)}); "
            f"found {', '.join(reader.fieldnames)}"
        )
    known = {path_col, fields.get("mpp"), fields.get("label"), fields.get("group"), fields.get("slide_id")}
    records = []
    for row_no, row in enumerate(reader, start=2):
        raw = (row.get(path_col) or "").strip()
        if not raw:
            raise ValueError(f"{mpath}, row {row_no}: empty slide path")
        p = Path(raw)
        if not p.is_absolute():
            p = mpath.parent / p
        mpp_raw = (row.get(fields["mpp"]) or "").strip() if "mpp" in fields else ""
        mpp = None
        if mpp_raw:
            try:
                mpp = float(mpp_raw)
            except ValueError:
                raise ValueError(f"{mpath}, row {row_no}: mpp {mpp_raw!r} is not a number") from None
            # an implausible number (negative, 0, 25) is one slide's problem: kept, so that the mpp chain
            # makes that slide "no-mpp" with the value named, in the catalogue, training and the stream alike

        def col(name: str, row: dict = row) -> str | None:
            v = (row.get(fields[name]) or "").strip() if name in fields else ""
            return v or None

        extra = {k: (v or "") for k, v in row.items() if k not in known and k is not None}
        records.append(
            SlideRecord(
                path=str(p),
                slide_id=col("slide_id") or "",
                mpp=mpp,
                label=col("label"),
                group=col("group"),
                extra=extra,
            )
        )
    if not records:
        raise ValueError(f"{mpath}: manifest has a header but no rows")
    return records


SAMPLE_TYPES = {
    "01": "Primary Solid Tumor",
    "02": "Recurrent Solid Tumor",
    "03": "Primary Blood Derived Cancer",
    "04": "Recurrent Blood Derived Cancer",
    "05": "Additional - New Primary",
    "06": "Metastatic",
    "07": "Additional Metastatic",
    "08": "Human Tumor Original Cells",
    "09": "Primary Blood Derived Cancer - BM",
    "10": "Blood Derived Normal",
    "11": "Solid Tissue Normal",
    "12": "Buccal Cell Normal",
    "13": "EBV Immortalized Normal",
    "14": "Bone Marrow Normal",
    "20": "Control Analyte",
    "40": "Recurrent Blood Derived Cancer - PB",
    "50": "Cell Lines",
    "60": "Primary Xenograft Tissue",
    "61": "Cell Line Derived Xenograft Tissue",
}
"""TCGA sample type codes (GDC 'Sample Type Codes' table)."""

SLIDE_TYPES = {
    "DX": "FFPE diagnostic",
    "TS": "frozen top section",
    "BS": "frozen bottom section",
    "MS": "frozen middle section",
}

_BARCODE = re.compile(
    r"^(?P<project>TCGA)-(?P<tss>[A-Z0-9]{2})-(?P<participant>[A-Z0-9]{4})"
    r"-(?P<sample>\d{2})(?P<vial>[A-Z])-(?P<portion>\d{2})-(?P<slide_type>DX|TS|BS|MS)(?P<slide_no>[0-9A-Z]*)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class TcgaBarcode:
    """Parsed TCGA slide barcode, e.g. ``TCGA-CR-7395-01A-01-TS1``.

    Attributes:
        barcode: the slide barcode (upper case).
        program: 'TCGA' (the TCGA project, e.g. TCGA-HNSC, is not in the barcode: take it from the GDC
            sample sheet's 'Project ID' column).
        tss: tissue source site code ('CR').
        patient: case barcode ('TCGA-CR-7395').
        sample_code: two digits ('01'); sample_type: its name ('Primary Solid Tumor').
        vial, portion: 'A', '01'.
        slide_type: 'DX' | 'TS' | 'BS' | 'MS'; slide_number: '1'.
        is_ffpe: True for DX (FFPE diagnostic) slides, False for frozen sections.
    """

    barcode: str
    program: str
    tss: str
    patient: str
    sample_code: str
    sample_type: str
    vial: str
    portion: str
    slide_type: str
    slide_number: str

    @property
    def is_ffpe(self) -> bool:
        """FFPE diagnostic slide (``DX``); TS/BS/MS are frozen sections."""
        return self.slide_type == "DX"

    @property
    def is_tumor(self) -> bool:
        """Tumour sample (sample codes 01-09)."""
        return 1 <= int(self.sample_code) <= 9


def parse_tcga_barcode(name: str) -> TcgaBarcode:
    """Parse a TCGA slide barcode from a barcode or a GDC slide file name.

    Args:
        name: e.g. ``TCGA-CR-7395-01A-01-TS1`` or ``TCGA-CR-7395-01A-01-TS1.<uuid>.svs`` (path allowed).

    Returns:
        :class:`TcgaBarcode`.

    Raises:
        ValueError: not a TCGA slide barcode (message quotes the name and the expected pattern).
    """
    base = Path(str(name)).name
    m = _BARCODE.match(base)
    if m is None:
        raise ValueError(
            f"{name!r} is not a TCGA slide barcode (expected TCGA-<TSS>-<participant>-<sample><vial>-<portion>-"
            "<DX|TS|BS|MS><n>, e.g. TCGA-CR-7395-01A-01-TS1)"
        )
    g = {k: v.upper() for k, v in m.groupdict().items()}
    barcode = base[: m.end()].upper()
    return TcgaBarcode(
        barcode=barcode,
        program=g["project"],
        tss=g["tss"],
        patient=f"TCGA-{g['tss']}-{g['participant']}",
        sample_code=g["sample"],
        sample_type=SAMPLE_TYPES.get(g["sample"], "unknown"),
        vial=g["vial"],
        portion=g["portion"],
        slide_type=g["slide_type"],
        slide_number=g["slide_no"],
    )


def read_gdc_manifest(
    manifest: str | os.PathLike,
    root: str | os.PathLike | None = None,
    ffpe_only: bool = False,
    missing: str = "error",
    mpp: float | None = None,
) -> list[SlideRecord]:
    """Slides downloaded with the GDC data transfer tool, from the GDC manifest.

    Args:
        manifest: GDC manifest TSV (columns ``id``, ``filename``; ``md5``, ``size``, ``state`` ignored).
        root: download folder holding ``<id>/<filename>`` (default: the manifest's folder).
        ffpe_only: keep only FFPE diagnostic slides (barcode slide type ``DX``).
        missing: what to do with listed slides that are not under ``root`` (a partial download):
            ``"error"`` (raise listing them), ``"skip"`` (drop them) or ``"keep"`` (keep their records, with
            ``extra["not_downloaded"]`` = the reason in words and the fix: the catalogue writes them as
            ``unreadable`` rows and the tile stream skips and counts them, as any missing slide file).
        mpp: optional mpp override for every slide (TCGA slides normally carry one).

    Returns:
        records with ``slide_id`` = slide barcode, ``group`` = patient barcode, and ``extra`` holding
        ``file_id``, ``tss``, ``sample_type``, ``slide_type``. Non-TCGA file names keep their stem as id.

    Raises:
        FileNotFoundError: manifest missing, (``missing="error"``) listed files absent under ``root``, or
            (``missing="keep"``) none of the listed slides under ``root``.
        ValueError: manifest lacks the ``id``/``filename`` columns.
    """
    mpath = Path(manifest)
    if not mpath.is_file():
        raise FileNotFoundError(f"{mpath}: GDC manifest not found")
    base = Path(root) if root is not None else mpath.parent
    rows = list(csv.DictReader(read_text_utf8(mpath, "GDC manifest").splitlines(), delimiter="\t"))
    if not rows or "id" not in rows[0] or "filename" not in rows[0]:
        raise ValueError(
            f"{mpath}: not a GDC manifest (expected tab-separated columns id, filename, md5, size, state)"
        )
    hint = f"rerun `gdc-client download -m {mpath.name} -d {base}` (partial downloads are common)"
    records, absent = [], []
    for row in rows:
        fname = row["filename"].strip()
        if Path(fname).suffix.lower() not in SLIDE_EXTENSIONS:
            continue
        p = base / row["id"].strip() / fname
        extra = {"file_id": row["id"].strip()}
        if not p.is_file():
            absent.append(str(p))
            if missing != "keep":
                continue
            extra["not_downloaded"] = f"not downloaded: {p}; {hint} (listed in {mpath})"
        try:
            bc = parse_tcga_barcode(fname)
        except ValueError:
            bc = None
        if bc is None:
            if ffpe_only:
                continue
            records.append(SlideRecord(path=str(p), mpp=mpp, extra=extra))
            continue
        if ffpe_only and not bc.is_ffpe:
            continue
        extra.update(tss=bc.tss, sample_type=bc.sample_type, slide_type=bc.slide_type)
        records.append(SlideRecord(path=str(p), slide_id=bc.barcode, mpp=mpp, group=bc.patient, extra=extra))
    downloaded = sum("not_downloaded" not in r.extra for r in records)
    if absent and (missing == "error" or (missing == "keep" and downloaded == 0)):
        shown = ", ".join(absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        what = "no listed slide downloaded" if missing == "keep" else f"{len(absent)} listed slide(s) missing"
        raise FileNotFoundError(
            f"{mpath}: {what} under {base} (expected <file_id>/<file_name> as written by "
            f"`gdc-client download -m {mpath.name} -d {base}`): {shown}"
        )
    return records
