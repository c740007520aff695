//! A [`Terminal`] over one SSH session channel: output as channel data
//! (stderr as extended data unless on a pty), input with minimal line
//! editing on a pty.

use std::collections::VecDeque;

use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use tokio_util::sync::CancellationToken;

use crate::control::Terminal;

use super::flow::unless_stopped;
use super::line_editor::{Completion, LineEditor, Step};

const CTRL_C: u8 = 3;
const CTRL_D: u8 = 4;
/// Commands the prompt's arrow keys can recall.
const HISTORY: usize = 100;

/// What the user typed at a prompt.
pub enum Input {
    Line(String),
    /// Ctrl-C: the line is dropped.
    Interrupted,
    /// EOF, Ctrl-D on an empty line, or the client left.
    Ended,
}

pub struct Console {
    channel: Channel<Msg>,
    pty: bool,
    input: VecDeque<u8>,
    /// Commands typed at the prompt, oldest first.
    history: Vec<String>,
    /// The client sent EOF: no more input, but the channel stays open.
    eof: bool,
    /// The channel is closed or the client is gone.
    closed: bool,
    /// Cancelled when the client's connection ends: a write waiting for
    /// window it will never grant (it stopped reading, then left) gives up.
    gone: CancellationToken,
}

impl Console {
    pub fn new(channel: Channel<Msg>, pty: bool, gone: CancellationToken) -> Self {
        Self {
            channel,
            pty,
            input: VecDeque::new(),
            history: Vec::new(),
            eof: false,
            closed: false,
            gone,
        }
    }

    /// Writes `bytes` as channel data (or stderr), unless the client goes
    /// away first; then the console is closed.
    async fn write(&mut self, bytes: Vec<u8>, stderr: bool) {
        let written = if stderr {
            unless_stopped(&self.gone, self.channel.extended_data_bytes(1, bytes)).await
        } else {
            unless_stopped(&self.gone, self.channel.data_bytes(bytes)).await
        };
        if written.is_err() {
            self.closed = true;
        }
    }

    /// Ends the channel the way `ssh` expects: exit status, EOF, close.
    pub async fn finish(self, status: u32) {
        let _ = self.channel.exit_status(status).await;
        let _ = self.channel.eof().await;
        let _ = self.channel.close().await;
    }

    /// Waits for more input bytes; false after EOF or once the client is gone.
    async fn fill(&mut self) -> bool {
        while !self.eof && !self.closed {
            match self.channel.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    self.input.extend(data.iter());
                    return true;
                }
                Some(ChannelMsg::Eof) => self.eof = true,
                Some(ChannelMsg::Close) | None => self.closed = true,
                Some(_) => {}
            }
        }
        false
    }

    /// Waits until the channel closes, ignoring anything else.
    async fn until_closed(&mut self) {
        while !self.closed {
            match self.channel.wait().await {
                Some(ChannelMsg::Close) | None => self.closed = true,
                Some(_) => {}
            }
        }
    }

    /// One line of input, or how the user stopped typing it: Ctrl-C
    /// interrupts the line, Ctrl-D on an empty line (or EOF, or a
    /// disconnect) ends the input. The arrow keys recall earlier lines
    /// only where the line is echoed (never at a code's prompt).
    pub async fn read_input(&mut self, echo: bool) -> Input {
        self.read(echo, None).await
    }

    /// A command line typed after `prompt`: as [`Self::read_input`], and Tab
    /// completes commands, flags and the names of `resources`.
    pub async fn read_command(&mut self, prompt: &str, resources: &[String]) -> Input {
        self.read(true, Some((prompt, resources))).await
    }

    async fn read(&mut self, echo: bool, completing: Option<(&str, &[String])>) -> Input {
        let history = if echo {
            std::mem::take(&mut self.history)
        } else {
            Vec::new()
        };
        let mut editor = LineEditor::new(self.pty, &history);
        let input = loop {
            let Some(byte) = self.input.pop_front() else {
                if self.fill().await {
                    continue;
                }
                break editor.unfinished().map_or(Input::Ended, Input::Line);
            };
            match editor.feed(byte, &history) {
                Step::Echo(shown) => {
                    if echo && self.pty && !shown.is_empty() {
                        self.write(shown, false).await;
                    }
                }
                Step::Line(line) => {
                    if byte == b'\r' && self.input.front() == Some(&b'\n') {
                        self.input.pop_front();
                    }
                    break Input::Line(line);
                }
                Step::Interrupted => break Input::Interrupted,
                Step::Ended => break Input::Ended,
                Step::Complete => {
                    if let Some((prompt, resources)) = completing {
                        let candidates = crate::control::completions(&editor.typed(), resources);
                        let shown = match editor.complete(&candidates) {
                            Completion::Echo(shown) => shown,
                            Completion::Choices(words) => {
                                let typed = editor.typed();
                                format!("\r\n{}\r\n{prompt}{typed}", words.join("  ")).into_bytes()
                            }
                        };
                        self.write(shown, false).await;
                    }
                }
            }
        };
        if echo {
            self.history = history;
        }
        input
    }

    /// Keeps a command typed at the prompt for the arrow keys to recall.
    pub fn remember(&mut self, line: &str) {
        if self.history.last().is_some_and(|last| last == line) {
            return;
        }
        if self.history.len() == HISTORY {
            self.history.remove(0);
        }
        self.history.push(line.to_string());
    }

    fn terminal_text(&self, text: &str) -> String {
        if self.pty {
            text.replace('\n', "\r\n")
        } else {
            text.to_string()
        }
    }
}

impl Terminal for Console {
    fn has_pty(&self) -> bool {
        self.pty
    }

    async fn out(&mut self, text: &str) {
        let text = self.terminal_text(text);
        self.write(text.into_bytes(), false).await;
    }

    async fn err(&mut self, text: &str) {
        let text = self.terminal_text(text).into_bytes();
        // On a pty stderr is the terminal, as under sshd: one stream keeps
        // an error ahead of the prompt that follows it (the client writes
        // its stdout and stderr buffers in no fixed order).
        let stderr = !self.pty;
        self.write(text, stderr).await;
    }

    async fn read_line(&mut self, echo: bool) -> Option<String> {
        match self.read_input(echo).await {
            Input::Line(line) => Some(line),
            Input::Interrupted | Input::Ended => None,
        }
    }

    async fn interrupted(&mut self) {
        loop {
            if self.input.contains(&CTRL_C) || self.input.contains(&CTRL_D) {
                self.input.clear();
                return;
            }
            self.input.clear();
            if !self.fill().await {
                // EOF on stdin (`ssh GW watch </dev/null`) is not a request
                // to stop; a closed channel or a disconnect is.
                return self.until_closed().await;
            }
        }
    }
}
