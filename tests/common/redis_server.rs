//! A `redis-server` of a test's own, on a free loopback port with a temporary directory,
//! stopped when the test ends; and the faults a test injects into it.

use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A `redis-server` of this test's own.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let dir = std::env::temp_dir().join(format!("arc-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut server = Self {
            child: None,
            port,
            dir,
        };
        server.spawn();
        server
    }

    pub fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start redis-server ({err}): install it with \
                     `sudo apt-get install redis-server` (Debian/Ubuntu), \
                     or run the tests without `--all-features`"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A command on a connection of the test's own (not the store's).
    pub fn command(&self, args: &[&[u8]]) -> redis::Value {
        let client = redis::Client::open(self.url()).expect("url");
        let mut con = client.get_connection().expect("connect");
        let mut cmd = redis::cmd(std::str::from_utf8(args[0]).expect("utf-8 command"));
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut con).expect("command")
    }

    /// The entry keys the store wrote (a test may use KEYS; the store never does).
    pub fn entry_keys(&self) -> Vec<Vec<u8>> {
        let client = redis::Client::open(self.url()).expect("url");
        let mut con = client.get_connection().expect("connect");
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg("arc:*")
            .query(&mut con)
            .expect("keys");
        keys.into_iter()
            .filter(|k| k.windows(2).any(|w| w == b"}e"))
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisServer {
    /// The server's process id.
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Freezes the server (`SIGSTOP`): connections stay open, nothing is answered.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (`SIGCONT`).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Kills the server and starts it again on the same port, empty.
    pub fn restart_empty(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Blocks the server for `secs` (`DEBUG SLEEP`), from a thread of its own; returns at once.
    pub fn sleep_in_background(&self, secs: f64) -> std::thread::JoinHandle<()> {
        let url = self.url();
        std::thread::spawn(move || {
            let client = redis::Client::open(url).expect("url");
            if let Ok(mut con) = client.get_connection() {
                let _: redis::RedisResult<()> = redis::cmd("DEBUG")
                    .arg("SLEEP")
                    .arg(secs.to_string())
                    .query(&mut con);
            }
        })
    }
}
