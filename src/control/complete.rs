//! Tab completion at the interactive prompt: what may come next in a
//! command line, read off the same clap grammar that parses it, so the
//! two never disagree.

use clap::{Arg, Command, CommandFactory};

use super::parse::ControlLine;

/// Words the prompt understands besides the grammar's commands (clap adds
/// `help` only when it builds the grammar for a parse).
const PROMPT_WORDS: [&str; 2] = ["exit", "help"];

/// Every word that may stand where the last, unfinished word of `line`
/// is (the empty word after a trailing space): subcommands, long flags,
/// resource names where the grammar takes a resource, and a flag's
/// allowed values.
pub fn candidates(line: &str, resources: &[String]) -> Vec<String> {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let partial = if line.is_empty() || line.ends_with(char::is_whitespace) {
        ""
    } else {
        words.pop().unwrap_or_default()
    };
    let grammar = ControlLine::command();
    let Some(place) = walk(&grammar, &words) else {
        return Vec::new();
    };
    let mut found: Vec<String> = if partial.starts_with('-') {
        long_flags(place.command)
    } else {
        match place.expects {
            Expects::Value(arg) if names_resources(arg) => resources.to_vec(),
            Expects::Value(arg) => possible_values(arg, partial),
            Expects::Word if place.command.has_subcommands() => subcommands(place.command),
            Expects::Word => match place.command.get_positionals().nth(place.positionals) {
                Some(arg) if names_resources(arg) => resources.to_vec(),
                _ => Vec::new(),
            },
        }
    };
    if words.is_empty() {
        found.extend(PROMPT_WORDS.map(String::from));
    }
    found.retain(|word| word.starts_with(partial));
    found.sort();
    found.dedup();
    found
}

/// Where in the grammar the words typed so far lead.
struct Place<'a> {
    command: &'a Command,
    /// Positional arguments of `command` given so far.
    positionals: usize,
    expects: Expects<'a>,
}

enum Expects<'a> {
    /// A subcommand, a flag or a positional argument.
    Word,
    /// The value of this flag.
    Value(&'a Arg),
}

fn walk<'a>(grammar: &'a Command, words: &[&str]) -> Option<Place<'a>> {
    let mut place = Place {
        command: grammar,
        positionals: 0,
        expects: Expects::Word,
    };
    for word in words {
        if let Expects::Value(arg) = place.expects {
            // A free-text flag (`--reason`) takes every word up to the next flag.
            let takes_more = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
            if !takes_more || word.starts_with('-') {
                place.expects = Expects::Word;
            }
            if !word.starts_with('-') {
                continue;
            }
        }
        if let Some(long) = word.strip_prefix("--") {
            let flag = place
                .command
                .get_arguments()
                .find(|a| a.get_long() == Some(long));
            if let Some(arg) = flag.filter(|arg| arg.get_action().takes_values()) {
                place.expects = Expects::Value(arg);
            }
        } else if word.starts_with('-') {
            // A short flag (-f, -n 5): none of them names a resource.
        } else if let Some(sub) = place.command.find_subcommand(word) {
            place = Place {
                command: sub,
                positionals: 0,
                expects: Expects::Word,
            };
        } else if place.command.has_subcommands() {
            return None;
        } else {
            place.positionals += 1;
        }
    }
    Some(place)
}

fn names_resources(arg: &Arg) -> bool {
    matches!(arg.get_id().as_str(), "resource" | "resources")
}

/// The values a flag allows (`audit tail --type`), each after what a
/// comma-separated list already holds.
fn possible_values(arg: &Arg, partial: &str) -> Vec<String> {
    let listed = match arg.get_value_delimiter() {
        Some(delimiter) => partial
            .rsplit_once(delimiter)
            .map(|(before, _)| format!("{before}{delimiter}"))
            .unwrap_or_default(),
        None => String::new(),
    };
    arg.get_possible_values()
        .iter()
        .map(|value| format!("{listed}{}", value.get_name()))
        .collect()
}

fn subcommands(command: &Command) -> Vec<String> {
    command
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect()
}

fn long_flags(command: &Command) -> Vec<String> {
    command
        .get_arguments()
        .filter_map(Arg::get_long)
        .map(|long| format!("--{long}"))
        .chain(std::iter::once("--help".to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(line: &str) -> Vec<String> {
        candidates(line, &["orders-prod".into(), "web-01".into()])
    }

    #[test]
    fn the_first_word_is_a_command() {
        assert_eq!(complete("req"), ["request", "requests"]);
        assert_eq!(complete("che"), ["checkin", "checkout"]);
        assert_eq!(complete("ex"), ["exit", "extend"]);
        let all = complete("");
        assert!(
            all.contains(&"resources".to_string()) && all.len() > 15,
            "{all:?}"
        );
    }

    #[test]
    fn where_the_grammar_takes_a_resource_its_names_come() {
        assert_eq!(complete("request "), ["orders-prod", "web-01"]);
        assert_eq!(complete("request w"), ["web-01"]);
        assert_eq!(complete("rotate o"), ["orders-prod"]);
        assert_eq!(complete("workflow show "), ["orders-prod", "web-01"]);
        assert_eq!(complete("workflow s"), ["set", "show"]);
        assert_eq!(complete("audit tail --resource w"), ["web-01"]);
        // A flag's allowed values, also after a comma.
        assert_eq!(
            complete("audit tail --type mfa_"),
            ["mfa_failure", "mfa_locked"]
        );
        assert_eq!(
            complete("audit tail --type refused,mfa_f"),
            ["refused,mfa_failure"]
        );
        assert_eq!(
            complete("delegate --to bob --resource "),
            ["orders-prod", "web-01"]
        );
        // A second resource, a request id or a session id: nothing to offer.
        assert!(complete("request web-01 ").is_empty());
        assert!(complete("checkout ").is_empty());
        assert!(complete("follow ").is_empty());
    }

    #[test]
    fn flags_complete_after_a_dash_and_free_text_is_left_alone() {
        assert_eq!(complete("request web-01 --r"), ["--reason"]);
        assert_eq!(complete("request web-01 --for 30m --t"), ["--ticket"]);
        assert_eq!(complete("audit tail -"), complete("audit tail --"));
        assert!(complete("audit tail --").contains(&"--follow".to_string()));
        // Words of a reason are text, not a resource or command.
        assert!(complete("request web-01 --reason disk ").is_empty());
        assert!(complete("nonsense ").is_empty());
        assert!(complete("status st").is_empty());
    }
}
