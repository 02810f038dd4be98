//! ChatOps: `/metricops <verb> [args]` in pull-request comments. Parsing and authorisation are pure;
//! the handlers in `pipeline/chatops.rs` act. A command starts a line; lines inside code blocks and
//! quotes are not commands. Every command gets exactly one answer.

use super::image_ref::edit_distance;

pub const PREFIX: &str = "/metricops";

/// What a person can ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Merge the revert now (or enable auto-merge where checks are required).
    Approve,
    /// No automatic merge for this revert.
    Hold,
    Unhold,
    /// Close the revert, delete its branch, do not propose this culprit again for a while.
    Cancel {
        reason: Option<String>,
    },
    /// Rebuild the revert on the branch's current tip.
    Retry,
    Status,
    Help,
    /// On a merged pull request: revert it (`--merge` to merge the revert at once).
    Rollback {
        merge: bool,
    },
    /// Resume the re-promotion the revert paused.
    Resume,
}

impl Verb {
    pub fn name(&self) -> &'static str {
        match self {
            Verb::Approve => "approve",
            Verb::Hold => "hold",
            Verb::Unhold => "unhold",
            Verb::Cancel { .. } => "cancel",
            Verb::Retry => "retry",
            Verb::Status => "status",
            Verb::Help => "help",
            Verb::Rollback { .. } => "rollback",
            Verb::Resume => "resume",
        }
    }
}

const VERBS: [&str; 9] =
    ["approve", "hold", "unhold", "cancel", "retry", "status", "help", "rollback", "resume"];

/// One command line of a comment, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Command(Verb),
    /// Not a command we know: answer with this text and do nothing.
    Reply(String),
}

pub fn help() -> String {
    format!(
        "Commands (one per line, at the start of the line):\n\
         - `{PREFIX} approve` merge this revert now (auto-merge where checks are required)\n\
         - `{PREFIX} hold` / `{PREFIX} unhold` no automatic merge for this revert / undo that\n\
         - `{PREFIX} cancel [reason]` close this revert; the culprit is not proposed again for a while\n\
         - `{PREFIX} status` what metricops knows about this revert\n\
         - `{PREFIX} resume` open the change that resumes the image automation this revert paused\n\
         - `{PREFIX} help` this text\n\
         - `{PREFIX} rollback [--merge]` on a merged pull request: open its revert (`--merge`: and merge it)\n\
         - `{PREFIX} retry` rebuild this revert on the current branch tip\n\
         \n\
         Who: people with write access to the repository; the author of the reverted change may `hold` and `cancel`."
    )
}

/// The commands in a comment, in order. An empty result means the comment is not for us.
pub fn parse(body: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    for raw in body.lines() {
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let line = raw.trim();
        if let Some(f) = fence {
            if line.starts_with(f) {
                fence = None;
            }
            continue;
        }
        if line.starts_with("```") || line.starts_with("~~~") {
            fence = Some(&line[..3]);
            continue;
        }
        if indent >= 4 || raw.starts_with('\t') || line.starts_with('>') {
            continue;
        }
        let Some(rest) = strip_prefix_ci(line, PREFIX) else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
            continue; // `/metricopsx`, or `/metricops-foo`: not ours
        }
        out.push(parse_command(rest.trim()));
    }
    out
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix))
    .then(|| &s[prefix.len()..])
}

