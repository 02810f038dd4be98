//! Planning a revert: which mode, the surgical edit, and the commit message. Pure.

use serde::Serialize;

use super::culprit::CommitInfo;
use super::extract::{Occurrence, Site};
use super::image_ref::Version;
use super::linediff::LineMap;

/// How the revert is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModeChoice {
    /// Whole-commit revert when the culprit touched only this image's version, else surgical.
    Auto,
    /// The tree `git revert` would make.
    Commit,
    /// Only this image's version goes back; every other byte stays.
    Surgical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Commit,
    Surgical,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Commit => "commit",
            Mode::Surgical => "surgical",
        }
    }
}

/// Why auto mode chose what it chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AutoReason {
    OnlyTheImageChanged,
    TouchedOtherFiles(Vec<String>),
    TouchedOtherLines(Vec<String>),
    WouldConflict(Vec<String>),
    /// Later commits changed the same references: only a surgical revert sets them all back.
    LaterChanges(Vec<String>),
}

impl std::fmt::Display for AutoReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AutoReason::OnlyTheImageChanged => write!(
                f,
                "the culprit changed nothing but this image's version, and its revert applies cleanly"
            ),
            AutoReason::TouchedOtherFiles(files) => {
                write!(f, "the culprit also changed other files ({})", files.join(", "))
            }
            AutoReason::TouchedOtherLines(files) => {
                write!(f, "the culprit also changed other lines in {}", files.join(", "))
            }
            AutoReason::WouldConflict(files) => {
                write!(f, "reverting the whole commit conflicts with later changes in {}", files.join(", "))
            }
            AutoReason::LaterChanges(commits) => write!(
                f,
                "later commits changed the same references ({}); they go back too",
                commits.join(", ")
            ),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error(
        "{file}:{line}: the version is written as {why}, which cannot be edited in place; use --mode commit"
    )]
    NotEditable { file: String, line: usize, why: &'static str },
    #[error(
        "{file}:{line}: cannot write {to} there: the reference has no {missing} field to hold it; use --mode commit"
    )]
    CannotExpress { file: String, line: usize, to: String, missing: &'static str },
    #[error("{file}:{line}: the version is written once (an anchor) and also used by {}; setting it back here would change those too; use --mode commit, or edit the file by hand", others.join(", "))]
    SharedWithOtherSlots { file: String, line: usize, others: Vec<String> },
    #[error(
        "{file}:{line}: two references share the text there but would go back to different versions ({a} and {b}); edit the file by hand"
    )]
    Conflicting { file: String, line: usize, a: String, b: String },
    #[error("{file}: after the edit {slot} does not read {to}; nothing was changed")]
    Unverified { file: String, slot: String, to: String },
}

/// One byte-range replacement in a file.
pub type Edit = (std::ops::Range<usize>, String);

