//! Private Redis and PostgreSQL servers on loopback for the scale-out tests and benchmark,
//! started from the distribution's packages (`scripts/test` installs them) and gone when dropped.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, what: &str, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what} did not listen on {port} within 30 s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn scratch(label: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "outpost-{label}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

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
        let port = free_port();
        let dir = scratch("redis");
        let log = dir.join("redis.log");
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
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port, "redis-server", &log);
        Redis {
            child,
            port,
            dir,
            tls: tls.is_some(),
        }
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
        let port = free_port();
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
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            dir.display()
        );
        if tls.is_some() {
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
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
        assert!(
            st.success(),
            "pg_ctl start failed:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        wait_port(port, "postgres", &log);
        Postgres { port, dir }
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
