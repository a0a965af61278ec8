//! Each tool set up from nothing for one run: folders A and B, whatever
//! carries changes between them, and the counting relays in the way.
//!
//! - Tessera: one `tessera serve` (SQLite, local blocks) and two
//!   `tessera sync` daemons, devices A and B with their own profiles, each
//!   reaching the server through its own relay.
//! - rsync: `rsync --daemon` serving B as a module; A pushes with
//!   `rsync -a` through the relay. Over a daemon, rsync uses its delta
//!   transfer (it turns it off between two local folders). rsync has no
//!   watcher: the bench runs it right after each change.
//! - Syncthing: two instances knowing only each other, A dialling B
//!   through the relay, with discovery, relays, NAT traversal, usage and
//!   crash reports and upgrades off; the shared folder keeps Syncthing's
//!   defaults (file-system watcher on, its delay as configured).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::runtime::Handle;

use super::procs::{self, Proc, nap};
use super::relay::Relay;

const PASSWORD: &str = "peers-bench-pass";
const FOLDER_ID: &str = "bench";
const START_LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Kind {
    Rsync,
    Syncthing,
    Tessera,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Rsync => "rsync",
            Kind::Syncthing => "Syncthing",
            Kind::Tessera => "Tessera",
        }
    }
}

/// The programs measured and the settings the bench chooses for them.
pub struct Tools {
    pub tessera: PathBuf,
    pub rsync: PathBuf,
    pub syncthing: PathBuf,
    pub watch_delay_s: u32,
}

/// Bytes through the relays since they started. "Out" is what a side
/// sent, "in" what it received. With one relay between two peers, A's
/// out is B's in.
#[derive(Clone, Copy, Default, Debug)]
pub struct Bytes {
    pub a_out: u64,
    pub a_in: u64,
    pub b_out: u64,
    pub b_in: u64,
}

impl Bytes {
    /// Both directions on A's side of the wire.
    pub fn up(&self) -> u64 {
        self.a_out + self.a_in
    }

    /// Both directions on B's side of the wire.
    pub fn down(&self) -> u64 {
        self.b_out + self.b_in
    }

    pub fn since(&self, before: &Bytes) -> Bytes {
        Bytes {
            a_out: self.a_out - before.a_out,
            a_in: self.a_in - before.a_in,
            b_out: self.b_out - before.b_out,
            b_in: self.b_in - before.b_in,
        }
    }
}

/// One tool, running, with its two folders. Dropping it stops every
/// process, then the relays, then removes its folder (fields drop in
/// order).
pub struct Peer {
    pub kind: Kind,
    procs: Vec<Proc>,
    relays: Vec<Relay>,
    rsync_push: Option<RsyncPush>,
    pub a: PathBuf,
    pub b: PathBuf,
    /// Beside A and B, on the same file system, for changes prepared
    /// before they land.
    pub stage: PathBuf,
    logs: PathBuf,
    _root: tempfile::TempDir,
}

struct RsyncPush {
    bin: PathBuf,
    url: String,
}

impl Peer {
    pub fn start(kind: Kind, tools: &Tools, parent: &Path, rt: &Handle) -> Result<Peer> {
        let root = tempfile::Builder::new()
            .prefix(&format!("{}-", kind.label().to_lowercase()))
            .tempdir_in(parent)?;
        let dir = root.path().to_owned();
        let mut peer = Peer {
            kind,
            procs: Vec::new(),
            relays: Vec::new(),
            rsync_push: None,
            a: dir.join("A"),
            b: dir.join("B"),
            stage: dir.join("stage"),
            logs: dir.join("logs"),
            _root: root,
        };
        for d in [&peer.a, &peer.b, &peer.stage, &peer.logs] {
            std::fs::create_dir_all(d)?;
        }
        match kind {
            Kind::Tessera => peer.start_tessera(tools, rt, &dir)?,
            Kind::Rsync => peer.start_rsync(tools, rt, &dir)?,
            Kind::Syncthing => peer.start_syncthing(tools, rt, &dir)?,
        }
        Ok(peer)
    }

    pub fn bytes(&self) -> Bytes {
        match &self.relays[..] {
            [a, b] => {
                let (a_out, a_in) = a.counts.get();
                let (b_out, b_in) = b.counts.get();
                Bytes {
                    a_out,
                    a_in,
                    b_out,
                    b_in,
                }
            }
            [one] => {
                let (ab, ba) = one.counts.get();
                Bytes {
                    a_out: ab,
                    a_in: ba,
                    b_out: ba,
                    b_in: ab,
                }
            }
            _ => Bytes::default(),
        }
    }

