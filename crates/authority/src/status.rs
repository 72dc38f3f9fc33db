//! The device status machine: which [`Action`] an operator may take from which status,
//! and to which status it leads ([`transition`]). Pure rules, no inventory.

use super::*;

/// A device status change an operator (or the authority, on a clone) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Approve,
    Allow,
    Deny,
    Revoke,
    Quarantine,
}

impl Action {
    /// The statuses this action applies to.
    pub fn sources(self) -> &'static [DeviceStatus] {
        use DeviceStatus::*;
        match self {
            Action::Approve => &[Pending],
            Action::Allow => &[Denied, Quarantined],
            Action::Deny => &[Pending, Active],
            Action::Revoke => &[Pending, Active, Denied, Quarantined],
            Action::Quarantine => &[Pending, Active, Denied],
        }
    }

    /// The status it leads to.
    pub fn target(self) -> DeviceStatus {
        match self {
            Action::Approve | Action::Allow => DeviceStatus::Active,
            Action::Deny => DeviceStatus::Denied,
            Action::Revoke => DeviceStatus::Revoked,
            Action::Quarantine => DeviceStatus::Quarantined,
        }
    }

    /// Its name in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Revoke => "revoke",
            Action::Quarantine => "quarantine",
        }
    }

    pub(crate) fn participle(self) -> &'static str {
        match self {
            Action::Approve => "approved",
            Action::Allow => "allowed",
            Action::Deny => "denied",
            Action::Revoke => "revoked",
            Action::Quarantine => "quarantined",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The device status machine: the status `action` leads to from `status`, or why not.
pub fn transition(id: &str, status: DeviceStatus, action: Action) -> Result<DeviceStatus> {
    if action.sources().contains(&status) {
        Ok(action.target())
    } else {
        Err(AuthorityError::Transition {
            id: id.into(),
            status,
            action,
        })
    }
}
