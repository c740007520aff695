//! What a relayed session channel runs, shared by its two directions and
//! with `sessions`.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::idle_clock::RunningCommand;
use super::recording::Recorder;
use super::sftp::FileLog;

/// What the client asked the channel to run.
#[derive(Default)]
pub(super) struct ChannelUse {
    pub(super) kind: Option<&'static str>,
    pub(super) command: Option<String>,
    pub(super) pty: Option<(String, u32, u32)>,
    pub(super) recorder: Option<Arc<Mutex<Recorder>>>,
    pub(super) file_log: Option<Arc<Mutex<FileLog>>>,
    /// Held while a command run without a pty has not exited: the
    /// connection is not idle meanwhile.
    pub(super) running: Option<RunningCommand>,
    /// Cancelled when the channel must stop: either side closed it, the
    /// session ends, or the gateway stops it (what it runs cannot be
    /// recorded). Each direction then stops, writes waiting included.
    pub(super) stopped: CancellationToken,
}

pub(super) type Shared = Arc<Mutex<ChannelUse>>;

impl ChannelUse {
    /// What the channel runs, for `sessions`: `shell (pty)`, `exec: make`,
    /// `sftp`; nothing before the client asked.
    pub(super) fn summary(&self) -> Option<String> {
        let pty = if self.pty.is_some() { " (pty)" } else { "" };
        let kind = self.kind?;
        Some(match (kind, self.command.as_deref()) {
            ("subsystem", Some(name)) => format!("{name}{pty}"),
            (kind, Some(command)) => format!("{kind}{pty}: {command}"),
            (kind, None) => format!("{kind}{pty}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ChannelUse;

    #[test]
    fn a_channel_sums_up_what_it_runs() {
        let used = |kind, command: Option<&str>, pty: bool| ChannelUse {
            kind,
            command: command.map(String::from),
            pty: pty.then(|| ("xterm".to_string(), 80, 24)),
            ..ChannelUse::default()
        };
        assert_eq!(used(None, None, false).summary(), None);
        let cases = [
            (used(Some("shell"), None, true), "shell (pty)"),
            (used(Some("shell"), None, false), "shell"),
            (
                used(Some("exec"), Some("make -j2"), false),
                "exec: make -j2",
            ),
            (used(Some("exec"), Some("top"), true), "exec (pty): top"),
            (used(Some("subsystem"), Some("sftp"), false), "sftp"),
        ];
        for (used, expected) in cases {
            assert_eq!(used.summary().as_deref(), Some(expected));
        }
    }
}
