//! Stopping re-promotion after a revert, the GitOps way: the automation that would roll the bad
//! version forward again is paused in the same commit as the revert (and resumed by a later one).
//! Flux `ImageUpdateAutomation`: `spec.suspend`. Kargo `ProjectConfig`:
//! `spec.promotionPolicies[stage].autoPromotionEnabled`. Edits splice one scalar (or insert one
//! line) and leave every other byte as it was; the result is parsed again to check it.

use super::yaml::{Node, Scalar, Style, parse_documents};

/// What to pause, as configured for a workload.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseTarget {
    /// The manifest in the repository holding the object.
    pub file: String,
    /// `ImageUpdateAutomation` (Flux) or `ProjectConfig` (Kargo).
    pub kind: PauseKind,
    /// Kargo: the stage whose auto-promotion stops.
    #[serde(default)]
    pub stage: Option<String>,
}

/// What can be paused: a config naming anything else is refused when it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum PauseKind {
    /// Flux image automation: `spec.suspend`.
    ImageUpdateAutomation,
    /// Kargo: a stage's `autoPromotionEnabled`.
    ProjectConfig,
}

impl PauseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseKind::ImageUpdateAutomation => "ImageUpdateAutomation",
            PauseKind::ProjectConfig => "ProjectConfig",
        }
    }
}

impl std::fmt::Display for PauseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PauseTarget {
    pub fn describe(&self) -> String {
        match self.stage.as_deref() {
            Some(s) => format!("{} auto-promotion of stage {s} in {}", self.kind, self.file),
            None => format!("{} in {}", self.kind, self.file),
        }
    }
}

/// `paused: true` stops the automation, `false` resumes it. `Ok(None)`: already so.
pub fn set_paused(text: &str, target: &PauseTarget, paused: bool) -> Result<Option<String>, String> {
    let docs = parse_documents(text).map_err(|e| format!("{}: not valid YAML: {e}", target.file))?;
    let doc = docs
        .iter()
        .find(|d| d.str_at("kind") == Some(target.kind.as_str()))
        .ok_or_else(|| format!("{}: no {} in it", target.file, target.kind))?;
    let spec = doc.get("spec").ok_or_else(|| format!("{}: {} has no spec", target.file, target.kind))?;
    let (mapping, key, value) = match target.kind {
        PauseKind::ImageUpdateAutomation => (spec, "suspend", if paused { "true" } else { "false" }),
        PauseKind::ProjectConfig => {
            let stage = target
                .stage
                .as_deref()
                .ok_or_else(|| format!("{}: a ProjectConfig pause needs `stage`", target.file))?;
            let Some(Node::Seq(items)) = spec.get("promotionPolicies") else {
                return Err(format!("{}: no spec.promotionPolicies list", target.file));
            };
            let item = items
                .iter()
                .find(|i| i.str_at("stage") == Some(stage))
                .ok_or_else(|| format!("{}: no promotion policy for stage {stage:?}", target.file))?;
            (item, "autoPromotionEnabled", if paused { "false" } else { "true" })
        }
    };
    let out = match mapping.get(key) {
        Some(Node::Scalar(s)) if s.text == value => return Ok(None),
        Some(Node::Scalar(Scalar { content: Some(r), .. })) => {
            format!("{}{value}{}", &text[..r.start], &text[r.end..])
        }
        Some(_) => {
            return Err(format!("{}: {key} is not a plain value that can be edited", target.file));
        }
        None => insert_entry(text, mapping, &format!("{key}: {value}"), &target.file)?,
    };
    // Re-read: the key now says what we meant, and the rest still parses.
    match set_paused(&out, target, paused) {
        Ok(None) => Ok(Some(out)),
        _ => Err(format!("{}: the edit did not read back as {key}: {value}", target.file)),
    }
}