    /// What a tool without a watcher needs after a change: rsync runs now.
    pub fn push(&mut self, limit: Duration) -> Result<()> {
        let Some(push) = &self.rsync_push else {
            return Ok(());
        };
        let mut cmd = Command::new(&push.bin);
        cmd.arg("-a")
            .arg(format!("{}/", self.a.display()))
            .arg(&push.url);
        procs::run("rsync", cmd, &self.logs.join("rsync-push.log"), limit)
    }

    /// Fails if a process of the tool has died.
    pub fn check_alive(&mut self) -> Result<()> {
        self.procs.iter_mut().try_for_each(Proc::check_alive)
    }

    /// Lines of the tools' logs that report trouble.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.procs {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            for line in text.lines() {
                let l = line.to_lowercase();
                // Said at every start when run as root, which the bench
                // may be; nothing to do with the runs.
                if l.contains("should not run as a privileged") {
                    continue;
                }
                if ["error", "fail", "warn", "panic", "not synced", "conflict"]
                    .iter()
                    .any(|w| l.contains(w))
                {
                    out.push(format!("{}: {}", p.name, line.trim()));
                }
            }
        }
        out
    }

    /// Writes a file in A and waits for it in B: the whole path works
    /// before anything is timed.
    fn probe(&mut self, kick: impl Fn() -> Result<()>) -> Result<()> {
        let content = b"ready\n";
        std::fs::write(self.a.join("probe.txt"), content)?;
        self.push(START_LIMIT)?;
        kick()?;
        let start = Instant::now();
        while std::fs::read(self.b.join("probe.txt")).map_or(true, |c| c != content) {
            self.check_alive()?;
            if start.elapsed() > START_LIMIT {
                bail!(
                    "{}: a file written in A did not reach B within {START_LIMIT:?}",
                    self.kind.label()
                );
            }
            nap(Duration::from_millis(20))?;
        }
        Ok(())
    }

    fn start_tessera(&mut self, tools: &Tools, rt: &Handle, dir: &Path) -> Result<()> {
        let port = procs::free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = tessera_cmd(&tools.tessera, &dir.join("cfg-server"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg(addr.to_string())
            .env("TESSERA_ADMIN_PASSWORD", PASSWORD);
        let mut server = Proc::spawn("tessera serve", cmd, &self.logs.join("server.log"))?;
        procs::wait_listening(&mut server, addr, START_LIMIT)?;
        self.procs.push(server);
        for device in ["A", "B"] {
            let relay = Relay::start(rt, addr)?;
            let cfg = dir.join(format!("cfg-{device}"));
            let mut login = tessera_cmd(&tools.tessera, &cfg);
            login
                .args(["login", "--user", "admin", "--password-stdin", "--device"])
                .arg(device)
                .arg("--server")
                .arg(format!("http://127.0.0.1:{}", relay.port));
            procs::run_with_input(
                &format!("tessera login {device}"),
                login,
                &self.logs.join(format!("login-{device}.log")),
                START_LIMIT,
                &format!("{PASSWORD}\n"),
            )?;
            let folder = if device == "A" { &self.a } else { &self.b };
            let mut sync = tessera_cmd(&tools.tessera, &cfg);
            sync.arg("sync").arg(folder);
            self.procs.push(Proc::spawn(
                &format!("tessera sync {device}"),
                sync,
                &self.logs.join(format!("sync-{device}.log")),
            )?);
            self.relays.push(relay);
        }
        self.probe(|| Ok(()))
    }

    fn start_rsync(&mut self, tools: &Tools, rt: &Handle, dir: &Path) -> Result<()> {
        let port = procs::free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let conf = dir.join("rsyncd.conf");
        // As root the daemon would otherwise write as nobody, who may not
        // enter the temporary folder.
        std::fs::write(
            &conf,
            format!(
                "use chroot = no\nuid = root\ngid = root\nlog file = {}\n\n[b]\npath = {}\nread only = false\n",
                self.logs.join("rsyncd-transfers.log").display(),
                self.b.display()
            ),
        )?;
        let mut cmd = Command::new(&tools.rsync);
        cmd.arg("--daemon")
            .arg("--no-detach")
            .arg(format!("--config={}", conf.display()))
            .arg("--address=127.0.0.1")
            .arg(format!("--port={port}"));
        let mut daemon = Proc::spawn("rsync --daemon", cmd, &self.logs.join("rsyncd.log"))?;
        procs::wait_listening(&mut daemon, addr, START_LIMIT)?;
        self.procs.push(daemon);
        let relay = Relay::start(rt, addr)?;
        self.rsync_push = Some(RsyncPush {
            bin: tools.rsync.clone(),
            url: format!("rsync://127.0.0.1:{}/b/", relay.port),
        });
        self.relays.push(relay);
        self.probe(|| Ok(()))
    }

    fn start_syncthing(&mut self, tools: &Tools, rt: &Handle, dir: &Path) -> Result<()> {
        let key = format!("peers-bench-{}", std::process::id());
        let mut st = Vec::new();
        for name in ["A", "B"] {
            let home = dir.join(format!("st-{name}"));
            let mut cmd = Command::new(&tools.syncthing);
            cmd.arg("generate")
                .arg(format!("--home={}", home.display()))
                .arg("--no-default-folder")
                .arg("--skip-port-probing");
            procs::run(
                "syncthing generate",
                cmd,
                &self.logs.join(format!("st-generate-{name}.log")),
                START_LIMIT,
            )?;
            let xml = std::fs::read_to_string(home.join("config.xml"))?;
            let id = attr_after(&xml, "<device id=\"")
                .context("no device id in syncthing's generated config.xml")?;
            st.push(StInstance {
                name,
                home,
                xml,
                id,
                gui: procs::free_port()?,
                listen: procs::free_port()?,
            });
        }
        let b_listen = SocketAddr::from(([127, 0, 0, 1], st[1].listen));
        let relay = Relay::start(rt, b_listen)?;
        // A dials B through the relay; B has no address for A and does not
        // dial, so their one connection is the relayed one.
        let peer_addr = [format!("tcp://127.0.0.1:{}", relay.port), "dynamic".into()];
        for (i, folder) in [&self.a, &self.b].into_iter().enumerate() {
            std::fs::create_dir_all(folder.join(".stfolder"))?;
            let other = &st[1 - i];
            let xml = configure(
                &st[i].xml,
                st[i].listen,
                (&other.id, other.name, &peer_addr[i]),
                folder,
                tools.watch_delay_s,
            )?;
            std::fs::write(st[i].home.join("config.xml"), xml)?;
        }
        // B first, listening before A's first dial: A dials again only
        // after a minute.
        for i in [1, 0] {
            let s = &st[i];
            let mut cmd = Command::new(&tools.syncthing);
            cmd.arg("serve")
                .arg(format!("--home={}", s.home.display()))
                .arg("--no-browser")
                .arg("--no-restart")
                .arg("--no-upgrade")
                .arg(format!("--gui-address=http://127.0.0.1:{}", s.gui))
                .arg(format!("--gui-apikey={key}"))
                .env("STNOUPGRADE", "1")
                .env("STNODEFAULTFOLDER", "1");
            let mut p = Proc::spawn(
                &format!("syncthing {}", s.name),
                cmd,
                &self.logs.join(format!("syncthing-{}.log", s.name)),
            )?;
            let listen = SocketAddr::from(([127, 0, 0, 1], s.listen));
            procs::wait_listening(&mut p, listen, START_LIMIT)?;
            self.procs.push(p);
        }
        self.relays.push(relay);
        let api = |i: usize| StApi {
            rt: rt.clone(),
            base: format!("http://127.0.0.1:{}", st[i].gui),
            key: key.clone(),
        };
        let (a, b) = (api(0), api(1));
        let b_id = st[1].id.clone();
        self.wait_until("Syncthing A connected to B", || {
            let c = a.get("/rest/system/connections")?;
            Ok(c["connections"][&b_id]["connected"].as_bool() == Some(true))
        })?;
        for api in [&a, &b] {
            self.wait_until("Syncthing's folder idle", || {
                let s = api.get(&format!("/rest/db/status?folder={FOLDER_ID}"))?;
                Ok(s["state"].as_str() == Some("idle"))
            })?;
        }
        // The probe asks for a scan rather than waiting out the watcher's
        // delay: only the workloads are timed with the watcher.
        self.probe(|| a.post(&format!("/rest/db/scan?folder={FOLDER_ID}")))
    }

    fn wait_until(&mut self, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            if f().unwrap_or(false) {
                return Ok(());
            }
            if start.elapsed() > START_LIMIT {
                bail!("{what}: not within {START_LIMIT:?}");
            }
            nap(Duration::from_millis(100))?;
        }
    }
}

