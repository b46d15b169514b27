//! Differential test: the classifier against Laravel's real router, which is the oracle.
//!
//! `tests/php/app` is a minimal Laravel application over Debian's `php-laravel-framework`: the
//! fotospiel guest routes as the app declares them (`routes/api.php`, `routes/web.php`: the
//! `/api/v1/events/{token}...` and `/api/v1/gallery/{token}...` API, the `/gallery/{token}...`
//! pages, the signed download routes), each named after the shield route class it belongs
//! to. The app says which route it matched and which `token` it bound (`App\Oracle`, on
//! Laravel's `RouteMatched` event). It is served four ways, one test each:
//!
//! - **PHP-FPM behind a web server** (`tests/php/fpm.php`): the kernel is handed each request
//!   with the variables nginx sets when `try_files` sends it to `/index.php`; thousands of
//!   random spellings go through one pipe.
//! - **`php -S` with `public/index.php` as router** (document root `public`).
//! - **`php artisan serve`**: `php -S` run from `public` with the app's `server.php` as router.
//! - **`php -S` with the project folder as document root** and no router, so that
//!   `/public/index.php/...` and `/server.php/...` reach Laravel.
//!
//! Each spelling (front controllers and their encodings, slashes, dot segments, case,
//! absolute-form, random bytes) must be classified where Laravel routes it: whatever Laravel
//! routes to a guest route with token T, the shield classifies as that class with token T.
//! Requests the shield counts as guest while Laravel does not (over-inclusion, which is safe)
//! are counted and printed. For the three `php -S` setups the same spellings are then sent
//! through the shield (the real binary, every guest route paused) in front of the real app:
//! no answer may come from a guest route of Laravel, and every spelling Laravel routes to one
//! must be answered by the shield itself.
//!
//! A last test asks the `php -S` setup how Laravel routes a `POST` carrying a method override
//! (`X-HTTP-Method-Override`, `_method` in the query, a form or a JSON body): by the override,
//! so the shield must count that class among the POST's (`RouteTable::override_classes`).
//!
//! Without `php` or the Laravel framework these tests FAIL with what to install, unless
//! `JOINSHIELD_ALLOW_SKIP=1` is set (then they pass with a SKIPPED line on stderr); under CI
//! (`CI` set) a missing PHP fails whatever else is set.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use http::Method;
use joinshield::policy::classify::{default_specs, RouteTable};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod support;

use support::spellings::{
    base_path, cut_by_length, fronted_targets, method, random_target, respell, token,
};

const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/php/app");
const FPM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/php/fpm.php");
const SHIELD: &str = env!("CARGO_BIN_EXE_joinshield");
/// The shield's guest route classes (the app names its other routes `other.*`).
const GUEST: [&str; 4] = ["gallery_download", "upload", "events", "gallery"];
/// Random spellings through the PHP-FPM pipe.
const PIPED: usize = 20_000;
/// Random spellings per `php -S` setup, besides every front-controller spelling.
const SERVED: usize = 300;
/// Bounds every wait on PHP or the shield.
const DEADLINE: Duration = Duration::from_secs(240);
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Where Laravel routed a request: the route class and the bound token, `None` when it
/// matched no route.
type Routed = Option<(String, Option<Vec<u8>>)>;

/// Whether `php` runs and can load the Laravel framework; when not, fails or skips (see the
/// module docs) and returns false.
fn oracle_available() -> bool {
    let available = Command::new("php")
        .arg("-r")
        .arg("exit((@include_once 'Illuminate/autoload.php') && class_exists('Illuminate\\Foundation\\Application') ? 0 : 3);")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if available {
        return true;
    }
    let what = "the Laravel routing oracle needs php-cli and php-laravel-framework \
                (apt-get install php-cli php-laravel-framework)";
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(!ci, "{what}; CI is set, so a missing PHP fails the run");
    assert!(
        std::env::var("JOINSHIELD_ALLOW_SKIP").is_ok_and(|v| v == "1"),
        "{what}; install them, or set JOINSHIELD_ALLOW_SKIP=1 to skip this test knowingly"
    );
    eprintln!("\n*** SKIPPED (JOINSHIELD_ALLOW_SKIP=1): {what} ***\n");
    false
}

