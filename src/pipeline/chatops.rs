//! ChatOps handlers: one answer per command. The comment gets 👀 at once, then each command its own
//! reply. Parsing and who-may-do-what are in `domain/chatops.rs`; this does the GitHub calls.

use anyhow::Context;

use super::{Delivery, Engine, Site};
use crate::config::{ForgeKind, RepoConfig};
use crate::domain::chatops::{Line, Permission, Place, Verb, Who, authorize, help, parse};
use crate::domain::culprit::{CommitSha, Culprit, Query, Subject};
use crate::domain::forge_event::Comment;
use crate::domain::reconcile::{CANCELLED_LABEL, HOLD_LABEL, WORKLOAD_TRAILER};
use crate::domain::revert::{BRANCH_PREFIX, ModeChoice, branch_name};
use crate::forge::{Forge, PullRequest, RepoId};
use crate::revert::build_revert;

/// A value of the hidden `<!-- metricops: culprit=… incident=… -->` marker in a revert PR's body.
pub(crate) fn marker(body: &str, key: &str) -> Option<String> {
    let line = body.lines().find(|l| l.starts_with("<!-- metricops:") && l.contains(&format!("{key}=")))?;
    line.split(&format!("{key}=")).nth(1)?.split_whitespace().next().map(str::to_string)
}

impl Engine {
    /// Handles the commands in one new comment; returns the replies posted.
    pub async fn handle_comment(&self, c: &Comment) -> anyhow::Result<Vec<String>> {
        if c.author_is_bot || !c.on_pull {
            return Ok(Vec::new());
        }
        let lines = parse(&c.body);
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let forge = self.forge()?.clone();
        let forge = forge.as_ref();
        let repo =
            RepoId::from_url(&format!("/{}", c.repo)).with_context(|| format!("repository {:?}", c.repo))?;
        let Some(repo_cfg) = self
            .config
            .repos
            .iter()
            .find(|r| r.forge == ForgeKind::Github && RepoId::from_url(&r.url).as_ref() == Some(&repo))
        else {
            tracing::info!(repo = %c.repo, "a command on a repository that is not configured; ignored");
            return Ok(Vec::new());
        };
        if let Err(e) = forge.react(&repo, c.id, "eyes").await {
            tracing::warn!(error = %e, "could not react to the comment");
        }
        let mut pr = forge.pull(&repo, c.number).await?;
        let place = if pr.head.name.starts_with(BRANCH_PREFIX) {
            Place::RevertPr
        } else if pr.is_merged() {
            Place::MergedPr
        } else {
            Place::OtherPr
        };
        let permission = Permission::parse(&self.role(forge, &repo, &c.author).await?);
        let allowed = self
            .config
            .github
            .as_ref()
            .is_some_and(|g| g.chatops_users.iter().any(|u| u.eq_ignore_ascii_case(&c.author)));
        let mut replies = Vec::new();
        for line in lines {
            let text = match line {
                Line::Reply(text) => text,
                Line::Command(verb) => {
                    let culprit_author = place == Place::RevertPr
                        && permission < Permission::Write
                        && !allowed
                        && self.culprit_author(forge, &repo, &pr).await.as_deref() == Some(c.author.as_str());
                    let who = Who { login: c.author.clone(), permission, allowed, culprit_author };
                    match authorize(&verb, &who, place) {
                        Err(why) => why,
                        Ok(()) => match self.act(forge, repo_cfg, &repo, &pr, &verb, c).await {
                            Ok(text) => {
                                self.keep_command(repo_cfg, &pr, &verb, &c.author).await;
                                text
                            }
                            Err(e) => {
                                // What went wrong inside stays in the log (it can name hosts, paths, a
                                // remote's answer); the reply gives a reference to find it by.
                                let reference = format!("{}-{}", c.id, verb.name());
                                tracing::error!(verb = verb.name(), reference = %reference, error = %format!("{e:#}"), "command failed");
                                internal_error_reply(verb.name(), &reference)
                            }
                        },
                    }
                }
            };
            let body =
                format!("@{} {text}\n\n<sub>In response to [this comment]({}).</sub>\n", c.author, c.url);
            forge.comment(&repo, c.number, &body).await?;
            replies.push(text);
            // The next command of the same comment sees what this one did (`hold` then `status`).
            if let Ok(now) = forge.pull(&repo, c.number).await {
                pr = now;
            }
        }
        Ok(replies)
    }