fn tessera_cmd(bin: &Path, cfg: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env("TESSERA_CONFIG_DIR", cfg)
        .env("TESSERA_LOG", "warn")
        .env_remove("TESSERA_SERVER")
        .env_remove("TESSERA_DATA_DIR")
        .env_remove("TESSERA_DATABASE");
    c
}

struct StInstance {
    name: &'static str,
    home: PathBuf,
    xml: String,
    id: String,
    gui: u16,
    listen: u16,
}

/// Syncthing's REST API, with the key the bench gave it.
struct StApi {
    rt: Handle,
    base: String,
    key: String,
}

impl StApi {
    fn get(&self, path: &str) -> Result<serde_json::Value> {
        self.rt.block_on(async {
            let r = reqwest::Client::new()
                .get(format!("{}{path}", self.base))
                .header("X-API-Key", &self.key)
                .timeout(Duration::from_secs(5))
                .send()
                .await?
                .error_for_status()?;
            Ok(r.json().await?)
        })
    }

    fn post(&self, path: &str) -> Result<()> {
        self.rt.block_on(async {
            reqwest::Client::new()
                .post(format!("{}{path}", self.base))
                .header("X-API-Key", &self.key)
                .timeout(Duration::from_secs(5))
                .send()
                .await?
                .error_for_status()?;
            Ok(())
        })
    }
}