/// A private copy of `tests/php/app` (Laravel writes its caches into `bootstrap/cache`).
struct App {
    dir: tempfile::TempDir,
}

impl App {
    fn copy() -> App {
        fn copy_dir(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).expect("create a folder of the app copy");
            for entry in std::fs::read_dir(from).expect("read the test app") {
                let entry = entry.expect("read the test app");
                let target = to.join(entry.file_name());
                if entry.file_type().expect("file type").is_dir() {
                    copy_dir(&entry.path(), &target);
                } else {
                    std::fs::copy(entry.path(), &target).expect("copy a file of the test app");
                }
            }
        }
        let dir = tempfile::tempdir().expect("a temporary folder");
        copy_dir(Path::new(APP), dir.path());
        std::fs::create_dir_all(dir.path().join("bootstrap/cache")).expect("bootstrap/cache");
        std::fs::create_dir_all(dir.path().join("storage")).expect("storage");
        App { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Laravel's answers through the PHP-FPM pipe, one per request, in order.
fn ask_fpm(app: &App, requests: &[(String, Vec<u8>)]) -> Vec<Routed> {
    let mut child = Command::new("php")
        .arg(FPM)
        .arg(app.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("php starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let input: String = requests
        .iter()
        .map(|(m, t)| format!("{m}\t{}\n", hex::encode(t)))
        .collect();
    let writer = thread::spawn(move || {
        // Dropping stdin at the end closes the pipe, which ends the script's loop.
        stdin
            .write_all(input.as_bytes())
            .expect("write requests to php");
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .map(|l| l.expect("read php output"))
            .collect();
        let _ = tx.send(lines);
    });
    let Ok(lines) = rx.recv_timeout(DEADLINE) else {
        let _ = child.kill();
        panic!("the PHP-FPM oracle did not answer within {DEADLINE:?}");
    };
    writer.join().expect("writer thread");
    let status = child.wait().expect("php exits");
    assert!(status.success(), "the PHP-FPM oracle failed: {status}");
    assert_eq!(lines.len(), requests.len(), "one answer per request");
    lines
        .iter()
        .map(|line| {
            let (name, token) = line.split_once('\t').expect("class TAB token");
            assert!(!name.starts_with('!'), "the oracle app failed: {name}");
            routed(
                (name != "-").then_some(name),
                (token != "-").then_some(token),
            )
        })
        .collect()
}

fn routed(class: Option<&str>, token_hex: Option<&str>) -> Routed {
    let class = class?;
    let token = token_hex.map(|t| hex::decode(t).expect("hex token"));
    Some((class.to_owned(), token))
}

/// The three ways `php -S` serves the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    /// `php -S 127.0.0.1:0 -t public public/index.php`, from the project folder.
    PublicRouter,
    /// What `php artisan serve` runs: `php -S 127.0.0.1:0 /app/server.php` from `public`.
    ArtisanServe,
    /// `php -S 127.0.0.1:0 -t .` from the project folder, no router.
    ProjectRoot,
}

/// A running `php -S`; killed when dropped.
struct Served {
    child: Child,
    addr: SocketAddr,
    /// Errors the app reported (its exception handler writes them to the server's log).
    errors: Arc<Mutex<Vec<String>>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `php -S` the way `server` says and returns once it printed its address.
fn serve(app: &App, server: Server) -> Served {
    let dir = app.path();
    let mut cmd = Command::new("php");
    cmd.args(["-d", "opcache.enable_cli=1", "-S", "127.0.0.1:0"]);
    match server {
        Server::PublicRouter => cmd
            .current_dir(dir)
            .args(["-t", "public", "public/index.php"]),
        // artisan serve names its router by its absolute path; Symfony's base URL depends on it.
        Server::ArtisanServe => cmd
            .current_dir(dir.join("public"))
            .arg(dir.join("server.php")),
        Server::ProjectRoot => cmd.current_dir(dir).args(["-t", "."]),
    };
    let mut child = cmd
        .env("PHP_CLI_SERVER_WORKERS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("php -S starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let seen = Arc::clone(&errors);
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("Development Server (http://") {
                let _ = tx.send(line);
            } else if line.contains("oracle app:") || line.contains("PHP ") {
                seen.lock().expect("errors lock").push(line);
            }
        }
    });
    let Ok(banner) = rx.recv_timeout(IO_TIMEOUT) else {
        let _ = child.kill();
        panic!("php -S ({server:?}) did not start within {IO_TIMEOUT:?}");
    };
    let addr = banner
        .split("(http://")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no address in {banner:?}"));
    Served {
        child,
        addr,
        errors,
    }
}

/// An answer: status and the oracle's headers.
#[derive(Debug)]
struct Reply {
    status: u16,
    routed: Routed,
}

/// Sends one request on its own connection and reads the whole answer (the server closes).
/// `None` when the server closed without answering (`php -S` does so for some targets).
fn send(addr: SocketAddr, method: &str, target: &[u8]) -> Option<Reply> {
    let mut raw = Vec::new();
    raw.extend_from_slice(method.as_bytes());
    raw.push(b' ');
    raw.extend_from_slice(target);
    raw.extend_from_slice(
        b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    );
    send_raw(addr, &raw, method, target)
}

/// Sends the whole request `raw` (`method` and `target` name it in messages) and reads the
/// answer as [`send`] does.
fn send_raw(addr: SocketAddr, raw: &[u8], method: &str, target: &[u8]) -> Option<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    s.write_all(raw).expect("send the request");
    let mut got = Vec::new();
    if let Err(e) = s.read_to_end(&mut got) {
        // A reset after a complete head still tells the answer; a timeout never does.
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "no answer within {IO_TIMEOUT:?} for {method} {:?}",
            String::from_utf8_lossy(target)
        );
    }
    if got.is_empty() {
        return None;
    }
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "an answer without a whole head: {:?}",
                String::from_utf8_lossy(&got)
            )
        });
    let head = String::from_utf8_lossy(&got[..head_end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let mut class = None;
    let mut token = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("x-oracle-class") {
                class = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case("x-oracle-token") {
                token = Some(value.to_owned());
            }
        }
    }
    Some(Reply {
        status,
        routed: routed(class.as_deref(), token.as_deref()),
    })
}

