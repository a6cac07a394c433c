"""RFC 6242 framing: both encodings, arbitrary splits, strictness, size limits."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from callhome_mux.netconf.framing import (
    EOM,
    MAX_CHUNK_SIZE,
    FrameDecoder,
    FramingError,
    encode_chunked,
    encode_eom,
)

# Message bodies: any bytes except ones holding the 1.0 delimiter.
bodies = st.binary(min_size=1, max_size=300).filter(lambda b: EOM not in b)


def split_at(data: bytes, cuts):
    """C{data} cut at the (sorted, de-duplicated) positions C{cuts}."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


def decode_all(decoder: FrameDecoder, pieces):
    messages = []
    for piece in pieces:
        messages.extend(decoder.feed(piece))
    return messages


def chunked_decoder(**options) -> FrameDecoder:
    decoder = FrameDecoder(**options)
    decoder.switch_to_chunked()
    return decoder


class EncodeTests(TestCase):
    def test_eom_appends_delimiter(self):
        self.assertEqual(encode_eom(b"<a/>"), b"<a/>]]>]]>")

    def test_chunked_single_chunk(self):
        self.assertEqual(encode_chunked(b"<rpc/>"), b"\n#6\n<rpc/>\n##\n")

    def test_chunked_splits_at_max_chunk_size(self):
        self.assertEqual(encode_chunked(b"abcdefg", 3), b"\n#3\nabc\n#3\ndef\n#1\ng\n##\n")

    def test_chunked_refuses_empty_message(self):
        self.assertRaises(ValueError, encode_chunked, b"")


class EndOfMessageDecodingTests(TestCase):
    def test_two_messages_in_one_read(self):
        self.assertEqual(FrameDecoder().feed(b"<a/>]]>]]><b/>]]>]]>"), [b"<a/>", b"<b/>"])

    def test_delimiter_split_across_reads(self):
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(b"<a/>]]>"), [])
        self.assertEqual(decoder.feed(b"]]"), [])
        self.assertEqual(decoder.feed(b">"), [b"<a/>"])
        self.assertEqual(decoder.buffered, 0)

    def test_partial_delimiter_is_message_data(self):
        self.assertEqual(FrameDecoder().feed(b"x]]>]]y]]>]]>"), [b"x]]>]]y"])

    def test_message_over_limit_without_delimiter_is_refused(self):
        decoder = FrameDecoder(max_message_size=100)
        decoder.feed(b"x" * 100)
        error = self.assertRaises(FramingError, decoder.feed, b"x" * 10)
        self.assertIn("exceeds the limit of 100 bytes", str(error))

    def test_message_over_limit_with_delimiter_is_refused(self):
        decoder = FrameDecoder(max_message_size=10)
        self.assertRaises(FramingError, decoder.feed, b"x" * 11 + EOM)

    def test_message_at_limit_is_accepted(self):
        self.assertEqual(FrameDecoder(max_message_size=10).feed(b"x" * 10 + EOM), [b"x" * 10])

    def test_buffer_stays_bounded_by_limit(self):
        decoder = FrameDecoder(max_message_size=1000)
        with self.assertRaises(FramingError):
            for _ in range(100):
                decoder.feed(b"y" * 64)
        self.assertLessEqual(decoder.buffered, 1000 + 64 + len(EOM))

    def test_broken_decoder_stays_broken(self):
        decoder = FrameDecoder(max_message_size=3)
        self.assertRaises(FramingError, decoder.feed, b"abcd" + EOM)
        self.assertRaises(FramingError, decoder.feed, b"<a/>" + EOM)

    @given(st.lists(bodies, min_size=1, max_size=8), st.lists(st.integers(min_value=0), max_size=20))
    @settings(max_examples=200, deadline=None)
    def test_any_split_gives_same_messages(self, messages, cuts):
        stream = b"".join(encode_eom(m) for m in messages)
        self.assertEqual(decode_all(FrameDecoder(), split_at(stream, cuts)), messages)

    def test_byte_at_a_time(self):
        messages = [b"<rpc-reply>" + bytes([i]) * i + b"</rpc-reply>" for i in range(1, 40)]
        stream = b"".join(encode_eom(m) for m in messages)
        pieces = [stream[i : i + 1] for i in range(len(stream))]
        self.assertEqual(decode_all(FrameDecoder(), pieces), messages)