    /// Keeps who approved, held, unheld or cancelled an open revert PR, for the history (a note on
    /// the culprit, with `history.notes`).
    async fn keep_command(&self, repo_cfg: &RepoConfig, pr: &PullRequest, verb: &Verb, by: &str) {
        let kept = matches!(verb, Verb::Approve | Verb::Hold | Verb::Unhold | Verb::Cancel { .. });
        if !kept || pr.state != "open" || !pr.head.name.starts_with(BRANCH_PREFIX) {
            return;
        }
        let k = crate::domain::history::Kept::Command(crate::domain::history::KeptCommand {
            at: chrono::Utc::now(),
            pr: pr.number,
            by: by.to_string(),
            command: verb.name().to_string(),
        });
        let on = pr.body.as_deref().and_then(|b| marker(b, "culprit")).map(crate::domain::culprit::CommitSha);
        self.keep(Some(repo_cfg.name.clone()), on, k).await;
    }

    /// A user's role on the repository, asked of GitHub at most once a minute.
    async fn role(&self, forge: &dyn Forge, repo: &RepoId, login: &str) -> anyhow::Result<String> {
        let key = (repo.to_string(), login.to_ascii_lowercase());
        if let Some((at, role)) = self.roles.lock().expect("roles lock").get(&key)
            && at.elapsed() < std::time::Duration::from_secs(60)
        {
            return Ok(role.clone());
        }
        let role = forge.permission(repo, login).await?;
        self.roles.lock().expect("roles lock").insert(key, (std::time::Instant::now(), role.clone()));
        Ok(role)
    }

    /// The author of the culprit's merged pull request, from the revert PR's culprit marker.
    async fn culprit_author(&self, forge: &dyn Forge, repo: &RepoId, pr: &PullRequest) -> Option<String> {
        let sha = marker(pr.body.as_deref()?, "culprit")?;
        let prs = forge.pulls_with_commit(repo, &sha).await.ok()?;
        prs.into_iter().find(|p| p.is_merged()).and_then(|p| p.author().map(str::to_string))
    }

    async fn act(
        &self,
        forge: &dyn Forge,
        repo_cfg: &RepoConfig,
        repo: &RepoId,
        pr: &PullRequest,
        verb: &Verb,
        c: &Comment,
    ) -> anyhow::Result<String> {
        let open = pr.state == "open";
        let held = pr.labels.iter().any(|l| l.name == HOLD_LABEL);
        Ok(match verb {
            Verb::Help => help(),
            Verb::Status => format!(
                "#{} is {}{}; head `{}` on `{}`, base `{}`.{}",
                pr.number,
                if pr.is_merged() { "merged" } else { &pr.state },
                if held { ", held (no automatic merge)" } else { "" },
                &pr.head.sha[..pr.head.sha.len().min(12)],
                pr.head.name,
                pr.base.name,
                pr.body
                    .as_deref()
                    .and_then(|b| b.lines().find(|l| l.starts_with("**Decision:**")))
                    .map(|d| format!(" {d}"))
                    .unwrap_or_default()
            ),
            Verb::Approve | Verb::Hold | Verb::Unhold | Verb::Cancel { .. } | Verb::Retry if !open => {
                format!(
                    "#{} is {} already; nothing to do.",
                    pr.number,
                    if pr.is_merged() { "merged" } else { "closed" }
                )
            }
            Verb::Hold => {
                forge.add_labels(repo, pr.number, &[HOLD_LABEL.to_string()]).await?;
                "held: no automatic merge for this revert until `/metricops unhold`.".into()
            }
            Verb::Unhold => {
                forge.remove_label(repo, pr.number, HOLD_LABEL).await?;
                "unheld: policy may merge this revert again.".into()
            }
            Verb::Cancel { reason } => {
                forge.add_labels(repo, pr.number, &[CANCELLED_LABEL.to_string()]).await?;
                forge.close_pull(repo, pr.number).await?;
                forge.delete_branch(repo, &pr.head.name).await?;
                tracing::info!(pr = pr.number, by = %c.author, reason = ?reason, "revert cancelled");
                format!(
                    "cancelled{}: closed, branch deleted. This culprit is not proposed again for {}h.",
                    reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
                    self.config.cancel_suppress().num_hours()
                )
            }
            Verb::Approve => {
                if held {
                    forge.remove_label(repo, pr.number, HOLD_LABEL).await?;
                }
                let cfg = self.config.github.as_ref().context("no `github:` section")?;
                let place = self.place(repo_cfg, &pr.head.name).await?;
                let message = self.head_message(&place, &pr.head.name).await?;
                match self.merge(forge, cfg, repo, pr, &message, &pr.head.name).await? {
                    Delivery::Merged { .. } => format!(
                        "merged into `{}`; the branch is deleted. Argo CD or Flux rolls back from there.",
                        pr.base.name
                    ),
                    Delivery::AutoMergeEnabled { .. } => {
                        "auto-merge enabled: GitHub merges this revert once the required checks pass.".into()
                    }
                    Delivery::MergeRefused { reason, .. } => {
                        format!("GitHub will not merge it now: {reason}")
                    }
                    other => other.label().to_string(),
                }
            }
            Verb::Retry => self.retry(repo_cfg, pr).await?,
            Verb::Resume => self.resume(forge, repo_cfg, repo, pr).await?,
            Verb::Rollback { merge } => self.rollback(forge, repo_cfg, repo, pr, *merge, c).await?,
        })
    }