/// `class token` for messages.
fn show(r: &Routed) -> String {
    match r {
        None => "no route".to_owned(),
        Some((class, None)) => class.clone(),
        Some((class, Some(token))) => format!("{class} {:?}", String::from_utf8_lossy(token)),
    }
}

fn is_guest(r: &Routed) -> bool {
    r.as_ref().is_some_and(|(c, _)| GUEST.contains(&c.as_str()))
}

/// Compares the shield's classification of each request with Laravel's answer; panics with
/// the first mismatches. Returns how many Laravel routed to a guest route.
fn compare(setup: &str, requests: &[(String, Vec<u8>)], answers: &[Routed]) -> usize {
    let table = RouteTable::new(&default_specs()).expect("default routes compile");
    let mut routed = 0;
    let mut over_included = 0;
    let mut mismatches = Vec::new();
    let mut by_class: BTreeMap<&str, usize> = BTreeMap::new();
    for ((m, target), answer) in requests.iter().zip(answers) {
        let method = Method::from_bytes(m.as_bytes()).expect("valid method");
        let got = table.classify_target(&method, target);
        let got_name = got.class.map(|c| table.names()[usize::from(c)].as_str());
        match answer {
            Some((class, token)) if is_guest(answer) => {
                routed += 1;
                *by_class.entry(class.as_str()).or_default() += 1;
                let want_token = token
                    .as_deref()
                    .map(|t| String::from_utf8_lossy(t).into_owned());
                if got_name != Some(class.as_str()) || got.token.as_deref() != want_token.as_deref()
                {
                    mismatches.push(format!(
                        "{m} {:?}: laravel {class} {want_token:?}, shield {got_name:?} {:?}",
                        String::from_utf8_lossy(target),
                        got.token
                    ));
                }
            }
            _ => {
                if got.class.is_some() {
                    over_included += 1;
                }
            }
        }
    }
    eprintln!(
        "laravel differential ({setup}): {} requests, {routed} routed to a guest route by \
         Laravel {by_class:?}, {} mismatches, {over_included} over-included by the shield",
        requests.len(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{setup}: {} mismatches, e.g.:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(30)].join("\n")
    );
    routed
}

