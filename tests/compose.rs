//! The files `docker-compose.yml` mounts: the shield's `config/compose.toml` is valid, and
//! `config/prometheus.yml` is a Prometheus configuration (promtool) that scrapes the admin port
//! that `compose.toml` listens on.

use std::io::Write;
use std::process::Command;

#[test]
fn the_compose_configuration_is_valid_and_prometheus_scrapes_its_admin_port() {
    let loaded = joinshield::config::load(std::path::Path::new("config/compose.toml"))
        .unwrap_or_else(|e| panic!("config/compose.toml refused: {e:?}"));
    let admin_port = loaded.config.admin.listen.port();
    assert!(
        loaded.config.admin.listen.ip().is_unspecified(),
        "Prometheus and Kuma reach the admin listener from other containers"
    );
    let prometheus = std::fs::read_to_string("config/prometheus.yml").unwrap();
    assert!(
        prometheus.contains(&format!("targets: [\"shield:{admin_port}\"]")),
        "{prometheus}"
    );
    let compose = std::fs::read_to_string("docker-compose.yml").unwrap();
    for needle in [
        "/etc/joinshield/compose.toml",
        "./config/prometheus.yml:/etc/prometheus/prometheus.yml",
        &format!("127.0.0.1:{admin_port}:{admin_port}"),
        "louislam/uptime-kuma:1",
        "${APP_IMAGE:-joinshield:local}",
    ] {
        assert!(
            compose.contains(needle),
            "docker-compose.yml lacks {needle}"
        );
    }

    match Command::new("promtool")
        .args(["check", "config", "config/prometheus.yml"])
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool refused config/prometheus.yml:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is required under CI (Debian package `prometheus`)"
            );
            let _ = writeln!(std::io::stderr(), "SKIPPED: promtool not installed");
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    }
}
