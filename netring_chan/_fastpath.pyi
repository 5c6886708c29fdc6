# Types of the C module netring_chan._fastpath (netring_chan/_build/fastpath.c).
from typing import Any, Awaitable, Callable, Generator, Iterable, Iterator, TypeVar

class Step:
    """What ``PacketAiter.__anext__`` returns: takes the next packet when first resumed."""
    def __await__(self) -> Generator[Any, None, Any]: ...
    def send(self, value: Any) -> Any: ...
    def throw(self, typ: Any, val: Any = ..., tb: Any = ...) -> Any: ...
    def close(self) -> None: ...

class PacketAiter:
    """Async iterator over ``cursor.it``'s packets; ``slow()`` (``None``:
    ``self._next_slow()``) once it is used up."""
    def __init__(self, cursor: Any, slow: Callable[[], Awaitable[Any]] | None = None) -> None: ...
    def __aiter__(self) -> PacketAiter: ...
    def __anext__(self) -> Awaitable[Any]: ...

class PacketBase:
    """An owned packet's storage: ``PacketBase(data, timestamp_ns, columns, index)``."""
    def __init__(self, data: bytes, timestamp_ns: int, columns: Any, index: int, /) -> None: ...
    @property
    def data(self) -> bytes: ...
    @property
    def timestamp_ns(self) -> int: ...
    @property
    def _cols(self) -> Any: ...
    @property
    def _index(self) -> int: ...

_P = TypeVar("_P", bound=PacketBase)

class Blob:
    """An owned batch's packet bytes and their bounds in one buffer (made by ``own`` or ``blob``)."""
    def __len__(self) -> int: ...
    def __getitem__(self, i: int, /) -> bytes: ...
    def data(self) -> bytes: ...
    def offsets(self) -> bytes: ...

class Packets(Iterator[_P]):
    """``Packets(cls, datas, timestamps, columns)``: one ``cls`` per row, made in C."""
    def __init__(self, cls: type[_P], datas: list[bytes] | Blob, timestamps: Iterable[int], columns: Any,
                 /) -> None: ...
    def __next__(self) -> _P: ...

def own(meta: int, n: int, snap_limit: int, base: int, extent: int, /) -> tuple[bytearray, Blob]:
    """The columns and a ``Blob`` of a walked block (addresses; private)."""

def blob(data: bytes, offsets: bytes, /) -> Blob:
    """A ``Blob`` from what its ``data()`` and ``offsets()`` gave (checked)."""

def split(blob: Blob, /) -> list[bytes]:
    """Each packet's bytes, as a list."""

def walk(blk: int, size: int, meta: int, cap: int, info: int, /) -> int:
    """``nc_walk_block`` on addresses, the GIL held (private)."""

def block_status(addr: int, /) -> int:
    """A ring block's status word (private)."""

def block_release(addr: int, /) -> None:
    """Hand a ring block back to the kernel (private)."""

def tx_fill(ring: int, slot: int, frames: Any, first: int, k: int, min_len: int, max_len: int, /) -> int:
    """Publish the leading plain ``bytes`` frames of ``frames[first:first + k]`` into TX slots from ``slot``."""

def plain_run(frames: Any, min_len: int, max_len: int, /) -> int:
    """How many leading items of a list or tuple are ``bytes`` of a length in ``[min_len, max_len]``."""

def walk_own(blk: int, size: int, meta: int, cap: int, info: int, snap_limit: int, /
             ) -> tuple[int, bytearray, Blob] | tuple[int, None, None]:
    """Walk a block and copy it out in one call that lets the GIL go once (addresses; private)."""
