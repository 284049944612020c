//! The operations surface: the admin listener's `/metrics`, `/healthz` and
//! `/readyz`, readiness during a graceful drain (the database outage is in
//! scale.rs, on PostgreSQL), and what the metrics never carry.

use std::sync::Arc;
use std::time::Duration;

use keygate::server::{self, Admin};
use serde_json::json;

use crate::support::*;

fn admin_on_loopback() -> Admin {
    Admin {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Admin::default()
    }
}

async fn get_text(url: String) -> (u16, String, String) {
    let res = http().get(url).send().await.unwrap();
    let status = res.status().as_u16();
    let kind = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, res.text().await.unwrap())
}

/// The value of the sample `name` (with its labels, exactly) in an exposition.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn the_admin_listener_serves_metrics_and_probes_and_the_public_one_only_probes() {
    let s = serve_with(Arc::new(tempfile::tempdir().unwrap()), |o| {
        o.admin = admin_on_loopback();
    })
    .await;
    let admin = format!("http://{}", s.running.admin.as_ref().unwrap().addr);
    for base in [&admin, &s.http()] {
        for probe in ["/healthz", "/readyz"] {
            let (status, body) =
                json_of(http().get(format!("{base}{probe}")).send().await.unwrap()).await;
            assert_eq!(
                (status, body),
                (200, json!({"status": "ok"})),
                "{base}{probe}"
            );
        }
    }
    // Metrics are not on the public listener unless asked for.
    let (status, _, _) = get_text(format!("{}/metrics", s.http())).await;
    assert_eq!(status, 404);

    let ok = "keygate_signins_total{flow=\"provider_ws\",outcome=\"ok\"}";
    let bad = "keygate_signins_total{flow=\"provider_ws\",outcome=\"invalid_signature\"}";
    let (_, _, before) = get_text(format!("{admin}/metrics")).await;
    let key = user(61);
    let t = ws_login(&s.ws("/ws/userauth"), Some(&s.origin()), &key, json!({})).await;
    assert_eq!(t["type"], "token", "{t}");
    // A refused signature counts under its code.
    let mut ws = connect(&s.ws("/ws/userauth"), Some(&s.origin())).await;
    send(&mut ws, json!({"type": "token", "pubkey": id(&key)})).await;
    let c = recv(&mut ws).await;
    assert_eq!(c["type"], "challenge", "{c}");
    send(
        &mut ws,
        json!({"type": "challenge", "sig": sign(&user(62), c["value"].as_str().unwrap())}),
    )
    .await;
    expect_error(&mut ws, "invalid_signature", 1008).await;

    let (status, kind, after) = get_text(format!("{admin}/metrics")).await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert!(after.ends_with("# EOF\n"));
    // Other tests in this process count too: compare before and after.
    assert!(sample(&after, ok) >= sample(&before, ok) + 1.0, "{after}");
    assert!(sample(&after, bad) >= sample(&before, bad) + 1.0, "{after}");
    for family in [
        "keygate_signin_duration_seconds_bucket{",
        "keygate_tokens_total{event=\"minted\"}",
        "keygate_store_commit_batch_size_count",
        "keygate_open_connections{kind=\"tcp\"}",
        "# TYPE keygate_refusals counter",
        "keygate_signing_key_age_seconds",
    ] {
        assert!(after.contains(family), "{family} missing:\n{after}");
    }
    // No identity, token or secret in any label.
    for secret in [id(&key).as_str(), tok(&t)] {
        assert!(!after.contains(secret));
    }
    s.stop().await;
}

#[tokio::test]
async fn metrics_on_the_public_listener_only_when_asked() {
    let s = serve_with(Arc::new(tempfile::tempdir().unwrap()), |o| {
        o.admin.metrics_public = true;
    })
    .await;
    let (status, kind, body) = get_text(format!("{}/metrics", s.http())).await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("application/openmetrics-text"));
    assert!(body.contains("# TYPE keygate_signins counter"));
    s.stop().await;
}

#[tokio::test]
async fn an_admin_listener_off_loopback_needs_asking() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let clock = keygate::time::ManualClock::new(0);
    let mut o = options(server::Mode::Serve, &dir, &clock);
    o.admin.listen = Some("0.0.0.0:0".parse().unwrap());
    match server::start(o).await {
        Err(server::StartError::Config(m)) => assert!(m.contains("--admin-listen-any"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an admin listener on 0.0.0.0 started unasked"),
    }
}

/// `/readyz` answers 503 `draining` from the moment a shutdown begins, while
/// sign-ins in flight finish; `/healthz` still answers 200.
#[tokio::test]
async fn readyz_turns_503_while_the_server_drains() {
    let s = serve_with(Arc::new(tempfile::tempdir().unwrap()), |o| {
        o.admin = admin_on_loopback();
        // Long enough that the drain lasts until this test ends it.
        o.drain = Duration::from_secs(60);
    })
    .await;
    let admin = format!("http://{}", s.running.admin.as_ref().unwrap().addr);
    // A sign-in in flight: its socket holds the drain open.
    let mut ws = connect(&s.ws("/ws/userauth"), Some(&s.origin())).await;
    send(&mut ws, json!({"type": "token", "pubkey": id(&user(63))})).await;
    assert_eq!(recv(&mut ws).await["type"], "challenge");

    let stopping = tokio::spawn(s.running.stop());
    let body = eventually("/readyz to say draining", async || {
        let (status, body) =
            json_of(http().get(format!("{admin}/readyz")).send().await.unwrap()).await;
        if status == 503 {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    assert_eq!(body, json!({"status": "draining"}));
    let (status, _) = json_of(http().get(format!("{admin}/healthz")).send().await.unwrap()).await;
    assert_eq!(status, 200);

    drop(ws);
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("the drain ends once the sign-in socket is gone")
        .unwrap();
    // The admin listener stopped last.
    assert!(http().get(format!("{admin}/healthz")).send().await.is_err());
}
