//! Planning a revert: which mode, the surgical edit, and the commit message. Pure.

use serde::Serialize;

use super::culprit::CommitInfo;
use super::extract::{Occurrence, Site, extract};
use super::image_ref::Version;

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
    IsMerge,
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
            AutoReason::IsMerge => write!(f, "the culprit is a merge commit carrying other changes"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error(
        "{file}:{line}: the version is written in a way that cannot be edited in place (escaped quotes, an alias or a block scalar); use --mode commit"
    )]
    NotEditable { file: String, line: usize },
    #[error(
        "{file}:{line}: cannot write {to} there: the reference has no {missing} field to hold it; use --mode commit"
    )]
    CannotExpress { file: String, line: usize, to: String, missing: &'static str },
    #[error("{file}: after the edit the file no longer shows {to} at line {line}; nothing was changed")]
    Unverified { file: String, line: usize, to: String },
}

/// Writes `to` into every site, leaving every other byte as it was.
pub fn set_version(text: &str, sites: &[&Occurrence], to: &Version) -> Result<String, EditError> {
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    for o in sites {
        let cannot = |missing| EditError::CannotExpress {
            file: o.file.clone(),
            line: o.line,
            to: to.to_string(),
            missing,
        };
        match &o.site {
            Site::ReadOnly => return Err(EditError::NotEditable { file: o.file.clone(), line: o.line }),
            Site::Inline { suffix } => {
                if to.is_empty() {
                    return Err(cannot("tag"));
                }
                edits.push((suffix.clone(), to.inline_suffix()));
            }
            Site::Fields { tag, digest } => {
                match (tag, &to.tag) {
                    (Some(r), Some(t)) => edits.push((r.clone(), t.clone())),
                    (None, None) => {}
                    (Some(_), None) => return Err(cannot("tag value (the previous version had none)")),
                    (None, Some(_)) => return Err(cannot("tag")),
                }
                match (digest, &to.digest) {
                    (Some(r), Some(d)) => edits.push((r.clone(), d.clone())),
                    (None, None) => {}
                    (Some(_), None) => return Err(cannot("digest value (the previous version had none)")),
                    (None, Some(_)) => return Err(cannot("digest")),
                }
            }
        }
    }
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    edits.dedup_by(|a, b| a.0 == b.0);
    let mut out = text.to_string();
    for (range, new) in edits {
        out.replace_range(range, &new);
    }
    // Re-read: every edited line must now show the new version.
    let again = extract(sites.first().map(|o| o.file.as_str()).unwrap_or(""), &out);
    for o in sites {
        let ok =
            again.occurrences.iter().any(|n| n.line == o.line && n.slot() == o.slot() && &n.version == to);
        if !ok {
            return Err(EditError::Unverified { file: o.file.clone(), line: o.line, to: to.to_string() });
        }
    }
    Ok(out)
}

/// Whether going from `before` to `after` changed nothing but these sites' version to `new`.
pub fn only_version_changed(before: &str, after: &str, sites_after: &[&Occurrence], old: &Version) -> bool {
    set_version(after, sites_after, old).is_ok_and(|back| back == before)
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
        let sites: Vec<&Occurrence> = ex.occurrences.iter().collect();
        let to = crate::domain::image_ref::ImageRef::parse(&format!("x:{to}"))
            .map(|r| r.version)
            .unwrap_or_else(|| Version::tag(to));
        set_version(text, &sites, &to)
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