/// `text` with `entry` (`key: value`, or several lines indented relative to the first) added to
/// `mapping` at its keys' column: before the first key's line, or, when the first key follows a
/// list dash (`- stage: prod`), after that line if its value is on it. Every other byte is kept.
pub(super) fn insert_entry(text: &str, mapping: &Node, entry: &str, file: &str) -> Result<String, String> {
    let first_line = entry.lines().next().unwrap_or(entry);
    let Node::Map(entries) = mapping else {
        return Err(format!("{file}: not a mapping; add {first_line} by hand"));
    };
    let (first_key, first_value) =
        entries.first().ok_or_else(|| format!("{file}: an empty mapping; add {first_line} by hand"))?;
    let first = first_key.content.clone().ok_or_else(|| format!("{file}: add {first_line} by hand"))?;
    let line_start = text[..first.start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let lead = &text[line_start..first.start];
    if !lead.trim_matches([' ', '-', '\t']).is_empty() {
        return Err(format!("{file}: a flow-style mapping; add {first_line} by hand"));
    }
    let indent: String = lead.chars().map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let insert_at = if lead.contains('-') {
        if !matches!(first_value, Node::Scalar(s) if matches!(s.style, Style::Plain | Style::SingleQuoted | Style::DoubleQuoted))
        {
            return Err(format!("{file}: add {first_line} by hand"));
        }
        text[first.start..].find('\n').map(|i| first.start + i + 1).unwrap_or(text.len())
    } else {
        line_start
    };
    let mut block = String::new();
    for line in entry.lines() {
        block.push_str(&indent);
        block.push_str(line);
        block.push_str(eol);
    }
    // A last line without its newline: the entry goes on a line of its own.
    let sep = if insert_at == text.len() && !text.is_empty() && !text.ends_with('\n') { eol } else { "" };
    Ok(format!("{}{sep}{block}{}", &text[..insert_at], &text[insert_at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLUX: &str = "apiVersion: image.toolkit.fluxcd.io/v1beta2\nkind: ImageUpdateAutomation\nmetadata:\n  name: checkout # keep\n  namespace: flux-system\nspec:\n  interval: 30m\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n";
    const KARGO: &str = "apiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata:\n  name: shop\nspec:\n  promotionPolicies:\n  - stage: staging\n    autoPromotionEnabled: true\n  - stage: prod\n    autoPromotionEnabled: true # from CI\n";

    fn flux() -> PauseTarget {
        PauseTarget {
            file: "clusters/prod/checkout.yaml".into(),
            kind: PauseKind::ImageUpdateAutomation,
            stage: None,
        }
    }

    #[test]
    fn flux_automation_is_suspended_by_one_inserted_line_and_resumed_by_one_edit() {
        let paused = set_paused(FLUX, &flux(), true).unwrap().unwrap();
        assert_eq!(
            paused,
            FLUX.replace("spec:\n  interval: 30m\n", "spec:\n  suspend: true\n  interval: 30m\n")
        );
        // A first key with a block under it stays whole.
        let nested = "kind: ImageUpdateAutomation\nspec:\n  sourceRef:\n    kind: GitRepository\n";
        assert_eq!(
            set_paused(nested, &flux(), true).unwrap().unwrap(),
            "kind: ImageUpdateAutomation\nspec:\n  suspend: true\n  sourceRef:\n    kind: GitRepository\n"
        );
        assert_eq!(set_paused(&paused, &flux(), true).unwrap(), None, "already suspended");
        let resumed = set_paused(&paused, &flux(), false).unwrap().unwrap();
        assert_eq!(resumed, paused.replace("suspend: true", "suspend: false"));
        let crlf = FLUX.replace('\n', "\r\n");
        assert!(
            set_paused(&crlf, &flux(), true)
                .unwrap()
                .unwrap()
                .contains("spec:\r\n  suspend: true\r\n  interval: 30m\r\n")
        );
    }

    #[test]
    fn kargo_stage_auto_promotion_is_turned_off_for_that_stage_only() {
        let t = PauseTarget {
            file: "kargo/project.yaml".into(),
            kind: PauseKind::ProjectConfig,
            stage: Some("prod".into()),
        };
        let out = set_paused(KARGO, &t, true).unwrap().unwrap();
        assert_eq!(
            out,
            KARGO.replace("autoPromotionEnabled: true # from CI", "autoPromotionEnabled: false # from CI")
        );
        let no_key = "kind: ProjectConfig\nspec:\n  promotionPolicies:\n  - stage: prod\n    other: x\n";
        assert_eq!(
            set_paused(no_key, &t, true).unwrap().unwrap(),
            "kind: ProjectConfig\nspec:\n  promotionPolicies:\n  - stage: prod\n    autoPromotionEnabled: false\n    other: x\n"
        );
    }

    #[test]
    fn what_cannot_be_paused_says_why() {
        let err = |text: &str, t: &PauseTarget| set_paused(text, t, true).unwrap_err();
        assert!(err("kind: Deployment\nspec: {}\n", &flux()).contains("no ImageUpdateAutomation"));
        assert!(err("kind: ImageUpdateAutomation\nspec: {interval: 1m}\n", &flux()).contains("flow-style"));
        let t = PauseTarget { kind: PauseKind::ProjectConfig, stage: Some("qa".into()), ..flux() };
        assert!(err(KARGO, &t).contains("no promotion policy for stage \"qa\""));
        let e =
            serde_saphyr::from_str::<PauseTarget>("file: a.yaml\nkind: Warehouse\n").unwrap_err().to_string();
        assert!(e.contains("Warehouse") && e.contains("ImageUpdateAutomation"), "{e}");
    }
}
