//! The load generator's HTTP/1.1 client and its latency histogram.
//!
//! Heartbeats go through a minimal keep-alive client written for this purpose: the load
//! generator shares two cores with the server it measures, so every microsecond it spends per
//! request is taken from the server. A general-purpose client (reqwest) costs several times
//! more per request; it is still used for the few large or long requests (lists, the event
//! stream, readiness), where its cost does not matter.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection that sends a request and reads its whole answer, in turn.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    request: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            request: Vec::with_capacity(512),
        })
    }

    /// `POST path` with a JSON `body`; returns the status, the answer's body discarded.
    pub async fn post_json(&mut self, path: &str, body: &[u8]) -> io::Result<u16> {
        self.send_post(path, body).await?;
        self.read_response(None).await
    }

    /// `POST path` with a JSON `body`; returns the status, the answer's body in `answer`.
    pub async fn post_json_answer(
        &mut self,
        path: &str,
        body: &[u8],
        answer: &mut Vec<u8>,
    ) -> io::Result<u16> {
        self.send_post(path, body).await?;
        self.read_response(Some(answer)).await
    }

    async fn send_post(&mut self, path: &str, body: &[u8]) -> io::Result<()> {
        use std::io::Write;
        self.request.clear();
        write!(
            self.request,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            super::child::AGENT_TOKEN,
            body.len()
        )?;
        self.request.extend_from_slice(body);
        self.stream.write_all(&self.request).await
    }

    /// `GET path`; returns the status, the answer's body discarded.
    pub async fn get(&mut self, path: &str) -> io::Result<u16> {
        use std::io::Write;
        self.request.clear();
        write!(
            self.request,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )?;
        self.stream.write_all(&self.request).await?;
        self.read_response(None).await
    }

    /// Reads one response with a `Content-Length` body (every answer of the heartbeat routes);
    /// its body into `answer` when given.
    async fn read_response(&mut self, answer: Option<&mut Vec<u8>>) -> io::Result<u16> {
        loop {
            if let Some(head_end) = find(&self.buf, b"\r\n\r\n") {
                let head = &self.buf[..head_end];
                let status = parse_status(head)?;
                let length = content_length(head)?;
                let total = head_end + 4 + length;
                while self.buf.len() < total {
                    self.fill().await?;
                }
                if let Some(answer) = answer {
                    answer.clear();
                    answer.extend_from_slice(&self.buf[head_end + 4..total]);
                }
                self.buf.drain(..total);
                return Ok(status);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status(head: &[u8]) -> io::Result<u16> {
    head.get(9..12)
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("malformed status line"))
}

fn content_length(head: &[u8]) -> io::Result<usize> {
    let text = std::str::from_utf8(head).map_err(|_| invalid("non-UTF-8 response head"))?;
    for line in text.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                return value
                    .trim()
                    .parse()
                    .map_err(|_| invalid("malformed Content-Length"));
            }
        }
    }
    Err(invalid("response without Content-Length"))
}

/// Latencies in nanoseconds, in log-linear buckets: exact below 64 ns, then 32 buckets per
/// power of two (at most ~3% error), so recording costs an add and quantiles need no sort.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; 64 * 32],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn index(value: u64) -> usize {
        if value < 64 {
            return value as usize;
        }
        let exponent = 63 - value.leading_zeros() as usize;
        let mantissa = (value >> (exponent - 5)) as usize;
        (exponent - 5) * 32 + mantissa
    }

    /// The middle of bucket `index`.
    fn value(index: usize) -> u64 {
        if index < 64 {
            return index as u64;
        }
        let exponent = index / 32 + 4;
        let mantissa = (index % 32 + 32) as u64;
        let low = mantissa << (exponent - 5);
        low + (1u64 << (exponent - 5)) / 2
    }

    pub fn record(&mut self, nanos: u64) {
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
        self.max = self.max.max(nanos);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1) in nanoseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::value(index).min(self.max);
            }
        }
        self.max
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for value in (0..1_000_000u64).step_by(7).chain([u32::MAX as u64]) {
            let index = Histogram::index(value);
            assert!(index >= last);
            last = index;
            let back = Histogram::value(index) as f64;
            assert!(
                (back - value as f64).abs() <= value as f64 * 0.04 + 1.0,
                "{value}"
            );
        }
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let mut histogram = Histogram::default();
        for value in 1..=1000u64 {
            histogram.record(value * 1000);
        }
        let p50 = histogram.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() < 20_000.0, "{p50}");
        assert_eq!(histogram.quantile(1.0), 1_000_000);
    }
}
