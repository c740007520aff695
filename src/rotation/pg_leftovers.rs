//! Sessions a window left connected to a Postgres resource as its managed
//! role past the gateway (logged in directly with a password it set with
//! `ALTER ROLE`, or through `dblink`): the gateway severs its own sessions
//! when the window ends, and ends these at the rotation after it.

use std::time::Duration;

use super::RotationError;
use super::leftovers::{Reaper, TargetProcess};

/// Client sessions of the role, but this one; parallel workers end with
/// their leader.
const LIST_SESSIONS: &str = "SELECT pid, \
       coalesce(nullif(application_name, ''), 'postgres') AS name, \
       coalesce(host(client_addr), 'local socket') AS origin \
     FROM pg_stat_activity \
     WHERE usename = current_user AND backend_type = 'client backend' \
       AND pid <> pg_backend_pid() \
     ORDER BY pid";
const TERMINATE: &str = "SELECT pg_terminate_backend(pid) FROM unnest($1::int4[]) AS pid";
/// A terminated backend leaves pg_stat_activity a moment later.
const EXIT_WAIT: Duration = Duration::from_millis(300);
/// Of the application name in the audit log (the client chose it).
const MAX_NAME_CHARS: usize = 64;

pub struct PgSessions<'a>(pub &'a tokio_postgres::Client);

impl Reaper for PgSessions<'_> {
    async fn list(&self) -> Result<Vec<TargetProcess>, RotationError> {
        let rows = self.0.query(LIST_SESSIONS, &[]).await.map_err(failed)?;
        rows.iter()
            .map(|row| {
                let pid: i32 = row.try_get(0).map_err(failed)?;
                let name: String = row.try_get(1).map_err(failed)?;
                let origin: String = row.try_get(2).map_err(failed)?;
                Ok(TargetProcess {
                    pid: u32::try_from(pid)
                        .map_err(|_| RotationError::Target(format!("backend pid {pid}")))?,
                    name: session_name(&name, &origin),
                })
            })
            .collect()
    }

    async fn kill(&self, found: &[TargetProcess]) -> Result<(), RotationError> {
        let pids: Vec<i32> = found
            .iter()
            .filter_map(|session| i32::try_from(session.pid).ok())
            .collect();
        self.0.execute(TERMINATE, &[&pids]).await.map_err(failed)?;
        tokio::time::sleep(EXIT_WAIT).await;
        Ok(())
    }
}

/// `psql from 10.0.0.7`: what the audit log names a session by.
fn session_name(application: &str, origin: &str) -> String {
    let application = crate::audit::printable(application, MAX_NAME_CHARS);
    format!("{application} from {origin}")
}

fn failed(error: tokio_postgres::Error) -> RotationError {
    RotationError::Target(format!("looking at the role's sessions: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_named_by_application_and_origin_without_control_characters() {
        assert_eq!(session_name("psql", "127.0.0.1"), "psql from 127.0.0.1");
        let long = format!("a\u{1b}[2J{}", "x".repeat(100));
        let named = session_name(&long, "local socket");
        assert!(!named.contains('\u{1b}'));
        assert_eq!(named.len(), MAX_NAME_CHARS + " from local socket".len());
    }
}
