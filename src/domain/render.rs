//! Pull-request text from templates (minijinja). Pure: the templates come in as strings.

use minijinja::Environment;
use serde::Serialize;

pub const PR_TITLE: &str = include_str!("../../templates/pr_title.txt");
pub const PR_BODY: &str = include_str!("../../templates/pr_body.md");

#[derive(Clone, Debug, Serialize)]
pub struct AlertView {
    pub name: String,
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
    pub changes: Vec<ChangeView>,
    /// The version the culprit made current (the first bad one).
    pub first_bad: String,
    /// Later changes of the same references, newest first: they go back too.
    pub later: Vec<LaterView>,
    pub culprit: CulpritView,
    pub original_pr: Option<OriginalPr>,
    /// What the revert commit pauses so the bad version is not promoted again.
    pub paused: Vec<String>,
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

/// Renders `(title, body)`.
pub fn render_pr(view: &PrView, title_tpl: &str, body_tpl: &str) -> Result<(String, String), RenderError> {
    let env = Environment::new();
    let render = |name: &str, tpl: &str| {
        env.render_str(tpl, minijinja::value::Serde(view))
            .map_err(|source| RenderError { name: name.to_string(), source })
    };
    let title = render("pr_title.txt", title_tpl)?.trim().to_string();
    let body = render("pr_body.md", body_tpl)?;
    Ok((title, body))
}
