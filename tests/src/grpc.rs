//! The sensor's gRPC API from the tests: a client on its Unix socket, and blocking calls for
//! tests that are not async.

use std::time::Duration;

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
}