/// `n` random spellings of the generator (seeded), as the differential test sends them.
fn random_spellings(seed: u64, n: usize, sendable: bool) -> Vec<(String, Vec<u8>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = method(&mut rng);
        let target = if rng.random_bool(0.1) {
            random_target(&mut rng)
        } else {
            let t = token(&mut rng);
            let path = base_path(&mut rng, &t);
            respell(&mut rng, &path)
        };
        // Over a socket, only what the shield's HTTP parser lets through can reach Laravel.
        if sendable && !is_sendable(&target) {
            continue;
        }
        out.push((m, target));
    }
    out
}

fn is_sendable(target: &[u8]) -> bool {
    !target.is_empty()
        && target.iter().all(|&b| b > 0x20 && b != 0x7f)
        && http::Uri::try_from(target).is_ok()
}

#[test]
fn behind_php_fpm_every_spelling_is_classified_where_laravel_routes_it() {
    if !oracle_available() {
        return;
    }
    let app = App::copy();
    let mut requests = random_spellings(0x6a6f_696e, PIPED, false);
    requests.extend(fronted_targets());
    let answers = ask_fpm(&app, &requests);
    let routed = compare("php-fpm", &requests, &answers);
    assert!(
        routed > requests.len() / 4,
        "the generator must mostly hit guest routes: {routed}"
    );
}

/// A running shield (`joinshield run`) in front of `upstream` with every guest route paused;
/// killed when dropped.
struct Shield {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Shield {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shield_in_front_of(upstream: SocketAddr) -> Shield {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let config = dir.path().join("joinshield.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{upstream}\"\n\
             state_file = \"state.json\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [log]\nfile = \"shield.log\"\n\n[[switch]]\nname = \"maintenance\"\n\
             routes = [\"*\"]\npaused = true\nmessage = \"Paused for the routing oracle.\"\n"
        ),
    )
    .expect("write the shield's config");
    let mut child = Command::new(SHIELD)
        .arg("run")
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the shield starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        // Keep draining so the shield never blocks on a full pipe.
        for _ in lines {}
    });
    let Ok(banner) = rx.recv_timeout(IO_TIMEOUT) else {
        let _ = child.kill();
        panic!("the shield did not start within {IO_TIMEOUT:?}");
    };
    let addr = banner
        .split("http://")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no address in {banner:?}"));
    Shield {
        child,
        addr,
        _dir: dir,
    }
}

/// How one `php -S` setup is tested.
struct Case {
    server: Server,
    /// Spellings this setup routes to a guest route (checked first, so that a change of PHP
    /// that stops routing them cannot silently make the test weaker).
    witnesses: &'static [&'static str],
    /// Prefixes put in front of the random spellings (one each, in turn; `""` for none).
    fronts: &'static [&'static str],
}

