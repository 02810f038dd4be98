//! Container image references (`registry:port/path/name:tag@sha256:…`) and their versions.

use std::fmt;

use serde::Serialize;

/// The version part of an image reference: a tag, a digest, or both (`main@sha256:…`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Version {
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Version {
    pub fn tag(tag: &str) -> Self {
        Version { tag: Some(tag.to_string()), digest: None }
    }

    pub fn is_empty(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }

    /// The text that follows the repository in an inline reference: `:tag`, `@digest`, `:tag@digest`.
    pub fn inline_suffix(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => write!(f, "{t}@{d}"),
            (Some(t), None) => write!(f, "{t}"),
            (None, Some(d)) => write!(f, "{d}"),
            (None, None) => write!(f, "(none)"),
        }
    }
}

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub repository: String,
    pub version: Version,
}

impl ImageRef {
    /// Parses `repo[:tag][@digest]`. Returns `None` for text that is not an image reference
    /// (templating such as `{{ .Values.image }}`, spaces, empty parts).
    pub fn parse(s: &str) -> Option<ImageRef> {
        let s = s.trim();
        if s.is_empty() || !s.chars().all(is_ref_char) {
            return None;
        }
        let (rest, digest) = match s.rsplit_once('@') {
            // `repo:tag@` (a digest left out by a tool): a version of its own, written as it is.
            Some((r, "")) if r.contains(':') => (r, Some(String::new())),
            Some((r, d)) => {
                if !is_digest(d) {
                    return None;
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repository, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].to_string()))
            }
            None => (rest, None),
        };
        if repository.is_empty() || repository.ends_with('/') || repository.starts_with('/') {
            return None;
        }
        if let Some(t) = &tag
            && !is_tag(t)
        {
            return None;
        }
        Some(ImageRef { repository: repository.to_string(), version: Version { tag, digest } })
    }

    /// Byte length of the repository part inside the text this was parsed from (after trimming).
    pub fn repository_len(&self) -> usize {
        self.repository.len()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.repository, self.version.inline_suffix())
    }
}

fn is_ref_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@')
}

/// A valid tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_tag(t: &str) -> bool {
    let mut chars = t.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    t.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A digest: `algorithm:hex` with at least 32 hex characters (`sha256:…`, `sha512:…`).
pub fn is_digest(d: &str) -> bool {
    match d.split_once(':') {
        Some((alg, hex)) => {
            !alg.is_empty()
                && alg.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '_' | '-'))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        }
        None => false,
    }
}

/// The repository as Docker resolves it, for comparison: `nginx`, `docker.io/nginx`,
/// `index.docker.io/library/nginx` all name the same image.
pub fn normalise_repository(r: &str) -> String {
    let r = r.trim().to_ascii_lowercase();
    let r = r
        .strip_prefix("index.docker.io/")
        .or_else(|| r.strip_prefix("registry-1.docker.io/"))
        .or_else(|| r.strip_prefix("docker.io/"))
        .unwrap_or(&r)
        .to_string();
    match r.strip_prefix("library/") {
        Some(rest) if !rest.contains('/') => rest.to_string(),
        _ => r,
    }
}

/// Whether two repository names denote the same image.
pub fn same_repository(a: &str, b: &str) -> bool {
    normalise_repository(a) == normalise_repository(b)
}

/// Levenshtein distance, used to list the images nearest to one that was not found.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Option<(&str, Option<&str>, Option<&str>)>) {
        let got = ImageRef::parse(input);
        let got = got
            .as_ref()
            .map(|r| (r.repository.as_str(), r.version.tag.as_deref(), r.version.digest.as_deref()));
        assert_eq!(got, expect, "parsing {input:?}");
    }

    const D: &str = "sha256:6129bb944cada32b4662eafd13fd9904d34c77286bf2ec4523eaedb711757cb0";

    #[test]
    fn parses_every_form() {
        check("nginx", Some(("nginx", None, None)));
        check("nginx:1.25", Some(("nginx", Some("1.25"), None)));
        check("localhost:5000/app:1.2", Some(("localhost:5000/app", Some("1.2"), None)));
        check("localhost:5000/app", Some(("localhost:5000/app", None, None)));
        check(&format!("ghcr.io/org/app@{D}"), Some(("ghcr.io/org/app", None, Some(D))));
        check(&format!("ghcr.io/org/app:main@{D}"), Some(("ghcr.io/org/app", Some("main"), Some(D))));
        check("{{ .Values.image }}", None);
        check("app:", None);
        check("app:1.0@sha256:short", None);
        check("quay.io/cilium/cilium:v1.16.1@", Some(("quay.io/cilium/cilium", Some("v1.16.1"), Some(""))));
        check("app@", None);
        check("", None);
        check("my image", None);
    }

    #[test]
    fn repositories_compare_as_docker_resolves_them() {
        assert!(same_repository("nginx", "docker.io/library/nginx"));
        assert!(same_repository("index.docker.io/library/nginx", "nginx"));
        assert!(!same_repository("ghcr.io/a/nginx", "nginx"));
        assert!(same_repository("docker.io/bitnami/redis", "bitnami/redis"));
    }

    #[test]
    fn versions_display_like_references() {
        assert_eq!(Version::tag("1.2").to_string(), "1.2");
        let v = Version { tag: Some("main".into()), digest: Some(D.into()) };
        assert_eq!(v.to_string(), format!("main@{D}"));
        assert_eq!(v.inline_suffix(), format!(":main@{D}"));
    }
}