/// The replacements that write each site's version, leaving every other byte as it was. `all` is
/// every reference in the file: a scalar written once and shared through an alias is only edited
/// when every reference sharing it goes back too. `reread` reads the references of the edited text
/// the same way `all` was read, to check each site now says its version.
pub fn plan_edits(
    text: &str,
    sites: &[(&Occurrence, &Version)],
    all: &[Occurrence],
    reread: impl Fn(&str) -> Vec<Occurrence>,
) -> Result<Vec<Edit>, EditError> {
    let mut edits: Vec<(Edit, &Occurrence, &Version)> = Vec::new();
    for (o, to) in sites {
        let cannot = |missing| EditError::CannotExpress {
            file: o.file.clone(),
            line: o.line,
            to: to.to_string(),
            missing,
        };
        let mut push = |r: &std::ops::Range<usize>, t: String| edits.push(((r.clone(), t), o, to));
        match &o.site {
            Site::ReadOnly(why) => {
                return Err(EditError::NotEditable { file: o.file.clone(), line: o.line, why });
            }
            Site::Inline { suffix } => {
                if to.is_empty() {
                    return Err(cannot("tag"));
                }
                push(suffix, to.inline_suffix());
            }
            Site::TagAtDigest { range } => match (&to.tag, &to.digest) {
                (Some(t), Some(d)) => push(range, format!("{t}@{d}")),
                (Some(t), None) => push(range, t.clone()),
                (None, _) => return Err(cannot("tag value (the previous version had none)")),
            },
            Site::Fields { tag, digest } => {
                match (tag, &to.tag) {
                    (Some(r), Some(t)) => push(r, t.clone()),
                    (None, None) => {}
                    (Some(_), None) => {
                        return Err(cannot("tag value (the previous version had none)"));
                    }
                    (None, Some(_)) => return Err(cannot("tag")),
                }
                match (digest, &to.digest) {
                    (Some(r), Some(d)) => push(r, d.clone()),
                    (None, None) => {}
                    (Some(_), None) => {
                        return Err(cannot("digest value (the previous version had none)"));
                    }
                    (None, Some(_)) => return Err(cannot("digest")),
                }
            }
        }
    }
    // A scalar shared through an anchor goes back only when every reference to it does, to one value.
    for ((range, new), o, _) in &edits {
        let sharing: Vec<&Occurrence> =
            all.iter().filter(|x| x.site.ranges().iter().any(|r| r == range)).collect();
        let others: Vec<String> = sharing
            .iter()
            .filter(|x| !sites.iter().any(|(s, _)| s.slot == x.slot))
            .map(|x| format!("{} (line {})", x.slot, x.line))
            .collect();
        if !others.is_empty() {
            return Err(EditError::SharedWithOtherSlots { file: o.file.clone(), line: o.line, others });
        }
        if let Some(((_, b), _, _)) = edits.iter().find(|((r, n), _, _)| r == range && n != new) {
            return Err(EditError::Conflicting {
                file: o.file.clone(),
                line: o.line,
                a: new.clone(),
                b: b.clone(),
            });
        }
    }
    let mut plan: Vec<Edit> = edits.iter().map(|(e, _, _)| e.clone()).collect();
    plan.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    plan.dedup_by(|a, b| a.0 == b.0);
    // Re-read: every site must now say its version.
    let edited = String::from_utf8_lossy(&apply(text.as_bytes(), &plan)).into_owned();
    let again = reread(&edited);
    for (o, to) in sites {
        if !again.iter().any(|n| n.slot == o.slot && &n.version == *to) {
            return Err(EditError::Unverified {
                file: o.file.clone(),
                slot: o.slot.to_string(),
                to: to.to_string(),
            });
        }
    }
    Ok(plan)
}

/// The bytes with the replacements made (planned on the same offsets; bytes elsewhere, valid UTF-8
/// or not, are kept).
pub fn apply(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|(r, _)| r.start);
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for (r, new) in sorted {
        out.extend_from_slice(&bytes[at..r.start]);
        out.extend_from_slice(new.as_bytes());
        at = r.end;
    }
    out.extend_from_slice(&bytes[at..]);
    out
}

/// Whether going from `before` to `after` changed nothing but these references (their own lines:
/// the version's fields and the image entry around them).
pub fn only_these_changed(before: &str, after: &str, sites_after: &[&Occurrence]) -> bool {
    let regions: Vec<(usize, usize)> = sites_after.iter().map(|o| o.region).collect();
    LineMap::between(before, after).all_within(&regions)
}

/// The revert's commit message, in git's convention plus metricops' trailers.
pub fn message(culprit: &CommitInfo, mode: Mode, reason: &str, trailers: &[(&str, String)]) -> String {
    let mut m = format!("Revert \"{}\"\n\nThis reverts commit {}.\n", culprit.summary, culprit.sha);
    if !reason.trim().is_empty() {
        m.push('\n');
        m.push_str(reason.trim_end());
        m.push('\n');
    }
    m.push('\n');
    m.push_str(&format!("Metricops-Culprit: {}\nMetricops-Mode: {}\n", culprit.sha, mode.label()));
    for (k, v) in trailers {
        m.push_str(&format!("{k}: {v}\n"));
    }
    m
}

/// The culprit a metricops revert names in its trailer, if the message is one.
pub fn reverted_culprit(message: &str) -> Option<String> {
    message.lines().find_map(|l| l.strip_prefix("Metricops-Culprit: ")).map(|s| s.trim().to_string())
}

/// Every revert branch starts with this.
pub const BRANCH_PREFIX: &str = "metricops/revert-";