/// Asks `server` directly for each spelling (the oracle), compares the classifier with it,
/// then sends every spelling through a shield with all guest routes paused in front of the
/// same server: nothing Laravel routes to a guest route may get through.
fn differential_over_http(case: Case, extra: impl Fn(&App) -> Vec<(String, Vec<u8>)>) {
    if !oracle_available() {
        return;
    }
    let server = case.server;
    let app = App::copy();
    let served = serve(&app, server);
    let mut requests: Vec<(String, Vec<u8>)> = case
        .witnesses
        .iter()
        .map(|t| ("GET".to_owned(), t.as_bytes().to_vec()))
        .collect();
    requests.extend(fronted_targets());
    requests.extend(extra(&app));
    let random = random_spellings(0x7068_702d ^ server as u64, SERVED, true);
    for (i, (m, t)) in random.into_iter().enumerate() {
        let front = case.fronts[i % case.fronts.len()].as_bytes();
        // A front controller glued before a target without its `/` would be another spelling.
        let t = if t.first() == Some(&b'/') {
            [front, &t].concat()
        } else {
            t
        };
        requests.push((m, t));
    }
    requests.retain(|(_, t)| is_sendable(t));

    let direct: Vec<Option<Reply>> = requests
        .iter()
        .map(|(m, t)| send(served.addr, m, t))
        .collect();
    for ((m, t), reply) in requests.iter().zip(&direct) {
        if let Some(r) = reply {
            // php -S itself answers 501 to a method it does not know: not Laravel's doing.
            assert!(
                r.status < 500 || r.status == 501,
                "{server:?}: the oracle app answered {} to {m} {:?}: {:?}",
                r.status,
                String::from_utf8_lossy(t),
                served.errors.lock().expect("errors lock")
            );
        }
    }
    let answers: Vec<Routed> = direct
        .iter()
        .map(|r| r.as_ref().and_then(|r| r.routed.clone()))
        .collect();
    for (witness, answer) in case.witnesses.iter().zip(&answers) {
        assert!(
            is_guest(answer),
            "{server:?}: Laravel no longer routes {witness:?} to a guest route ({}): the \
             setup is not what this test means to check",
            show(answer)
        );
    }
    let routed = compare(&format!("{server:?}"), &requests, &answers);
    assert!(
        routed > 100,
        "{server:?}: too few guest spellings: {routed}"
    );

    // End to end: which spellings must be stopped is what Laravel said, not the classifier.
    let shield = shield_in_front_of(served.addr);
    let mut leaks = Vec::new();
    let mut stopped = 0;
    for ((m, t), answer) in requests.iter().zip(&answers) {
        let via = send(shield.addr, m, t).unwrap_or_else(|| {
            panic!(
                "the shield closed without answering {m} {:?}",
                String::from_utf8_lossy(t)
            )
        });
        if is_guest(&via.routed) || (is_guest(answer) && via.status != 503) {
            leaks.push(format!(
                "{m} {:?}: laravel {}, through the shield {} from {}",
                String::from_utf8_lossy(t),
                show(answer),
                via.status,
                show(&via.routed)
            ));
        }
        if is_guest(answer) {
            stopped += 1;
        }
    }
    eprintln!(
        "end to end ({server:?}): {} spellings through the shield, {stopped} guest spellings \
         stopped, {} leaks",
        requests.len(),
        leaks.len()
    );
    assert!(
        leaks.is_empty(),
        "{server:?}: {} guest spellings reached Laravel's guest routes through the shield:\n{}",
        leaks.len(),
        leaks[..leaks.len().min(30)].join("\n")
    );
    assert!(
        served.errors.lock().expect("errors lock").is_empty(),
        "{server:?}: the oracle app reported errors: {:?}",
        served.errors.lock().expect("errors lock")
    );
}

#[test]
fn behind_php_s_with_public_index_php_as_router_every_spelling_is_classified_where_laravel_routes_it(
) {
    let case = Case {
        server: Server::PublicRouter,
        witnesses: &[
            "/api/v1/events/W1tness-token",
            "/index.php/api/v1/events/W1tness-token",
            "/public/index.php/api/v1/gallery/W1tness-token/download",
            "/sub/index.php/api/v1/events/W1tness-token",
            "/favicon.ico/api/v1/gallery/W1tness-token/download",
            "/robots.txt/gallery/W1tness-token",
            "/a/index.php/xxxx/api/v1/events/W1tness-token",
            "/a/index.php/xx%4api/v1/events/W1tness-token",
        ],
        fronts: &["", "/index.php", "/public/index.php", "/favicon.ico"],
    };
    // When php -S finds no script, Symfony cuts as many bytes as `/public/index.php`.
    differential_over_http(case, |_| cut_by_length("/public/index.php", "index.php"));
}