class ChunkedDecodingTests(TestCase):
    def test_rfc_6242_example(self):
        stream = b"\n#4\n<rpc\n#18\n message-id=\"102\"\n\n#79\n" + b"x" * 79 + b"\n##\n"
        [message] = chunked_decoder().feed(stream)
        self.assertEqual(message, b"<rpc message-id=\"102\"\n" + b"x" * 79)

    def test_switch_after_hello_in_the_same_read(self):
        decoder = FrameDecoder()
        decoder.push(b"<hello/>]]>]]>\n#5\n<rpc/\n#1\n>\n##\n")
        self.assertEqual(decoder.next_message(), b"<hello/>")
        decoder.switch_to_chunked()
        self.assertEqual(decoder.next_message(), b"<rpc/>")
        self.assertIsNone(decoder.next_message())
        self.assertEqual(decoder.base, "1.1")

    def test_maximum_chunk_size_header_is_accepted(self):
        decoder = chunked_decoder(max_message_size=MAX_CHUNK_SIZE, max_chunk_size=MAX_CHUNK_SIZE)
        self.assertEqual(decoder.feed(b"\n#4294967295\nabc"), [])
        self.assertEqual(decoder.buffered, 3)

    @given(st.lists(bodies, min_size=1, max_size=6), st.integers(1, 50), st.lists(st.integers(min_value=0), max_size=30))
    @settings(max_examples=200, deadline=None)
    def test_any_split_any_chunking_gives_same_messages(self, messages, chunk_size, cuts):
        stream = b"".join(encode_chunked(m, chunk_size) for m in messages)
        self.assertEqual(decode_all(chunked_decoder(), split_at(stream, cuts)), messages)

    def assertRefused(self, stream: bytes, words: str, **options):
        decoder = chunked_decoder(**options)
        error = self.assertRaises(FramingError, decoder.feed, stream)
        self.assertIn(words, str(error))
        return error

    def test_zero_size_refused(self):
        self.assertRefused(b"\n#0\n", "leading zero or is zero")

    def test_leading_zero_refused(self):
        self.assertRefused(b"\n#012\n", "leading zero")

    def test_non_digit_refused_before_newline_arrives(self):
        self.assertRefused(b"\n#1a", "not a decimal number")

    def test_negative_size_refused(self):
        self.assertRefused(b"\n#-5\n", "not a decimal number")

    def test_empty_size_refused(self):
        self.assertRefused(b"\n#\n", "empty chunk size")

    def test_too_many_digits_refused(self):
        self.assertRefused(b"\n#12345678901", "longer than 10 digits")

    def test_size_over_rfc_maximum_refused(self):
        self.assertRefused(b"\n#4294967296\n", "exceeds 4294967295")

    def test_size_over_configured_chunk_limit_refused(self):
        self.assertRefused(b"\n#101\n", "configured limit of 100", max_chunk_size=100)

    def test_message_over_limit_refused_before_data_is_buffered(self):
        decoder = chunked_decoder(max_message_size=100)
        decoder.feed(b"\n#60\n" + b"a" * 60)
        self.assertRaises(FramingError, decoder.feed, b"\n#41\n")
        self.assertLessEqual(decoder.buffered, 101)

    def test_missing_newline_before_hash_refused(self):
        self.assertRefused(b"#4\nabcd", "starting with '\\n#'")

    def test_missing_hash_refused(self):
        self.assertRefused(b"\n4\nabcd", "expected '#'")

    def test_bad_end_marker_refused(self):
        self.assertRefused(b"\n#1\na\n##x", "malformed end-of-chunks")

    def test_end_of_chunks_without_chunk_refused(self):
        self.assertRefused(b"\n##\n", "needs at least one chunk")

    def test_data_longer_than_announced_refused(self):
        self.assertRefused(b"\n#2\nabc\n##\n", "chunk header")

    def test_incomplete_header_waits(self):
        decoder = chunked_decoder()
        for piece in (b"\n", b"#", b"1", b"2", b"\n"):
            self.assertEqual(decoder.feed(piece), [])
        self.assertEqual(decoder.feed(b"x" * 12 + b"\n##\n"), [b"x" * 12])

    def test_large_message_in_many_reads_is_joined_once(self):
        body = bytes(range(256)) * 4096  # 1 MiB
        stream = encode_chunked(body, 4000)
        decoder = chunked_decoder()
        messages = decode_all(decoder, [stream[i : i + 65536] for i in range(0, len(stream), 65536)])
        self.assertEqual(messages, [body])
        self.assertEqual(decoder.buffered, 0)


