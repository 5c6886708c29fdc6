"""The file backend: pcap and pcapng.

Readers are ``Source``s (``open_reader``): a file replays through a
``CaptureService`` into every face, at full speed or at the recorded pace.
Writers are ``Sink``s (``open_writer``): they take owned batches (one C call
per batch), packets, or raw frames from an ``InjectService``, rotate files as
tcpdump does (``Rotate``), and close cleanly on every exit path.
"""

from .reader import MAX_RECORD, FileInterface, Reader, open_reader
from .writer import FORMATS, Rotate, Writer, file_format, open_writer

__all__ = ["open_reader", "Reader", "FileInterface", "MAX_RECORD",
           "open_writer", "Writer", "Rotate", "FORMATS", "file_format"]