    /// Rebuilds the revert on the base branch's current tip and force-pushes the PR's branch.
    async fn retry(&self, repo_cfg: &RepoConfig, pr: &PullRequest) -> anyhow::Result<String> {
        let (culprit_sha, w) = match self.revert_pr_subject(pr) {
            Ok(found) => found,
            Err(why) => return Ok(format!("{why}; cannot rebuild it.")),
        };
        let place = self.place(repo_cfg, &pr.head.name).await?;
        let (workload, pr) = (w.name.clone(), pr.clone());
        self.blocking(move |e| {
            let (w, _) = e.workload(&workload)?;
            let w = &w;
            e.with_mirror(&place.repo, |mirror| e.rebuild(mirror, &place, w, &pr, &culprit_sha))
        })
        .await
    }

    /// `retry`'s git step: the revert built again on the base branch's tip, force-pushed.
    fn rebuild(
        &self,
        mirror: &crate::adapters::git::GitRepo,
        place: &Site,
        w: &crate::config::WorkloadConfig,
        pr: &PullRequest,
        culprit_sha: &str,
    ) -> anyhow::Result<String> {
        let subject = w.subject();
        let auth = place.auth.clone();
        let tip = mirror.fetch(&place.url, &pr.base.name, auth.as_ref())?;
        let culprit = crate::revert::trace(mirror, &tip.0, &Query::new(subject.clone()), &w.paths)?;
        if culprit.commit.sha.0 != culprit_sha {
            return Ok(format!(
                "`{}` now has {} from {}, not from {}: this revert no longer applies. `/metricops cancel` it; the next alert proposes what is right now.",
                w.name,
                culprit.version,
                culprit.commit.sha.short(),
                &culprit_sha[..culprit_sha.len().min(12)]
            ));
        }
        mirror.delete_branch(&pr.head.name)?;
        let reason = format!("metricops: rebuilt on {} by /metricops retry.", tip.short());
        let built = build_revert(
            mirror,
            &culprit,
            &subject,
            &tip,
            ModeChoice::Auto,
            Some(&pr.head.name),
            &reason,
            &[(WORKLOAD_TRAILER, w.name.clone())],
            chrono::Utc::now(),
        )?;
        mirror.force_push(&place.url, &built.commit, &pr.head.name, auth.as_ref())?;
        Ok(format!(
            "rebuilt on `{}` at {} ({} mode: {}); the branch now points at {}.",
            pr.base.name,
            tip.short(),
            built.mode.label(),
            built.why,
            built.commit.short()
        ))
    }

