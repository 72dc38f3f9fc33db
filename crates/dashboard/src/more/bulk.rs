//! Bulk actions on the devices list: approve, deny, revoke (with a reason), add a tag or
//! remove one, applied to every ticked device (or, with the "every device on this page"
//! button, to every device the page listed), one by one through the authority; the answer
//! says how many changed and which were skipped, and why.

use std::collections::BTreeSet;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mtlsgate_authority::{check_tag, Action, AuthorityError, DeviceStatus, ErrorKind};
use time::OffsetDateTime;

use super::{first, form_pairs};
use crate::pages::{authorised, html, message, AppState, Chrome};

/// The most devices one bulk action takes.
const MAX_BULK: usize = 500;

/// A device the action left alone, and why.
struct Skipped {
    id: String,
    why: String,
}

#[derive(Template)]
#[template(path = "bulk.html")]
struct BulkResult {
    chrome: Chrome,
    heading: String,
    summary: String,
    changed: Vec<String>,
    skipped: Vec<Skipped>,
    back: String,
}

/// What one bulk action does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bulk {
    Status(Action),
    AddTag,
    RemoveTag,
}

impl Bulk {
    fn parse(s: &str) -> Option<Bulk> {
        Some(match s {
            "approve" => Bulk::Status(Action::Approve),
            "deny" => Bulk::Status(Action::Deny),
            "revoke" => Bulk::Status(Action::Revoke),
            "tag" => Bulk::AddTag,
            "untag" => Bulk::RemoveTag,
            _ => return None,
        })
    }

    fn done(self) -> &'static str {
        match self {
            Bulk::Status(Action::Approve) => "approved",
            Bulk::Status(Action::Deny) => "denied",
            Bulk::Status(Action::Revoke) => "revoked",
            Bulk::Status(_) => "changed",
            Bulk::AddTag => "tagged",
            Bulk::RemoveTag => "untagged",
        }
    }
}

/// The devices list's query string to go back to, if it is one the list wrote (only
/// letters, digits and `% & = _ . -`).
fn back_to(q: &str) -> String {
    let ok = q.len() < 1024
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"%&=_.-".contains(&b));
    if ok && !q.is_empty() {
        format!("/devices?{q}")
    } else {
        "/devices".into()
    }
}

/// Why a status change was refused, in a few words.
fn why_not(e: &AuthorityError, action: Action) -> String {
    match e {
        AuthorityError::Transition { status, .. } if *status == action.target() => {
            format!("already {}", status.as_str())
        }
        AuthorityError::Transition { status, .. } => {
            format!(
                "it is {}, so it cannot be {}",
                status.as_str(),
                verb(action)
            )
        }
        e if e.kind() == ErrorKind::NotFound => "no such device".into(),
        e => e.to_string(),
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Approve => "approved",
        Action::Deny => "denied",
        Action::Revoke => "revoked",
        _ => "changed",
    }
}

pub(crate) async fn bulk(State(app): AppState, headers: HeaderMap, body: String) -> Response {
    let f = form_pairs(&body);
    let (_, s) = match authorised(&app, &headers, first(&f, "csrf")).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let back = back_to(first(&f, "back"));
    let refuse = |why: &str| {
        message(
            StatusCode::BAD_REQUEST,
            Chrome::anonymous(),
            "Nothing done",
            why,
            &back,
        )
    };
    let Some(what) = Bulk::parse(first(&f, "action")) else {
        return refuse("Choose an action; nothing was changed.");
    };
    // "Every device on this page" applies to the page's devices; otherwise the ticked ones.
    let field = if first(&f, "scope") == "page" {
        "all"
    } else {
        "id"
    };
    let ids: BTreeSet<String> = f
        .iter()
        .filter(|(k, _)| k == field)
        .map(|(_, v)| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect();
    if ids.is_empty() {
        return refuse("No device was selected; tick some devices first. Nothing was changed.");
    }
    if ids.len() > MAX_BULK {
        return refuse(&format!(
            "At most {MAX_BULK} devices at a time; nothing was changed."
        ));
    }
    let reason = first(&f, "reason").trim();
    if what == Bulk::Status(Action::Revoke) && reason.is_empty() {
        return refuse("Say why the devices are revoked; nothing was changed.");
    }
    let tag = match what {
        Bulk::AddTag | Bulk::RemoveTag => match check_tag(first(&f, "bulk_tag")) {
            Ok(t) => t,
            Err(e) => return refuse(&format!("{e}; nothing was changed.")),
        },
        Bulk::Status(_) => String::new(),
    };
    let actor = format!("dashboard:{}", s.operator);
    let inv = app.auth.inventory();
    let mut changed = Vec::new();
    let mut skipped = Vec::new();
    for id in ids.iter() {
        let now = OffsetDateTime::now_utc();
        let outcome: Result<(), String> = match what {
            Bulk::Status(action) => {
                let reason = (action == Action::Revoke).then_some(reason);
                app.auth
                    .set_status(id, action, &actor, reason, now)
                    .await
                    .map(|_| ())
                    .map_err(|e| why_not(&e, action))
            }
            Bulk::AddTag | Bulk::RemoveTag => match inv.device(id).await {
                Ok(None) => Err("no such device".into()),
                Err(e) => Err(e.to_string()),
                Ok(Some(d)) => {
                    let has = d.tags.contains(&tag);
                    if what == Bulk::AddTag && has {
                        Err(format!("already tagged {tag}"))
                    } else if what == Bulk::RemoveTag && !has {
                        Err(format!("not tagged {tag}"))
                    } else {
                        let (add, remove) = if what == Bulk::AddTag {
                            (vec![tag.clone()], vec![])
                        } else {
                            (vec![], vec![tag.clone()])
                        };
                        app.auth
                            .tag(id, &add, &remove, &actor, now)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                }
            },
        };
        match outcome {
            Ok(()) => changed.push(id.clone()),
            Err(why) => skipped.push(Skipped {
                id: id.clone(),
                why,
            }),
        }
    }
    tracing::info!(
        "dashboard: {} bulk {}: {} changed, {} skipped",
        s.operator,
        what.done(),
        changed.len(),
        skipped.len()
    );
    let done = match what {
        Bulk::AddTag => format!("tagged {tag}"),
        Bulk::RemoveTag => format!("untagged {tag}"),
        _ => what.done().to_string(),
    };
    let summary = format!(
        "{} of {} selected devices {done}{}.",
        changed.len(),
        ids.len(),
        if skipped.is_empty() {
            String::new()
        } else {
            format!("; {} skipped", skipped.len())
        }
    );
    let mut chrome = Chrome::anonymous();
    chrome.operator = Some(s.operator.clone());
    chrome.csrf = s.csrf.clone();
    chrome.here = "devices";
    chrome.pending = inv
        .fleet_counts(0, 0)
        .await
        .ok()
        .and_then(|c| {
            c.by_status
                .iter()
                .find(|(st, _)| *st == DeviceStatus::Pending)
                .map(|(_, n)| *n)
        })
        .unwrap_or(0);
    html(
        StatusCode::OK,
        &BulkResult {
            chrome,
            heading: "Bulk action".into(),
            summary,
            changed,
            skipped,
            back,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_list_query_strings_lead_back() {
        assert_eq!(
            back_to("status=active&q=&tag=cameras&sort=id&dir=desc&page=2"),
            "/devices?status=active&q=&tag=cameras&sort=id&dir=desc&page=2"
        );
        assert_eq!(back_to(""), "/devices");
        assert_eq!(back_to("x=1#/evil"), "/devices");
        assert_eq!(back_to("//evil.example"), "/devices");
    }
}
