//! The logical CPUs as `/proc/cpuinfo` describes them: one entry per `processor` line, with the
//! fields Kepler's `kepler_node_cpu_info` carries. Read once when the agent starts, from
//! `--path.procfs`. The parser takes any text (a fixture, a truncated file, another
//! architecture's layout) and never fails: a field it does not find is empty.

use std::{collections::HashSet, path::Path};

/// One logical CPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// The `processor` number, as written (unique among the entries).
    pub processor: String,
    pub vendor_id: String,
    pub model_name: String,
    /// The socket.
    pub physical_id: String,
    pub core_id: String,
}

/// Which field a `key : value` line fills, by the names x86, Arm, POWER and s390 use.
fn field<'a>(cpu: &'a mut CpuInfo, key: &str) -> Option<&'a mut String> {
    Some(match key {
        "vendor_id" | "vendor" | "CPU implementer" => &mut cpu.vendor_id,
        "model name" | "cpu model" | "cpu" => &mut cpu.model_name,
        "physical id" => &mut cpu.physical_id,
        "core id" => &mut cpu.core_id,
        _ => return None,
    })
}

/// Every `processor` entry of the text of /proc/cpuinfo, in order. A field keeps its first value
/// within an entry; lines before the first `processor` line (Arm's header) are skipped; an entry
/// whose `processor` repeats an earlier one is dropped, so that each gives one distinct series.
pub fn parse_cpuinfo(text: &str) -> Vec<CpuInfo> {
    let mut cpus: Vec<CpuInfo> = Vec::new();
    let mut seen = HashSet::new();
    let mut current: Option<CpuInfo> = None;
    let mut filled = HashSet::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "processor" {
            cpus.extend(current.take());
            filled.clear();
            current = seen.insert(value.to_owned()).then(|| CpuInfo {
                processor: value.to_owned(),
                ..CpuInfo::default()
            });
            continue;
        }
        if let Some(cpu) = current.as_mut()
            && let Some(slot) = field(cpu, key)
            && filled.insert(key.to_owned())
        {
            value.clone_into(slot);
        }
    }
    cpus.extend(current);
    cpus
}

/// Reads and parses `<procfs>/cpuinfo`; empty (with a warning) if it cannot be read.
pub fn read_cpuinfo(procfs: &Path) -> Vec<CpuInfo> {
    let path = procfs.join("cpuinfo");
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_cpuinfo(&text),
        Err(e) => {
            log::warn!(
                "reading {}: {e}; no CPU information is exported (check --path.procfs)",
                path.display()
            );
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const X86: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\
        model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nphysical id\t: 0\nsiblings\t: 2\n\
        core id\t\t: 0\nflags\t\t: fpu vme de pse\n\n\
        processor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n\
        physical id\t: 0\ncore id\t\t: 0\n\n";

    const ARM: &str = "Processor\t: AArch64 Processor rev 1 (aarch64)\n\
        processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n\
        processor\t: 1\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n\nHardware\t: virt\n";

    fn cpu(p: &str, vendor: &str, model: &str, phys: &str, core: &str) -> CpuInfo {
        CpuInfo {
            processor: p.into(),
            vendor_id: vendor.into(),
            model_name: model.into(),
            physical_id: phys.into(),
            core_id: core.into(),
        }
    }

    #[test]
    fn x86_entries() {
        let model = "Intel(R) Xeon(R) CPU @ 2.20GHz";
        assert_eq!(
            parse_cpuinfo(X86),
            [
                cpu("0", "GenuineIntel", model, "0", "0"),
                cpu("1", "GenuineIntel", model, "0", "0")
            ]
        );
    }

    #[test]
    fn arm_entries_have_no_model_name() {
        assert_eq!(
            parse_cpuinfo(ARM),
            [cpu("0", "0x41", "", "", ""), cpu("1", "0x41", "", "", "")]
        );
    }

    #[test]
    fn odd_input() {
        assert!(parse_cpuinfo("").is_empty());
        assert!(
            parse_cpuinfo("model name : x\n\n").is_empty(),
            "no processor line"
        );
        // Repeated processor numbers and repeated fields: the first wins.
        let text = "processor: 3\nmodel name: a\nmodel name: b\nprocessor: 3\nmodel name: c\n";
        assert_eq!(parse_cpuinfo(text), [cpu("3", "", "a", "", "")]);
        // Values with colons keep them.
        assert_eq!(
            parse_cpuinfo("processor : 0\nmodel name : a:b\n")[0].model_name,
            "a:b"
        );
    }

    #[test]
    fn this_machines_cpuinfo() {
        let cpus = read_cpuinfo(Path::new("/proc"));
        assert!(
            !cpus.is_empty(),
            "every Linux /proc/cpuinfo has processor lines"
        );
    }

    proptest! {
        /// Any text: no panic, and one entry per distinct processor value.
        #[test]
        fn never_panics(text in "\\PC{0,400}") {
            let cpus = parse_cpuinfo(&text);
            let distinct: HashSet<_> = cpus.iter().map(|c| &c.processor).collect();
            prop_assert_eq!(distinct.len(), cpus.len());
        }

        /// Nor do lines built from the keys it looks for.
        #[test]
        fn never_panics_on_near_misses(lines in proptest::collection::vec(
            ("(processor|vendor_id|model name|physical id|core id|cpu|x)", "[ \t]{0,2}", "[:]?", "\\PC{0,12}"),
            0..40,
        )) {
            let text: String = lines.iter().map(|(k, s, c, v)| format!("{k}{s}{c}{v}\n")).collect();
            let cpus = parse_cpuinfo(&text);
            let processors = text.lines().filter(|l| l.split_once(':').is_some_and(|(k, _)| k.trim() == "processor")).count();
            prop_assert!(cpus.len() <= processors);
        }
    }
}
