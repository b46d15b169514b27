//! The container and the compose stack as they are shipped: `docker-compose.yml` (rendered by
//! `docker compose config` where the compose plugin exists, and always read as YAML: services,
//! volumes, health checks, the `.env` file and every mounted file wired), the `Dockerfile` (read
//! as text: it cannot be built without a docker daemon), `.dockerignore`, and the configurations
//! the containers run (`joinshield check`, no trusted network, bans in the state volume).

#[allow(dead_code)]
#[path = "support/promtool.rs"]
mod promtool;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_joinshield");

/// A file of the checkout.
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn toml_file(path: &str) -> toml::Value {
    toml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not TOML: {e}"))
}

fn compose() -> Value {
    yaml("docker-compose.yml")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let s = &compose["services"][name];
    assert!(s.is_object(), "docker-compose.yml has no service {name}");
    s
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// One entry of a service's `volumes` (short syntax `SOURCE:TARGET[:MODE]`).
#[derive(Debug)]
struct Mount {
    source: String,
    target: String,
}

impl Mount {
    fn is_bind(&self) -> bool {
        self.source.starts_with("./") || self.source.starts_with('/')
    }
}

fn mounts(service: &Value) -> Vec<Mount> {
    strings(&service["volumes"])
        .into_iter()
        .map(|m| {
            let mut parts = m.splitn(3, ':');
            let source = parts.next().unwrap_or_default().to_owned();
            let target = parts
                .next()
                .unwrap_or_else(|| panic!("volume {m:?} names no target"))
                .to_owned();
            Mount { source, target }
        })
        .collect()
}

/// The file of the checkout that `container_path` is inside the service's container, through its
/// bind mounts (the longest matching target wins, as in the container's mount table).
fn host_path(service: &Value, container_path: &str) -> Option<PathBuf> {
    mounts(service)
        .into_iter()
        .filter(|m| m.is_bind())
        .filter_map(|m| {
            let rest = if container_path == m.target {
                Some("")
            } else {
                container_path
                    .strip_prefix(&m.target)
                    .and_then(|r| r.strip_prefix('/'))
            }?;
            Some((m.target.len(), m.source, rest.to_owned()))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, source, rest)| {
            let base = repo(source.trim_start_matches("./"));
            if rest.is_empty() {
                base
            } else {
                base.join(rest)
            }
        })
}

/// `-c FILE` of a shield service's command.
fn config_arg(service: &Value) -> String {
    let command = strings(&service["command"]);
    let at = command
        .iter()
        .position(|a| a == "-c")
        .unwrap_or_else(|| panic!("command {command:?} names no -c FILE"));
    command[at + 1].clone()
}

/// Lexical normalisation of an absolute container path (`a/../b` is `b`).
fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

const SHIELDS: [&str; 3] = ["shield", "shield-1", "shield-2"];

#[test]
fn the_compose_configuration_is_valid_and_prometheus_scrapes_its_admin_port() {
    let loaded = joinshield::config::load(&repo("config/compose.toml"))
        .unwrap_or_else(|e| panic!("config/compose.toml refused: {e:?}"));
    let admin_port = loaded.config.admin.listen.port();
    assert!(
        loaded.config.admin.listen.ip().is_unspecified(),
        "Prometheus and Kuma reach the admin listener from other containers"
    );
    let prometheus = yaml("config/prometheus.yml");
    let job = prometheus["scrape_configs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["job_name"] == "joinshield"))
        .expect("config/prometheus.yml has a scrape job named joinshield (the rules select it)");
    let targets = strings(&job["static_configs"][0]["targets"]);
    assert_eq!(targets, [format!("shield:{admin_port}")]);

    let compose = compose();
    let shield = service(&compose, "shield");
    assert_eq!(config_arg(shield), "/etc/joinshield/compose.toml");
    let ports = strings(&shield["ports"]);
    assert!(
        ports.contains(&format!("127.0.0.1:{admin_port}:{admin_port}")),
        "the admin port is published on the host's loopback only: {ports:?}"
    );
    assert_eq!(
        service(&compose, "kuma")["image"].as_str(),
        Some("louislam/uptime-kuma:1")
    );
    assert_eq!(
        service(&compose, "app")["image"].as_str(),
        Some("${APP_IMAGE:-joinshield:local}"),
        "the app defaults to the shield's own image (the stand-in)"
    );
    assert_eq!(shield["image"].as_str(), Some("joinshield:local"));

    promtool::promtool_succeeds(&["check", "config", "config/prometheus.yml"]);
}

#[test]
fn every_service_has_its_image_health_check_and_mounted_files() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    for wanted in [
        "shield",
        "app",
        "kuma",
        "prometheus",
        "grafana",
        "redis",
        "shield-1",
        "shield-2",
        "balancer",
    ] {
        assert!(names.contains(wanted), "no service {wanted}: {names:?}");
    }
    let declared: BTreeSet<&str> = compose["volumes"]
        .as_object()
        .expect("top-level volumes")
        .keys()
        .map(String::as_str)
        .collect();
    let mut used = BTreeSet::new();
    for (name, s) in services {
        assert!(
            s["image"].is_string() || s["build"].is_string(),
            "{name} names neither image nor build"
        );
        for m in mounts(s) {
            if m.is_bind() {
                let path = repo(m.source.trim_start_matches("./"));
                assert!(
                    path.exists(),
                    "{name} mounts {} from the checkout, which does not exist",
                    m.source
                );
            } else {
                assert!(
                    declared.contains(m.source.as_str()),
                    "{name} mounts volume {} that the top-level volumes do not declare",
                    m.source
                );
                used.insert(m.source.clone());
            }
        }
        // Everything but the guest ports is for the host only.
        for port in strings(&s["ports"]) {
            let guest = port == "8080:8080" || port == "8081:8081";
            assert!(
                guest || port.starts_with("127.0.0.1:"),
                "{name} publishes {port} beyond the host's loopback"
            );
        }
    }
    let unused: Vec<_> = declared.iter().filter(|v| !used.contains(**v)).collect();
    assert!(unused.is_empty(), "declared but never mounted: {unused:?}");

    for name in ["shield", "shield-1", "shield-2", "prometheus", "grafana"] {
        let test = strings(&service(&compose, name)["healthcheck"]["test"]);
        assert_eq!(
            test.first().map(String::as_str),
            Some("CMD"),
            "{name} has a health check"
        );
    }
}

#[test]
fn each_shield_gets_the_admin_token_from_env_and_keeps_bans_in_its_volume() {
    let compose = compose();
    let mut volumes = BTreeSet::new();
    for name in SHIELDS {
        let s = service(&compose, name);
        let env_file = match &s["env_file"] {
            Value::String(f) => vec![f.clone()],
            other => strings(other),
        };
        assert_eq!(env_file, [".env"], "{name} reads the admin token from .env");
        assert!(
            s["environment"]["JOINSHIELD_ADMIN_TOKEN"].is_null(),
            "{name}: the token comes from .env only, never written into the compose file"
        );

        let config = config_arg(s);
        let health = strings(&s["healthcheck"]["test"]);
        assert_eq!(
            health,
            ["CMD", "joinshield", "healthcheck", "-c", config.as_str()],
            "{name}'s health check asks the admin listener of the configuration it runs"
        );
        let host = host_path(s, &config)
            .unwrap_or_else(|| panic!("{name}'s {config} is not mounted from the checkout"));
        let relative = host
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .expect("inside the checkout")
            .to_string_lossy()
            .into_owned();
        let state_file = toml_file(&relative)["server"]["state_file"]
            .as_str()
            .unwrap_or_else(|| panic!("{relative} sets no state_file"))
            .to_owned();
        let state_dir = Path::new(&state_file)
            .parent()
            .and_then(Path::to_str)
            .unwrap_or_else(|| panic!("{relative}: state_file {state_file} has no folder"));
        let volume = mounts(s)
            .into_iter()
            .find(|m| m.target == state_dir)
            .unwrap_or_else(|| {
                panic!("{name}: nothing is mounted at {state_dir}, the folder of {state_file}")
            });
        assert!(
            !volume.is_bind(),
            "{name}: bans go to a named volume, not into the checkout"
        );
        assert!(
            volumes.insert(volume.source.clone()),
            "{name} shares its state volume {} with another shield",
            volume.source
        );
    }
}

#[test]
fn the_env_file_is_an_example_in_the_checkout_and_kept_out_of_git_and_the_image() {
    let example = read(".env.example");
    let token_lines: Vec<&str> = example
        .lines()
        .filter(|l| l.starts_with("JOINSHIELD_ADMIN_TOKEN="))
        .collect();
    assert_eq!(
        token_lines,
        ["JOINSHIELD_ADMIN_TOKEN="],
        "the example names the variable and holds no token"
    );
    let gitignore = read(".gitignore");
    assert!(
        gitignore.lines().any(|l| l == "/.env" || l == ".env"),
        ".env is in .gitignore"
    );
    let ignore = DockerIgnore::load();
    assert!(ignore.excludes(".env"), ".env is in .dockerignore");

    // The README's container section starts with exactly these two commands.
    let readme = read("README.md");
    let section = readme
        .split("\n### Docker")
        .nth(1)
        .expect("README has a Docker section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the Docker section opens with a sh block");
    let commands: Vec<&str> = block
        .lines()
        .map(|l| l.split(" #").next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(commands.len(), 2, "two commands: {commands:?}");
    assert!(
        commands[0].contains("JOINSHIELD_ADMIN_TOKEN=") && commands[0].ends_with("> .env"),
        "the first writes the token into .env: {}",
        commands[0]
    );
    assert_eq!(commands[1], "docker compose up");
}

#[test]
fn no_shipped_configuration_trusts_a_whole_network() {
    let mut seen = 0;
    for entry in std::fs::read_dir(repo("config")).expect("config/") {
        let path = entry.expect("an entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        seen += 1;
        let name = format!(
            "config/{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
        );
        let trusted = toml_file(&name)["client"]["trusted_proxies"]
            .as_array()
            .map(|a| a.to_vec())
            .unwrap_or_default();
        for proxy in trusted {
            let proxy = proxy.as_str().expect("a string");
            let net: ipnet::IpNet = proxy
                .parse()
                .unwrap_or_else(|e| panic!("{name}: {proxy} is not a CIDR: {e}"));
            assert_eq!(
                net.prefix_len(),
                net.max_prefix_len(),
                "{name} trusts the whole network {proxy}: any peer in it could name any client"
            );
        }
    }
    assert!(seen >= 3, "the shipped configurations were found");

    // The cluster's replicas trust exactly the balancer, at its fixed address on the network it
    // shares with them, and that network holds that address.
    let compose = compose();
    let balancer = service(&compose, "balancer");
    let nets = balancer["networks"].as_object().expect("balancer networks");
    assert_eq!(nets.len(), 1, "the balancer is on its edge network only");
    let (net_name, net) = nets.iter().next().expect("one network");
    let address: std::net::IpAddr = net["ipv4_address"]
        .as_str()
        .expect("the balancer has a fixed address")
        .parse()
        .expect("an IP address");
    let subnet: ipnet::IpNet = compose["networks"][net_name]["ipam"]["config"][0]["subnet"]
        .as_str()
        .expect("the edge network has a fixed subnet")
        .parse()
        .expect("a CIDR");
    assert!(subnet.contains(&address), "{address} is not in {subnet}");
    let trusted: Vec<String> = toml_file("config/cluster.toml")["client"]["trusted_proxies"]
        .as_array()
        .expect("cluster.toml trusts the balancer")
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect();
    assert!(
        trusted.contains(&format!("{address}/32")),
        "config/cluster.toml trusts {trusted:?}, not the balancer at {address}"
    );
    for name in ["shield-1", "shield-2"] {
        let on = strings(&service(&compose, name)["networks"]);
        assert!(
            on.iter().any(|n| n == net_name),
            "{name} is not on {net_name}"
        );
        assert_eq!(
            config_arg(service(&compose, name)),
            "/etc/joinshield/cluster.toml"
        );
    }
}

/// `joinshield check` on each shipped configuration, with its lists beside it. The container
/// configurations keep bans in `/var/lib/joinshield`, a folder of the image that this machine
/// need not have: they are checked from a copy of `config/` whose state_file points into a
/// temporary folder instead (the state folder itself is checked against the Dockerfile and the
/// compose volumes above).
#[test]
fn every_shipped_configuration_passes_check() {
    let copy = tempfile::tempdir().expect("a temporary folder");
    let state = copy.path().join("state");
    std::fs::create_dir(&state).expect("a state folder");
    let mut configs = Vec::new();
    for entry in std::fs::read_dir(repo("config")).expect("config/") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().expect("a file name").to_owned();
        let mut text = std::fs::read_to_string(&path).expect("a text file");
        if path.extension().and_then(|e| e.to_str()) == Some("toml") {
            let config: toml::Value = toml::from_str(&text).expect("TOML");
            if let Some(file) = config["server"].get("state_file").and_then(|v| v.as_str()) {
                let dir = Path::new(file)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty());
                if Path::new(file).is_absolute() && dir.is_some_and(|d| !d.is_dir()) {
                    let here = state.join(Path::new(file).file_name().expect("a file name"));
                    let _ = writeln!(
                        std::io::stderr(),
                        "{}: state_file {file} is checked as {}",
                        name.to_string_lossy(),
                        here.display()
                    );
                    let quoted = format!("\"{file}\"");
                    assert!(
                        text.contains(&quoted),
                        "{name:?}: state_file is not written {quoted}"
                    );
                    text = text.replace(&quoted, &format!("{here:?}"));
                }
            }
            configs.push(copy.path().join(&name));
        }
        std::fs::write(copy.path().join(&name), text).expect("copy config/");
    }
    assert!(configs.len() >= 3, "the shipped configurations were found");
    for path in configs {
        let out = Command::new(BIN)
            .args(["check", "-c"])
            .arg(&path)
            .env_remove("JOINSHIELD_ADMIN_TOKEN")
            .output()
            .expect("run joinshield check");
        assert!(
            out.status.success(),
            "joinshield check -c config/{} failed:\n{}{}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn prometheus_loads_the_alert_rules_and_grafana_the_dashboard() {
    let compose = compose();

    // Prometheus: the config file it is started with is config/prometheus.yml, and each rule file
    // it names (relative to that file) is a file of deploy/prometheus.
    let prometheus = service(&compose, "prometheus");
    let config = strings(&prometheus["command"])
        .into_iter()
        .find_map(|a| a.strip_prefix("--config.file=").map(str::to_owned))
        .expect("prometheus is started with --config.file");
    assert_eq!(
        host_path(prometheus, &config),
        Some(repo("config/prometheus.yml"))
    );
    let rule_files = strings(&yaml("config/prometheus.yml")["rule_files"]);
    assert!(!rule_files.is_empty(), "config/prometheus.yml loads rules");
    let config_dir = Path::new(&config)
        .parent()
        .and_then(Path::to_str)
        .expect("a folder");
    let mut loaded = Vec::new();
    for rule_file in rule_files {
        let inside = normalise(&format!("{config_dir}/{rule_file}"));
        let host = host_path(prometheus, &inside)
            .unwrap_or_else(|| panic!("rule file {inside} is not mounted into prometheus"));
        assert!(
            host.is_file(),
            "{inside} is {}, which is missing",
            host.display()
        );
        // Relative to config/ in the checkout, the same name reaches the same file.
        assert_eq!(
            std::fs::canonicalize(repo("config").join(&rule_file)).ok(),
            std::fs::canonicalize(&host).ok(),
            "{rule_file} names another file in the checkout than in the container"
        );
        loaded.push(host);
    }
    assert_eq!(loaded, [repo("deploy/prometheus/alerts.yml")]);

    // Grafana: the datasource and dashboard provisioning folders are mounted where Grafana reads
    // them; the dashboard provider's folder is the one holding joinshield.json; the datasource is
    // the prometheus service.
    let grafana = service(&compose, "grafana");
    for kind in ["datasources", "dashboards"] {
        assert_eq!(
            host_path(grafana, &format!("/etc/grafana/provisioning/{kind}")),
            Some(repo(&format!("deploy/grafana/provisioning/{kind}"))),
            "grafana's {kind} provisioning"
        );
    }
    let providers = yaml("deploy/grafana/provisioning/dashboards/joinshield.yml");
    let folder = providers["providers"][0]["options"]["path"]
        .as_str()
        .expect("the dashboard provider names a folder");
    let dashboards = host_path(grafana, folder)
        .unwrap_or_else(|| panic!("the dashboard folder {folder} is not mounted"));
    assert!(
        dashboards.join("joinshield.json").is_file(),
        "{folder} in grafana is {}, without joinshield.json",
        dashboards.display()
    );
    let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        .as_str()
        .expect("grafana opens on the dashboard");
    assert_eq!(
        host_path(grafana, home),
        Some(repo("deploy/grafana/joinshield.json"))
    );
    let datasources = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let url = datasources["datasources"][0]["url"]
        .as_str()
        .expect("a datasource url");
    let host = url
        .strip_prefix("http://")
        .and_then(|r| r.split(':').next())
        .expect("http://SERVICE:PORT");
    assert!(
        compose["services"][host].is_object(),
        "the datasource {url} is not a compose service"
    );
    assert!(
        strings(&service(&compose, host)["ports"])
            .iter()
            .any(|p| p.ends_with(":9090")),
        "{host} serves Prometheus on 9090"
    );
}

/// The lines of the Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((keyword.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

/// The words of each shell command of a RUN (`&&` and `;` separate commands).
fn shell_commands(run: &str) -> Vec<Vec<String>> {
    run.split("&&")
        .flat_map(|c| c.split(';'))
        .map(|c| c.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|c| !c.is_empty())
        .collect()
}

/// The value of `--flag VALUE` or `--flag=VALUE`, or of the short `-f VALUE`.
fn flag(words: &[String], long: &str, short: Option<&str>) -> Option<String> {
    words.iter().enumerate().find_map(|(i, w)| {
        if let Some(v) = w.strip_prefix(&format!("{long}=")) {
            return Some(v.to_owned());
        }
        if w == long || Some(w.as_str()) == short {
            return words.get(i + 1).cloned();
        }
        None
    })
}

#[test]
fn the_image_runs_unprivileged_with_a_state_folder_it_owns() {
    let instructions = dockerfile();
    let froms: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(froms.len() >= 2, "a multi-stage build");
    let last = &instructions[*froms.last().expect("a FROM")..];
    assert!(
        last.iter()
            .any(|(k, a)| k == "COPY" && a.starts_with("--from=")),
        "the final stage copies the binary from the build stage"
    );

    // The user: made by useradd in the final stage, named by USER, not root.
    let mut users: BTreeMap<String, String> = BTreeMap::new(); // name -> uid
    let mut commands: Vec<(usize, Vec<String>)> = Vec::new();
    for (i, (k, a)) in last.iter().enumerate() {
        if k == "RUN" {
            for c in shell_commands(a) {
                if c[0] == "useradd" {
                    let name = c.last().expect("a user name").clone();
                    let uid = flag(&c, "--uid", Some("-u")).expect("useradd --uid");
                    users.insert(name, uid);
                }
                commands.push((i, c));
            }
        }
    }
    let user = last
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, a)| a.split(':').next().unwrap_or_default().to_owned())
        .expect("the image names its USER");
    assert!(user != "root" && user != "0", "the image runs as root");
    let (name, uid) = users
        .iter()
        .find(|(n, u)| **n == user || **u == user)
        .map(|(n, u)| (n.clone(), u.clone()))
        .unwrap_or_else(|| panic!("USER {user} is not made by useradd: {users:?}"));
    assert_ne!(uid, "0");
    let is_user = |owner: &str| {
        let owner = owner.split(':').next().unwrap_or_default();
        owner == name || owner == uid
    };

    // The state folder: the folder of the image's configuration's state_file, created and handed
    // to that user before it is declared a VOLUME (later changes to a volume path are lost).
    let config = last
        .iter()
        .filter(|(k, _)| k == "ENV")
        .find_map(|(_, a)| a.strip_prefix("JOINSHIELD_CONFIG=").map(str::to_owned))
        .expect("ENV JOINSHIELD_CONFIG names the image's configuration");
    let (source, target) = last
        .iter()
        .filter(|(k, a)| k == "COPY" && !a.starts_with("--"))
        .filter_map(|(_, a)| a.split_once(' '))
        .find(|(_, target)| config.starts_with(&format!("{}/", target.trim_end_matches('/'))))
        .map(|(s, t)| (s.to_owned(), t.trim_end_matches('/').to_owned()))
        .unwrap_or_else(|| panic!("{config} is not copied into the image"));
    let in_checkout = format!(
        "{}/{}",
        source.trim_end_matches('/'),
        &config[target.len() + 1..]
    );
    let state_file = toml_file(&in_checkout)["server"]["state_file"]
        .as_str()
        .unwrap_or_else(|| panic!("{in_checkout} sets no state_file"))
        .to_owned();
    assert!(
        state_file.starts_with('/'),
        "{in_checkout}: state_file {state_file} would be relative to the read-only config folder"
    );
    let state_dir = Path::new(&state_file)
        .parent()
        .and_then(Path::to_str)
        .expect("a folder")
        .to_owned();
    assert_eq!(state_dir, "/var/lib/joinshield");

    let made_and_owned = commands.iter().find_map(|(i, c)| {
        let names_dir = c.contains(&state_dir);
        let installs = c[0] == "install"
            && c.iter().any(|w| w == "-d")
            && flag(c, "--owner", Some("-o")).is_some_and(|o| is_user(&o));
        let chowns = c[0] == "chown" && c.iter().skip(1).any(|w| !w.starts_with('-') && is_user(w));
        (names_dir && (installs || chowns)).then_some(*i)
    });
    let made = commands
        .iter()
        .any(|(_, c)| (c[0] == "mkdir" || c[0] == "install") && c.contains(&state_dir));
    let owned_at = made_and_owned
        .unwrap_or_else(|| panic!("{state_dir} is not created and handed to {name} ({uid})"));
    assert!(made, "{state_dir} is created");
    let volume_at = last
        .iter()
        .position(|(k, a)| k == "VOLUME" && a.contains(&format!("\"{state_dir}\"")))
        .unwrap_or_else(|| panic!("{state_dir} is a VOLUME"));
    assert!(
        owned_at < volume_at,
        "{state_dir} is chowned after its VOLUME, and that change is lost"
    );

    let health = last
        .iter()
        .find(|(k, _)| k == "HEALTHCHECK")
        .map(|(_, a)| a.clone())
        .expect("a HEALTHCHECK");
    assert!(
        health.contains(r#"CMD ["joinshield", "healthcheck"]"#),
        "HEALTHCHECK runs joinshield healthcheck: {health}"
    );
}

/// `.dockerignore` as Docker reads it: patterns from the context root, `**` for any folders,
/// `*` and `?` within one name, `!` to re-include; a path is excluded when the last pattern
/// that matches it or one of its parent folders is not a `!` one.
struct DockerIgnore {
    patterns: Vec<(bool, regex::Regex)>,
}

impl DockerIgnore {
    fn load() -> DockerIgnore {
        let patterns = read(".dockerignore")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (negated, p) = match l.strip_prefix('!') {
                    Some(p) => (true, p),
                    None => (false, l),
                };
                let p = p.trim_start_matches('/').trim_end_matches('/');
                (
                    negated,
                    regex::Regex::new(&glob_regex(p)).expect("a pattern"),
                )
            })
            .collect();
        DockerIgnore { patterns }
    }

    fn excludes(&self, path: &str) -> bool {
        let prefixes: Vec<&str> = path
            .match_indices('/')
            .map(|(i, _)| &path[..i])
            .chain(std::iter::once(path))
            .collect();
        let mut excluded = false;
        for (negated, re) in &self.patterns {
            if prefixes.iter().any(|p| re.is_match(p)) {
                excluded = !negated;
            }
        }
        excluded
    }
}