fn parse_command(rest: &str) -> Line {
    let (verb, args) = rest.split_once(char::is_whitespace).map(|(v, a)| (v, a.trim())).unwrap_or((rest, ""));
    let verb = verb.to_ascii_lowercase();
    let no_args = |v: Verb| {
        if args.is_empty() {
            Line::Command(v)
        } else {
            Line::Reply(format!("`{PREFIX} {verb}` takes no arguments (got `{args}`)."))
        }
    };
    match verb.as_str() {
        "" | "help" => Line::Command(Verb::Help),
        "approve" => no_args(Verb::Approve),
        "hold" if args.eq_ignore_ascii_case("cancel") => Line::Command(Verb::Unhold),
        "hold" => no_args(Verb::Hold),
        "unhold" => no_args(Verb::Unhold),
        "cancel" => Line::Command(Verb::Cancel { reason: (!args.is_empty()).then(|| args.to_string()) }),
        "retry" => no_args(Verb::Retry),
        "resume" => no_args(Verb::Resume),
        "status" => no_args(Verb::Status),
        "rollback" => match args {
            "" => Line::Command(Verb::Rollback { merge: false }),
            "--merge" => Line::Command(Verb::Rollback { merge: true }),
            other => Line::Reply(format!("`{PREFIX} rollback` takes only `--merge` (got `{other}`).")),
        },
        other => {
            let nearest =
                VERBS.iter().min_by_key(|v| edit_distance(v, other)).filter(|v| edit_distance(v, other) <= 3);
            let hint = nearest.map(|v| format!(" Did you mean `{PREFIX} {v}`?")).unwrap_or_default();
            Line::Reply(format!("I don't know `{PREFIX} {other}`.{hint}\n\n{}", help()))
        }
    }
}

/// A repository role, as GitHub's collaborator permission endpoint gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    None,
    Read,
    Triage,
    Write,
    Maintain,
    Admin,
}

impl Permission {
    /// From `role_name` (falls back to the legacy `permission` field's values).
    pub fn parse(s: &str) -> Permission {
        match s {
            "admin" => Permission::Admin,
            "maintain" => Permission::Maintain,
            "write" | "push" => Permission::Write,
            "triage" => Permission::Triage,
            "read" | "pull" => Permission::Read,
            _ => Permission::None,
        }
    }
}

/// Who asks.
#[derive(Clone, Debug)]
pub struct Who {
    pub login: String,
    pub permission: Permission,
    /// Listed in the config's ChatOps users (or a configured team).
    pub allowed: bool,
    /// The author of the change the revert undoes.
    pub culprit_author: bool,
}

/// Where the comment is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    RevertPr,
    MergedPr,
    OtherPr,
}

