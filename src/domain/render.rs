//! Pull-request text from templates (minijinja). Pure: the templates come in as strings.

use minijinja::Environment;
use serde::Serialize;

pub const PR_TITLE: &str = include_str!("../../templates/pr_title.txt");
pub const PR_BODY: &str = include_str!("../../templates/pr_body.md");

#[derive(Clone, Debug, Serialize)]
pub struct AlertView {
    pub name: String,
    /// Alerts of this name and severity in the incident (one row stands for them all).
    pub count: usize,
    pub severity: Option<String>,
    pub starts_at: String,
    pub value: Option<String>,
    pub summary: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChangeView {
    pub file: String,
    pub line: usize,
    pub workload: Option<String>,
}

/// A later change of the same references, set back together with the culprit.
#[derive(Clone, Debug, Serialize)]
pub struct LaterView {
    pub sha: String,
    pub subject: String,
    pub time: String,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct CulpritView {
    pub sha: String,
    pub subject: String,
    pub author: String,
    pub time: String,
}

/// The pull request that brought the culprit in.
#[derive(Clone, Debug, Serialize)]
pub struct OriginalPr {
    pub number: u64,
    pub url: String,
    pub title: String,
    pub author: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Link {
    pub name: String,
    pub url: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct PrView {
    pub workload: String,
    pub incident: String,
    pub image: String,
    pub image_short: String,
    pub from: String,
    pub to: String,
    pub alerts: Vec<AlertView>,
    /// Every alert of the incident, and the groups of them not shown in `alerts`.
    pub alerts_total: usize,
    pub alert_groups_left_out: usize,
    pub changes: Vec<ChangeView>,
    /// The version the culprit made current (the first bad one).
    pub first_bad: String,
    /// Later changes of the same references, newest first: they go back too.
    pub later: Vec<LaterView>,
    pub culprit: CulpritView,
    pub original_pr: Option<OriginalPr>,
    /// What the revert commit pauses so the bad version is not promoted again.
    pub paused: Vec<String>,
    /// Where the bad tag was excluded from argocd-image-updater, one line each.
    pub excluded: Vec<String>,
    pub decision: String,
    pub decision_reason: String,
    pub mode: String,
    pub mode_reason: String,
    pub links: Vec<Link>,
}

#[derive(Debug, thiserror::Error)]
#[error("template {name}: {source}")]
pub struct RenderError {
    pub name: String,
    #[source]
    pub source: minijinja::Error,
}

/// Whether a template compiles (syntax only; unknown variables render empty).
pub fn check_template(name: &str, text: &str) -> Result<(), RenderError> {
    let env = Environment::new();
    env.template_from_str(text).map(|_| ()).map_err(|source| RenderError { name: name.to_string(), source })
}

/// GitHub refuses a pull request body over 65,536 characters.
pub const MAX_BODY_CHARS: usize = 65_536;

/// A body that fits GitHub's limit: cut at a line, said so, and the hidden marker of its last line
/// (`<!-- metricops: … -->`, how the bot finds its PR again) kept.
fn fit_body(body: String) -> String {
    if body.chars().count() <= MAX_BODY_CHARS {
        return body;
    }
    let trimmed = body.trim_end();
    let (text, marker) = match trimmed.rfind('\n') {
        Some(i) if trimmed[i + 1..].starts_with("<!-- metricops:") => (&trimmed[..i], &trimmed[i + 1..]),
        _ => (trimmed, ""),
    };
    let note = "\n\n… (cut: GitHub takes at most 65,536 characters)\n\n";
    let room = MAX_BODY_CHARS.saturating_sub(note.chars().count() + marker.chars().count() + 1);
    let cut: String = text.chars().take(room).collect();
    let cut = match cut.rfind('\n') {
        Some(i) => &cut[..i],
        None => cut.as_str(),
    };
    format!("{cut}{note}{marker}\n")
}

/// Renders `(title, body)`.
pub fn render_pr(view: &PrView, title_tpl: &str, body_tpl: &str) -> Result<(String, String), RenderError> {
    let env = Environment::new();
    let render = |name: &str, tpl: &str| {
        env.render_str(tpl, minijinja::value::Serde(view))
            .map_err(|source| RenderError { name: name.to_string(), source })
    };
    let title = render("pr_title.txt", title_tpl)?.trim().to_string();
    let body = fit_body(render("pr_body.md", body_tpl)?);
    Ok((title, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(culprit_author: &str, pr_author: Option<&str>) -> PrView {
        PrView {
            workload: "shop/checkout".into(),
            incident: "shop/checkout@x".into(),
            image: "ghcr.io/shop/checkout".into(),
            image_short: "checkout".into(),
            from: "1.5.0".into(),
            to: "1.4.2".into(),
            alerts: vec![],
            alerts_total: 0,
            alert_groups_left_out: 0,
            changes: vec![],
            first_bad: "1.5.0".into(),
            later: vec![],
            culprit: CulpritView {
                sha: "abc".into(),
                subject: "Update checkout to v1.5.0".into(),
                author: culprit_author.into(),
                time: "t".into(),
            },
            original_pr: pr_author.map(|a| OriginalPr {
                number: 7,
                url: "u".into(),
                title: "Update checkout".into(),
                author: Some(a.into()),
            }),
            paused: vec![],
            excluded: vec![],
            decision: "propose".into(),
            decision_reason: "r".into(),
            mode: "commit".into(),
            mode_reason: "r".into(),
            links: vec![],
        }
    }

    #[test]
    fn a_renovate_bump_gets_the_allowed_versions_note() {
        let body = |v: &PrView| render_pr(v, "t", include_str!("../../templates/pr_body.md")).unwrap().1;
        for v in [view("dana", Some("renovate[bot]")), view("Renovate Bot", None)] {
            let b = body(&v);
            assert!(b.contains("**Renovate** made this bump"), "{b}");
            assert!(b.contains(r#""allowedVersions": "!/^1\\.5\\.0$/""#), "{b}");
        }
        assert!(!body(&view("dana", Some("dana"))).contains("Renovate"));
    }

    #[test]
    fn an_image_updater_exclusion_is_said_with_where_it_was_made() {
        let body = |v: &PrView| render_pr(v, "t", include_str!("../../templates/pr_body.md")).unwrap().1;
        let mut v = view("dana", None);
        assert!(!body(&v).contains("argocd-image-updater"));
        v.excluded = vec!["`1.5.0` added to ignoreTags of image `checkout` on ImageUpdater argocd/shop — in this commit (argocd/updaters.yaml)".into()];
        let b = body(&v);
        assert!(
            b.contains("**argocd-image-updater** would promote `1.5.0` again, so the tag is excluded:"),
            "{b}"
        );
        assert!(b.contains("- `1.5.0` added to ignoreTags of image `checkout` on ImageUpdater argocd/shop — in this commit"), "{b}");
        assert!(b.contains("The exclusion stays after `/metricops resume`"), "{b}");
    }

    #[test]
    fn a_body_over_githubs_limit_is_cut_at_a_line_and_keeps_its_marker() {
        let short = "hello\n<!-- metricops: culprit=abc incident=x -->\n".to_string();
        assert_eq!(fit_body(short.clone()), short);
        let long = format!(
            "{}<!-- metricops: culprit=abc incident=x -->\n",
            "| a row of a long table é |\n".repeat(5000)
        );
        let fit = fit_body(long);
        assert!(fit.chars().count() <= MAX_BODY_CHARS, "{}", fit.chars().count());
        assert!(fit.ends_with(
            "(cut: GitHub takes at most 65,536 characters)\n\n<!-- metricops: culprit=abc incident=x -->\n"
        ));
        let before_note = fit.split("\n\n… (cut").next().unwrap();
        assert!(before_note.ends_with("| a row of a long table é |"), "cut at a line");
    }
}
