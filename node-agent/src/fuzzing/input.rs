//! The shape of a fuzz input for the targets that read several files.

/// The input's NUL-separated fields, as text (invalid UTF-8 replaced, as a lossy read would).
pub(super) struct Fields(Vec<String>);

impl Fields {
    pub(super) fn of(data: &[u8]) -> Self {
        Self(
            data.split(|b| *b == 0)
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect(),
        )
    }

    /// Field `i`, empty if the input has fewer.
    pub(super) fn get(&self, i: usize) -> &str {
        self.0.get(i).map_or("", String::as_str)
    }

    /// Fields `i` and after.
    pub(super) fn from(&self, i: usize) -> impl Iterator<Item = &str> {
        self.0.iter().skip(i).map(String::as_str)
    }
}

/// A seed of `fuzz/corpus/<target>/`, for tests that check that seeds reach deep paths.
#[cfg(test)]
pub(super) fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