/// The value of the attribute that starts right after `prefix`.
fn attr_after(xml: &str, prefix: &str) -> Option<String> {
    let start = xml.find(prefix)? + prefix.len();
    let len = xml[start..].find('"')?;
    Some(xml[start..start + len].to_owned())
}

fn replace_one(xml: &str, from: &str, to: &str) -> Result<String> {
    match xml.matches(from).count() {
        1 => Ok(xml.replacen(from, to, 1)),
        n => bail!("syncthing's config.xml holds `{from}` {n} times, not once: another version?"),
    }
}

/// The element of `xml` that starts with `open`, searched from `from`.
fn element<'x>(xml: &'x str, from: usize, open: &str, close: &str) -> Result<&'x str> {
    let start = xml[from..]
        .find(open)
        .map(|i| i + from)
        .with_context(|| format!("no `{open}` in syncthing's config.xml"))?;
    let len = xml[start..]
        .find(close)
        .with_context(|| format!("no `{close}` in syncthing's config.xml"))?;
    Ok(&xml[start..start + len + close.len()])
}

/// Turns a generated config.xml into the bench's: loopback only, nothing
/// that reaches beyond the machine, and the folder shared with the peer.
/// The peer and the folder are made from the generated defaults, so every
/// setting the bench does not name keeps this Syncthing version's default.
fn configure(
    xml: &str,
    listen: u16,
    (peer_id, peer_name, peer_addr): (&str, &str, &str),
    folder: &Path,
    watch_delay_s: u32,
) -> Result<String> {
    let path = folder.to_str().context("folder path is not UTF-8")?;
    if path.contains(['&', '<', '>', '"']) {
        bail!("{path}: a character that would need escaping in XML");
    }
    let defaults = xml
        .find("<defaults>")
        .context("no <defaults> in syncthing's config.xml")?;
    let folder_default = element(xml, defaults, "<folder id=\"\"", "</folder>")?;
    let device_default = element(xml, defaults, "<device id=\"\"", "</device>")?;
    let new_folder = replace_one(
        folder_default,
        "id=\"\" label=\"\" path=\"~\"",
        &format!("id=\"{FOLDER_ID}\" label=\"{FOLDER_ID}\" path=\"{path}\""),
    )?;
    let new_folder = replace_one(
        &new_folder,
        "fsWatcherDelayS=\"10\"",
        &format!("fsWatcherDelayS=\"{watch_delay_s}\""),
    )?;
    let new_folder = new_folder.replacen(
        "</device>",
        &format!("</device>\n        <device id=\"{peer_id}\" introducedBy=\"\"></device>"),
        1,
    );
    let new_device = replace_one(
        device_default,
        "<device id=\"\"",
        &format!("<device id=\"{peer_id}\" name=\"{peer_name}\""),
    )?;
    let new_device = replace_one(
        &new_device,
        "<address>dynamic</address>",
        &format!("<address>{peer_addr}</address>"),
    )?;
    let mut xml = replace_one(
        xml,
        "    <gui ",
        &format!("    {new_device}\n    {new_folder}\n    <gui "),
    )?;
    for (from, to) in [
        (
            "<listenAddress>default</listenAddress>".to_owned(),
            format!("<listenAddress>tcp://127.0.0.1:{listen}</listenAddress>"),
        ),
        flag("globalAnnounceEnabled"),
        flag("localAnnounceEnabled"),
        flag("relaysEnabled"),
        flag("natEnabled"),
        flag("startBrowser"),
        flag("crashReportingEnabled"),
        (
            "<urAccepted>0</urAccepted>".into(),
            "<urAccepted>-1</urAccepted>".into(),
        ),
        (
            "<autoUpgradeIntervalH>12</autoUpgradeIntervalH>".into(),
            "<autoUpgradeIntervalH>0</autoUpgradeIntervalH>".into(),
        ),
    ] {
        xml = replace_one(&xml, &from, &to)?;
    }
    Ok(xml)
}

/// An option that is on by default, turned off.
fn flag(name: &str) -> (String, String) {
    (
        format!("<{name}>true</{name}>"),
        format!("<{name}>false</{name}>"),
    )
}
