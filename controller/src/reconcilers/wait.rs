//! Why a pass leaves changes for a later one, as a value: the flow that
//! holds them (typed: it names the `Progressing` and `Ready` reasons) and
//! what it waits for, in words.

use std::fmt;

/// The multi-step flow a resource is in while changes wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Services change one safe step at a time ([`super::rollout`]).
    Rollout,
    /// The primary role moves: asked for, or off a draining node.
    Switchover,
    /// Patroni's dynamic settings are applied, members restarted for them.
    Settings,
    /// The cluster's login roles are set up.
    Logins,
    /// A password rotation moves through its phases.
    PasswordRotation,
    /// A managed etcd cluster grows or shrinks one member at a time.
    EtcdMembership,
}

impl Flow {
    /// The condition reason while this flow holds changes: CamelCase, as
    /// `haswarmctl get` and `wait --for` show it.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Rollout => "RollingUpdate",
            Self::Switchover => "Switchover",
            Self::Settings => "SettingsChange",
            Self::Logins => "SettingLogins",
            Self::PasswordRotation => "PasswordRotation",
            Self::EtcdMembership => "EtcdMembershipChange",
        }
    }
}

/// What a pass waits for before it may call the resource's changes done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wait {
    /// The flow that holds the changes.
    pub flow: Flow,
    /// What it waits for, for people (the condition's message).
    pub why: String,
}

impl Wait {
    /// `flow` waits for `why`.
    #[must_use]
    pub fn new(flow: Flow, why: impl Into<String>) -> Self {
        Self {
            flow,
            why: why.into(),
        }
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flow_has_its_own_camel_case_reason() {
        let all = [
            Flow::Rollout,
            Flow::Switchover,
            Flow::Settings,
            Flow::Logins,
            Flow::PasswordRotation,
            Flow::EtcdMembership,
        ];
        let reasons: std::collections::BTreeSet<_> = all.iter().map(|f| f.reason()).collect();
        assert_eq!(reasons.len(), all.len(), "{reasons:?}");
        for r in reasons {
            assert!(
                r.chars().next().is_some_and(char::is_uppercase)
                    && r.chars().all(char::is_alphanumeric),
                "{r}"
            );
        }
        assert_eq!(
            Flow::Rollout.reason(),
            "RollingUpdate",
            "the README names it"
        );
    }

    #[test]
    fn a_wait_reads_as_what_it_waits_for() {
        let w = Wait::new(Flow::Settings, "applying new settings");
        assert_eq!(w.to_string(), "applying new settings");
    }
}
