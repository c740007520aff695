//! The little line editing the interactive prompt offers on a pty:
//! backspace, Ctrl-U, Ctrl-C, Ctrl-D, and the arrow keys' history. Pure
//! logic: the console feeds it bytes and writes the echo it returns.

use crate::control::MAX_LINE;

const CTRL_C: u8 = 3;
const CTRL_D: u8 = 4;
const CTRL_H: u8 = 8;
const CTRL_U: u8 = 0x15;
const ESC: u8 = 0x1b;
const BACKSPACE: u8 = 0x7f;

/// What one byte of input did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Still typing; these bytes show the change (empty: nothing to show).
    Echo(Vec<u8>),
    /// Enter: the line is complete.
    Line(String),
    /// Ctrl-C: the line is dropped.
    Interrupted,
    /// Ctrl-D on an empty line.
    Ended,
}

/// Where in a terminal's escape sequence (an arrow key is `ESC [ A`, or
/// `ESC O A` in application mode) the input is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    Outside,
    /// After ESC.
    Started,
    /// After `ESC [` or `ESC O`, until the final byte.
    Sequence,
}

pub struct LineEditor {
    line: Vec<u8>,
    /// Editing keys (escape sequences, history, Ctrl-U) are for a person
    /// at a terminal; without a pty every byte but the controls is text.
    pty: bool,
    escape: Escape,
    /// The history entry shown, counted from the oldest; the history's
    /// length while the line is the user's own.
    recall: usize,
    /// The user's own line, kept while they look through the history.
    draft: Vec<u8>,
}

impl LineEditor {
    pub fn new(pty: bool, history: &[String]) -> Self {
        Self {
            line: Vec::new(),
            pty,
            escape: Escape::Outside,
            recall: history.len(),
            draft: Vec::new(),
        }
    }

    /// The line typed so far, for input that ends without Enter.
    pub fn unfinished(&self) -> Option<String> {
        (!self.line.is_empty()).then(|| String::from_utf8_lossy(&self.line).into_owned())
    }

    pub fn feed(&mut self, byte: u8, history: &[String]) -> Step {
        if self.pty && self.escape != Escape::Outside {
            return self.escape_byte(byte, history);
        }
        match byte {
            b'\r' | b'\n' => Step::Line(String::from_utf8_lossy(&self.line).into_owned()),
            CTRL_C => Step::Interrupted,
            CTRL_D if self.line.is_empty() => Step::Ended,
            BACKSPACE | CTRL_H if self.pty => Step::Echo(self.erase_char()),
            CTRL_U if self.pty => Step::Echo(self.replace_line(Vec::new())),
            ESC if self.pty => {
                self.escape = Escape::Started;
                Step::Echo(Vec::new())
            }
            // Ctrl-D inside a line, Tab and the other controls a terminal
            // sends have no meaning here; echoed, they would upset it.
            0..=0x1f if self.pty => Step::Echo(Vec::new()),
            _ if self.line.len() <= MAX_LINE => {
                self.line.push(byte);
                Step::Echo(vec![byte])
            }
            _ => Step::Echo(Vec::new()),
        }
    }

    /// Inside an escape sequence: Up and Down walk the history, anything
    /// else (Left, Right, function keys) is dropped whole, so it neither
    /// moves the cursor nor lands in the line.
    fn escape_byte(&mut self, byte: u8, history: &[String]) -> Step {
        match (self.escape, byte) {
            (Escape::Started, b'[' | b'O') => {
                self.escape = Escape::Sequence;
                Step::Echo(Vec::new())
            }
            (Escape::Sequence, 0x20..=0x3f) => Step::Echo(Vec::new()),
            (Escape::Sequence, b'A') => {
                self.escape = Escape::Outside;
                Step::Echo(self.recall_entry(self.recall.saturating_sub(1), history))
            }
            (Escape::Sequence, b'B') => {
                self.escape = Escape::Outside;
                Step::Echo(self.recall_entry((self.recall + 1).min(history.len()), history))
            }
            _ => {
                self.escape = Escape::Outside;
                Step::Echo(Vec::new())
            }
        }
    }

    /// Shows history entry `index` (the history's length: the draft).
    fn recall_entry(&mut self, index: usize, history: &[String]) -> Vec<u8> {
        if index == self.recall {
            return Vec::new();
        }
        if self.recall == history.len() {
            self.draft = self.line.clone();
        }
        self.recall = index;
        let shown = match history.get(index) {
            Some(entry) => entry.as_bytes().to_vec(),
            None => self.draft.clone(),
        };
        self.replace_line(shown)
    }

