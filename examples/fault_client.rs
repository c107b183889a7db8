//! The load generator and checker of the fault benchmark (`benches/faults.sh`). Not a usage
//! example. Plain std: threads, `TcpStream`, HTTP/1.1 keep-alive, a minimal response parser.
//!
//! ```sh
//! cargo run --release --example fault_client -- \
//!     127.0.0.1:8091 127.0.0.1:8092 12 20 8 /tmp/timeline.txt
//! ```
//!
//! Arguments: the two servers (`examples/fault_server.rs`), the duration in seconds, the
//! number of items, the number of threads and, optionally, a file for the timeline.
//!
//! Each thread picks a random item and a random server, then:
//! - one time in four, a write: `GET /items/{id}` (its ETag and version), then `PATCH` with
//!   `If-Match: <etag>` and the version as the body. A `2xx` is a completed write: its new
//!   version is recorded as the item's known version (a per-item maximum). `412` and `503`
//!   are refusals (the cache doing its job). A `GET` without an ETag skips the write.
//! - otherwise a read: `GET /items/{id}`, noting the item's known version *before* sending. A
//!   `2xx` with a lower version is a **stale read**: it was served after a write completed,
//!   and does not show it. The `GET` of a write is checked the same way.
//!
//! At the end, one line on stdout:
//! `requests=N non2xx=N refused412=N unavailable503=N not_modified304=N errors=N stale=N
//! writes=N noetag=N max_ms=N lost=N`, where `non2xx` excludes 304, 412 and 503, `errors` are
//! transport failures (connect, timeout, reset: the connection is then opened again) and
//! `lost` is the server's lost-update counter (`GET /lost`).
//!
//! The timeline file has one line per 100 ms of the run: `unix_ms ok failed`, the requests that
//! completed in that slot with a `2xx` (or `412`) and those that failed (`503`, another
//! non-`2xx`, or a transport error). The benchmark script computes the time to recover from it.

