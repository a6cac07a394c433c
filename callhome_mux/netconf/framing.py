"""
RFC 6242 message framing, sans-IO: bytes in, whole messages out.

A session starts with base:1.0 end-of-message framing (each message ends
with C{]]>]]>}); once both hellos advertise base:1.1 it switches to chunked
framing (C{\\n#<size>\\n<data>} ... C{\\n##\\n}).  The decoder is strict (a
malformed header is a L{FramingError}, never a guess) and bounded (no chunk
or message larger than the configured limits is ever buffered).

Both decoders run in linear time: the end-of-message search looks only at
new bytes (plus the few that may hold the start of a delimiter).  The
chunked decoder works on the received C{bytes} objects themselves (a list
with an offset into the first): chunk data that fills a whole read is kept
as that very object, other data is sliced once, and the pieces are joined
once per message -- or handed out as they come (L{FrameDecoder.take_partial})
so that a large message can be parsed while it is still arriving.
"""

from __future__ import annotations

import itertools
import re
from typing import List, Optional, Sequence, Tuple

from callhome_mux.netconf.errors import FramingError

__all__ = ["FramingError", "FrameDecoder", "EOM", "MAX_CHUNK_SIZE", "encode_eom", "encode_chunked"]

EOM = b"]]>]]>"
#: RFC 6242 §4.2: chunk-size is 1..4294967295.
MAX_CHUNK_SIZE = 4294967295
_MAX_SIZE_DIGITS = len(str(MAX_CHUNK_SIZE))
# "\n#" + up to 10 digits + "\n"
_MAX_HEADER = 2 + _MAX_SIZE_DIGITS + 1
_LF = 0x0A
_HASH = 0x23
_DIGITS = frozenset(b"0123456789")
# A well-formed chunk header: 1..10 digits, no leading zero.
_CHUNK_HEADER = re.compile(rb"\n#([1-9][0-9]{0,%d})\n" % (_MAX_SIZE_DIGITS - 1))

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


def encode_eom(message: bytes) -> bytes:
    """Frame C{message} for base:1.0.  The XML must not contain C{]]>]]>} (RFC 6242 §4.3)."""
    return message + EOM


def encode_chunked(message: bytes, max_chunk_size: int = MAX_CHUNK_SIZE) -> bytes:
    """Frame C{message} for base:1.1, in chunks of at most C{max_chunk_size} bytes."""
    if not message:
        raise ValueError("a chunked message needs at least one byte (RFC 6242 §4.2)")
    size = len(message)
    if size <= max_chunk_size:
        return b"\n#%d\n" % size + message + b"\n##\n"
    parts = []
    view = memoryview(message)
    for start in range(0, size, max_chunk_size):
        piece = view[start : start + max_chunk_size]
        parts.append(b"\n#%d\n" % len(piece))
        parts.append(piece)
    parts.append(b"\n##\n")
    return b"".join(parts)


