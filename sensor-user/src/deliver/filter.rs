//! Subscriber filters (`AlertFilter`, `EventFilter` of `service.proto`), checked once when a
//! stream opens and then applied in the server to every item.

use sensor_proto::{Alert, AlertFilter, Event, EventFilter, Severity};

/// Shortest container id prefix accepted, so a typo cannot silently match everything.
const MIN_PREFIX: usize = 4;

/// A filter that failed validation; the message names the field and what to send instead.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidFilter(String);

fn check_container_ids(ids: &[String]) -> Result<Vec<String>, InvalidFilter> {
    ids.iter()
        .map(|id| {
            let id = id.trim().to_ascii_lowercase();
            if id.len() < MIN_PREFIX {
                return Err(InvalidFilter(format!(
                    "container id {id:?} is too short: give the full id or at least \
                     {MIN_PREFIX} characters of it"
                )));
            }
            Ok(id)
        })
        .collect()
}

fn matches_container(ids: &[String], container: Option<&sensor_proto::Container>) -> bool {
    ids.is_empty() || container.is_some_and(|c| ids.iter().any(|id| c.id.starts_with(id.as_str())))
}

/// A validated [`AlertFilter`].
#[derive(Clone, Debug)]
pub struct Alerts {
    rule_ids: Vec<String>,
    min_severity: i32,
    container_ids: Vec<String>,
    event_kinds: Vec<String>,
}

impl Alerts {
    pub fn new(f: Option<AlertFilter>) -> Result<Alerts, InvalidFilter> {
        let f = f.unwrap_or_default();
        if Severity::try_from(f.min_severity).is_err() {
            return Err(InvalidFilter(format!(
                "min_severity {} is not a Severity: use 0 (any) to 5 (critical)",
                f.min_severity
            )));
        }
        Ok(Alerts {
            container_ids: check_container_ids(&f.container_ids)?,
            rule_ids: f.rule_ids,
            min_severity: f.min_severity,
            event_kinds: f.event_kinds,
        })
    }

    pub fn matches(&self, a: &Alert) -> bool {
        (self.rule_ids.is_empty() || self.rule_ids.contains(&a.rule_id))
            && a.severity >= self.min_severity
            && matches_container(&self.container_ids, a.container.as_ref())
            && (self.event_kinds.is_empty()
                || a.events.iter().any(|e| self.event_kinds.contains(&e.kind)))
    }
}

/// A validated [`EventFilter`].
#[derive(Clone, Debug)]
pub struct Events {
    kinds: Vec<String>,
    container_ids: Vec<String>,
    containers_only: bool,
}

impl Events {
    pub fn new(f: Option<EventFilter>) -> Result<Events, InvalidFilter> {
        let f = f.unwrap_or_default();
        // Kinds are checked against the schema, so a misspelt kind fails instead of
        // silently filtering everything out.
        let known = Event::kinds();
        for kind in &f.kinds {
            if !known.contains(kind) {
                return Err(InvalidFilter(format!(
                    "unknown event kind {kind:?}: use one of {}",
                    known.join(", ")
                )));
            }
        }
        Ok(Events {
            container_ids: check_container_ids(&f.container_ids)?,
            kinds: f.kinds,
            containers_only: f.containers_only,
        })
    }

    pub fn matches(&self, e: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && (!self.containers_only || e.container.is_some())
            && matches_container(&self.container_ids, e.container.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_proto::{Container, event::Body};

    fn container(id: &str) -> Option<Container> {
        Some(Container {
            id: id.into(),
            runtime: "docker".into(),
            ..Default::default()
        })
    }

    fn exec_in(id: Option<&str>) -> Event {
        Event {
            container: id.and_then(container),
            ..Default::default()
        }
        .with_body(Body::Exec(Default::default()))
    }

    #[test]
    fn event_filters() {
        let cid = "ab".repeat(32);
        let cases: &[(EventFilter, Event, bool)] = &[
            (EventFilter::default(), exec_in(None), true),
            (
                EventFilter {
                    kinds: vec!["exit".into()],
                    ..Default::default()
                },
                exec_in(Some(&cid)),
                false,
            ),
            (
                EventFilter {
                    kinds: vec!["exit".into(), "exec".into()],
                    container_ids: vec![cid[..12].to_uppercase()],
                    ..Default::default()
                },
                exec_in(Some(&cid)),
                true,
            ),
            (
                EventFilter {
                    container_ids: vec![cid.clone()],
                    ..Default::default()
                },
                exec_in(None),
                false,
            ),
            (
                EventFilter {
                    containers_only: true,
                    ..Default::default()
                },
                exec_in(None),
                false,
            ),
        ];
        for (filter, event, want) in cases {
            let f = Events::new(Some(filter.clone())).unwrap();
            assert_eq!(f.matches(event), *want, "{filter:?} on {event:?}");
        }
    }

    #[test]
    fn invalid_filters_are_refused_with_the_reason() {
        let err = Events::new(Some(EventFilter {
            kinds: vec!["execve".into()],
            ..Default::default()
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown event kind \"execve\""));
        let err = Alerts::new(Some(AlertFilter {
            container_ids: vec!["ab".into()],
            ..Default::default()
        }))
        .unwrap_err();
        assert!(err.to_string().contains("too short"));
        assert!(
            Alerts::new(Some(AlertFilter {
                min_severity: 9,
                ..Default::default()
            }))
            .is_err()
        );
    }

    #[test]
    fn alert_filters() {
        let cid = "cd".repeat(32);
        let alert = Alert {
            rule_id: "reverse-shell".into(),
            severity: Severity::High as i32,
            container: container(&cid),
            events: vec![exec_in(Some(&cid))],
            ..Default::default()
        };
        let yes = |f: AlertFilter| Alerts::new(Some(f)).unwrap().matches(&alert);
        assert!(yes(AlertFilter::default()));
        assert!(yes(AlertFilter {
            rule_ids: vec!["reverse-shell".into()],
            min_severity: Severity::Medium as i32,
            container_ids: vec![cid[..8].into()],
            event_kinds: vec!["exec".into()],
        }));
        assert!(!yes(AlertFilter {
            min_severity: Severity::Critical as i32,
            ..Default::default()
        }));
        assert!(!yes(AlertFilter {
            rule_ids: vec!["other".into()],
            ..Default::default()
        }));
        assert!(!yes(AlertFilter {
            event_kinds: vec!["exit".into()],
            ..Default::default()
        }));
    }
}