class PartialMessageTests(TestCase):
    """take_partial: the data of a chunked message handed out while it arrives."""

    def test_taken_pieces_and_rest_make_the_message_at_every_split(self):
        body = b"<rpc-reply>" + bytes(range(256)) + b"</rpc-reply>"
        stream = encode_chunked(body, 37) + encode_chunked(b"<next/>")
        for cut in range(len(stream) + 1):
            decoder = chunked_decoder()
            taken = []
            messages = []
            for piece in (stream[:cut], stream[cut:]):
                messages.extend(decoder.feed(piece))
                if not messages:
                    taken.extend(decoder.take_partial())
            self.assertEqual(b"".join(taken) + messages[0], body, f"cut at {cut}")
            self.assertEqual(messages[1:], [b"<next/>"])
            self.assertEqual(decoder.buffered, 0)

    def test_partial_size_counts_what_is_held(self):
        decoder = chunked_decoder()
        self.assertEqual(decoder.feed(b"\n#10\n12345"), [])
        self.assertEqual(decoder.partial_size, 5)
        self.assertEqual(decoder.take_partial(), [b"12345"])
        self.assertEqual(decoder.partial_size, 0)
        self.assertEqual(decoder.feed(b"67890\n##\n"), [b"67890"])

    def test_limit_counts_taken_pieces(self):
        decoder = chunked_decoder(max_message_size=100)
        decoder.feed(b"\n#60\n" + b"a" * 60)
        self.assertEqual(decoder.take_partial(), [b"a" * 60])
        error = self.assertRaises(FramingError, decoder.feed, b"\n#41\n")
        self.assertIn("exceeds the limit of 100", str(error))

    def test_end_marker_after_taken_chunks_is_accepted(self):
        decoder = chunked_decoder()
        decoder.feed(b"\n#3\nabc")
        decoder.take_partial()
        self.assertEqual(decoder.feed(b"\n##\n"), [b""])

    def test_a_read_of_chunk_data_is_kept_without_copy(self):
        decoder = chunked_decoder()
        decoder.feed(b"\n#8\n")
        data = b"abcdefgh"
        decoder.feed(data)
        [piece] = decoder.take_partial()
        self.assertIs(piece, data)


class WholeMessageInOneReadTests(TestCase):
    """A one-chunk message entirely in one read is taken in one step, with every check still made."""

    def test_taken_whole_with_the_rest_left(self):
        decoder = chunked_decoder()
        self.assertEqual(decoder.feed(b"\n#5\nhello\n##\n\n#2\nab"), [b"hello"])
        self.assertEqual(decoder.feed(b"\n##\n"), [b"ab"])

    def test_malformed_whole_messages_still_refused(self):
        cases = [
            (b"\n#05\nhello\n##\n", "leading zero", {}),
            (b"\n#5\nhello\n#x\n", "not a decimal number", {}),
            (b"\n#5\nhello\n##x", "malformed end-of-chunks", {}),
            (b"\n#5\nhello\n##\n", "configured limit of 4", {"max_chunk_size": 4}),
            (b"\n#5\nhello\n##\n", "exceeds the limit of 4", {"max_message_size": 4}),
            (b"\n#3\nhello\n##\n", "chunk header", {}),
        ]
        for stream, words, options in cases:
            decoder = chunked_decoder(**options)
            error = self.assertRaises(FramingError, decoder.feed, stream)
            self.assertIn(words, str(error), stream)
