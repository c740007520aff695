//! Processes a window left running as an SSH resource's managed account
//! (`nohup`, `setsid`, a forgotten `tmux`), or sessions it left connected
//! to a Postgres resource as its managed role: with no window open, they
//! are standing access, so a rotation ends them.

use super::RotationError;
use super::ssh::AccountShell;

/// Lists the account's processes: the shell's own pid and its parent's
/// (the sshd process of this very login, or the runuser or sudo it runs
/// under) first, so they can be left out; `exec` makes `ps` that shell.
const LIST_PROCESSES: &str = "echo \"$$ $PPID\"; exec ps -o pid=,stat=,comm= -u \"$(id -u)\"";
/// Kills can race a process that forks: this many rounds, then give up.
const KILL_ROUNDS: usize = 3;

/// A process of the managed account on the target: its pid and name (never
/// its arguments, which may hold what a user typed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetProcess {
    pub pid: u32,
    pub name: String,
}

impl std::fmt::Display for TargetProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.pid)
    }
}

/// What `end` found: killed, and still running after.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub ended: Vec<TargetProcess>,
    pub remaining: Vec<TargetProcess>,
}

/// Where leftovers are looked for and ended: an SSH account's processes,
/// a Postgres role's sessions.
pub trait Reaper {
    /// The account's processes but the looking login's own.
    async fn list(&self) -> Result<Vec<TargetProcess>, RotationError>;
    /// Ends `found`; some may have exited meanwhile.
    async fn kill(&self, found: &[TargetProcess]) -> Result<(), RotationError>;
}

/// Ends every process `reaper` lists: with no window open, whatever still
/// runs was left behind by one. Stops as soon as `window_open` says a
/// window opened meanwhile: its processes would be someone's work.
pub async fn end(
    reaper: &impl Reaper,
    window_open: &(dyn Fn() -> bool + Sync),
) -> Result<Leftovers, RotationError> {
    let mut leftovers = Leftovers::default();
    for _ in 0..KILL_ROUNDS {
        let found = reaper.list().await?;
        // Nothing left, or what is left may be a new window's: the next
        // rotation after it looks again.
        if found.is_empty() || window_open() {
            return Ok(leftovers);
        }
        reaper.kill(&found).await?;
        for process in found {
            if !leftovers.ended.contains(&process) {
                leftovers.ended.push(process);
            }
        }
    }
    leftovers.remaining = reaper.list().await?;
    leftovers
        .ended
        .retain(|process| !leftovers.remaining.contains(process));
    Ok(leftovers)
}

/// An SSH managed account's processes, through a login as it (or as the
/// reconcile account acting as it).
pub struct SshProcesses<'a>(pub &'a AccountShell);

impl Reaper for SshProcesses<'_> {
    async fn list(&self) -> Result<Vec<TargetProcess>, RotationError> {
        let output = self
            .0
            .run(LIST_PROCESSES, b"")
            .await?
            .success("listing the account's processes (ps)")?;
        parse_processes(&String::from_utf8_lossy(&output))
    }

    async fn kill(&self, found: &[TargetProcess]) -> Result<(), RotationError> {
        let pids: Vec<String> = found.iter().map(|p| p.pid.to_string()).collect();
        // Some may have exited meanwhile: kill's status says nothing useful.
        let kill = format!("kill -KILL {} 2>/dev/null; exit 0", pids.join(" "));
        self.0.run(&kill, b"").await?;
        Ok(())
    }
}

/// Parses `LIST_PROCESSES` output, leaving out the listing login's own
/// processes and zombies (already dead, waiting to be reaped).
fn parse_processes(output: &str) -> Result<Vec<TargetProcess>, RotationError> {
    let malformed = |line: &str| RotationError::Target(format!("unexpected ps output: {line:?}"));
    let mut lines = output.lines();
    let header = lines.next().unwrap_or_default();
    let own: Vec<u32> = header
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| malformed(header))?;
    if own.len() != 2 {
        return Err(malformed(header));
    }
    let mut processes = Vec::new();
    for line in lines.filter(|line| !line.trim().is_empty()) {
        let mut fields = line.trim_start().splitn(3, char::is_whitespace);
        let (Some(pid), Some(stat), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed(line));
        };
        let pid: u32 = pid.parse().map_err(|_| malformed(line))?;
        if own.contains(&pid) || stat.starts_with('Z') {
            continue;
        }
        processes.push(TargetProcess {
            pid,
            name: name.trim().to_string(),
        });
    }
    Ok(processes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_login_and_zombies_are_not_leftovers() {
        let output = "200 150\n  150 S    sshd\n  200 R    ps\n  300 S    sleep\n  \
                      310 Z    bash\n  320 Ss   tmux: server\n";
        let names: Vec<String> = parse_processes(output)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["sleep (300)", "tmux: server (320)"]);
        assert!(parse_processes("200 150\n").unwrap().is_empty());
    }

    #[test]
    fn unexpected_listings_are_errors_not_empty_lists() {
        for output in [
            "",
            "ps: not found\n",
            "200\n",
            "200 150\n  abc S sleep\n",
            "1 2\n 3 S\n",
        ] {
            assert!(
                parse_processes(output).is_err(),
                "{output:?} was taken for a listing"
            );
        }
    }
}
