//! What a GitHub webhook delivery means to the bot, once verified and parsed (the wire types stay in
//! `server/`). Pure: the decision what to do with it is `action`.

use crate::domain::revert::BRANCH_PREFIX;

/// One verified delivery, in the bot's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForgeEvent {
    Ping,
    /// The App was installed (or re-permissioned) on these repos (`owner/name`).
    Installed {
        installation: u64,
        repos: Vec<String>,
    },
    /// The App was uninstalled or suspended: every repo of this installation is gone.
    Uninstalled {
        installation: u64,
    },
    ReposAdded {
        installation: u64,
        repos: Vec<String>,
    },
    ReposRemoved {
        installation: u64,
        repos: Vec<String>,
    },
    /// A pull request was closed (merged or not).
    PullClosed {
        repo: String,
        number: u64,
        head_ref: String,
        head_repo: Option<String>,
        merged: bool,
    },
    /// A new comment on an issue or pull request.
    Comment(Comment),
    /// Anything else GitHub sends; answered 202 and logged.
    Other {
        event: String,
        action: Option<String>,
    },
}

/// A newly created comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    pub repo: String,
    pub number: u64,
    pub on_pull: bool,
    pub id: u64,
    pub author: String,
    /// The author is a bot (GitHub's user type, or a `[bot]` login): never obeyed.
    pub author_is_bot: bool,
    pub body: String,
    pub url: String,
}

/// What to do with an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do beyond answering; the text says why, for the log and the response.
    Acknowledge(String),
    /// Keep the installation cache current.
    Remember {
        installation: u64,
        repos: Vec<String>,
    },
    Forget {
        installation: u64,
        repos: Option<Vec<String>>,
    },
    /// A metricops revert PR was closed: its branch goes.
    DeleteBranch {
        repo: String,
        branch: String,
        merged: bool,
    },
    /// A comment with commands for the bot.
    Obey(Comment),
}

impl ForgeEvent {
    pub fn action(&self) -> Action {
        match self {
            ForgeEvent::Ping => Action::Acknowledge("pong".into()),
            ForgeEvent::Installed { installation, repos }
            | ForgeEvent::ReposAdded { installation, repos } => {
                Action::Remember { installation: *installation, repos: repos.clone() }
            }
            ForgeEvent::Uninstalled { installation } => {
                Action::Forget { installation: *installation, repos: None }
            }
            ForgeEvent::ReposRemoved { installation, repos } => {
                Action::Forget { installation: *installation, repos: Some(repos.clone()) }
            }
            ForgeEvent::PullClosed { repo, head_ref, head_repo, merged, number } => {
                let ours =
                    head_ref.starts_with(BRANCH_PREFIX) && head_repo.as_deref().is_none_or(|h| h == repo);
                if ours {
                    Action::DeleteBranch { repo: repo.clone(), branch: head_ref.clone(), merged: *merged }
                } else {
                    Action::Acknowledge(format!("#{number} is not a metricops revert; nothing to do"))
                }
            }
            ForgeEvent::Comment(c) if !c.on_pull => {
                Action::Acknowledge("a comment on an issue, not a pull request".into())
            }
            ForgeEvent::Comment(c) if c.author_is_bot => {
                Action::Acknowledge(format!("{} is a bot; bots are not obeyed", c.author))
            }
            ForgeEvent::Comment(c) if crate::domain::chatops::parse(&c.body).is_empty() => {
                Action::Acknowledge("no /metricops command in the comment".into())
            }
            ForgeEvent::Comment(c) => Action::Obey(c.clone()),
            ForgeEvent::Other { event, action } => Action::Acknowledge(format!(
                "{event}{} is not an event metricops acts on",
                action.as_deref().map(|a| format!(".{a}")).unwrap_or_default()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_closed_revert_branches_are_deleted() {
        let closed = |head: &str, head_repo: Option<&str>| ForgeEvent::PullClosed {
            repo: "shop/m".into(),
            number: 7,
            head_ref: head.into(),
            head_repo: head_repo.map(str::to_string),
            merged: true,
        };
        assert_eq!(
            closed("metricops/revert-0123456789ab", Some("shop/m")).action(),
            Action::DeleteBranch {
                repo: "shop/m".into(),
                branch: "metricops/revert-0123456789ab".into(),
                merged: true
            }
        );
        // Someone's fork with a branch of the same name is not ours to delete.
        assert!(matches!(
            closed("metricops/revert-0123456789ab", Some("eve/m")).action(),
            Action::Acknowledge(_)
        ));
        assert!(matches!(closed("feature/x", Some("shop/m")).action(), Action::Acknowledge(_)));
    }
}
