//! The benign corpus: ordinary container behaviours, taken from what batch jobs, probes, web
//! services, small images and operators do all day, must raise no alert at all, under every
//! rule of the shipped catalog. Traffic goes only to the test's own containers. The test prints
//! the alert count per rule (all zero when it passes) for the record. Its cases start no faster
//! than a busy node's ordinary pace (see [`Pacer`]).

use std::{
    collections::{BTreeMap, VecDeque},
    thread,
    time::{Duration, Instant},
};

use sensor_tests::{Sensor, Subject, docker, docker_run_rm, image, run_rm, run_sh};

/// Time for late alerts (a lifetime rule fires at exit, thresholds on the next report).
const SETTLE: Duration = Duration::from_secs(6);

/// Keeps the corpus's own pace of container starts at most 15 in any 10 s. More than 20 in
/// 10 s on a node is CRS-003's burst, meant to alert; a test that starts its cases as fast as
/// docker can would measure its own pace, not the behaviours.
#[derive(Default)]
struct Pacer(VecDeque<Instant>);

impl Pacer {
    const WINDOW: Duration = Duration::from_secs(10);
    const MAX: usize = 15;

    /// Waits until `n` more starts fit in the window, and counts them.
    fn starting(&mut self, n: usize) {
        loop {
            while self.0.front().is_some_and(|t| t.elapsed() > Self::WINDOW) {
                self.0.pop_front();
            }
            if self.0.len() + n <= Self::MAX {
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
        self.0.extend(std::iter::repeat_n(Instant::now(), n));
    }
}

#[test]
fn ordinary_containers_raise_no_alert() {
    let sensor = Sensor::start_with("benign", &["--flow-interval", "1"]);
    // The services the jobs talk to: a web server with a page, a 1 MiB file and an archive.
    let web = sensor.listener(&[
        "sh",
        "-c",
        "mkdir -p /w/pkg && echo ok > /w/index.html && dd if=/dev/zero of=/w/blob bs=1k count=1024 2>/dev/null \
         && echo data > /w/pkg/file && tar -cf /w/pkg.tar -C /w pkg && httpd -f -p 8080 -h /w",
    ]);
    let url = |path: &str| format!("http://{}:8080/{path}", web.ip);
    let long_lived = docker(&["run", "-d", &image(), "sleep", "60"]);
    let _cleanup = sensor_tests::Containers(vec![long_lived.clone()]);

    let mut pacer = Pacer::default();
    pacer.starting(2); // the web server and the long-lived container
    let mut ours: Vec<(String, String)> = Vec::new();
    let mut case = |what: &str, cid: String| ours.push((what.to_string(), cid));
    let wget = |path: &str| format!("wget -q -O /dev/null {}", url(path));
    pacer.starting(1);
    case(
        "batch job fetching a page",
        run_sh(&[], &wget("index.html")),
    );
    pacer.starting(1);
    case("batch job fetching 1 MiB", run_sh(&[], &wget("blob")));
    pacer.starting(1);
    case(
        "package-install-like download and unpack",
        run_sh(
            &[],
            &format!(
                "wget -q -O /tmp/pkg.tar {} && tar -xf /tmp/pkg.tar -C /tmp && cat /tmp/pkg/file",
                url("pkg.tar")
            ),
        ),
    );
    pacer.starting(1);
    case(
        "health probe with wget --spider",
        run_sh(&[], &format!("wget -q --spider {}", url("index.html"))),
    );
    pacer.starting(1);
    case(
        // (busybox nc has no -z: connect and close)
        "health probe with nc",
        run_sh(&[], &format!("nc -w 2 {} 8080 < /dev/null", web.ip)),
    );
    pacer.starting(1);
    case(
        "three pings at a person's pace",
        run_rm(&[], &["ping", "-c", "3", "-i", "0.5", &web.ip]),
    );
    pacer.starting(1);
    case(
        "busybox loop of ls and sleep",
        run_sh(&[], "for i in 1 2 3; do ls / > /dev/null; sleep 0.3; done"),
    );
    pacer.starting(1);
    case(
        "pipeline of applets",
        run_sh(
            &[],
            "ls /bin | grep -c sh | wc -l; cat /etc/passwd | cut -d: -f1 | sort | head -3",
        ),
    );
    pacer.starting(1);
    case(
        "a script with functions and a subshell",
        run_sh(
            &[],
            "f() { echo $(( $1 * 2 )); }; x=$(f 21); [ \"$x\" = 42 ] && (cd /tmp && pwd)",
        ),
    );
    pacer.starting(1);
    case(
        "writing and compressing files",
        run_sh(
            &[],
            "dd if=/dev/zero of=/tmp/x bs=1k count=256 2>/dev/null && gzip /tmp/x && gunzip /tmp/x.gz",
        ),
    );
    pacer.starting(1);
    case(
        "find over the filesystem",
        run_sh(&[], "find / -xdev -name passwd > /dev/null"),
    );
    pacer.starting(1);
    case("process listing", run_sh(&[], "ps; top -bn1 | head -5"));
    pacer.starting(1);
    case(
        "identity and system info",
        run_sh(&[], "id; hostname; uname -a; env > /dev/null"),
    );
    pacer.starting(1);
    case(
        "reading its own /proc",
        run_sh(&[], "cat /proc/self/status /proc/self/cgroup > /dev/null"),
    );
    pacer.starting(1);
    case(
        "a cron-like loop until a deadline",
        run_sh(
            &[],
            "end=$(( $(date +%s) + 3 )); while [ $(date +%s) -lt $end ]; do date > /dev/null; sleep 1; done",
        ),
    );
    pacer.starting(1);
    case("a job that only sleeps", run_rm(&[], &["sleep", "2"]));
    pacer.starting(1);
    case("a job that fails", run_sh(&[], "ls /nonexistent; true"));
    // A web server with clients: five clients in a row.
    for i in 0..5 {
        pacer.starting(1);
        case(
            &format!("web client {i}"),
            run_sh(
                &[],
                &format!("wget -q -O - {} | grep -q ok", url("index.html")),
            ),
        );
    }
    // A burst of 10 short containers, as a job queue starts them.
    pacer.starting(10);
    let burst: Vec<String> = thread::scope(|s| {
        let runs: Vec<_> = (0..10)
            .map(|_| s.spawn(|| docker_run_rm(&[&image(), "true"])))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for cid in burst {
        case("one of a burst of 10", cid);
    }
    // An operator's script through docker exec, in a long-lived container.
    docker(&[
        "exec",
        &long_lived,
        "sh",
        "-c",
        "ls /etc | wc -l; cat /etc/hostname",
    ]);
    case("a script run by docker exec", long_lived.clone());
    // An operator at a terminal (docker exec -t): the shell and the client it runs share the
    // pty, which is no relay.
    docker(&[
        "exec",
        "-t",
        &long_lived,
        "sh",
        "-c",
        &format!(
            "wget -q -O /dev/null {}; nc -w 1 {} 8080 < /dev/null; true",
            url("index.html"),
            web.ip
        ),
    ]);
    case("a terminal session by docker exec -t", long_lived.clone());
    case("the web server itself", web.id.clone());

    thread::sleep(SETTLE);
    let alerts = sensor.alerts();
    let mut per_rule: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in &alerts {
        let cid = a.cid();
        if let Some((what, _)) = ours.iter().find(|(_, c)| c == cid) {
            let rule = match a.rule_id.as_str() {
                "" => "?".to_string(),
                id => id.to_string(),
            };
            per_rule.entry(rule).or_default().push(what.clone());
        }
    }
    eprintln!(
        "benign corpus: {} behaviours in {} containers; alerts per rule: {:?}",
        ours.len(),
        ours.iter()
            .map(|(_, c)| c)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        per_rule
            .iter()
            .map(|(r, w)| (r, w.len()))
            .collect::<Vec<_>>()
    );
    assert!(ours.len() >= 20, "the corpus has at least 20 behaviours");
    assert!(
        per_rule.is_empty(),
        "alerts on ordinary containers: {per_rule:#?}"
    );
}
