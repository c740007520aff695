//! Random walks through the whole core — journal, snapshots, audit chain,
//! lease table — with restarts between any two commands and stretches
//! where the journal cannot be written: what a restart brings back is
//! exactly what was acknowledged (also when the journal could not take it
//! and its reserve did), the lease table always mirrors the
//! active requests, refused commands change nothing, and while the journal
//! fails only what ends or narrows access changes anything.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::tests::{config_text, enroll};
use super::*;
use crate::fuzzing::Dice;
use crate::secret::Secret;
use crate::workflow::{ExtendSpec, RequestSpec};

const USERS: usize = 4;

/// The gateway over `dir`, compacting its journal every few records so
/// restarts also start from snapshots.
fn open(dir: &Path) -> Arc<Gateway> {
    let mut text = config_text(USERS);
    text.insert_str(0, "[gateway]\njournal_compact_records = 10\n");
    let config = Config::from_toml(&dir.join("jitgate.toml"), &text).unwrap();
    Gateway::open(config).unwrap().0
}

/// One random command and who gives it.
fn random_command(gateway: &Gateway, secrets: &[Secret], dice: &mut Dice) -> (String, Command) {
    let user = dice.roll(USERS);
    let requester = format!("u{user}");
    // Mostly a request in flight, sometimes any.
    let in_flight = dice.roll(4) > 0;
    let ids: Vec<RequestId> = gateway.read(|engine| {
        engine
            .requests()
            .filter(|r| !(in_flight && r.state.is_final()))
            .map(|r| r.id)
            .collect()
    });
    let id = match ids.len() {
        0 => 1,
        n => ids[dice.roll(n)],
    };
    let owner = gateway
        .request(id)
        .map_or(requester.clone(), |r| r.requester.clone());
    match dice.roll(9) {
        0 | 1 => {
            let spec = RequestSpec {
                resource: ["db", "box"][dice.roll(2)].into(),
                duration: Some(Duration::from_secs(600)),
                ..Default::default()
            };
            (requester, Command::Request(spec))
        }
        2 => ("bob".into(), Command::Approve { id, comment: None }),
        3 => ("bob".into(), Command::Deny { id, reason: None }),
        4 => (owner, Command::Cancel { id, why: None }),
        5 | 6 => {
            let owner_number: usize = owner[1..].parse().unwrap_or(0);
            let totp = crate::mfa::current_code(
                &secrets[owner_number.min(USERS - 1)],
                chrono::Utc::now().timestamp() as u64,
            );
            (owner, Command::Checkout { id, totp })
        }
        7 => (owner, Command::Checkin { id }),
        _ => match dice.roll(3) {
            0 => ("root".into(), Command::Revoke { id, why: None }),
            1 => {
                let why = Some("drill".to_string());
                (
                    "root".into(),
                    Command::RevokeUser {
                        user: requester,
                        why,
                    },
                )
            }
            _ => {
                let by = Duration::from_secs(60);
                let reason = Some("more".to_string());
                (owner, Command::Extend(ExtendSpec { id, by, reason }))
            }
        },
    }
}

/// The lease table holds exactly the active requests' leases.
fn check_leases_mirror_requests(gateway: &Gateway) {
    let active: Vec<(String, String, RequestId)> = gateway.read(|engine| {
        engine
            .active_requests()
            .map(|r| (r.requester.clone(), r.resource.clone(), r.id))
            .collect()
    });
    for (user, resource, id) in &active {
        let lease = gateway.leases().lookup(user, resource);
        assert_eq!(lease.map(|l| l.request_id), Some(*id), "{user} {resource}");
    }
    assert_eq!(gateway.leases().len(), active.len());
}

/// The real files while the journal, or its reserve too, cannot be written.
#[derive(Default)]
struct Outage {
    journal: Option<std::fs::File>,
    reserve: Option<std::fs::File>,
}

impl Outage {
    /// Breaks, repairs or leaves things as they are, at random.
    fn step(&mut self, gateway: &Gateway, dice: &mut Dice) {
        match (self.journal.take(), self.reserve.take()) {
            (None, _) if dice.roll(12) == 0 => self.journal = Some(gateway.break_journal()),
            (Some(journal), None) if dice.roll(5) == 0 => {
                self.journal = Some(journal);
                self.reserve = Some(gateway.break_journal_reserve());
            }
            (Some(journal), Some(reserve)) if dice.roll(4) == 0 => {
                self.journal = Some(journal);
                gateway.repair_journal_reserve(reserve);
                // The retry puts what waits in memory into the reserve.
                gateway.run_timeouts();
            }
            (Some(journal), None) if dice.roll(4) == 0 => {
                gateway.repair_journal(journal);
                // The housekeeping retry, or else the next command,
                // writes what waited.
                if dice.roll(2) == 0 {
                    gateway.run_timeouts();
                    assert_eq!(gateway.held_journal_records(), 0);
                }
            }
            (journal, reserve) => (self.journal, self.reserve) = (journal, reserve),
        }
    }
}

#[test]
fn random_walks_with_restarts_bring_back_exactly_what_was_acknowledged() {
    let (mut reserved_changes, mut held_changes) = (0, 0);
    for walk in 0..6u64 {
        let dir = tempfile::tempdir().unwrap();
        let secrets: Vec<Secret> = (0..USERS)
            .map(|i| enroll(dir.path(), &format!("u{i}")))
            .collect();
        let mut gateway = open(dir.path());
        let mut dice = Dice(0x5851_f42d_4c95_7f2d ^ (walk + 1).wrapping_mul(0x9e37_79b9));
        let mut outage = Outage::default();
        for _ in 0..200 {
            let before = gateway.read(|engine| engine.clone());
            let (actor, command) = random_command(&gateway, &secrets, &mut dice);
            let result = gateway.execute(&actor, command);
            let after = gateway.read(|engine| engine.clone());
            if outage.journal.is_some() && after != before {
                let added = after.requests().count() - before.requests().count();
                let active = after.active_requests().count();
                assert!(
                    added == 0 && active <= before.active_requests().count(),
                    "a change let something in while the journal failed"
                );
                match &result {
                    Ok(_) => reserved_changes += 1,
                    Err(GatewayError::NotYetRecorded) => {
                        assert!(
                            outage.reserve.is_some(),
                            "held in memory, the reserve working"
                        );
                        held_changes += 1;
                    }
                    Err(e) => panic!("refused, yet changed: {e}"),
                }
            }
            match result {
                Err(GatewayError::NotYetRecorded) => assert!(outage.journal.is_some()),
                Err(_) => assert_eq!(after, before, "refused, yet changed"),
                Ok(_) => {}
            }
            check_leases_mirror_requests(&gateway);
            outage.step(&gateway, &mut dice);
            // A stop loses nothing acknowledged, the journal working or
            // not (the reserve has what it could not take); the storage is
            // whole again at the next start.
            if outage.reserve.is_none() && dice.roll(10) == 0 {
                gateway.run_timeouts();
                let acknowledged = gateway.read(|engine| engine.clone());
                drop(gateway);
                outage = Outage::default();
                gateway = open(dir.path());
                assert_eq!(gateway.read(|engine| engine.clone()), acknowledged);
                assert_eq!(gateway.held_journal_records(), 0);
                check_leases_mirror_requests(&gateway);
            }
        }
        let files = crate::audit::chain_files(&gateway.config().audit_log).unwrap();
        assert!(crate::audit::verify_files(&files).is_ok());
    }
    assert!(
        reserved_changes >= 10 && held_changes >= 3,
        "the walks reached {reserved_changes} changes kept in the reserve and {held_changes} in memory"
    );
}