fn glob_regex(pattern: &str) -> String {
    let mut out = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                if chars.get(i + 2) == Some(&'/') {
                    out.push_str("(?:.*/)?");
                    i += 3;
                } else {
                    out.push_str(".*");
                    i += 2;
                }
                continue;
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    out.push('$');
    out
}

/// Every file under `dir` of the checkout, as a path from the checkout's root.
fn files_under(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![repo(dir)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .expect("inside the checkout");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out
}

#[test]
fn the_build_context_leaves_out_outputs_and_secrets_and_keeps_the_sources() {
    let ignore = DockerIgnore::load();
    for path in [
        "target/release/joinshield",
        "target",
        "fuzz/target/x86_64-unknown-linux-gnu/release/classify",
        "fuzz/artifacts/classify/crash-0a1b",
        "fuzz/corpus/classify/seed",
        ".git/HEAD",
        ".env",
        "certs/privkey.pem",
        "config/certs/fullchain.pem",
        "config/tls/server.key",
        "privkey.pem",
        "config/joinshield-state.json",
        "config/joinshield-state.json.compact",
        "shield.log",
        "config/shield.log",
    ] {
        assert!(
            ignore.excludes(path),
            ".dockerignore lets {path} into the image's build"
        );
    }
    let mut kept = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    for dir in ["src", "benches", "config"] {
        kept.extend(files_under(dir));
    }
    assert!(kept.len() > 20, "the sources were found: {kept:?}");
    for path in &kept {
        assert!(
            !ignore.excludes(path),
            ".dockerignore leaves out {path}, which the build needs"
        );
    }
}

/// `docker compose config`: compose's own validation of the file, default and cluster profiles,
/// where the compose plugin is installed (it needs no daemon). It runs on a copy of the checkout's
/// top level made of links, with a `.env` made from `.env.example`, so a real `.env` is never read.
#[test]
fn docker_compose_renders_the_file_where_compose_is_installed() {
    let available = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: `docker compose` is not installed; docker-compose.yml is checked as YAML only"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    for entry in std::fs::read_dir(env!("CARGO_MANIFEST_DIR")).expect("the checkout") {
        let entry = entry.expect("an entry");
        let name = entry.file_name();
        if name == ".env" || name == "target" {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), dir.path().join(&name)).expect("a link");
    }
    let env = read(".env.example").replace(
        "JOINSHIELD_ADMIN_TOKEN=\n",
        "JOINSHIELD_ADMIN_TOKEN=compose-config-check-only\n",
    );
    std::fs::write(dir.path().join(".env"), env).expect("write .env");
    for profile in [None, Some("cluster")] {
        let mut cmd = Command::new("docker");
        cmd.arg("compose")
            .arg("--project-directory")
            .arg(dir.path());
        if let Some(p) = profile {
            cmd.args(["--profile", p]);
        }
        let out = cmd
            .args(["config", "--quiet"])
            .output()
            .expect("run docker compose config");
        assert!(
            out.status.success(),
            "docker compose config ({profile:?}) refused docker-compose.yml:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