use std::{
    io::{self, BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

const SLOT: Duration = Duration::from_millis(100);
/// Long enough for a write waiting on its locks and collects (5 s each at most).
const READ_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    non2xx: AtomicU64,
    refused412: AtomicU64,
    unavailable503: AtomicU64,
    not_modified304: AtomicU64,
    errors: AtomicU64,
    stale: AtomicU64,
    writes: AtomicU64,
    noetag: AtomicU64,
    max_us: AtomicU64,
}

struct Shared {
    counters: Counters,
    /// Per item, the highest version a completed write answered with.
    known: Vec<AtomicU64>,
    /// Per slot of the run: requests that completed well, and those that failed.
    slots: Vec<(AtomicU64, AtomicU64)>,
    start: Instant,
}

impl Shared {
    fn record(&self, latency: Duration, outcome: &io::Result<Response>) {
        let c = &self.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.max_us
            .fetch_max(latency.as_micros() as u64, Ordering::Relaxed);
        let healthy = match outcome {
            Ok(r) if (200..300).contains(&r.status) => true,
            Ok(r) if r.status == 304 => {
                c.not_modified304.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(r) if r.status == 412 => {
                c.refused412.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(r) if r.status == 503 => {
                c.unavailable503.fetch_add(1, Ordering::Relaxed);
                false
            }
            Ok(_) => {
                c.non2xx.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(_) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        let slot = (self.start.elapsed().as_nanos() / SLOT.as_nanos()) as usize;
        if let Some((ok, failed)) = self.slots.get(slot) {
            if healthy { ok } else { failed }.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Response {
    status: u16,
    etag: Option<String>,
    body: Vec<u8>,
}

impl Response {
    /// The version in a `{id}:{version}` body.
    fn version(&self) -> Option<u64> {
        let body = std::str::from_utf8(&self.body).ok()?;
        body.rsplit_once(':')?.1.trim().parse().ok()
    }
}

/// One keep-alive connection to one server, opened again after any error.
struct Connection {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl Connection {
    fn new(addr: SocketAddr) -> Self {
        Self { addr, stream: None }
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let result = self.try_send(method, path, headers, body);
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn try_send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(READ_TIMEOUT))?;
            stream.set_write_timeout(Some(READ_TIMEOUT))?;
            self.stream = Some(BufReader::new(stream));
        }
        let reader = self.stream.as_mut().expect("connected above");
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method != "GET" {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        reader.get_mut().write_all(&bytes)?;

        let (response, close) = read_response(reader, method == "HEAD")?;
        if close {
            self.stream = None;
        }
        Ok(response)
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Reads one response; the flag says whether the server closes the connection after it.
fn read_response(reader: &mut impl BufRead, head: bool) -> io::Result<(Response, bool)> {
    let status_line = read_line(reader)?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("status line"))?;
    let (mut length, mut chunked, mut close, mut etag) = (None, false, false, None);
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid("header line"));
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.parse().map_err(|_| invalid("length"))?),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "etag" => etag = Some(value.to_owned()),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if head || status == 204 || status == 304 || (100..200).contains(&status) {
    } else if chunked {
        loop {
            let size = read_line(reader)?;
            let size = size.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| invalid("chunk size"))?;
            if size == 0 {
                while !read_line(reader)?.is_empty() {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            read_line(reader)?;
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
        close = true;
    }
    Ok((Response { status, etag, body }, close))
}

/// xorshift64*: enough randomness to spread the requests, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) % n
    }
}

fn timed(
    shared: &Shared,
    connection: &mut Connection,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let sent = Instant::now();
    let outcome = connection.send(method, path, headers, body);
    shared.record(sent.elapsed(), &outcome);
    outcome
}

/// A `GET`, checked against the version known to be complete before it was sent.
fn read_item(shared: &Shared, connection: &mut Connection, item: usize) -> Option<Response> {
    let known = shared.known[item].load(Ordering::SeqCst);
    let response = timed(
        shared,
        connection,
        "GET",
        &format!("/items/{item}"),
        &[],
        b"",
    )
    .ok()?;
    if !(200..300).contains(&response.status) {
        return None;
    }
    if response.version().is_some_and(|v| v < known) {
        shared.counters.stale.fetch_add(1, Ordering::Relaxed);
    }
    Some(response)
}

fn write_item(shared: &Shared, connection: &mut Connection, item: usize) {
    let Some(current) = read_item(shared, connection, item) else {
        return;
    };
    let (Some(etag), Some(version)) = (current.etag.as_deref(), current.version()) else {
        shared.counters.noetag.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let path = format!("/items/{item}");
    let body = version.to_string();
    let headers = [("If-Match", etag), ("Content-Type", "text/plain")];
    if let Ok(response) = timed(
        shared,
        connection,
        "PATCH",
        &path,
        &headers,
        body.as_bytes(),
    ) {
        if (200..300).contains(&response.status) {
            shared.counters.writes.fetch_add(1, Ordering::Relaxed);
            if let Some(new) = response.version() {
                shared.known[item].fetch_max(new, Ordering::SeqCst);
            }
        }
    }
}

fn worker(shared: Arc<Shared>, servers: [SocketAddr; 2], deadline: Instant, seed: u64) {
    let mut connections = servers.map(Connection::new);
    let mut rng = Rng(seed | 1);
    let items = shared.known.len() as u64;
    while Instant::now() < deadline {
        let item = rng.below(items) as usize;
        let connection = &mut connections[rng.below(2) as usize];
        if rng.below(4) == 0 {
            write_item(&shared, connection, item);
        } else {
            read_item(&shared, connection, item);
        }
    }
}

fn resolve(addr: &str) -> SocketAddr {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("cannot resolve {addr}"))
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: fault_client ADDR_A ADDR_B SECS ITEMS THREADS [TIMELINE_FILE]");
        eprintln!("missing or invalid {name}");
        std::process::exit(2)
    })
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let servers = [
        resolve(&arg::<String>(&args, 0, "ADDR_A")),
        resolve(&arg::<String>(&args, 1, "ADDR_B")),
    ];
    let secs: u64 = arg(&args, 2, "SECS");
    let items: usize = arg(&args, 3, "ITEMS");
    let threads: u64 = arg(&args, 4, "THREADS");
    let timeline = args.get(5);

    let start_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let start = Instant::now();
    // Slots for the run and for the slow answers that complete after it (up to the timeout).
    let slot_count = ((secs + READ_TIMEOUT.as_secs() + 1) * 10) as usize;
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        known: (0..items.max(1)).map(|_| AtomicU64::new(0)).collect(),
        slots: (0..slot_count)
            .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
            .collect(),
        start,
    });
    let deadline = start + Duration::from_secs(secs);
    let seed = start_unix as u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let shared = Arc::clone(&shared);
            let seed = seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            std::thread::spawn(move || worker(shared, servers, deadline, seed))
        })
        .collect();
    for handle in handles {
        handle.join().expect("a client thread panicked");
    }
    let end_slot = (start.elapsed().as_nanos() / SLOT.as_nanos()) as usize + 1;

    let lost = Connection::new(servers[0])
        .send("GET", "/lost", &[], b"")
        .ok()
        .and_then(|r| String::from_utf8(r.body).ok())
        .map_or_else(|| "?".to_owned(), |b| b.trim().to_owned());

    if let Some(path) = timeline {
        let mut out = io::BufWriter::new(std::fs::File::create(path)?);
        for (i, (ok, failed)) in shared.slots.iter().take(end_slot).enumerate() {
            let at = start_unix + (i as u128) * SLOT.as_millis();
            let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
            writeln!(out, "{at} {ok} {failed}")?;
        }
        out.flush()?;
    }

    let c = &shared.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "requests={} non2xx={} refused412={} unavailable503={} not_modified304={} errors={} \
         stale={} writes={} noetag={} max_ms={} lost={lost}",
        get(&c.requests),
        get(&c.non2xx),
        get(&c.refused412),
        get(&c.unavailable503),
        get(&c.not_modified304),
        get(&c.errors),
        get(&c.stale),
        get(&c.writes),
        get(&c.noetag),
        get(&c.max_us) / 1000,
    );
    Ok(())
}
