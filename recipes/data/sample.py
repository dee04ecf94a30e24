"""A sample of each data file for estimates (`recipes plan` without ``--tokenize``): the records of
its first ``SAMPLE_BYTES`` (on disk), and the factor that scales counts from the sample to the whole
file (its size on disk / the bytes read). Small files are read whole (factor 1); a 10 GB corpus costs
the same few megabytes as a 20 MB one."""

from __future__ import annotations

from pathlib import Path

from recipes.data.streams import ByteCounter

SAMPLE_BYTES = 8 << 20


def sample_records(sources) -> list[tuple[list[dict], float]]:
    """Per file of every source: (records of its sample, scale to the whole file)."""
    out = []
    for fmt, options, files in sources:
        for path in files:
            size = Path(path).stat().st_size
            start, records, complete = ByteCounter.total, [], True
            reader = iter(fmt.read(Path(path), options))
            for record in reader:
                records.append(record)
                if ByteCounter.total - start > SAMPLE_BYTES:
                    complete = False
                    break
            close = getattr(reader, "close", None)
            if close is not None:
                close()
            read = ByteCounter.total - start
            out.append((records, 1.0 if complete or not read else max(size / read, 1.0)))
    return out
