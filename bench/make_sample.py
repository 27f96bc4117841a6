"""Cut the committed UCI Online Retail sample from the shared data set.

The product code never reads ``../shared``; this script is the only thing that does, and only
when someone wants to re-cut the sample. It copies the original rows byte for byte (columns
unchanged) for a date range, and writes a reproducible gzip (fixed mtime, no file name), so the
sha256 in ``data/online_retail_sample/README.md`` can be checked by anyone.

    uv run python bench/make_sample.py                      # the committed cut
    uv run python bench/make_sample.py --data /path/to/datasets --start 2011-10-01 \
        --end 2011-11-30 --out /tmp/online_retail_2011-10_11.csv.gz
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import tarfile
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARBALL = "online_retail/online_retail_uci_by_day.tar.gz"
TARBALL_SHA256 = "b0286e8c369dd006e21efb986e7dd99361d7a59ea9c3b9094c04683b37eb5e13"
HEADER = b"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
DEFAULT_START = "2011-11-01"
DEFAULT_END = "2011-11-30"
DEFAULT_OUT = REPO / "data" / "online_retail_sample" / "online_retail_2011-11.csv.gz"


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cut(tarball: Path, start: date, end: date) -> tuple[bytes, int, int]:
    """The CSV bytes of every day in [start, end], with one header; returns (csv, rows, days)."""
    out = io.BytesIO()
    out.write(HEADER + b"\n")
    rows = days = 0
    with tarfile.open(tarball, "r:gz") as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.isfile() and m.name.endswith(".csv")),
            key=lambda m: m.name,
        )
        for member in members:
            day = date.fromisoformat(Path(member.name).stem)
            if not start <= day <= end:
                continue
            fh = tar.extractfile(member)
            assert fh is not None
            lines = fh.read().splitlines()
            if lines[0].strip() != HEADER:
                raise SystemExit(f"unexpected header in {member.name}: {lines[0]!r}")
            for line in lines[1:]:
                if line.strip():
                    out.write(line + b"\n")
                    rows += 1
            days += 1
    return out.getvalue(), rows, days


def write_gzip(data: bytes, path: Path) -> None:
    """Write a byte-reproducible gzip file (mtime 0, no embedded file name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz,
    ):
        gz.write(data)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, cut the sample and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "datasets",
        help="the shared datasets folder (default: ../shared/datasets next to the repo)",
    )
    parser.add_argument("--start", default=DEFAULT_START, help="first day, YYYY-MM-DD")
    parser.add_argument("--end", default=DEFAULT_END, help="last day, YYYY-MM-DD (inclusive)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the .csv.gz to write")
    args = parser.parse_args(argv)

    tarball = args.data / TARBALL
    if not tarball.is_file():
        print(f"not found: {tarball}", file=sys.stderr)
        return 2
    actual = sha256_file(tarball)
    if actual != TARBALL_SHA256:
        print(f"warning: {tarball} sha256 is {actual}, expected {TARBALL_SHA256}", file=sys.stderr)
    data, rows, days = cut(tarball, date.fromisoformat(args.start), date.fromisoformat(args.end))
    write_gzip(data, args.out)
    print(f"wrote {args.out}")
    print(f"  days:   {days} ({args.start} .. {args.end})")
    print(f"  rows:   {rows} (plus the header)")
    print(f"  csv:    {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    print(f"  gzip:   {args.out.stat().st_size:,} bytes, sha256 {sha256_file(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
