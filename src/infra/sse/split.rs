//! Incremental event splitting. An event ends at a blank line; lines end at
//! `\n`, `\r\n` or `\r`, and a chunk may end between the `\r` and the `\n`.

use bytes::Bytes;

/// Where the line grammar stands after the bytes seen so far.
#[derive(Default)]
struct Framer {
    /// Content bytes have arrived since the last line end.
    in_line: bool,
    /// The last byte seen was a `\r`: a `\n` next belongs to that line end.
    after_cr: bool,
}

impl Framer {
    /// The offset just past the next event end (a blank line's line end) in
    /// `bytes`, or `None` with the state advanced to the end of `bytes`.
    /// One `memchr2` per line, so the cost is linear in the input.
    fn next_end(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut at = 0;
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                at = 1;
            }
        }
        while let Some(found) = memchr::memchr2(b'\n', b'\r', &bytes[at..]) {
            let end_of_line = at + found;
            let blank = !self.in_line && found == 0;
            let mut next = end_of_line + 1;
            if bytes[end_of_line] == b'\r' {
                match bytes.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            self.in_line = false;
            at = next;
            if blank {
                return Some(at);
            }
        }
        if at < bytes.len() {
            self.in_line = true;
        }
        None
    }
}

/// What `Splitter::feed` hands on, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A whole event as it arrived, up to and including its blank line:
    /// also an event of only comments, or a lone blank line.
    Event(&'a [u8]),
    /// The `\n` of a `\r\n` that ended the previous event, cut off from it by
    /// a chunk boundary: it belongs with that event (pass it or drop it alike).
    Tail(&'a [u8]),
    /// Bytes of an event longer than the splitter's limit: never interpreted,
    /// only passed on or ignored.
    Oversized(&'a [u8]),
}

/// Carry capacity kept between events: a rare large event's buffer is given
/// back instead of staying with the stream for its whole life.
const KEPT_CAPACITY: usize = 8 * 1024;

/// Cuts a stream into events. An event that spans chunks is carried (copied)
/// until its end arrives, up to `limit` bytes; events inside one chunk are
/// handed on as slices of it. An event longer than `limit` comes out as
/// `Oversized` pieces however the stream was cut, so what consumers decide
/// never depends on chunk boundaries.
pub struct Splitter {
    framer: Framer,
    carry: Vec<u8>,
    limit: usize,
    /// Inside an event that outgrew `limit`, until its end.
    oversized: bool,
}

impl Splitter {
    pub fn new(limit: usize) -> Self {
        Self {
            framer: Framer::default(),
            carry: Vec::new(),
            limit,
            oversized: false,
        }
    }

    /// Nothing of an unfinished event is held: the next piece starts in the
    /// next chunk.
    pub fn holds_nothing(&self) -> bool {
        self.carry.is_empty()
    }

    /// Hands the pieces of `chunk` to `sink`, carrying an unfinished event.
    pub fn feed(&mut self, chunk: &[u8], mut sink: impl FnMut(Piece<'_>)) {
        let mut rest = chunk;
        let between_events = self.carry.is_empty() && !self.oversized;
        if between_events && self.framer.after_cr && rest.first() == Some(&b'\n') {
            self.framer.after_cr = false;
            sink(Piece::Tail(&rest[..1]));
            rest = &rest[1..];
        }
        if !between_events {
            let Some(end) = self.framer.next_end(rest) else {
                self.hold(rest, &mut sink);
                return;
            };
            self.end_carried(&rest[..end], &mut sink);
            rest = &rest[end..];
        }
        while let Some(end) = self.framer.next_end(rest) {
            match end > self.limit {
                true => sink(Piece::Oversized(&rest[..end])),
                false => sink(Piece::Event(&rest[..end])),
            }
            rest = &rest[end..];
        }
        self.hold(rest, &mut sink);
    }

    /// The end of the event begun in earlier chunks.
    fn end_carried(&mut self, end: &[u8], sink: &mut impl FnMut(Piece<'_>)) {
        if self.oversized || self.carry.len() + end.len() > self.limit {
            if !self.carry.is_empty() {
                sink(Piece::Oversized(&self.carry));
                self.empty_carry();
            }
            self.oversized = false;
            sink(Piece::Oversized(end));
            return;
        }
        self.carry.extend_from_slice(end);
        sink(Piece::Event(&self.carry));
        self.empty_carry();
    }

    fn empty_carry(&mut self) {
        self.carry.clear();
        self.carry.shrink_to(KEPT_CAPACITY);
    }

    /// Carries the start of an unfinished event, or, past `limit`, hands it
    /// on as `Oversized` and lets the rest of that event follow it.
    fn hold(&mut self, partial: &[u8], sink: &mut impl FnMut(Piece<'_>)) {
        if partial.is_empty() {
            return;
        }
        if !self.oversized && self.carry.len() + partial.len() <= self.limit {
            self.carry.extend_from_slice(partial);
            return;
        }
        if !self.carry.is_empty() {
            sink(Piece::Oversized(&self.carry));
            self.empty_carry();
        }
        self.oversized = true;
        sink(Piece::Oversized(partial));
    }

    /// The unfinished event when the stream ends (no blank line after it).
    /// Clients discard such an event; it is handed back only to be passed on.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.carry.is_empty()).then(|| std::mem::take(&mut self.carry))
    }
}

/// Whether `bytes` end with an event's end (a blank line), so an event
/// appended after them starts on its own rather than inside a cut event.
/// Decided from these bytes alone: an end split across chunks reads as
/// "no", which only costs an extra blank line.
pub fn ends_event(bytes: &[u8]) -> bool {
    let before_last_line_end = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .or_else(|| bytes.strip_suffix(b"\r"));
    before_last_line_end.is_some_and(|rest| matches!(rest.last(), Some(b'\n' | b'\r')))
}

/// `event`, added by Sluice to a stream whose relayed bytes so far did not
/// end an event when `mid_event`: then after a blank line, so it is read as
/// an event of its own and not as the rest of the upstream's cut one.
pub fn as_own_event(event: Bytes, mid_event: bool) -> Bytes {
    match mid_event {
        true => Bytes::from([&b"\n\n"[..], &event].concat()),
        false => event,
    }
}

/// Whether `bytes` are only comment lines (`:` keep-alives) and blank lines,
/// nothing a client would take as output.
pub fn only_comments(bytes: &[u8]) -> bool {
    bytes
        .split(|b| *b == b'\n' || *b == b'\r')
        .all(|line| line.is_empty() || line[0] == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(limit: usize, chunks: &[&[u8]]) -> Vec<(char, Vec<u8>)> {
        let mut splitter = Splitter::new(limit);
        let mut out = Vec::new();
        for chunk in chunks {
            splitter.feed(chunk, |piece| {
                out.push(match piece {
                    Piece::Event(bytes) => ('e', bytes.to_vec()),
                    Piece::Tail(bytes) => ('t', bytes.to_vec()),
                    Piece::Oversized(bytes) => ('o', bytes.to_vec()),
                })
            });
        }
        out
    }

    #[test]
    fn events_end_at_blank_lines_in_every_line_end() {
        let stream: &[u8] = b"data: a\n\ndata: b\r\n\r\ndata: c\r\rdata: d\r\n\n: x\n\n";
        let expected: Vec<(char, Vec<u8>)> = [
            &b"data: a\n\n"[..],
            b"data: b\r\n\r\n",
            b"data: c\r\r",
            b"data: d\r\n\n",
            b": x\n\n",
        ]
        .iter()
        .map(|e| ('e', e.to_vec()))
        .collect();
        assert_eq!(pieces(1024, &[stream]), expected);
        // Cut at every byte: the same events, the `\n` of a cut `\r\n` after
        // an event's end as its tail.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let got = pieces(1024, &bytes);
        let events: Vec<_> = got.iter().filter(|(kind, _)| *kind == 'e').collect();
        assert_eq!(events.len(), 5);
        assert_eq!(events[1].1, b"data: b\r\n\r");
        assert!(got.contains(&('t', b"\n".to_vec())));
        assert_eq!(
            got.iter().flat_map(|(_, b)| b.clone()).collect::<Vec<u8>>(),
            stream
        );
    }

    #[test]
    fn a_cr_then_lf_across_chunks_is_one_line_end() {
        // `data: a\r` + `\n` + `\n`: one line end then a blank line, not two.
        let got = pieces(1024, &[b"data: a\r", b"\n", b"\ndata: b\n\n"]);
        assert_eq!(got[0], ('e', b"data: a\r\n\n".to_vec()));
        assert_eq!(got[1], ('e', b"data: b\n\n".to_vec()));
    }

    #[test]
    fn an_oversized_event_is_handed_on_uninterpreted_with_a_bounded_carry() {
        let mut splitter = Splitter::new(100);
        let mut oversized = 0;
        for _ in 0..50 {
            splitter.feed(&[b'x'; 30], |piece| match piece {
                Piece::Oversized(bytes) => oversized += bytes.len(),
                other => panic!("{other:?}"),
            });
            assert!(splitter.carry.len() <= 100);
        }
        assert_eq!(oversized, 1500 - splitter.carry.len());
        let mut after = Vec::new();
        splitter.feed(b"\n\ndata: ok\n\n", |piece| {
            after.push(format!("{piece:?}"))
        });
        assert_eq!(after.len(), 2);
        assert!(after[1].starts_with("Event"));
        // The same event in one chunk is oversized too.
        let whole = [b'x'; 200];
        let got = pieces(100, &[&whole, b"\n\n"]);
        assert!(got.iter().all(|(kind, _)| *kind == 'o'));
        let mut one = whole.to_vec();
        one.extend_from_slice(b"\n\n");
        assert_eq!(pieces(100, &[&one]), vec![('o', one.clone())]);
    }

    #[test]
    fn an_unfinished_event_is_returned_at_the_end() {
        let mut splitter = Splitter::new(100);
        splitter.feed(b"data: a\n\ndata: b", |_| {});
        assert_eq!(splitter.finish(), Some(b"data: b".to_vec()));
        assert!(splitter.holds_nothing());
    }

    #[test]
    fn event_ends_and_comments_in_every_line_end() {
        for ended in [
            &b"data: a\n\n"[..],
            b"data: a\r\n\r\n",
            b"data: a\r\r",
            b"a\r\n\r",
            b"a\n\r\n",
        ] {
            assert!(ends_event(ended), "{}", String::from_utf8_lossy(ended));
        }
        for open in [
            &b""[..],
            b"\n",
            b"data: a\n",
            b"data: a\r\n",
            b"data: a\r",
            b"data: {",
        ] {
            assert!(!ends_event(open), "{}", String::from_utf8_lossy(open));
        }
        assert!(only_comments(b": ping\r\n\r\n:\r\r"));
        assert!(!only_comments(b": ping\n\ndata: x\n\n"));
        assert!(!only_comments(b"data:x"));
    }
}