    /// The culprit and the configured workload a revert PR's marker names, or why not.
    fn revert_pr_subject(&self, pr: &PullRequest) -> Result<(String, crate::config::WorkloadConfig), String> {
        let body = pr.body.as_deref().unwrap_or("");
        let (Some(culprit), Some(incident)) = (marker(body, "culprit"), marker(body, "incident")) else {
            return Err("this PR's body has no metricops marker (culprit, incident)".into());
        };
        let workload = incident.rsplit_once('@').map(|(w, _)| w.to_string()).unwrap_or(incident);
        let (w, _) = self.workload(&workload).map_err(|e| format!("{e:#}"))?;
        Ok((culprit, w))
    }

    /// Opens the pull request that resumes what the revert paused (set back on the base branch's tip).
    async fn resume(
        &self,
        forge: &dyn Forge,
        repo_cfg: &RepoConfig,
        repo: &RepoId,
        pr: &PullRequest,
    ) -> anyhow::Result<String> {
        let (culprit, w) = match self.revert_pr_subject(pr) {
            Ok(found) => found,
            Err(why) => return Ok(format!("{why}; nothing to resume.")),
        };
        let place = self.place(repo_cfg, &pr.head.name).await?;
        let (workload, base, number) = (w.name.clone(), pr.base.name.clone(), pr.number);
        let prepared = self
            .blocking(move |e| {
                let (w, _) = e.workload(&workload)?;
                let w = &w;
                e.with_mirror(&place.repo, |mirror| resume_branch(mirror, &place, w, &base, number, &culprit))
            })
            .await?;
        let (branch, message, what) = match prepared {
            Ok(p) => p,
            Err(nothing) => return Ok(nothing),
        };
        let title = format!("Resume re-promotion of {}", w.name);
        let (created, opened) =
            forge.open_or_find_pull(repo, &title, &message, &branch, &pr.base.name).await?;
        Ok(format!(
            "{} #{} to resume: {}. Merge it when the fixed version is ready to go out.",
            if opened { "opened" } else { "rebuilt on the current tip, the open" },
            created.number,
            what.join("; ")
        ))
    }
}

/// `resume`'s git step: the branch that sets the pause targets back, pushed; or what to say when
/// nothing is paused.
#[allow(clippy::type_complexity)]
fn resume_branch(
    mirror: &crate::adapters::git::GitRepo,
    place: &Site,
    w: &crate::config::WorkloadConfig,
    base: &str,
    number: u64,
    culprit: &str,
) -> anyhow::Result<Result<(String, String, Vec<String>), String>> {
    {
        let auth = place.auth.clone();
        let tip = mirror.fetch(&place.url, base, auth.as_ref())?;
        let mut edits = Vec::new();
        let mut what = Vec::new();
        for target in &w.pause {
            if let Some(text) = mirror.read_file(&tip, &target.file)?
                && let Ok(Some(new)) = crate::domain::pause::set_paused(&text, target, false)
            {
                edits.push((target.file.clone(), new));
                what.push(target.describe());
            }
        }
        if edits.is_empty() {
            return Ok(Err(format!("nothing is paused for `{}` on `{}`.", w.name, base)));
        }
        let branch = format!("metricops/resume-{}", &culprit[..culprit.len().min(12)]);
        let tree = mirror.tree_with(&tip, &edits)?;
        let message = format!(
            "Resume re-promotion of {}\n\nPaused by the revert in #{}; resumed by /metricops resume.\n\n{}\n",
            w.name,
            number,
            what.iter().map(|d| format!("- {d}")).collect::<Vec<_>>().join("\n")
        );
        let commit = mirror.write_commit(tree, &tip, &message, chrono::Utc::now())?;
        mirror.delete_branch(&branch)?;
        mirror.create_branch(&branch, &commit)?;
        mirror.force_push(&place.url, &commit, &branch, auth.as_ref())?;
        Ok(Ok((branch, message, what)))
    }
}

