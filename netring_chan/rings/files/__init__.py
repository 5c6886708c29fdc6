"""The file backend: pcap and pcapng, and Parquet shards.

Readers are ``Source``s (``open_reader``): a file replays through a
``CaptureService`` into every face, at full speed or at the recorded pace.
Writers are ``Sink``s (``open_writer``): they take owned batches (one C call
per batch), packets, or raw frames from an ``InjectService``, rotate files as
tcpdump does (``Rotate``), and close cleanly on every exit path.
``ParquetWriter`` (``open_parquet``, or ``open_writer`` with a ``.parquet``
name) writes the same as columnar shards of a dataset directory (needs the
``arrow`` extra, imported only when used).
"""

from .reader import MAX_RECORD, FileInterface, Reader, open_reader
from .parquet import PARTITION_TIMES, ParquetWriter, open_parquet
from .writer import FORMATS, Rotate, Writer, file_format, open_writer

__all__ = ["open_reader", "Reader", "FileInterface", "MAX_RECORD",
           "open_writer", "Writer", "Rotate", "FORMATS", "file_format",
           "open_parquet", "ParquetWriter", "PARTITION_TIMES"]
