//! Image references as container engines parse them (the grammar of Docker's
//! `distribution/reference`), checked before a manifest is accepted so that a name no
//! engine can pull is refused at `SendManifest` instead of failing at every deploy.
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path-component ( "/" path-component )*
//! domain     := host [ ":" port ]            (first part with '.', ':' or "localhost")
//! path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex{32,}
//! ```

/// Longest name (domain and path) engines accept.
const MAX_NAME_LENGTH: usize = 255;
const MAX_TAG_LENGTH: usize = 128;

/// Why `image` is not a reference an engine can pull; `Ok` when it is.
pub fn check_reference(image: &str) -> Result<(), String> {
    if let Some(bad) = image.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "must not contain whitespace or control characters (found {bad:?})"
        ));
    }
    if image.is_empty() {
        return Err("must not be empty".into());
    }
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
    let last_slash = rest.rfind('/').map_or(0, |index| index + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(index) => (
            &rest[..last_slash + index],
            Some(&rest[last_slash + index + 1..]),
        ),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    check_name(name)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("has no repository name".into());
    }
    if name.len() > MAX_NAME_LENGTH {
        return Err(format!(
            "repository name is longer than {MAX_NAME_LENGTH} characters"
        ));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    let has_domain = parts.len() > 1
        && (first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase()));
    if has_domain {
        check_domain(first)?;
        parts.remove(0);
    }
    for part in parts {
        check_path_component(part)?;
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), String> {
    let (host, port) = if let Some(end) = domain.find(']') {
        // An IPv6 literal: `[::1]` or `[::1]:5000`.
        let port = domain[end + 1..].strip_prefix(':');
        (&domain[..=end], port)
    } else {
        match domain.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("registry `{domain}` has an invalid port"));
    }
    if host.starts_with('[') && host.ends_with(']') {
        return Ok(());
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.split('.').all(valid_label) {
        Ok(())
    } else {
        Err(format!("registry `{domain}` is not a valid host name"))
    }
}

fn check_path_component(part: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "repository path component `{part}` must be lower-case letters and digits, separated by '.', '_', '__' or '-'"
        )
    };
    if part.is_empty() {
        return Err("repository name has an empty path component".into());
    }
    let bytes = part.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(bad());
    }
    let mut index = 0;
    while index < bytes.len() {
        if alnum(bytes[index]) {
            index += 1;
            continue;
        }
        let start = index;
        while index < bytes.len() && !alnum(bytes[index]) {
            index += 1;
        }
        let separator = &part[start..index];
        let allowed = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !allowed {
            return Err(bad());
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    let valid = tag.len() <= MAX_TAG_LENGTH
        && chars.next().is_some_and(word)
        && chars.all(|c| word(c) || c == '.' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "tag `{tag}` must be 1 to {MAX_TAG_LENGTH} letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        ))
    }
}

fn check_digest(digest: &str) -> Result<(), String> {
    let bad = || format!("digest `{digest}` must be algorithm:hex, e.g. sha256:<64 hex digits>");
    let (algorithm, hex) = digest.split_once(':').ok_or_else(bad)?;
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '-', '_']).all(|part| {
            part.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && part.chars().all(|c| c.is_ascii_alphanumeric())
        });
    if algorithm_ok && hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::check_reference;

    #[test]
    fn references_engines_pull_are_accepted() {
        for image in [
            "nginx",
            "nginx:1.25",
            "library/nginx:latest",
            "ghcr.io/akash-network/provider:0.6.4",
            "localhost:5000/team/app_v2:dev",
            "registry.example.com:443/a/b/c",
            "vllm/vllm-openai:v0.6.2",
            "ollama/ollama",
            "my--app__x.y",
            "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "nginx:1.25@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "leasehold/busybox:test",
        ] {
            assert_eq!(check_reference(image), Ok(()), "{image}");
        }
    }

    #[test]
    fn references_no_engine_pulls_are_refused_with_the_reason() {
        for (image, needle) in [
            ("", "empty"),
            ("Nginx:latest", "lower-case"),
            ("nginx::1", "path component"),
            ("nginx:", "tag"),
            ("nginx:-x", "tag"),
            ("ngin\0x", "control"),
            ("nginx latest", "whitespace"),
            ("-nginx", "lower-case"),
            ("nginx/", "empty path component"),
            ("nginx@sha256:xyz", "digest"),
            ("a..b", "lower-case"),
            ("bad_host-.io/app", "host name"),
            ("registry.io:port/app", "port"),
        ] {
            let error = check_reference(image).expect_err(image);
            assert!(error.contains(needle), "{image:?}: {error}");
        }
        let long = format!("{}:1", "a".repeat(256));
        assert!(check_reference(&long).is_err());
    }
}