impl Engine {
    /// Opens (or merges, with `--merge`) the revert of a merged pull request's merge commit.
    async fn rollback(
        &self,
        forge: &dyn Forge,
        repo_cfg: &RepoConfig,
        repo: &RepoId,
        pr: &PullRequest,
        merge: bool,
        c: &Comment,
    ) -> anyhow::Result<String> {
        let sha =
            pr.merge_commit_sha.clone().context("GitHub gives no merge commit for this pull request")?;
        let branch = branch_name(&sha);
        let place = self.place(repo_cfg, &branch).await?;
        if let Some(open) = forge.open_pull_for(repo, &branch).await? {
            let already = format!("the rollback of #{} is open already: #{}", pr.number, open.number);
            if !merge {
                return Ok(format!("{already}."));
            }
            // `--merge` merges it as policy would, whoever opened it.
            let cfg = self.config.github.as_ref().context("no `github:` section")?;
            let message = self.head_message(&place, &branch).await?;
            return Ok(merge_reply(
                &already,
                self.merge(forge, cfg, repo, &open, &message, &branch).await?,
                pr,
            ));
        }
        let reason = format!("Rollback of #{} asked for by @{} (/metricops rollback).", pr.number, c.author);
        let (base, number) = (pr.base.name.clone(), pr.number);
        let built = self
            .blocking(move |e| {
                e.with_mirror(&place.repo, |mirror| {
                    let tip = mirror.fetch(&place.url, &base, place.auth.as_ref())?;
                    let commit = mirror
                        .commit_info(&CommitSha(sha.clone()))
                        .with_context(|| format!("the merge commit {sha} is not on {base}"))?;
                    let culprit = Culprit {
                        parent: commit.parents.first().cloned(),
                        commit,
                        image: None,
                        version: Default::default(),
                        previous: None,
                        changes: Vec::new(),
                        other_files: Vec::new(),
                        later: Vec::new(),
                        notes: Vec::new(),
                    };
                    let subject = Subject::Image(format!("#{number}"));
                    mirror.delete_branch(&place.revert_branch)?;
                    let built = build_revert(
                        mirror,
                        &culprit,
                        &subject,
                        &tip,
                        ModeChoice::Commit,
                        Some(&place.revert_branch),
                        &reason,
                        &[],
                        chrono::Utc::now(),
                    )?;
                    mirror.push(&place.url, &built.commit, &place.revert_branch, place.auth.as_ref())?;
                    Ok(built)
                })
            })
            .await?;
        let sha = pr.merge_commit_sha.clone().unwrap_or_default();
        let title = format!("Revert #{}: {}", pr.number, pr.title);
        let body = format!(
            "## metricops: rollback of #{}

@{} asked for the revert of #{} ([{}]({})){}.

This reverts commit {sha} on `{}`.

{}

<!-- metricops: culprit={sha} incident=rollback@{} -->
",
            pr.number,
            c.author,
            pr.number,
            pr.title,
            pr.html_url,
            pr.author().map(|a| format!(" by @{a}")).unwrap_or_default(),
            pr.base.name,
            help().lines().next().unwrap_or(""),
            pr.number
        );
        let (created, _) = forge.open_or_find_pull(repo, &title, &body, &branch, &pr.base.name).await?;
        // Labels and reviews as every revert gets them (the merged PR's author is the culprit's).
        if let Some(cfg) = self.config.github.as_ref() {
            self.dress(forge, cfg, repo, &created, Some(pr)).await;
        }
        if !merge {
            return Ok(format!(
                "opened #{} to revert #{}; merge it, or `/metricops approve` there.",
                created.number, pr.number
            ));
        }
        let cfg = self.config.github.as_ref().context("no `github:` section")?;
        let opened = format!("opened #{}", created.number);
        Ok(merge_reply(&opened, self.merge(forge, cfg, repo, &created, &built.message, &branch).await?, pr))
    }
}

/// What became of a rollback's merge, after `what` ("opened #12", "the rollback of #7 is open
/// already: #12").
fn merge_reply(what: &str, d: Delivery, reverted: &PullRequest) -> String {
    match d {
        Delivery::Merged { .. } => {
            format!("{what}, and merged it into `{}`: #{} is reverted.", reverted.base.name, reverted.number)
        }
        Delivery::AutoMergeEnabled { .. } => {
            format!("{what}; auto-merge is on, GitHub merges it once the required checks pass.")
        }
        Delivery::MergeRefused { reason, .. } => format!("{what}; GitHub will not merge it now: {reason}"),
        other => format!("{what} ({})", other.label()),
    }
}

/// The reply to a command that failed inside the bot: no internal error text, a reference into the log.
fn internal_error_reply(verb: &str, reference: &str) -> String {
    format!(
        "`/metricops {verb}` failed inside the bot. Its log has the details under reference `{reference}`; the command may be tried again."
    )
}
