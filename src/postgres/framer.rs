//! Finds message boundaries in a byte stream as it passes, without
//! buffering whole messages: the relay forwards each read as it came and
//! only the bodies of the few message types it inspects are copied (up to
//! a cap).

use super::wire::WireError;

/// How much of an inspected message body is kept.
const CAPTURE_LIMIT: usize = 64 * 1024;

pub struct Framer {
    header: [u8; 5],
    /// Header bytes of the current message seen so far (5 = in the body).
    have: usize,
    remaining: usize,
    capturing: bool,
    capture: Vec<u8>,
    size_limit: usize,
    wants: fn(u8) -> bool,
}

impl Framer {
    /// `wants(tag)` selects the messages whose bodies are handed over;
    /// `size_limit` caps any message's body.
    pub fn new(wants: fn(u8) -> bool, size_limit: usize) -> Self {
        Self {
            header: [0; 5],
            have: 0,
            remaining: 0,
            capturing: false,
            capture: Vec::new(),
            size_limit,
            wants,
        }
    }

    /// Walks `data`; calls `on_message(tag, body)` for each message that
    /// ends in it (`body` is empty for messages not wanted).
    pub fn feed(
        &mut self,
        mut data: &[u8],
        on_message: &mut impl FnMut(u8, &[u8]),
    ) -> Result<(), WireError> {
        while !data.is_empty() {
            if self.have < 5 {
                let n = (5 - self.have).min(data.len());
                self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have == 5 {
                    self.start_body()?;
                    if self.remaining == 0 {
                        self.finish(on_message);
                    }
                }
                continue;
            }
            let n = self.remaining.min(data.len());
            if self.capturing {
                let room = CAPTURE_LIMIT.saturating_sub(self.capture.len()).min(n);
                self.capture.extend_from_slice(&data[..room]);
            }
            self.remaining -= n;
            data = &data[n..];
            if self.remaining == 0 {
                self.finish(on_message);
            }
        }
        Ok(())
    }

    fn start_body(&mut self) -> Result<(), WireError> {
        let [tag, length @ ..] = self.header;
        let length = i32::from_be_bytes(length);
        if length < 4 {
            return Err(WireError::BadMessageLength(length.into()));
        }
        let size = length as usize - 4;
        if size > self.size_limit {
            return Err(WireError::TooLarge {
                size,
                limit: self.size_limit,
            });
        }
        self.remaining = size;
        self.capturing = (self.wants)(tag);
        self.capture.clear();
        Ok(())
    }

    fn finish(&mut self, on_message: &mut impl FnMut(u8, &[u8])) {
        on_message(self.header[0], &self.capture);
        self.have = 0;
        self.capture.clear();
        if self.capture.capacity() > CAPTURE_LIMIT {
            self.capture.shrink_to(1024);
        }
    }

    /// Between two messages: a good place to insert one of our own.
    pub fn at_boundary(&self) -> bool {
        self.have == 0
    }

    /// Bytes still needed to reach the next boundary (a lower bound while
    /// the header is incomplete).
    pub fn bytes_to_boundary(&self) -> usize {
        match self.have {
            0 => 0,
            5 => self.remaining,
            partial => 5 - partial,
        }
    }
}

#[cfg(test)]
mod tests;
