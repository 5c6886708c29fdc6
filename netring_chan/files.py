"""pcap, pcapng and Parquet files (re-exported from ``netring_chan.rings.files``)."""

from .rings.files import (
    FORMATS, MAX_RECORD, PARTITION_TIMES, FileInterface, ParquetWriter, Reader, Rotate, Writer, file_format,
    open_parquet, open_reader, open_writer,
)

__all__ = ["open_reader", "Reader", "FileInterface", "MAX_RECORD", "open_writer", "Writer", "Rotate", "FORMATS",
           "file_format", "open_parquet", "ParquetWriter", "PARTITION_TIMES"]
