//! The session's reading and writing: buffered lines, each read bounded by the command's
//! deadline, an idle timeout and the server stopping.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// What `Lines::line` read.
pub(super) enum Got {
    Line,
    TooLong,
    Eof,
}

/// Buffered lines with a deadline per read and an idle timeout.
pub(super) struct Lines<'a, S> {
    stream: S,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    idle: Duration,
    stopping: &'a dyn Fn() -> bool,
}

impl<'a, S: Read + Write> Lines<'a, S> {
    pub(super) fn new(stream: S, idle: Duration, stopping: &'a dyn Fn() -> bool) -> Self {
        Lines {
            stream,
            buf: vec![0; 16 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            idle,
            stopping,
        }
    }

    pub(super) fn send(&mut self, text: &str) -> io::Result<()> {
        self.stream.write_all(text.as_bytes())?;
        self.stream.flush()
    }

    /// Appends one line (its line end included) to `out`. A line longer than `max` is read
    /// to its end but only its first `max` bytes are kept: `TooLong`.
    pub(super) fn line(
        &mut self,
        out: &mut Vec<u8>,
        max: usize,
        deadline: Instant,
    ) -> io::Result<Got> {
        let mut taken = 0usize;
        loop {
            if self.start == self.end && self.fill(deadline)? == 0 {
                return Ok(Got::Eof);
            }
            let chunk = &self.buf[self.start..self.end];
            let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..=i], true),
                None => (chunk, false),
            };
            let keep = part.len().min(max.saturating_sub(taken));
            out.extend_from_slice(&part[..keep]);
            taken += part.len();
            self.start += part.len();
            if done {
                return Ok(if taken > max { Got::TooLong } else { Got::Line });
            }
        }
    }

    /// One read into the empty buffer: 0 at the end of the stream.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let idle = Instant::now() + self.idle;
        loop {
            match self.stream.read(&mut self.buf) {
                Ok(n) => {
                    self.start = 0;
                    self.end = n;
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if (self.stopping)() {
                        return Err(io::Error::new(io::ErrorKind::Interrupted, "stopping"));
                    }
                    let now = Instant::now();
                    if now >= deadline || now >= idle {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
                    }
                    // A stream without a read timeout would spin here: back off a little.
                    std::thread::sleep(Duration::from_millis(5).min(deadline - now));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
