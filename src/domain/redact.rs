//! URLs as they may be shown: a password (or token) in a URL's userinfo never reaches a log line,
//! an error message, a PR or the console (`https://deploy:s3cret@host/x.git` is shown as
//! `https://deploy:***@host/x.git`).

/// The URL with the password of its userinfo replaced by `***` (a user alone is a token too, as
/// `https://TOKEN@host/…`, and is replaced the same way).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_string() };
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    format!("{scheme}://{shown}@{host}{path}")
}

/// `text` with every copy of `url`'s secret part replaced: the URL itself, and its password alone
/// (a library may quote either). Text without a secret comes back as it was.
pub fn scrub(text: &str, url: &str) -> String {
    let redacted = redact_url(url);
    if redacted == url {
        return text.to_string();
    }
    let mut out = text.replace(url, &redacted);
    if let Some(secret) = secret_of(url)
        && secret.len() >= 4
    {
        out = out.replace(secret, "***");
    }
    out
}

fn secret_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = authority.rsplit_once('@')?.0;
    Some(userinfo.split_once(':').map(|(_, p)| p).unwrap_or(userinfo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_in_urls_are_hidden() {
        let cases = [
            ("https://deploy:s3cret@git.example.com/x.git", "https://deploy:***@git.example.com/x.git"),
            ("https://ghp_abcdef@github.com/o/r.git", "https://***@github.com/o/r.git"),
            ("https://git.example.com/x.git", "https://git.example.com/x.git"),
            ("/srv/git/x.git", "/srv/git/x.git"),
            ("https://u:p%40ss@h/x?y=@z", "https://u:***@h/x?y=@z"),
            ("ssh://git@host:22/x.git", "ssh://***@host:22/x.git"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
        let url = "https://deploy:s3cret@git.example.com/x.git";
        assert_eq!(
            scrub(&format!("fetching from {url}: 401 (password s3cret refused)"), url),
            "fetching from https://deploy:***@git.example.com/x.git: 401 (password *** refused)"
        );
        assert_eq!(scrub("nothing secret", "https://h/x.git"), "nothing secret");
    }
}
