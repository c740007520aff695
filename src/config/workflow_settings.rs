//! A resource's workflow settings: who approves, what a request must carry, how long access lasts.
//!
//! These types appear in the config file, in runtime `workflow set` changes and
//! in the journal, so they are plain serde data.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration::HumanDuration;

/// Someone who can approve: a single user or every member of a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    User(String),
    Group(String),
}

impl Principal {
    /// `group:NAME` names a group; `user:NAME` or a bare name names a user.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (kind, name) = match text.split_once(':') {
            Some(("group", name)) => ("group", name),
            Some(("user", name)) => ("user", name),
            Some((other, _)) => {
                return Err(format!(
                    "unknown principal kind {other:?} in {text:?}: use user:NAME or group:NAME"
                ));
            }
            None => ("user", text),
        };
        if name.is_empty() {
            return Err(format!("empty name in principal {text:?}"));
        }
        Ok(match kind {
            "group" => Self::Group(name.to_string()),
            _ => Self::User(name.to_string()),
        })
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(name) => write!(f, "{name}"),
            Self::Group(name) => write!(f, "group:{name}"),
        }
    }
}

impl Serialize for Principal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::User(name) => serializer.collect_str(&format_args!("user:{name}")),
            Self::Group(name) => serializer.collect_str(&format_args!("group:{name}")),
        }
    }
}

impl<'de> Deserialize<'de> for Principal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One level of approval. All levels must complete, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalLevel {
    /// Who may approve at this level.
    pub approvers: Vec<Principal>,
    /// How many distinct approvals this level needs.
    #[serde(default = "one")]
    pub required: u32,
    /// After this long without completing, `escalate_to` may approve too.
    #[serde(default)]
    pub escalate_after: Option<HumanDuration>,
    #[serde(default)]
    pub escalate_to: Vec<Principal>,
}

fn one() -> u32 {
    1
}

/// Whether the access window starts when the last approval lands or at checkout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClockStart {
    Approval,
    #[default]
    Checkout,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowSettings {
    pub approval_levels: Vec<ApprovalLevel>,
    pub require_reason: bool,
    pub require_ticket: bool,
    /// Exclusive checkout: one holder at a time.
    pub single_user: bool,
    pub mfa_required: bool,
    pub default_duration: HumanDuration,
    pub max_duration: HumanDuration,
    pub clock_starts: ClockStart,
    pub rotate_on_checkin: bool,
    /// A request not approved (or an approval not checked out) within this
    /// long times out.
    pub pending_timeout: HumanDuration,
    /// Extensions that keep the total within `duration + this` need no new
    /// approval.
    pub self_service_extension: HumanDuration,
}

impl Default for WorkflowSettings {
    fn default() -> Self {
        Self {
            approval_levels: Vec::new(),
            require_reason: false,
            require_ticket: false,
            single_user: false,
            mfa_required: true,
            default_duration: HumanDuration::from_secs(30 * 60),
            max_duration: HumanDuration::from_secs(8 * 3_600),
            clock_starts: ClockStart::Checkout,
            rotate_on_checkin: true,
            pending_timeout: HumanDuration::from_secs(24 * 3_600),
            self_service_extension: HumanDuration::from_secs(0),
        }
    }
}

impl WorkflowSettings {
    /// Applies one `KEY=VALUE` assignment from `workflow set`. Approval levels
    /// are given as `levels=group:a*1,user:b;group:c*2` (levels separated by
    /// `;`, approvers by `,`, the required count after `*`); a level's
    /// escalation as `escalate_after.N=30m escalate_to.N=user:dave` (N counts
    /// levels from 1; `escalate_after.N=none` removes it). Setting `levels`
    /// replaces every level, escalations included.
    pub fn assign(&mut self, key: &str, value: &str) -> Result<(), String> {
        if let Some((name, level)) = key.split_once('.') {
            return self.assign_to_level(key, name, level, value);
        }
        let flag = || parse_bool(key, value);
        let duration = || HumanDuration::parse(value).map_err(|e| format!("{key}: {e}"));
        match key {
            "require_reason" => self.require_reason = flag()?,
            "require_ticket" => self.require_ticket = flag()?,
            "single_user" => self.single_user = flag()?,
            "mfa_required" => self.mfa_required = flag()?,
            "rotate_on_checkin" => self.rotate_on_checkin = flag()?,
            "default_duration" => self.default_duration = duration()?,
            "max_duration" => self.max_duration = duration()?,
            "pending_timeout" => self.pending_timeout = duration()?,
            "self_service_extension" => self.self_service_extension = duration()?,
            "clock_starts" => {
                self.clock_starts = match value {
                    "approval" => ClockStart::Approval,
                    "checkout" => ClockStart::Checkout,
                    _ => {
                        return Err(format!(
                            "clock_starts: {value:?} is not approval or checkout"
                        ));
                    }
                }
            }
            "levels" | "approval_levels" => self.approval_levels = parse_levels(value)?,
            _ => return Err(format!("unknown workflow setting {key:?}")),
        }
        Ok(())
    }
}

