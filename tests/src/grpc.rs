//! The sensor's gRPC API from the tests: a client on its Unix socket, and blocking calls for
//! tests that are not async.

use std::{
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use sensor_proto::{self as pb, sensor_client::SensorClient, watch_alerts_response};
use tonic::transport::Channel;

use crate::Sensor;

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

impl Sensor {
    /// A client of the `sensor.v1.Sensor` service on this sensor's Unix socket.
    pub async fn client(&self) -> SensorClient<Channel> {
        let channel = sensor_proto::connect_unix(self.socket())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "connecting to {}: {e}; stderr: {}",
                    self.socket().display(),
                    self.stderr_text()
                )
            });
        SensorClient::new(channel)
    }

    /// `GetHealth`.
    pub fn grpc_health(&self) -> pb::GetHealthResponse {
        block_on(async {
            let mut client = self.client().await;
            let health = client.get_health(pb::GetHealthRequest {}).await;
            health.expect("GetHealth").into_inner()
        })
    }

    /// Every alert in the spool, oldest first, through `WatchAlerts` from the start.
    pub fn grpc_spooled_alerts(&self) -> Vec<pb::Alert> {
        let last = self.grpc_health().delivery.unwrap().spool.unwrap().last_seq;
        block_on(async {
            let request = pb::WatchAlertsRequest {
                since_seq: Some(0),
                ..Default::default()
            };
            let mut client = self.client().await;
            let mut stream = client.watch_alerts(request).await.unwrap().into_inner();
            let mut alerts: Vec<pb::Alert> = Vec::new();
            while alerts.last().map_or(0, |a| a.seq) < last {
                let item = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
                let Ok(Ok(Some(item))) = item else {
                    panic!(
                        "replay stopped after {:?} of {last}",
                        alerts.last().map(|a| a.seq)
                    )
                };
                match item.item {
                    Some(watch_alerts_response::Item::Alert(alert)) => alerts.push(alert),
                    Some(watch_alerts_response::Item::Missed(m)) => panic!("missed: {m:?}"),
                    None => {}
                }
            }
            alerts
        })
    }

    /// The first alert of `rule` for container `cid` in `WatchAlerts` from the start of the
    /// spool, waiting up to 30 s.
    pub fn grpc_alert(&self, rule: &str, cid: &str) -> pb::Alert {
        block_on(async {
            let request = pb::WatchAlertsRequest {
                filter: Some(pb::AlertFilter {
                    rule_ids: vec![rule.to_string()],
                    container_ids: vec![cid.to_string()],
                    ..Default::default()
                }),
                since_seq: Some(0),
            };
            let mut client = self.client().await;
            let mut stream = client.watch_alerts(request).await.unwrap().into_inner();
            loop {
                let item = tokio::time::timeout(Duration::from_secs(30), stream.message())
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "no {rule} alert for {cid} within 30 s: {}",
                            self.stderr_text()
                        )
                    })
                    .expect("the alert stream stays healthy")
                    .expect("the alert stream stays open");
                if let Some(watch_alerts_response::Item::Alert(alert)) = item.item {
                    return alert;
                }
            }
        })
    }

    /// A live `WatchAlerts` subscriber (no `since_seq`), subscribed when this returns, that
    /// collects every alert it receives on a thread of its own.
    pub fn live_alerts(&self) -> LiveAlerts {
        let socket = self.socket().to_path_buf();
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready) = mpsc::channel();
        let sink = alerts.clone();
        thread::spawn(move || {
            block_on(async move {
                let channel = sensor_proto::connect_unix(&socket).await.unwrap();
                let mut client = SensorClient::new(channel);
                let request = pb::WatchAlertsRequest::default();
                let mut stream = client.watch_alerts(request).await.unwrap().into_inner();
                let _ = ready_tx.send(());
                while let Ok(Some(item)) = stream.message().await {
                    if let Some(watch_alerts_response::Item::Alert(alert)) = item.item {
                        sink.lock().unwrap().push(alert);
                    }
                }
            })
        });
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("a live WatchAlerts subscription within 10 s");
        LiveAlerts { alerts }
    }
}

/// The alerts a [`Sensor::live_alerts`] subscriber received so far.
pub struct LiveAlerts {
    alerts: Arc<Mutex<Vec<pb::Alert>>>,
}

impl LiveAlerts {
    pub fn received(&self) -> Vec<pb::Alert> {
        self.alerts.lock().unwrap().clone()
    }

    /// The first received alert of `rule` that `pred` accepts, waiting up to 30 s.
    pub fn wait_for(&self, rule: &str, pred: impl Fn(&pb::Alert) -> bool) -> pb::Alert {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self
                .received()
                .into_iter()
                .find(|a| a.rule_id == rule && pred(a));
            if let Some(alert) = found {
                return alert;
            }
            assert!(
                Instant::now() < deadline,
                "no live {rule} alert within 30 s; received: {:?}",
                self.received()
                    .iter()
                    .map(|a| &a.rule_id)
                    .collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}
