//! The web configuration file (`--web.config.file`).

use std::path::Path;

use crate::exporter::web::{Pem, WebConfig};

/// Any text: a configuration whose every part is usable, or an error naming the file.
pub fn web_config(data: &[u8]) {
    let path = Path::new("/etc/wattlet/web.yml");
    let config = match WebConfig::from_text(&String::from_utf8_lossy(data), path) {
        Ok(c) => c,
        Err(e) => {
            let e = e.to_string();
            assert!(e.starts_with("web config /etc/wattlet/web.yml: "), "{e}");
            return;
        }
    };
    for (user, hash) in &config.users {
        assert!(!user.is_empty() && !user.contains(':'), "{user:?}");
        assert!(hash.parse::<bcrypt::HashParts>().is_ok(), "{hash:?}");
    }
    if let Some(r) = &config.rate_limit {
        assert!(r.interval.is_zero() || r.burst >= 1, "{r:?}");
    }
    let Some(tls) = &config.tls else {
        return;
    };
    assert!(tls.min_version <= tls.max_version, "{tls:?}");
    assert!(
        !tls.client_auth.verifies() || tls.client_ca.is_some(),
        "{tls:?}"
    );
    let pems = [Some(&tls.cert), Some(&tls.key), tls.client_ca.as_ref()];
    for pem in pems.into_iter().flatten() {
        match pem {
            Pem::File(p) => assert!(p.is_absolute(), "{p:?}"),
            Pem::Inline(text) => assert!(!text.trim().is_empty()),
        }
    }
    let mut suites = tls.cipher_suites.clone();
    suites.sort_unstable();
    suites.dedup();
    assert_eq!(suites.len(), tls.cipher_suites.len(), "{tls:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::input::seed;

    #[test]
    fn the_full_seed_sets_every_part() {
        let text = String::from_utf8(seed("web_config", "full")).unwrap();
        let c = WebConfig::from_text(&text, Path::new("/etc/wattlet/web.yml")).unwrap();
        let tls = c.tls.unwrap();
        assert!(tls.client_auth.verifies() && tls.cipher_suites.len() == 2);
        assert_eq!((c.users.len(), c.headers.len()), (2, 4));
        assert_eq!(c.rate_limit.unwrap().burst, 10);
        let text = String::from_utf8(seed("web_config", "inline-pem")).unwrap();
        assert!(matches!(
            WebConfig::from_text(&text, Path::new("/w.yml"))
                .unwrap()
                .tls
                .unwrap()
                .cert,
            Pem::Inline(_)
        ));
    }
}
