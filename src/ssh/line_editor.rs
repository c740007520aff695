//! The little line editing the interactive prompt offers on a pty:
//! backspace, Ctrl-U, Ctrl-C, Ctrl-D, the arrow keys' history and Tab
//! completion. Pure logic: the console feeds it bytes and writes the echo
//! it returns.

use crate::control::MAX_LINE;

const CTRL_C: u8 = 3;
const CTRL_D: u8 = 4;
const CTRL_H: u8 = 8;
const CTRL_U: u8 = 0x15;
const TAB: u8 = 9;
const BELL: u8 = 7;
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
    /// Tab: the console looks up what may come next and hands it to
    /// [`LineEditor::complete`].
    Complete,
}

/// What Tab did with the words that may come next.
#[derive(Debug, PartialEq, Eq)]
pub enum Completion {
    /// The line grew (or, with nothing to add, the bell rang): these bytes
    /// show it.
    Echo(Vec<u8>),
    /// Several words fit and the line cannot grow: they are shown, then
    /// the prompt and the line again.
    Choices(Vec<String>),
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

    /// The whole line as typed so far (the cursor is always at its end).
    pub fn typed(&self) -> String {
        String::from_utf8_lossy(&self.line).into_owned()
    }

    /// Completes the line's last word from `candidates` (every word that
    /// may stand there): one match is finished with a space after it;
    /// several grow the word as far as they agree, else are listed.
    pub fn complete(&mut self, candidates: &[String]) -> Completion {
        let typed = self.typed();
        let partial = typed.rsplit(char::is_whitespace).next().unwrap_or_default();
        let fitting: Vec<&String> = candidates
            .iter()
            .filter(|word| word.starts_with(partial))
            .collect();
        let grown = match fitting.as_slice() {
            [] => String::new(),
            [only] => format!("{} ", &only[partial.len()..]),
            [first, rest @ ..] => {
                let agreed = rest.iter().fold(first.len(), |agreed, word| {
                    common_prefix(&first[..agreed], word)
                });
                first[partial.len()..agreed].to_string()
            }
        };
        if grown.is_empty() && fitting.len() > 1 {
            return Completion::Choices(fitting.into_iter().cloned().collect());
        }
        if grown.is_empty() || self.line.len() + grown.len() > MAX_LINE {
            return Completion::Echo(vec![BELL]);
        }
        self.line.extend_from_slice(grown.as_bytes());
        Completion::Echo(grown.into_bytes())
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
            TAB if self.pty => Step::Complete,
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

/// The length of the longest common prefix of `a` and `b`, at a
/// character boundary of both.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((at, _), _)| at)
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
            line_after(b"sta\x01tus\x02\r", &[]),
            Step::Line("status".into())
        );
        assert_eq!(line_after(b"sta\t", &[]), Step::Complete);
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

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| w.to_string()).collect()
    }

    fn editor_with(typed_text: &str) -> LineEditor {
        let mut editor = LineEditor::new(true, &[]);
        typed(&mut editor, typed_text.as_bytes(), &[]);
        editor
    }

    #[test]
    fn tab_finishes_a_word_only_one_candidate_fits() {
        let mut editor = editor_with("request w");
        let shown = editor.complete(&words(&["orders-prod", "web-01"]));
        assert_eq!(shown, Completion::Echo(b"eb-01 ".to_vec()));
        assert_eq!(editor.typed(), "request web-01 ");
    }

    #[test]
    fn tab_grows_a_word_as_far_as_the_candidates_agree_then_lists_them() {
        let mut editor = editor_with("re");
        let commands = words(&["request", "requests", "resources", "revoke"]);
        assert_eq!(
            editor.complete(&commands),
            Completion::Choices(commands.clone())
        );
        let mut editor = editor_with("req");
        assert_eq!(
            editor.complete(&commands),
            Completion::Echo(b"uest".to_vec())
        );
        assert_eq!(
            editor.complete(&commands),
            Completion::Choices(words(&["request", "requests"]))
        );
        assert_eq!(editor.typed(), "request");
    }

    #[test]
    fn tab_rings_the_bell_when_nothing_fits() {
        let mut editor = editor_with("request x");
        assert_eq!(
            editor.complete(&words(&["web-01"])),
            Completion::Echo(vec![BELL])
        );
        assert_eq!(editor.typed(), "request x");
        assert_eq!(editor.complete(&[]), Completion::Echo(vec![BELL]));
    }

    #[test]
    fn common_prefixes_stop_at_character_boundaries() {
        assert_eq!(common_prefix("caf\u{e9}", "caf\u{e8}"), 3);
        assert_eq!(common_prefix("web", "web-01"), 3);
        assert_eq!(common_prefix("", "x"), 0);
    }
}
