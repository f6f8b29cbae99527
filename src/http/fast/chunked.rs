//! The engine's chunked response body, decoded as it comes (RFC 9112 §7.1): the data is passed
//! on piece by piece, and the decoder says where the body ends, so the upstream connection can
//! go back to the pool. Chunk extensions are skipped; trailers are read and dropped (hyper drops
//! them too when the client did not ask for them).

/// The largest trailer section accepted, in bytes.
const MAX_TRAILERS: usize = 16 * 1024;

/// Where the decoder stands between two reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size (`digits` read so far).
    Size {
        n: u64,
        digits: u8,
    },
    /// Skipping a chunk extension up to CR.
    Ext {
        n: u64,
    },
    /// CR after the size line seen; LF expected.
    SizeLf {
        n: u64,
    },
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// CR after the data expected.
    DataCr,
    /// LF after the data expected.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    TrailerLine,
    /// CR ending a trailer line seen; LF expected.
    TrailerLf,
    /// CR of the final empty line seen; LF expected.
    FinalLf,
    Done,
}

/// Malformed chunked framing from the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk(pub &'static str);

impl std::fmt::Display for BadChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad chunked framing: {}", self.0)
    }
}

/// What one call to `Decoder::feed` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// Everything was consumed; the body goes on.
    More,
    /// The body ended after this many bytes of the input (the rest is not the body's).
    End(usize),
}

#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    trailer_bytes: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Size { n: 0, digits: 0 },
            trailer_bytes: 0,
        }
    }
}

impl Decoder {
    /// Decodes `input`, handing every piece of chunk data to `data` in order.
    pub fn feed(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> Result<Fed, BadChunk> {
        let mut i = 0;
        while i < input.len() {
            if let State::Data(left) = self.state {
                let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                data(&input[i..i + take]);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                continue;
            }
            let b = input[i];
            i += 1;
            self.state = self.step(b)?;
            if self.state == State::Done {
                return Ok(Fed::End(i));
            }
        }
        Ok(Fed::More)
    }

    /// The state after byte `b` (never called in `Data`).
    fn step(&mut self, b: u8) -> Result<State, BadChunk> {
        Ok(match self.state {
            State::Size { n, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits >= 16 {
                        return Err(BadChunk("chunk size too large"));
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    State::Size {
                        n: n << 4 | d,
                        digits: digits + 1,
                    }
                }
                _ if digits == 0 => return Err(BadChunk("chunk size missing")),
                b';' | b' ' | b'\t' => State::Ext { n },
                b'\r' => State::SizeLf { n },
                _ => return Err(BadChunk("invalid byte in chunk size")),
            },
            State::Ext { n } => match b {
                b'\r' => State::SizeLf { n },
                b'\n' => return Err(BadChunk("bare LF in chunk extension")),
                _ => State::Ext { n },
            },
            State::SizeLf { n } => match b {
                b'\n' if n == 0 => State::TrailerStart,
                b'\n' => State::Data(n),
                _ => return Err(BadChunk("CR without LF after chunk size")),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(BadChunk("chunk data longer than its size")),
            },
            State::DataLf => match b {
                b'\n' => State::Size { n: 0, digits: 0 },
                _ => return Err(BadChunk("CR without LF after chunk data")),
            },
            State::TrailerStart => match b {
                b'\r' => State::FinalLf,
                _ => self.trailer_byte()?,
            },
            State::TrailerLine => match b {
                b'\r' => State::TrailerLf,
                _ => self.trailer_byte()?,
            },
            State::TrailerLf => match b {
                b'\n' => State::TrailerStart,
                _ => return Err(BadChunk("CR without LF in trailers")),
            },
            State::FinalLf => match b {
                b'\n' => State::Done,
                _ => return Err(BadChunk("CR without LF at the end")),
            },
            State::Data(_) | State::Done => return Err(BadChunk("data after the last chunk")),
        })
    }

    fn trailer_byte(&mut self) -> Result<State, BadChunk> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILERS {
            return Err(BadChunk("trailers too large"));
        }
        Ok(State::TrailerLine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every `split`-th byte; returns the data and where it ended.
    fn decode(input: &[u8], split: usize) -> Result<(Vec<u8>, Option<usize>), BadChunk> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let mut at = 0;
        for piece in input.chunks(split) {
            match d.feed(piece, |b| out.extend_from_slice(b))? {
                Fed::More => at += piece.len(),
                Fed::End(n) => return Ok((out, Some(at + n))),
            }
        }
        Ok((out, None))
    }

    #[test]
    fn decodes_whatever_the_reads_split() {
        // (input, data, end offset or None while the body goes on)
        let cases: &[(&[u8], &[u8], Option<usize>)] = &[
            (b"0\r\n\r\n", b"", Some(5)),
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello", Some(15)),
            (b"5\r\nhello\r\n0\r\n\r\nHTTP", b"hello", Some(15)),
            (b"3;x=y\r\nabc\r\n0\r\n\r\n", b"abc", Some(17)),
            (
                b"A\r\n0123456789\r\n2\r\nab\r\n0\r\n\r\n",
                b"0123456789ab",
                Some(27),
            ),
            (b"0\r\nx-trailer: 1\r\n\r\n", b"", Some(19)),
            (
                b"13\r\ndata: {\"token\":0}\n\n\r\n",
                b"data: {\"token\":0}\n\n",
                None,
            ),
            (b"5\r\nhel", b"hel", None),
        ];
        for &(input, want, end) in cases {
            for split in [1, 2, 3, 7, input.len()] {
                let got = decode(input, split).unwrap_or_else(|e| panic!("{input:?}: {e}"));
                assert_eq!(got, (want.to_vec(), end), "{input:?} split {split}");
            }
        }
    }

    #[test]
    fn refuses_bad_framing() {
        for (input, why) in [
            (&b"\r\n"[..], "chunk size missing"),
            (b"x\r\n", "chunk size missing"),
            (b"5x\r\n", "invalid byte in chunk size"),
            (b"3\r\nabcd\r\n", "chunk data longer than its size"),
            (b"3\rabc", "CR without LF after chunk size"),
            (b"11111111111111111\r\n", "chunk size too large"),
            (b"1;ext\n", "bare LF in chunk extension"),
        ] {
            assert_eq!(decode(input, 1), Err(BadChunk(why)), "{input:?}");
        }
    }

    #[test]
    fn trailers_are_bounded() {
        let mut input = b"0\r\nx: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_TRAILERS));
        input.extend_from_slice(b"\r\n\r\n");
        assert_eq!(decode(&input, 4096), Err(BadChunk("trailers too large")));
    }
}
