//! Every target's seed corpus, and a few thousand deterministic mutations of it, through its
//! body: no panic and no broken invariant on any of them, on every `cargo test`, in seconds and
//! without the nightly toolchain. libFuzzer explores far more (`cargo xtask fuzz`); this keeps
//! the bodies, the seeds and the parsers in step, the same way on every run.

use std::{
    fs,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

use super::{TARGETS, Target};

/// Mutated inputs per target, after its seeds.
const MUTATIONS: usize = 3000;
/// No input grows beyond this.
const MAX_LEN: usize = 1 << 16;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The target's seed corpus, in file name order.
fn seeds(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(name);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (every target has seeds)", dir.display()))
        .map(|e| e.expect("listing the corpus").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seeds", dir.display());
    files
        .into_iter()
        .map(|p| {
            let data = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), data)
        })
        .collect()
}

/// The tokens of the target's libFuzzer dictionary, if it has one: `"…"` or `name="…"` lines,
/// with `\\`, `\"` and `\xNN` escapes.
fn dictionary(name: &str) -> Vec<Vec<u8>> {
    let Ok(text) = fs::read_to_string(fuzz_dir().join("dicts").join(format!("{name}.dict"))) else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.find('"').map(|i| &l[i + 1..]))
        .filter_map(|l| l.strip_suffix('"'))
        .map(unescape)
        .collect()
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1)) {
            (b'\\', Some(b'x')) if i + 4 <= b.len() => {
                let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 4;
            }
            (b'\\', Some(&c)) => {
                out.push(c);
                i += 2;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// xorshift64*: the same stream from the same seed, everywhere.
struct Rng(u64);

impl Rng {
    fn for_target(name: &str) -> Self {
        // FNV-1a of the name: each target its own fixed stream.
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Self(h | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes the parsers treat specially.
const INTERESTING: &[u8] = b"\0\n\r\t -:=,.\"{}[]0019\\/x\xff";

/// One to four of libFuzzer's kinds of change to a seed.
fn mutate(rng: &mut Rng, seeds: &[(String, Vec<u8>)], dict: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].1.clone();
    for _ in 0..=rng.below(4) {
        let at = rng.below(data.len() + 1);
        let byte = at.min(data.len().saturating_sub(1));
        match rng.below(8) {
            0 if !data.is_empty() => data[byte] ^= 1 << rng.below(8),
            1 if !data.is_empty() => data[byte] = INTERESTING[rng.below(INTERESTING.len())],
            2 if !dict.is_empty() => {
                let token = &dict[rng.below(dict.len())];
                data.splice(at..at, token.iter().copied());
            }
            3 => {
                let end = (at + rng.below(16)).min(data.len());
                data.drain(at..end);
            }
            4 => {
                let end = (at + rng.below(64)).min(data.len());
                let copy = data[at..end].to_vec();
                let to = rng.below(data.len() + 1);
                data.splice(to..to, copy);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())].1;
                let from = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            6 => {
                let digits: Vec<u8> = (0..1 + rng.below(40))
                    .map(|_| b'0' + rng.below(10) as u8)
                    .collect();
                data.splice(at..at, digits);
            }
            _ => data.truncate(at),
        }
    }
    data.truncate(MAX_LEN);
    data
}

/// Runs `body` on every seed and [`MUTATIONS`] mutations; a failing input is saved, and named
/// with the command that replays it under libFuzzer.
fn smoke(name: &str, body: Target) {
    let seeds = seeds(name);
    let dict = dictionary(name);
    let mut rng = Rng::for_target(name);
    let mutations =
        (0..MUTATIONS).map(|i| (format!("mutation {i}"), mutate(&mut rng, &seeds, &dict)));
    for (what, data) in seeds.clone().into_iter().chain(mutations) {
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            let saved = std::env::temp_dir().join(format!("wattlet-smoke-{name}"));
            let _ = fs::write(&saved, &data);
            panic!(
                "fuzz target {name} failed on {what}, saved as {} (replay: cd fuzz && \
                 AYA_BUILD_SKIP=1 cargo +nightly fuzz run {name} {0}): {:?}",
                saved.display(),
                String::from_utf8_lossy(&data)
            );
        }
    }
}

macro_rules! smoke_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                smoke(stringify!($name), super::$name);
            }
        )*

        /// Each target here is a test above, a cargo-fuzz binary calling it, and a seed corpus.
        #[test]
        fn every_target_is_smoked_and_has_a_cargo_fuzz_binary() {
            let smoked = [$(stringify!($name)),*];
            let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
            for (name, _) in TARGETS {
                assert!(smoked.contains(&name), "{name} has no smoke test");
                assert!(manifest.contains(&format!("name = \"{name}\"")), "{name}: no [[bin]]");
                let target = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
                let source = fs::read_to_string(&target).unwrap();
                assert!(
                    source.contains(&format!("node_agent::fuzzing::{name}(")),
                    "{} does not call node_agent::fuzzing::{name}",
                    target.display()
                );
            }
            assert_eq!(smoked.len(), TARGETS.len());
        }
    };
}

smoke_tests!(
    cgroup_path,
    mountinfo,
    cpuinfo,
    powercap,
    hwmon,
    hwmon_chips,
    perf_pmu,
    web_config,
    carbon_intensity,
    redfish,
    kubernetes,
    prometheus_api,
);

#[test]
fn mutations_are_deterministic_and_dictionaries_unescape() {
    let seeds = vec![("s".to_owned(), b"energy_uj=123\n".to_vec())];
    let dict = vec![b"package-0".to_vec()];
    let run = || {
        let mut rng = Rng::for_target("powercap");
        (0..50)
            .map(|_| mutate(&mut rng, &seeds, &dict))
            .collect::<Vec<_>>()
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    assert!(
        a.iter().any(|m| m != &seeds[0].1),
        "mutations change the seed"
    );
    assert_eq!(unescape(r#"a\x09b\"c\\"#), b"a\tb\"c\\");
}