#[test]
fn behind_artisan_serve_every_spelling_is_classified_where_laravel_routes_it() {
    let case = Case {
        server: Server::ArtisanServe,
        witnesses: &[
            "/api/v1/events/W1tness-token",
            "/server.php/api/v1/gallery/W1tness-token/download",
            "/server.phpapi/v1/events/W1tness-token",
            "/index.php/api/v1/events/W1tness-token",
            "/favicon.ico/api/v1/events/W1tness-token",
        ],
        fronts: &["", "/server.php", "/index.php", "/robots.txt"],
    };
    // artisan serve's router is `<project>/server.php`: Symfony cuts `/<project>/server.php`.
    differential_over_http(case, |app| {
        let project = app
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        cut_by_length(&format!("/{project}/server.php"), "server.php")
    });
}

#[test]
fn behind_a_web_server_rooted_at_the_project_every_spelling_is_classified_where_laravel_routes_it()
{
    let case = Case {
        server: Server::ProjectRoot,
        witnesses: &[
            "/public/index.php/api/v1/gallery/W1tness-token/download",
            "/public%2Findex.php/api/v1/events/W1tness-token",
            "/server.php/api/v1/events/W1tness-token",
            "/public/sub/index.php/gallery/W1tness-token",
            "/public/api/v1/events/W1tness-token",
        ],
        // Only a front controller reaches Laravel here.
        fronts: &["/public/index.php", "/server.php", "/public"],
    };
    differential_over_http(case, |_| Vec::new());
}

#[test]
fn a_post_laravel_routes_by_a_method_override_is_judged_by_that_class_too() {
    if !oracle_available() {
        return;
    }
    let app = App::copy();
    let served = serve(&app, Server::PublicRouter);
    let table = RouteTable::new(&default_specs()).expect("default routes compile");
    let class_index = |name: &str| {
        table
            .names()
            .iter()
            .position(|n| n == name)
            .and_then(|i| u16::try_from(i).ok())
            .expect("a default class")
    };
    // An upload route by its method, the events catch-all by the override Laravel applies.
    let photos = "/api/v1/events/tok-override-1/photos";
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let json = "Content-Type: application/json\r\n";
    for (target, head, body) in [
        (photos, "X-HTTP-Method-Override: GET\r\n", ""),
        (photos, "x-http-method-override: delete\r\n", ""),
        ("/api/v1/events/tok-override-1/photos?_method=GET", "", ""),
        (photos, form, "_method=GET"),
        (photos, json, "{\"_method\":\"PATCH\"}"),
        ("/api/v1/events/tok-override-1/upload", form, "_method=GET"),
    ] {
        let raw = format!(
            "POST {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{head}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let reply = send_raw(served.addr, raw.as_bytes(), "POST", target.as_bytes())
            .unwrap_or_else(|| panic!("no answer to {target} {head:?} {body:?}"));
        let routed = reply.routed.as_ref().map(|(class, _)| class.as_str());
        assert_eq!(
            routed,
            Some("events"),
            "Laravel routed POST {target} {head:?} {body:?}: {} ({})",
            show(&reply.routed),
            reply.status
        );
        // The shield classifies it by its method, and counts the class Laravel chose too.
        let path = target.split('?').next().unwrap_or(target);
        let by_method = table.classify(&Method::POST, path);
        assert_eq!(by_method.class, Some(class_index("upload")), "{target}");
        let (reachable, _) = table.override_classes(&Method::POST, target);
        assert!(
            reachable.contains(class_index("events")),
            "{target}: the override's class is not among the POST's classes"
        );
    }
    // Without an override Laravel routes it as the upload it is.
    let reply = send(served.addr, "POST", photos.as_bytes()).expect("an answer");
    assert_eq!(
        reply.routed.as_ref().map(|(c, _)| c.as_str()),
        Some("upload"),
        "{}",
        show(&reply.routed)
    );
    let errors = served.errors.lock().expect("errors lock").clone();
    assert!(errors.is_empty(), "the app reported errors: {errors:?}");
}
