//! dcmtk as the peer: test files made with `dump2dcm`, and `storescp`, `dcmqrscp` and
//! `wlmscpfs` started on loopback. Shared by the crate's tests, the CLI's tests and the
//! benchmark (`#[path]`). `scripts/test` installs dcmtk from the distribution's packages.
#![allow(dead_code)] // each user takes a different subset

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// CT Image Storage.
pub const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// MR Image Storage.
pub const MR_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.4";

/// A dcmtk program. dcmtk installs into /usr/bin; pynetdicom's console scripts of the same
/// names may come first on PATH, so never look it up there. `OUTPOST_DCMTK_DIR` overrides.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("OUTPOST_DCMTK_DIR")
        .map_or_else(|| PathBuf::from("/usr/bin"), PathBuf::from);
    let path = dir.join(name);
    assert!(
        path.exists(),
        "dcmtk's {name} is not at {}: run scripts/test, which installs dcmtk",
        path.display()
    );
    path
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "outpost-dicom-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port number for a dcmtk server, which takes one on its command line and cannot be handed
/// a bound socket: the one place a port is found free, released and bound again.
pub fn port_for_peer() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A dcmtk server; killed when dropped. Its output goes to `log`.
pub struct Server {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Server {
    /// Starts `name args...` in `dir` and waits until it listens on `port`.
    pub fn start(name: &str, dir: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Server {
        let log = dir.join(format!("{name}-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin(name));
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut s = Server { child, port, log };
        s.wait_listening(name);
        s
    }

    fn wait_listening(&mut self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{name} exited with {status}:\n{}", self.log_text());
            }
            // Connect and close: the server logs a failed association and carries on.
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                std::thread::sleep(Duration::from_millis(50));
                return;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        panic!(
            "{name} did not listen on {} within 15 s:\n{}",
            self.port,
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What goes into a test image.
pub struct Spec<'a> {
    pub sop_class: &'a str,
    pub sop_instance: &'a str,
    pub patient_name: &'a str,
    pub patient_id: &'a str,
    pub study_uid: &'a str,
    pub study_date: &'a str,
    pub modality: &'a str,
    /// Rows = columns; 16-bit pixels in OW.
    pub size: usize,
    /// Adds a ReferencedImageSequence with one item (to exercise sequences).
    pub with_sequence: bool,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            sop_class: CT_IMAGE,
            sop_instance: "2.25.1002",
            patient_name: "Doe^John",
            patient_id: "PID001",
            study_uid: "2.25.1000",
            study_date: "20240101",
            modality: "CT",
            size: 8,
            with_sequence: true,
        }
    }
}

/// Writes `name` in `dir` with `dump2dcm` (`explicit`: Explicit VR LE, else Implicit).
pub fn make_file(dir: &Path, name: &str, explicit: bool, spec: &Spec) -> PathBuf {
    let px = dir.join(format!("{name}.raw"));
    let pixels: Vec<u8> = (0..spec.size * spec.size * 2)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(&px, pixels).unwrap();
    let sequence = if spec.with_sequence {
        "(0008,1140) SQ (Sequence with undefined length)\n\
         (fffe,e000) na (Item with undefined length)\n\
         (0008,1150) UI [1.2.840.10008.5.1.4.1.1.2]\n\
         (0008,1155) UI [2.25.999]\n\
         (fffe,e00d) na (ItemDelimitationItem)\n\
         (fffe,e0dd) na (SequenceDelimitationItem)\n"
    } else {
        ""
    };
    let dump = format!(
        "(0008,0016) UI [{}]\n(0008,0018) UI [{}]\n(0008,0020) DA [{}]\n(0008,0050) SH [ACC{}]\n\
         (0008,0060) CS [{}]\n(0008,1030) LO [Test study]\n{sequence}\
         (0010,0010) PN [{}]\n(0010,0020) LO [{}]\n(0010,0030) DA [19700101]\n(0010,0040) CS [O]\n\
         (0020,000d) UI [{}]\n(0020,000e) UI [{}.1]\n(0020,0010) SH [1]\n(0020,0011) IS [1]\n(0020,0013) IS [1]\n\
         (0028,0002) US 1\n(0028,0004) CS [MONOCHROME2]\n(0028,0010) US {}\n(0028,0011) US {}\n\
         (0028,0100) US 16\n(0028,0101) US 16\n(0028,0102) US 15\n(0028,0103) US 0\n\
         (7fe0,0010) OW ={}\n",
        spec.sop_class,
        spec.sop_instance,
        spec.study_date,
        spec.patient_id,
        spec.modality,
        spec.patient_name,
        spec.patient_id,
        spec.study_uid,
        spec.study_uid,
        spec.size,
        spec.size,
        px.display(),
    );
    let dump_path = dir.join(format!("{name}.dump"));
    std::fs::write(&dump_path, dump).unwrap();
    let out = dir.join(name);
    let st = Command::new(bin("dump2dcm"))
        .arg(if explicit { "+te" } else { "+ti" })
        .arg(&dump_path)
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "dump2dcm failed for {name}");
    let _ = std::fs::remove_file(px);
    out
}

/// The data set bytes of a Part 10 file (after the meta group) and its transfer syntax.
pub fn data_set_of(path: &Path) -> (String, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let (meta, offset) = dicom_net::part10::read_meta(&bytes).unwrap();
    (meta.transfer_syntax, bytes[offset..].to_vec())
}

/// `storescp` (AE STORESCP) writing bit-preserved files to `dir/in` (or `--ignore`).
pub fn storescp(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let port = port_for_peer();
    let out = dir.join("in");
    std::fs::create_dir_all(&out).unwrap();
    let port_s = port.to_string();
    let out_s = out.display().to_string();
    let mut args = vec!["-aet", "STORESCP", "-od", &out_s, "+B"];
    args.extend_from_slice(extra);
    args.push(&port_s);
    Server::start("storescp", dir, port, &args, env)
}

/// `dcmqrscp` (AE QRSCP, fork mode) with an empty database under `dir/db`.
pub fn dcmqrscp(dir: &Path) -> Server {
    let port = port_for_peer();
    std::fs::create_dir_all(dir.join("db")).unwrap();
    let cfg = format!(
        "NetworkTCPPort  = {port}\nMaxPDUSize      = 16384\nMaxAssociations = 16\n\n\
         HostTable BEGIN\nHostTable END\n\nVendorTable BEGIN\nVendorTable END\n\n\
         AETable BEGIN\nQRSCP       db            RW      (200, 1024mb)  ANY\nAETable END\n"
    );
    std::fs::write(dir.join("dcmqrscp.cfg"), cfg).unwrap();
    Server::start("dcmqrscp", dir, port, &["-c", "dcmqrscp.cfg"], &[])
}

/// `wlmscpfs` answering for AE WLSCP from one complete worklist entry (with a Scheduled
/// Procedure Step sequence).
pub fn wlmscpfs(dir: &Path) -> Server {
    let wl = dir.join("wl/WLSCP");
    std::fs::create_dir_all(&wl).unwrap();
    std::fs::write(wl.join("lockfile"), b"").unwrap();
    let dump = "(0008,0005) CS [ISO_IR 100]\n(0008,0050) SH [ACC100]\n(0010,0010) PN [Worklist^Patient]\n\
        (0010,0020) LO [PID100]\n(0010,0030) DA [19700101]\n(0010,0040) CS [O]\n(0020,000d) UI [2.25.2000]\n\
        (0032,1060) LO [CT HEAD]\n(0040,0100) SQ (Sequence with undefined length)\n\
        (fffe,e000) na (Item with undefined length)\n(0008,0060) CS [CT]\n(0040,0001) AE [CTSCANNER]\n\
        (0040,0002) DA [20240102]\n(0040,0003) TM [090000]\n(0040,0006) PN [Tech^One]\n\
        (0040,0007) LO [CT HEAD W/O]\n(0040,0009) SH [SPS100]\n(0040,0010) SH [CT1]\n\
        (fffe,e00d) na (ItemDelimitationItem)\n(fffe,e0dd) na (SequenceDelimitationItem)\n\
        (0040,1001) SH [RP100]\n";
    std::fs::write(dir.join("wl1.dump"), dump).unwrap();
    let st = Command::new(bin("dump2dcm"))
        .args(["+te", "wl1.dump", "wl/WLSCP/wl1.wl"])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "dump2dcm failed for the worklist file");
    let port = port_for_peer();
    let port_s = port.to_string();
    Server::start("wlmscpfs", dir, port, &["-v", "-dfp", "wl", &port_s], &[])
}

/// `storescp` (AE STORESCP, bit-preserving, into `dir/in`) accepting only `transfer_syntaxes`
/// for `sop_classes` (and Verification), through a configuration profile (`-xf`): the way to
/// make dcmtk accept exactly one syntax, such as Explicit VR LE alone.
pub fn storescp_only(dir: &Path, transfer_syntaxes: &[&str], sop_classes: &[&str]) -> Server {
    let mut cfg = String::from("[[TransferSyntaxes]]\n[Only]\n");
    for (i, ts) in transfer_syntaxes.iter().enumerate() {
        cfg += &format!("TransferSyntax{} = {ts}\n", i + 1);
    }
    cfg += "[Echo]\nTransferSyntax1 = 1.2.840.10008.1.2\n";
    cfg += "\n[[PresentationContexts]]\n[Contexts]\n";
    cfg += "PresentationContext1 = 1.2.840.10008.1.1\\Echo\n";
    for (i, sop) in sop_classes.iter().enumerate() {
        cfg += &format!("PresentationContext{} = {sop}\\Only\n", i + 2);
    }
    cfg += "\n[[Profiles]]\n[Only]\nPresentationContexts = Contexts\n";
    static CONFIGS: AtomicUsize = AtomicUsize::new(0);
    let name = format!("storescp-{}.cfg", CONFIGS.fetch_add(1, Ordering::Relaxed));
    std::fs::write(dir.join(&name), cfg).unwrap();
    let path = dir.join(&name).display().to_string();
    storescp(dir, &["-xf", &path, "Only"], &[])
}

/// The file storescp wrote into `dir/in` for `sop_instance`.
pub fn stored(dir: &Path, sop_instance: &str) -> PathBuf {
    let name = std::fs::read_dir(dir.join("in"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(sop_instance))
        });
    name.unwrap_or_else(|| panic!("storescp wrote no file for {sop_instance}"))
}

