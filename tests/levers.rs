//! Live incident levers over real sockets: switches, reload by file watch and by the admin API.

mod support;

use std::time::Duration;

use support::*;

const T: &str = "demo-wedding-2026";

fn switches(downloads: bool, maintenance: bool) -> String {
    format!(
        "[[switch]]\nname = \"gallery-downloads\"\nroutes = [\"gallery_download\"]\npaused = {downloads}\n\
         message = \"Gallery downloads are paused. Please try again later.\"\n\n\
         [[switch]]\nname = \"maintenance\"\nroutes = [\"*\"]\npaused = {maintenance}\n\
         message = \"The event gallery is under maintenance.\"\n"
    )
}

async fn wait_version(h: &Harness, v: u64) {
    let mut rx = h.shield.shared.version.subscribe();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|n| *n >= v))
        .await
        .expect("the reload did not happen within 5 s")
        .unwrap();
}

#[tokio::test]
async fn paused_downloads_answer_503_with_the_switch_and_never_reach_the_app() {
    let h = spawn_shield("", &switches(true, false)).await;
    for path in [
        format!("/api/v1/gallery/{T}/download"),
        format!("/api/v1/gallery%2F{T}%2Fdownload"),
        format!("/index.php/api/v1/gallery/{T}/download/"),
        format!("/api/v1/events/{T}/photos/7/download"),
    ] {
        let a = get(h.addr(), &path, "").await;
        assert_eq!(a.status, 503, "{path}");
        let body = a.json();
        assert_eq!(body["error"]["code"], "service_paused");
        assert_eq!(body["error"]["switch"], "gallery-downloads");
        assert_eq!(
            body["message"],
            "Gallery downloads are paused. Please try again later."
        );
        assert_eq!(a.header("retry-after"), Some("300"));
    }
    assert_eq!(h.upstream_requests(), 0);
    // Other guest routes still work.
    assert_eq!(
        get(h.addr(), &format!("/api/v1/gallery/{T}"), "")
            .await
            .status,
        200
    );
    let lines = h.log_lines().await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"reason\":\"service_paused\"")
                && l.contains("\"switch\":\"gallery-downloads\"")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn maintenance_pauses_every_guest_route_but_not_the_rest_of_the_app() {
    let h = spawn_shield("", &switches(false, true)).await;
    for path in [
        format!("/api/v1/events/{T}"),
        format!("/gallery/{T}"),
        format!("/api/v1/gallery/{T}/photos"),
    ] {
        assert_eq!(get(h.addr(), &path, "").await.status, 503, "{path}");
    }
    assert_eq!(get(h.addr(), "/", "").await.status, 200);
}

#[tokio::test]
async fn a_saved_edit_is_applied_without_a_signal() {
    let h = spawn_shield("", &switches(false, false)).await;
    assert_eq!(
        get(h.addr(), &format!("/api/v1/gallery/{T}/download"), "")
            .await
            .status,
        200
    );
    // An atomic rename, as editors and config management do.
    let text = std::fs::read_to_string(h.config_path()).unwrap().replacen(
        "paused = false",
        "paused = true",
        1,
    );
    let tmp = h.dir.path().join("joinshield.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, h.config_path()).unwrap();
    wait_version(&h, 2).await;
    assert_eq!(
        get(h.addr(), &format!("/api/v1/gallery/{T}/download"), "")
            .await
            .status,
        503
    );
    // Written in place.
    let text = std::fs::read_to_string(h.config_path()).unwrap().replacen(
        "paused = true",
        "paused = false",
        1,
    );
    std::fs::write(h.config_path(), text).unwrap();
    wait_version(&h, 3).await;
    assert_eq!(
        get(h.addr(), &format!("/api/v1/gallery/{T}/download"), "")
            .await
            .status,
        200
    );
    let lines = h.log_lines().await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("switch gallery-downloads paused")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("switch gallery-downloads resumed")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_paused_switch_with_until_in_the_past_no_longer_applies() {
    let rest = "[[switch]]\nname = \"night\"\nroutes = [\"*\"]\npaused = true\nuntil = \"2001-01-01T00:00:00Z\"\n";
    let h = spawn_shield("", rest).await;
    assert_eq!(
        get(h.addr(), &format!("/api/v1/events/{T}"), "")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn admin_reload_needs_the_bearer_token_and_reports_errors() {
    let var = "JOINSHIELD_TEST_TOKEN_LEVERS";
    std::env::set_var(var, "s3cret-for-tests");
    let h = spawn_shield_admin(&format!("token_env = \"{var}\""), &switches(false, false)).await;
    assert_eq!(
        admin(&h, "POST", "/admin/reload", None, "").await.status,
        401
    );
    assert_eq!(
        admin(&h, "POST", "/admin/reload", Some("wrong"), "")
            .await
            .status,
        401
    );
    let ok = admin(&h, "POST", "/admin/reload", Some("s3cret-for-tests"), "").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["version"], 2);
    std::fs::write(h.config_path(), "[server]\nupstream = 7\n").unwrap();
    let bad = admin(&h, "POST", "/admin/reload", Some("s3cret-for-tests"), "").await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.json()["version"], 2);
    assert!(bad.json()["errors"][0]
        .as_str()
        .unwrap()
        .contains("server.upstream"));
    // The old configuration keeps serving.
    assert_eq!(
        get(h.addr(), &format!("/api/v1/events/{T}"), "")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn admin_actions_are_off_without_the_token_variable() {
    let h = spawn_shield_admin("token_env = \"JOINSHIELD_TEST_TOKEN_NEVER_SET\"", "").await;
    assert_eq!(
        admin(&h, "POST", "/admin/reload", Some("anything"), "")
            .await
            .status,
        403
    );
}
