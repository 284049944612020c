use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn limits(max: usize, per_ip: usize) -> Limits {
    Limits {
        max_connections: max,
        max_connections_per_ip: per_ip,
        ..Limits::default()
    }
}

#[tokio::test]
async fn the_oldest_connection_waiting_for_a_head_gives_way() {
    let c = Connections::new(&limits(3, 2));
    let a: IpAddr = "127.0.0.2".parse().unwrap();
    let b: IpAddr = "127.0.0.3".parse().unwrap();
    let first = c.admit(a).unwrap();
    let busy = c.admit(b).unwrap();
    busy.conn.request_started();
    let second = c.admit(a).unwrap();
    assert!(c.admit(a).is_none(), "per-address cap: no eviction for it");
    // Full: the oldest waiting connection (not the busy one) is evicted.
    let third = c.admit(b).unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, first.conn.watchdog()).await,
        Ok("evicted for a new connection")
    );
    assert!(!busy.conn.state().evicted);
    drop(first);
    assert_eq!(
        c.lock().open,
        3,
        "an evicted connection is not counted twice"
    );
    // With every connection busy, none gives way: the new one is refused.
    second.conn.request_started();
    third.conn.request_started();
    assert!(c.admit("127.0.0.4".parse().unwrap()).is_none());
    drop((second, third, busy));
    assert_eq!(c.lock().open, 0);
    assert!(c.lock().waiting.is_empty() && c.lock().per_ip.is_empty());
}

/// The reason `conn`'s watchdog gives within `within`, if any.
async fn fires(conn: &Conn, within: Duration) -> Option<&'static str> {
    tokio::time::timeout(within, conn.watchdog()).await.ok()
}

#[tokio::test]
async fn deadlines_for_head_body_idle_and_stalled_writes() {
    let short = Duration::from_millis(50);
    let long = Duration::from_secs(600);
    let ip: IpAddr = "127.0.0.2".parse().unwrap();
    let with = |header, body, idle| {
        Connections::new(&Limits {
            header_timeout: header,
            body_timeout: body,
            idle_timeout: idle,
            ..limits(0, 0)
        })
    };
    let head = Some("no complete request head in time");

    // Head: due within header_timeout of accept, bytes or not.
    let c = with(short, long, long);
    let slot = c.admit(ip).unwrap();
    assert_eq!(fires(&slot.conn, WAIT).await, head);
    let slot = c.admit(ip).unwrap();
    slot.conn.first_byte();
    assert_eq!(fires(&slot.conn, WAIT).await, head, "with a first byte");
    // …and none once the head is complete.
    let slot = c.admit(ip).unwrap();
    let _request = InFlight::start(slot.conn.clone());
    assert_eq!(fires(&slot.conn, Duration::from_millis(200)).await, None);

    // Body: due within body_timeout of the head.
    let c = with(long, short, long);
    let slot = c.admit(ip).unwrap();
    let _request = InFlight::start(slot.conn.clone());
    let body = slot.conn.body_started();
    assert_eq!(
        fires(&slot.conn, WAIT).await,
        Some("no complete request body in time")
    );
    slot.conn.body_finished(body);
    assert_eq!(fires(&slot.conn, Duration::from_millis(200)).await, None);

    // A stalled write: idle_timeout without progress; progress resets it.
    let c = with(long, long, short);
    let slot = c.admit(ip).unwrap();
    let request = InFlight::start(slot.conn.clone());
    slot.conn.write_progress(true);
    assert_eq!(
        fires(&slot.conn, WAIT).await,
        Some("the peer stopped reading")
    );
    slot.conn.write_progress(false);
    assert_eq!(fires(&slot.conn, Duration::from_millis(200)).await, None);

    // Idle after a response: idle_timeout.
    drop(request);
    assert_eq!(fires(&slot.conn, WAIT).await, head);

    // Idle for long, but a later head is due within header_timeout of its
    // first byte.
    let c = with(short, long, long);
    let slot = c.admit(ip).unwrap();
    drop(InFlight::start(slot.conn.clone()));
    assert_eq!(fires(&slot.conn, Duration::from_millis(200)).await, None);
    slot.conn.first_byte();
    assert_eq!(fires(&slot.conn, WAIT).await, head);
}

/// A burst of new connections larger than the backlog std and mio ask for (128)
/// waits in the kernel's accept queue instead of having its SYNs dropped (which
/// clients send again only after a second, then three): every connect of the
/// burst completes while nothing accepts yet, and each is there to accept.
#[tokio::test]
async fn a_burst_of_new_connections_is_queued_not_dropped() {
    const BURST: usize = 200;
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(4096);
    if somaxconn <= BURST {
        eprintln!("net.core.somaxconn is {somaxconn}: the kernel caps any backlog below the burst");
        return;
    }
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let connects =
        (0..BURST).map(|_| tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr)));
    let streams = futures_util::future::join_all(connects).await;
    let connected = streams.iter().filter(|s| matches!(s, Ok(Ok(_)))).count();
    assert_eq!(connected, BURST, "connects completed without an accept");
    for _ in 0..BURST {
        let accepted = tokio::time::timeout(WAIT, listener.accept()).await;
        assert!(matches!(accepted, Ok(Ok(_))));
    }
}