/// The repository's root (where Cargo.lock is), from any package of the workspace.
pub fn workspace_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("Cargo.lock").exists() {
        assert!(
            dir.pop(),
            "no Cargo.lock above {}",
            env!("CARGO_MANIFEST_DIR")
        );
    }
    dir
}

/// A field case's input (`crates/dicom-net/tests/cases/`: case 08, odd-length Pixel Data;
/// case 10, a private UN sequence of undefined length).
pub fn case_file(name: &str) -> PathBuf {
    workspace_root()
        .join("crates/dicom-net/tests/cases")
        .join(name)
}

/// The Python of the venv holding pydicom and pynetdicom (`ensure_pydicom` in
/// scripts/peers.sh exports `OUTPOST_PYDICOM`).
pub fn pydicom_python() -> PathBuf {
    let dir = std::env::var_os("OUTPOST_PYDICOM").map_or_else(
        || workspace_root().join(".tools/python/pydicom"),
        PathBuf::from,
    );
    let py = dir.join("bin/python");
    assert!(
        py.exists(),
        "pydicom is not installed at {}: run `source scripts/peers.sh && ensure_pydicom`",
        dir.display()
    );
    py
}

/// The test files pydicom's wheel ships (real files written by GDCM, dcmtk and vendors).
pub fn pydicom_test_files() -> PathBuf {
    let out = Command::new(pydicom_python())
        .args([
            "-c",
            "import os, pydicom; print(os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files'))",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Compares each (original, stored) pair element by element with pydicom
/// (`pydicom_compare.py`); returns the lines of the pairs that differ.
pub fn pydicom_differences(pairs: &[(PathBuf, PathBuf)]) -> Vec<String> {
    use std::io::Write;
    let script = workspace_root().join("crates/dicom-net/tests/pydicom_compare.py");
    let mut child = Command::new(pydicom_python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for (a, b) in pairs {
        input += &format!("{}\t{}\n", a.display(), b.display());
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().count(),
        pairs.len(),
        "pydicom_compare.py: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter(|l| !l.starts_with("SAME "))
        .map(str::to_owned)
        .collect()
}

/// The data set as dcmdump prints it, element by element with values, without lengths and
/// without how sequences and items were delimited (which a conversion may change).
pub fn dcmdump_elements(path: &Path) -> Vec<String> {
    let out = Command::new(bin("dcmdump"))
        .args(["+L", "-q"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "dcmdump {}", path.display());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut in_data_set = false;
    let mut lines = Vec::new();
    for l in text.lines() {
        if l.starts_with("# Dicom-Data-Set") {
            in_data_set = true;
            continue;
        }
        let l = l.trim();
        if !in_data_set || l.starts_with('#') || l.is_empty() || l.starts_with("(fffe,e0") {
            continue;
        }
        let l = l.split(" #").next().unwrap_or(l).trim_end();
        let l = match l.find(" SQ (Sequence") {
            Some(i) => format!("{} SQ", &l[..i]),
            None => l.to_owned(),
        };
        lines.push(l);
    }
    lines
}