/// The deterministic branch for a culprit: `metricops/revert-<12 hex>`.
pub fn branch_name(culprit_sha: &str) -> String {
    format!("{BRANCH_PREFIX}{}", &culprit_sha[..culprit_sha.len().min(12)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::extract::extract;
    use proptest::prelude::*;

    fn edit(text: &str, to: &str) -> Result<String, EditError> {
        let ex = extract("f.yaml", text);
        let to = crate::domain::image_ref::ImageRef::parse(&format!("x:{to}"))
            .map(|r| r.version)
            .unwrap_or_else(|| Version::tag(to));
        let sites: Vec<(&Occurrence, &Version)> = ex.occurrences.iter().map(|o| (o, &to)).collect();
        let plan = plan_edits(text, &sites, &ex.occurrences, |t| extract("f.yaml", t).occurrences)?;
        Ok(String::from_utf8(apply(text.as_bytes(), &plan)).unwrap())
    }

    #[test]
    fn surgical_edits_touch_only_the_version() {
        let cases = [
            ("image: \"ghcr.io/a/b:1.3\" # keep me\n", "1.2", "image: \"ghcr.io/a/b:1.2\" # keep me\n"),
            (
                "x:\n  image: 'localhost:5000/b:1.3'\r\n  other: 1\r\n",
                "1.2",
                "x:\n  image: 'localhost:5000/b:1.2'\r\n  other: 1\r\n",
            ),
            (
                "images:\n- name: app\n  newTag: \"1.3\"   # bump\n",
                "1.2",
                "images:\n- name: app\n  newTag: \"1.2\"   # bump\n",
            ),
            (
                "image:\n  repository: r/app\n  tag: 1.10\n",
                "1.9",
                "image:\n  repository: r/app\n  tag: 1.9\n",
            ),
        ];
        for (text, to, expect) in cases {
            assert_eq!(edit(text, to).as_deref(), Ok(expect), "editing {text:?}");
        }
        let d1 = format!("sha256:{}", "a".repeat(64));
        let d0 = format!("sha256:{}", "b".repeat(64));
        let text = format!("image: r/app:main@{d1}\n");
        assert_eq!(edit(&text, &format!("main@{d0}")).unwrap(), format!("image: r/app:main@{d0}\n"));
    }

    #[test]
    fn what_cannot_be_written_in_place_is_refused() {
        let err =
            edit("image:\n  repository: r/app\n  tag: \"1.3\"\n", &format!("1.2@sha256:{}", "a".repeat(64)))
                .unwrap_err();
        assert!(matches!(err, EditError::CannotExpress { missing: "digest", .. }), "{err}");
        let err = edit("image: \"r/app:1.3\\u0020\"\n", "1.2");
        assert!(err.is_err() || err.as_deref() == Ok("image: \"r/app:1.3\\u0020\"\n"));
    }

    #[test]
    fn messages_follow_git_and_carry_trailers() {
        let c = CommitInfo {
            sha: crate::domain::culprit::CommitSha("a".repeat(40)),
            parents: vec![],
            summary: "deploy api 1.3".into(),
            message: String::new(),
            author: "A".into(),
            author_email: "a@x".into(),
            time: chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap(),
        };
        let m = message(&c, Mode::Surgical, "Alert ApiErrors fired.", &[]);
        assert_eq!(
            m,
            format!(
                "Revert \"deploy api 1.3\"\n\nThis reverts commit {a}.\n\nAlert ApiErrors fired.\n\nMetricops-Culprit: {a}\nMetricops-Mode: surgical\n",
                a = "a".repeat(40)
            )
        );
        assert_eq!(reverted_culprit(&m), Some("a".repeat(40)));
        assert_eq!(branch_name(&"a".repeat(40)), "metricops/revert-aaaaaaaaaaaa");
    }

    proptest! {
        /// Comments, quoting and every other byte survive a surgical edit.
        #[test]
        fn surgical_edits_preserve_every_other_byte(
            comment in "[ -~é]{0,20}",
            quote in prop::sample::select(vec!["", "\"", "'"]),
            indent in 0usize..6,
            eol in prop::sample::select(vec!["\n", "\r\n"]),
            old in "[0-9]{1,3}\\.[0-9]{1,3}",
            new in "[0-9]{1,3}\\.[0-9]{1,3}-[a-z]{1,4}",
        ) {
            let pad = " ".repeat(indent);
            let head = format!("# {comment}{eol}top:{eol}{pad}  other: {quote}keep{quote} # {comment}{eol}");
            let line = |v: &str| format!("{pad}  image: {quote}ghcr.io/o/app:{v}{quote} # {comment}{eol}");
            let text = format!("{head}{}{pad}  tail: 1{eol}", line(&old));
            let want = format!("{head}{}{pad}  tail: 1{eol}", line(&new));
            let got = edit(&text, &new);
            prop_assert_eq!(got.as_deref(), Ok(want.as_str()));
        }
    }
}
