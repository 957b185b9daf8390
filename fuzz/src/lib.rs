//! What the fuzz targets share: turning one fuzz input into a stream and the
//! pieces it arrives in, the way a network cuts it.

/// The first byte says how many of the following bytes are piece lengths
/// (0-15; each length is that byte plus one, used in turn); the rest is the
/// stream. Returns the stream and its pieces, which concatenate to it.
pub fn cut(data: &[u8]) -> (&[u8], Vec<&[u8]>) {
    let Some((&count, rest)) = data.split_first() else {
        return (&[], Vec::new());
    };
    let (sizes, stream) = rest.split_at(usize::from(count % 16).min(rest.len()));
    let mut sizes = sizes.iter().map(|size| usize::from(*size) + 1).cycle();
    let mut pieces = Vec::new();
    let mut remaining = stream;
    while !remaining.is_empty() {
        let size = sizes.next().unwrap_or(remaining.len()).min(remaining.len());
        let (piece, tail) = remaining.split_at(size);
        pieces.push(piece);
        remaining = tail;
    }
    (stream, pieces)
}