impl WorkflowSettings {
    /// `escalate_after.N` and `escalate_to.N`: the escalation of level N.
    fn assign_to_level(
        &mut self,
        key: &str,
        name: &str,
        level: &str,
        value: &str,
    ) -> Result<(), String> {
        let count = self.approval_levels.len();
        let index = level
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=count).contains(n))
            .ok_or_else(|| format!("{key}: there is no approval level {level:?} (1 to {count})"))?;
        let level = &mut self.approval_levels[index - 1];
        match name {
            "escalate_after" if value == "none" => {
                level.escalate_after = None;
                level.escalate_to.clear();
            }
            "escalate_after" => {
                level.escalate_after =
                    Some(HumanDuration::parse(value).map_err(|e| format!("{key}: {e}"))?);
            }
            "escalate_to" => {
                level.escalate_to = value
                    .split(',')
                    .map(|p| Principal::parse(p.trim()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{key}: {e}"))?;
            }
            _ => return Err(format!("unknown workflow setting {key:?}")),
        }
        Ok(())
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{key}: {value:?} is not true or false")),
    }
}

fn parse_levels(value: &str) -> Result<Vec<ApprovalLevel>, String> {
    if value.trim().is_empty() || value == "none" {
        return Ok(Vec::new());
    }
    value
        .split(';')
        .map(|level| {
            let (who, required) = match level.split_once('*') {
                Some((who, n)) => (
                    who,
                    n.parse::<u32>()
                        .map_err(|_| format!("levels: bad approval count {n:?}"))?,
                ),
                None => (level, 1),
            };
            let approvers = who
                .split(',')
                .map(|p| Principal::parse(p.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("levels: {e}"))?;
            Ok(ApprovalLevel {
                approvers,
                required,
                escalate_after: None,
                escalate_to: Vec::new(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_parse_with_and_without_prefix() {
        assert_eq!(
            Principal::parse("bob").unwrap(),
            Principal::User("bob".into())
        );
        assert_eq!(
            Principal::parse("group:sre").unwrap(),
            Principal::Group("sre".into())
        );
        assert!(Principal::parse("team:x").is_err());
        assert!(Principal::parse("group:").is_err());
    }

    #[test]
    fn assignments_change_only_the_named_setting() {
        let mut settings = WorkflowSettings::default();
        settings.assign("max_duration", "2h").unwrap();
        settings.assign("single_user", "true").unwrap();
        settings.assign("levels", "group:sre*1;user:dave").unwrap();
        assert_eq!(settings.max_duration, HumanDuration::from_secs(7_200));
        assert!(settings.single_user);
        assert_eq!(settings.approval_levels.len(), 2);
        assert_eq!(
            settings.approval_levels[1].approvers,
            vec![Principal::User("dave".into())]
        );
    }

    #[test]
    fn escalation_is_set_per_level_and_removed_with_none() {
        let mut settings = WorkflowSettings::default();
        settings
            .assign("levels", "group:sre;group:security")
            .unwrap();
        settings.assign("escalate_after.2", "1h").unwrap();
        settings
            .assign("escalate_to.2", "user:root,group:cto")
            .unwrap();
        let level = &settings.approval_levels[1];
        assert_eq!(level.escalate_after, Some(HumanDuration::from_secs(3_600)));
        assert_eq!(
            level.escalate_to,
            vec![
                Principal::User("root".into()),
                Principal::Group("cto".into())
            ]
        );
        assert!(settings.approval_levels[0].escalate_after.is_none());
        settings.assign("escalate_after.2", "none").unwrap();
        assert_eq!(settings.approval_levels[1].escalate_after, None);
        assert!(settings.approval_levels[1].escalate_to.is_empty());
        for (key, value) in [
            ("escalate_after.3", "1h"),
            ("escalate_after.0", "1h"),
            ("escalate_after.x", "1h"),
            ("escalate_after.1", "soon"),
            ("escalate_to.1", "team:x"),
            ("escalate_by.1", "1h"),
        ] {
            let before = settings.clone();
            let error = settings.assign(key, value).unwrap_err();
            assert!(error.contains(key), "{error}");
            assert_eq!(settings, before, "{key}={value} changed the settings");
        }
    }

    #[test]
    fn bad_assignments_are_refused() {
        let mut settings = WorkflowSettings::default();
        let before = settings.clone();
        assert!(settings.assign("nope", "1").is_err());
        assert!(settings.assign("single_user", "maybe").is_err());
        assert!(settings.assign("max_duration", "forever").is_err());
        assert!(settings.assign("levels", "group:sre*x").is_err());
        assert_eq!(settings, before);
    }
}