/// Whether `who` may do `verb` at `place`; the refusal says why.
pub fn authorize(verb: &Verb, who: &Who, place: Place) -> Result<(), String> {
    let on_revert = matches!(
        verb,
        Verb::Approve
            | Verb::Hold
            | Verb::Unhold
            | Verb::Cancel { .. }
            | Verb::Retry
            | Verb::Status
            | Verb::Resume
    );
    if on_revert && place != Place::RevertPr {
        return Err(format!(
            "`{PREFIX} {}` works on a metricops revert pull request; this is not one.",
            verb.name()
        ));
    }
    if matches!(verb, Verb::Rollback { .. }) && place != Place::MergedPr {
        return Err(format!(
            "`{PREFIX} rollback` works on a merged pull request; this one is {}.",
            if place == Place::RevertPr {
                "a metricops revert (a revert is not reverted)"
            } else {
                "not merged"
            }
        ));
    }
    if matches!(verb, Verb::Help | Verb::Status) {
        return Ok(());
    }
    if who.permission >= Permission::Write || who.allowed {
        return Ok(());
    }
    if who.culprit_author && matches!(verb, Verb::Hold | Verb::Cancel { .. }) {
        return Ok(());
    }
    Err(format!(
        "you need write access to this repository to `{PREFIX} {}` (you have {:?}){}.",
        verb.name(),
        who.permission,
        if matches!(verb, Verb::Hold | Verb::Cancel { .. }) {
            ", or to be the author of the reverted change"
        } else {
            ""
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, want: &[&str]) {
        let got: Vec<String> = parse(body)
            .iter()
            .map(|l| match l {
                Line::Command(Verb::Cancel { reason }) => {
                    format!("cancel({})", reason.as_deref().unwrap_or(""))
                }
                Line::Command(Verb::Rollback { merge }) => format!("rollback({merge})"),
                Line::Command(v) => v.name().to_string(),
                Line::Reply(r) => format!("reply: {}", r.lines().next().unwrap_or("")),
            })
            .collect();
        assert_eq!(got, want, "{body:?}");
    }

    #[test]
    fn parse_table() {
        check("/metricops approve", &["approve"]);
        check("/MetricOps   Approve  ", &["approve"]);
        check("LGTM\n/metricops hold\nthanks", &["hold"]);
        check(
            "/metricops hold\n/metricops cancel flaky dashboard, not the deploy",
            &["hold", "cancel(flaky dashboard, not the deploy)"],
        );
        check("/metricops hold cancel", &["unhold"]);
        check("/metricops", &["help"]);
        check("/metricops resume", &["resume"]);
        check("/metricops rollback --merge", &["rollback(true)"]);
        check("/metricops rollback now", &["reply: `/metricops rollback` takes only `--merge` (got `now`)."]);
        check(
            "/metricops aprove",
            &["reply: I don't know `/metricops aprove`. Did you mean `/metricops approve`?"],
        );
        check("/metricops frobnicate", &["reply: I don't know `/metricops frobnicate`."]);
        check(
            "/metricops approve please",
            &["reply: `/metricops approve` takes no arguments (got `please`)."],
        );
        // Not commands: mid-line, quoted, in code, other bots' prefixes.
        check("please run /metricops approve", &[]);
        check("> /metricops approve", &[]);
        check("```\n/metricops approve\n```\n", &[]);
        check("~~~sh\n/metricops approve\n~~~\n/metricops status", &["status"]);
        check("    /metricops approve", &[]);
        check("/metricopsapprove\n/metricops-bot approve", &[]);
        check("", &[]);
    }

    #[test]
    fn authorize_table() {
        let who = |p: Permission, allowed: bool, author: bool| Who {
            login: "sam".into(),
            permission: p,
            allowed,
            culprit_author: author,
        };
        let ok = |v: Verb, w: &Who, at: Place| authorize(&v, w, at).is_ok();
        let writer = who(Permission::Write, false, false);
        let maintainer = who(Permission::Maintain, false, false);
        let reader = who(Permission::Read, false, false);
        let author = who(Permission::Read, false, true);
        let listed = who(Permission::None, true, false);
        for v in [Verb::Approve, Verb::Hold, Verb::Unhold, Verb::Cancel { reason: None }, Verb::Retry] {
            assert!(
                ok(v.clone(), &writer, Place::RevertPr)
                    && ok(v.clone(), &maintainer, Place::RevertPr)
                    && ok(v.clone(), &listed, Place::RevertPr),
                "{v:?}"
            );
            assert!(!ok(v.clone(), &reader, Place::RevertPr), "{v:?} by a reader");
            assert!(!ok(v.clone(), &writer, Place::OtherPr), "{v:?} off a revert PR");
        }
        assert!(
            ok(Verb::Hold, &author, Place::RevertPr)
                && ok(Verb::Cancel { reason: None }, &author, Place::RevertPr)
        );
        assert!(
            !ok(Verb::Approve, &author, Place::RevertPr),
            "the author may stop a revert of their change, not merge it"
        );
        assert!(ok(Verb::Status, &reader, Place::RevertPr) && ok(Verb::Help, &reader, Place::OtherPr));
        assert!(ok(Verb::Rollback { merge: false }, &writer, Place::MergedPr));
        assert!(!ok(Verb::Rollback { merge: false }, &writer, Place::RevertPr));
        assert!(!ok(Verb::Rollback { merge: false }, &reader, Place::MergedPr));
        let why = authorize(&Verb::Approve, &reader, Place::RevertPr).unwrap_err();
        assert_eq!(why, "you need write access to this repository to `/metricops approve` (you have Read).");
    }

    proptest::proptest! {
        /// Any text parses without panicking, and every command line yields exactly one answer.
        #[test]
        fn any_comment_parses(body in "(/metricops( [a-z-]{0,8}){0,2}|[ >`~a-z/]{0,12})(\n(/metricops( [a-z-]{0,8}){0,2}|[ >`~a-z/]{0,12})){0,6}") {
            let lines = parse(&body);
            let starts = body.lines().filter(|l| l.trim_start().to_ascii_lowercase().starts_with("/metricops")).count();
            proptest::prop_assert!(lines.len() <= starts);
        }
    }
}