    /// Drops the last character (all its UTF-8 bytes); the echo rubs out
    /// one column.
    fn erase_char(&mut self) -> Vec<u8> {
        let Some(mut byte) = self.line.pop() else {
            return Vec::new();
        };
        while byte & 0xc0 == 0x80 {
            match self.line.pop() {
                Some(previous) => byte = previous,
                None => break,
            }
        }
        b"\x08 \x08".to_vec()
    }

    /// Replaces the whole line; the echo rubs out the old one and writes
    /// the new.
    fn replace_line(&mut self, new: Vec<u8>) -> Vec<u8> {
        let columns = String::from_utf8_lossy(&self.line).chars().count();
        let mut echo = Vec::new();
        echo.extend(std::iter::repeat_n(b'\x08', columns));
        echo.extend(std::iter::repeat_n(b' ', columns));
        echo.extend(std::iter::repeat_n(b'\x08', columns));
        echo.extend_from_slice(&new);
        self.line = new;
        echo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(editor: &mut LineEditor, bytes: &[u8], history: &[String]) -> Vec<Step> {
        bytes.iter().map(|b| editor.feed(*b, history)).collect()
    }

    fn line_after(bytes: &[u8], history: &[String]) -> Step {
        let mut editor = LineEditor::new(true, history);
        typed(&mut editor, bytes, history).pop().unwrap()
    }

    #[test]
    fn enter_completes_the_line_and_control_keys_end_or_drop_it() {
        assert_eq!(line_after(b"status\r", &[]), Step::Line("status".into()));
        assert_eq!(line_after(b"stat\x03", &[]), Step::Interrupted);
        assert_eq!(line_after(b"\x04", &[]), Step::Ended);
        // Ctrl-D with text typed does nothing, as in a shell.
        assert_eq!(line_after(b"st\x04\r", &[]), Step::Line("st".into()));
        assert_eq!(
            line_after(b"sta\ttus\x01\r", &[]),
            Step::Line("status".into())
        );
        assert_eq!(
            line_after(b"statux\x7fs\r", &[]),
            Step::Line("status".into())
        );
        assert_eq!(
            line_after(b"revoke 1\x15status\r", &[]),
            Step::Line("status".into())
        );
    }

    #[test]
    fn backspace_takes_a_whole_character() {
        let line = line_after("caf\u{e9}\x7fe\r".as_bytes(), &[]);
        assert_eq!(line, Step::Line("cafe".into()));
    }

    #[test]
    fn arrow_keys_walk_the_history_and_other_sequences_are_dropped() {
        let history = vec!["requests".to_string(), "status".to_string()];
        assert_eq!(
            line_after(b"\x1b[A\r", &history),
            Step::Line("status".into())
        );
        assert_eq!(
            line_after(b"\x1bOA\x1bOA\r", &history),
            Step::Line("requests".into())
        );
        // Past the oldest stays there; down comes back to the draft.
        assert_eq!(
            line_after(b"sta\x1b[A\x1b[A\x1b[A\x1b[B\x1b[B\r", &history),
            Step::Line("sta".into())
        );
        // Left, right, Home and F5 leave no trace.
        assert_eq!(
            line_after(b"st\x1b[D\x1b[C\x1b[H\x1b[15~atus\r", &history),
            Step::Line("status".into())
        );
    }

    #[test]
    fn recalling_rubs_out_the_shown_line() {
        let history = vec!["ok".to_string()];
        let mut editor = LineEditor::new(true, &history);
        typed(&mut editor, b"abc\x1b[", &history);
        assert_eq!(
            editor.feed(b'A', &history),
            Step::Echo(b"\x08\x08\x08   \x08\x08\x08ok".to_vec())
        );
    }

    #[test]
    fn without_a_pty_bytes_are_text_and_the_line_is_bounded() {
        let mut editor = LineEditor::new(false, &[]);
        typed(&mut editor, b"a\x1b[Ab\x7f", &[]);
        assert_eq!(editor.unfinished().unwrap(), "a\x1b[Ab\x7f");
        let long = vec![b'x'; MAX_LINE + 10];
        let mut editor = LineEditor::new(false, &[]);
        typed(&mut editor, &long, &[]);
        assert_eq!(editor.unfinished().unwrap().len(), MAX_LINE + 1);
    }
}
