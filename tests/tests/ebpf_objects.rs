//! What each eBPF object carries. The agent's (embedded in the binary, loaded on every node) holds
//! the accounting program and its maps, nothing else; the benchmark's reference programs live in
//! the benchmark's own object, beside the very same accounting program. The ELF files are parsed
//! as the loader parses them (aya-obj): no root needed.

use std::{collections::BTreeSet, path::PathBuf};

use aya_obj::Object;
use node_agent_common::names;

fn parse(what: &str, bytes: &[u8]) -> Object {
    Object::parse(bytes).unwrap_or_else(|e| {
        panic!("{what} does not parse as an eBPF object ({e}): build through `cargo xtask test`")
    })
}

fn programs(object: &Object) -> BTreeSet<&str> {
    object.programs.keys().map(String::as_str).collect()
}

/// The maps the source declares (not the loader's `.rodata`/`.bss` data maps).
fn declared_maps(object: &Object) -> BTreeSet<&str> {
    object
        .maps
        .keys()
        .map(String::as_str)
        .filter(|m| !m.starts_with('.'))
        .collect()
}

/// The benchmark's object, built by xtask beside the agent's.
fn bench_object() -> Object {
    let dir = std::env::var_os("WATTLET_EBPF_DIR")
        .map(PathBuf::from)
        .expect(
            "WATTLET_EBPF_DIR is not set: run through `cargo xtask test`, which builds the objects",
        );
    let path = dir.join("node-agent-bench");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse(&path.display().to_string(), &bytes)
}

/// The instructions of a program's function, comparable across objects.
fn instructions(object: &Object, program: &str) -> Vec<(u8, u8, u8, i16, i32)> {
    let program = &object.programs[program];
    object.functions[&program.function_key()]
        .instructions
        .iter()
        .map(|i| (i.code, i.dst_reg(), i.src_reg(), i.off, i.imm))
        .collect()
}

#[test]
fn agent_object_holds_the_accounting_program_only() {
    let agent = parse(
        "the agent's embedded object",
        node_agent::kernel::EBPF_OBJECT,
    );
    assert_eq!(programs(&agent), BTreeSet::from([names::PROGRAM]));
    let maps = declared_maps(&agent);
    assert!(!maps.contains(names::FLOOR), "maps: {maps:?}");
    assert_eq!(
        maps,
        BTreeSet::from([
            names::CGROUPS,
            names::CPUS,
            names::CYCLES,
            names::INSTRUCTIONS,
            names::PROCESSES,
            names::PROCESS_CACHE
        ])
    );
}

#[test]
fn bench_object_measures_the_agents_program() {
    let agent = parse(
        "the agent's embedded object",
        node_agent::kernel::EBPF_OBJECT,
    );
    let bench = bench_object();
    assert_eq!(
        programs(&bench),
        BTreeSet::from([names::PROGRAM, names::PROGRAM_EMPTY, names::PROGRAM_FLOOR])
    );
    assert!(declared_maps(&bench).contains(names::FLOOR));
    let (ours, theirs) = (
        instructions(&agent, names::PROGRAM),
        instructions(&bench, names::PROGRAM),
    );
    assert!(ours.len() > 20, "{} instructions", ours.len());
    assert_eq!(
        ours, theirs,
        "the benchmark's sched_switch must be the agent's, instruction for instruction"
    );
}
