//! Private Redis and PostgreSQL servers on loopback for the scale-out tests and benchmark,
//! started from the distribution's packages (`scripts/peers.sh` installs them) and gone when
//! dropped.
//!
//! Neither server can bind port 0 and say which port it got, so a port is picked (bound and
//! released) and the server started on it; if another process took the port meanwhile, the
//! server fails to listen and is started again on another port (up to five times): the race
//! costs a retry, never a flaky test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago.
fn pick_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `port` accepts connections; `false` if `child` exited first (the port was
/// taken) or 30 s passed.
fn wait_port(port: u16, child: Option<&mut Child>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut child = child;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if let Some(c) = child.as_deref_mut()
            && c.try_wait().ok().flatten().is_some()
        {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

use crate::process::scratch;

/// `redis-server` with no persistence.
pub struct Redis {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    tls: bool,
}

/// PEM files for a server certificate: (CA, certificate, key).
pub type TlsFiles<'a> = (
    &'a std::path::Path,
    &'a std::path::Path,
    &'a std::path::Path,
);

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(None)
    }

    /// Listening on TLS only (no plaintext port), with this certificate.
    pub fn start_tls(files: TlsFiles<'_>) -> Redis {
        Redis::start_with(Some(files))
    }

    fn start_with(tls: Option<TlsFiles<'_>>) -> Redis {
        let bin = std::env::var_os("OUTPOST_REDIS_SERVER")
            .map_or_else(|| PathBuf::from("/usr/bin/redis-server"), PathBuf::from);
        assert!(
            bin.exists(),
            "redis-server is not at {}: run scripts/test, which installs it",
            bin.display()
        );
        let dir = scratch("redis");
        let log = dir.join("redis.log");
        for _ in 0..5 {
            let port = pick_port();
            let mut child = Redis::command(&bin, port, tls, &dir, &log);
            if wait_port(port, Some(&mut child)) {
                return Redis {
                    child,
                    port,
                    dir,
                    tls: tls.is_some(),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "redis-server did not listen:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn command(
        bin: &std::path::Path,
        port: u16,
        tls: Option<TlsFiles<'_>>,
        dir: &std::path::Path,
        log: &std::path::Path,
    ) -> Child {
        let mut cmd = Command::new(bin);
        match tls {
            None => cmd.args(["--port", &port.to_string()]),
            Some((ca, cert, key)) => cmd
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .args(["--tls-auth-clients", "no"]),
        };
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The PostgreSQL server binaries: `OUTPOST_PG_BIN`, else the newest under /usr/lib/postgresql.
fn pg_bin() -> PathBuf {
    if let Some(d) = std::env::var_os("OUTPOST_PG_BIN") {
        return PathBuf::from(d);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|r| {
            r.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL is not installed under /usr/lib/postgresql: run scripts/test, which installs it")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a PostgreSQL program, as the `postgres` user when we are root (initdb refuses root).
fn pg_command(program: &str) -> Command {
    let path = pg_bin().join(program);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

/// A throwaway PostgreSQL cluster (trust authentication, no fsync).
pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
}

impl Postgres {
    pub fn start() -> Postgres {
        Postgres::start_with(None)
    }

    /// Accepting TLS connections only (`hostssl`), with this certificate.
    pub fn start_tls(files: TlsFiles<'_>) -> Postgres {
        Postgres::start_with(Some(files))
    }

    fn start_with(tls: Option<TlsFiles<'_>>) -> Postgres {
        let dir = scratch("pg");
        if let Some((_, cert, key)) = tls {
            // The server reads them as its own user; the key must be private to it.
            std::fs::copy(cert, dir.join("server.crt")).unwrap();
            std::fs::copy(key, dir.join("server.key")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                dir.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let data = dir.join("data");
        let log = dir.join("pg.log");
        let st = pg_command("initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "initdb failed");
        if tls.is_some() {
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
        }
        for _ in 0..5 {
            let port = pick_port();
            let mut opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                dir.display()
            );
            if tls.is_some() {
                opts.push_str(&format!(
                    " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                    dir.display()
                ));
            }
            let st = pg_command("pg_ctl")
                .args(["-D"])
                .arg(&data)
                .args(["-l"])
                .arg(&log)
                .args(["-o", &opts, "-w", "start"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            // `-w` waits until the server accepts connections, or fails (port taken).
            if st.success() && wait_port(port, None) {
                return Postgres { port, dir };
            }
        }
        panic!(
            "pg_ctl start failed:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs SQL through `psql` over the server's Unix socket; its output, unaligned.
    pub fn psql(&self, sql: &str) -> String {
        let out = pg_command("psql")
            .args(["-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-At",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = pg_command("pg_ctl")
            .args(["-D"])
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
