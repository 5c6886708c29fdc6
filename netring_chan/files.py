"""pcap and pcapng files (re-exported from ``netring_chan.rings.files``)."""

from .rings.files import (
    FORMATS, MAX_RECORD, FileInterface, Reader, Rotate, Writer, file_format, open_reader, open_writer,
)

__all__ = ["open_reader", "Reader", "FileInterface", "MAX_RECORD", "open_writer", "Writer", "Rotate", "FORMATS",
           "file_format"]
