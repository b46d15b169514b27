//! Differential test: the classifier against Laravel's real router.
//!
//! `tests/php/router.php` registers the four default route classes as Laravel routes and
//! answers, for each request, which route Laravel matches and which `token` it binds. This test
//! sends it thousands of spellings of guest and near-guest paths (encodings, slashes, the front
//! controller, absolute-form, case, dot segments, random bytes) through one pipe, and requires:
//! whatever Laravel routes to a guest route with token T, the shield classifies as the same
//! class with token T. Requests the shield counts as guest while Laravel does not
//! (over-inclusion, which is safe) are counted and printed.
//!
//! PHP is found at run time: without `php` or the Laravel framework the test prints a loud
//! SKIPPED line and passes, unless `CI` is set, when it fails.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use http::Method;
use joinshield::policy::classify::{default_specs, RouteTable};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod support;

use support::spellings::{base_path, method, random_target, respell, token};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/php/router.php");
const REQUESTS: usize = 20_000;
const DEADLINE: Duration = Duration::from_secs(180);

/// Whether `php` runs and can load the Laravel router.
fn laravel_available() -> bool {
    Command::new("php")
        .arg("-r")
        .arg("exit((@include_once 'Illuminate/autoload.php') && class_exists('Illuminate\\Routing\\Router') ? 0 : 3);")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Laravel's answers, one `(route name, token bytes)` per request, in order.
fn ask_laravel(requests: &[(String, Vec<u8>)]) -> Vec<(Option<String>, Option<Vec<u8>>)> {
    let mut child = Command::new("php")
        .arg(SCRIPT)
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
    let lines = match rx.recv_timeout(DEADLINE) {
        Ok(lines) => lines,
        Err(_) => {
            let _ = child.kill();
            panic!("the Laravel router script did not answer within {DEADLINE:?}");
        }
    };
    writer.join().expect("writer thread");
    let status = child.wait().expect("php exits");
    assert!(
        status.success(),
        "the Laravel router script failed: {status}"
    );
    assert_eq!(lines.len(), requests.len(), "one answer per request");
    lines
        .iter()
        .map(|line| {
            let (name, token) = line.split_once('\t').expect("name TAB token");
            assert!(!name.starts_with('!'), "the router threw: {name}");
            let name = (name != "-").then(|| name.to_owned());
            let token = (token != "-").then(|| hex::decode(token).expect("hex token"));
            (name, token)
        })
        .collect()
}

#[test]
fn the_shield_classifies_everything_laravel_routes_to_a_guest_route() {
    if !laravel_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "php-cli/php-laravel-framework not installed, and CI is set"
        );
        eprintln!("\n\n*** SKIPPED: php-cli/php-laravel-framework not installed ***\n\n");
        return;
    }
    let mut rng = StdRng::seed_from_u64(0x6a6f_696e);
    let mut requests: Vec<(String, Vec<u8>)> = Vec::with_capacity(REQUESTS);
    while requests.len() < REQUESTS {
        let m = method(&mut rng);
        let target = if rng.random_bool(0.1) {
            random_target(&mut rng)
        } else {
            let t = token(&mut rng);
            let path = base_path(&mut rng, &t);
            respell(&mut rng, &path)
        };
        // One line per request: a raw newline cannot be in a method.
        requests.push((m, target));
    }
    let answers = ask_laravel(&requests);

    let table = RouteTable::new(&default_specs()).expect("default routes compile");
    let mut routed = 0;
    let mut over_included = 0;
    let mut mismatches = Vec::new();
    for ((m, target), (name, token)) in requests.iter().zip(&answers) {
        let method = Method::from_bytes(m.as_bytes()).expect("valid method");
        let got = table.classify_target(&method, target);
        let got_name = got.class.map(|c| table.names()[usize::from(c)].as_str());
        match name {
            Some(name) => {
                routed += 1;
                let want_token = token
                    .as_deref()
                    .map(|t| String::from_utf8_lossy(t).into_owned());
                if got_name != Some(name.as_str()) || got.token.as_deref() != want_token.as_deref()
                {
                    mismatches.push(format!(
                        "{m} {:?}: laravel {name} {want_token:?}, shield {got_name:?} {:?}",
                        String::from_utf8_lossy(target),
                        got.token
                    ));
                }
            }
            None => {
                if got.class.is_some() {
                    over_included += 1;
                }
            }
        }
    }
    eprintln!(
        "laravel differential: {} requests, {routed} routed to a guest route by Laravel, \
         {} mismatches, {over_included} over-included by the shield",
        requests.len(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches, e.g.:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(30)].join("\n")
    );
    assert!(
        routed > REQUESTS / 4,
        "the generator must mostly hit guest routes"
    );
}