class FrameDecoder:
    """
    Turn a NETCONF byte stream into messages.

    Use L{feed} to get every complete message, or L{push} then
    L{next_message} one at a time when the framing may change between two
    messages of the same read (the hello is followed by chunked data).

    In chunked mode, L{take_partial} hands out the data of the message in
    progress received so far; L{next_message} then returns only the rest.
    The size limits count the whole message, taken pieces included.

    After a L{FramingError} the stream cannot be resynchronised; the caller
    must end the session.
    """

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, max_chunk_size: Optional[int] = None):
        if max_message_size < 1:
            raise ValueError("max_message_size must be at least 1")
        self.max_message_size = max_message_size
        self.max_chunk_size = min(max_chunk_size or MAX_CHUNK_SIZE, MAX_CHUNK_SIZE)
        self.chunked = False
        # End-of-message mode: the undecoded input and where the next
        # delimiter search starts.
        self._buffer = bytearray()
        self._searched = 0
        # Chunked mode: the undecoded input as received (bytes objects, an
        # offset into the first), the pieces of the current message not yet
        # handed out, the size the chunk headers announced for the whole
        # message, the bytes still owed by the current chunk (0: a header
        # comes next), and whether the message has had any chunk.
        # A list, not a deque: it rarely holds more than two reads, and an
        # idle session's empty list is 56 bytes where a deque is 760.  Both
        # lists are made when first needed (the empty tuple until then): a
        # session that is up and idle has read only its <hello> (base:1.0),
        # and small replies never leave pieces.
        self._input: Sequence[bytes] = ()
        self._offset = 0
        self._input_size = 0
        self._pieces: Sequence[bytes] = ()
        self._pieces_size = 0
        self._message_size = 0
        self._chunk_left = 0
        self._broken: Optional[FramingError] = None

    @property
    def base(self) -> str:
        return "1.1" if self.chunked else "1.0"

    def switch_to_chunked(self) -> None:
        """Decode everything not yet returned (buffered or future) as base:1.1."""
        self.chunked = True
        self._searched = 0
        if self._buffer:
            self._append_input(bytes(self._buffer))
            self._input_size += len(self._buffer)
            self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held: undecoded input plus the pieces of a partial message."""
        return len(self._buffer) + self._input_size + self._pieces_size

    @property
    def partial_size(self) -> int:
        """Bytes of the (chunked) message in progress held and not yet taken."""
        return self._pieces_size

    def take_partial(self) -> Sequence[bytes]:
        """Hand out the pieces of the chunked message in progress received so far."""
        pieces, self._pieces = self._pieces, ()
        self._pieces_size = 0
        return pieces

    def feed(self, data: bytes) -> List[bytes]:
        """Add C{data}; return every message now complete (possibly none)."""
        self.push(data)
        messages = []
        while True:
            message = self.next_message()
            if message is None:
                return messages
            messages.append(message)

    def push(self, data: bytes) -> None:
        if self._broken is not None:
            raise self._broken
        if not data:
            return
        if self.chunked:
            if type(data) is not bytes:
                data = bytes(data)
            self._append_input(data)
            self._input_size += len(data)
        else:
            self._buffer += data

    def _append_input(self, data: bytes) -> None:
        queue = self._input
        if type(queue) is list:
            queue.append(data)
        else:
            self._input = [data]

    def next_message(self) -> Optional[bytes]:
        """The next complete message (its part not yet taken), or None until more bytes arrive."""
        if self._broken is not None:
            raise self._broken
        try:
            if self.chunked:
                if self._input and not self._message_size:
                    message = self._whole_single_chunk()
                    if message is not None:
                        return message
                return self._next_chunked()
            return self._next_eom()
        except FramingError as error:
            self._broken = error
            raise

    # -- base:1.0 ---------------------------------------------------------

    def _next_eom(self) -> Optional[bytes]:
        buffer = self._buffer
        end = buffer.find(EOM, self._searched)
        if end < 0:
            # The last len(EOM)-1 bytes may be the start of a delimiter.
            self._searched = max(0, len(buffer) - (len(EOM) - 1))
            if self._searched > self.max_message_size:
                raise FramingError(
                    f"message exceeds the limit of {self.max_message_size} bytes without an end-of-message delimiter"
                )
            return None
        if end > self.max_message_size:
            raise FramingError(f"message of {end} bytes exceeds the limit of {self.max_message_size} bytes")
        message = bytes(buffer[:end])
        del buffer[: end + len(EOM)]
        self._searched = 0
        return message

    # -- base:1.1 ---------------------------------------------------------

    def _next_chunked(self) -> Optional[bytes]:
        queue = self._input
        while True:
            if self._chunk_left:
                if not queue:
                    return None
                data = queue[0]
                offset = self._offset
                available = len(data) - offset
                take = available if available < self._chunk_left else self._chunk_left
                pieces = self._pieces
                if type(pieces) is not list:
                    pieces = self._pieces = []
                # A read that is all chunk data is kept as it is: no copy.
                pieces.append(data if take == len(data) else data[offset : offset + take])
                self._pieces_size += take
                self._chunk_left -= take
                self._input_size -= take
                if take == available:
                    del queue[0]
                    self._offset = 0
                else:
                    self._offset = offset + take
                continue
            size = self._read_header()
            if size is None:
                return None
            if size == 0:
                pieces = self._pieces
                message = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                self._pieces = ()
                self._pieces_size = 0
                self._message_size = 0
                return message
            self._message_size += size
            if self._message_size > self.max_message_size:
                raise FramingError(
                    f"chunked message exceeds the limit of {self.max_message_size} bytes"
                    f" (chunks so far announce {self._message_size})"
                )
            self._chunk_left = size

    def _whole_single_chunk(self) -> Optional[bytes]:
        """
        The usual small message -- one chunk and the end marker, all in the
        first read -- taken in one step; None for anything else, which the
        general path then decodes (and refuses, if it is malformed).
        """
        data = self._input[0]
        offset = self._offset
        if not data.startswith(b"\n#", offset):
            return None
        newline = data.find(b"\n", offset + 2, offset + _MAX_HEADER)
        if newline < 0:
            return None
        digits = data[offset + 2 : newline]
        if not digits.isdigit() or digits[0] == 0x30:  # bytes.isdigit: ASCII digits only
            return None
        size = int(digits)
        end = newline + 1 + size
        if size > self.max_chunk_size or size > self.max_message_size or not data.startswith(b"\n##\n", end):
            return None
        self._input_size -= end + 4 - offset
        if end + 4 == len(data):
            del self._input[0]
            self._offset = 0
        else:
            self._offset = end + 4
        return data[newline + 1 : end]

    def next_small_messages(self, below: int = MAX_CHUNK_SIZE + 1) -> List[bytes]:
        """
        Every complete message at the head of the first read that is one
        chunk and its end marker, shorter than C{below} bytes (the usual
        small reply), taken in one loop; an empty list when the next message
        is anything else, which L{next_message} then decodes (or refuses, if
        it is malformed).

        Pipelined replies arrive dozens to a read: one call for all of them
        instead of two per message.
        """
        if not self.chunked or self._message_size or not self._input or self._broken is not None:
            return []
        data = self._input[0]
        offset = start = self._offset
        limit = min(self.max_chunk_size, self.max_message_size, below - 1)
        messages = []
        append = messages.append
        header = _CHUNK_HEADER.match
        # The checks of _whole_single_chunk (size 1..limit without leading
        # zeros, the end marker right after the data), per message.
        while True:
            match = header(data, offset)
            if match is None:
                break
            size = int(match[1])
            begin = match.end()
            end = begin + size
            if size > limit or data[end : end + 4] != b"\n##\n":
                break
            append(data[begin:end])
            offset = end + 4
        if offset != start:
            self._input_size -= offset - start
            if offset == len(data):
                del self._input[0]
                self._offset = 0
            else:
                self._offset = offset
        return messages

    def _header_bytes(self) -> Tuple[bytes, int]:
        """The bytes a chunk header may span: the first read itself when it holds enough, else a short copy."""
        queue = self._input
        data = queue[0]
        offset = self._offset
        if len(data) - offset >= _MAX_HEADER or len(queue) == 1:
            return data, offset
        head = data[offset : offset + _MAX_HEADER]
        for data in itertools.islice(queue, 1, None):
            head += data[: _MAX_HEADER - len(head)]
            if len(head) >= _MAX_HEADER:
                break
        return head, 0

    def _consume(self, count: int) -> None:
        queue = self._input
        self._input_size -= count
        while count:
            left = len(queue[0]) - self._offset
            if count < left:
                self._offset += count
                return
            count -= left
            del queue[0]
            self._offset = 0

    def _read_header(self) -> Optional[int]:
        """
        Consume one chunk header: its size, 0 for end-of-chunks, None when incomplete.

        Partial headers are checked as far as they go, so garbage is refused
        at once rather than after more bytes arrive.
        """
        if not self._input:
            return None
        buffer, start = self._header_bytes()
        available = len(buffer) - start
        if buffer[start] != _LF:
            raise FramingError(
                f"expected a chunk header starting with '\\n#', got {buffer[start : start + 16]!r}"
            )
        if available < 2:
            return None
        if buffer[start + 1] != _HASH:
            raise FramingError(f"expected '#' after '\\n' in a chunk header, got {buffer[start : start + 16]!r}")
        if available < 3:
            return None
        if buffer[start + 2] == _HASH:
            if available < 4:
                return None
            if buffer[start + 3] != _LF:
                raise FramingError(
                    f"malformed end-of-chunks marker {buffer[start : start + 4]!r} (expected '\\n##\\n')"
                )
            if not self._message_size:
                raise FramingError("end-of-chunks marker before any chunk: a message needs at least one chunk")
            self._consume(4)
            return 0
        limit = start + _MAX_HEADER
        newline = buffer.find(b"\n", start + 2, limit)
        digits = buffer[start + 2 : newline if newline >= 0 else min(len(buffer), limit)]
        if not _DIGITS.issuperset(digits):
            raise FramingError(f"chunk size {digits!r} is not a decimal number")
        if digits[:1] == b"0":
            raise FramingError(f"chunk size {digits!r} has a leading zero or is zero (allowed: 1..{MAX_CHUNK_SIZE})")
        if newline < 0:
            if len(digits) >= _MAX_SIZE_DIGITS + 1:
                raise FramingError(f"chunk size {digits!r}... is longer than {_MAX_SIZE_DIGITS} digits")
            return None
        if not digits:
            raise FramingError("empty chunk size in header '\\n#\\n'")
        size = int(digits)
        if size > MAX_CHUNK_SIZE:
            raise FramingError(f"chunk size {size} exceeds {MAX_CHUNK_SIZE} (RFC 6242 §4.2)")
        if size > self.max_chunk_size:
            raise FramingError(f"chunk size {size} exceeds the configured limit of {self.max_chunk_size} bytes")
        self._consume(newline + 1 - start)
        return size
