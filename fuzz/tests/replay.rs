//! Replays every committed corpus input through its target (uninstrumented),
//! so `make test` catches a regression on any input the fuzzers found
//! interesting. The fuzzers themselves run from `scripts/fuzz.sh`.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "{target}: {} fails", path.display());
        n += 1;
    }
    assert!(n >= 10, "{target}: only {n} inputs in {}; run scripts/fuzz.sh", dir.display());
}

#[test]
fn admission_corpus_replays() {
    replay("admission", sidekey_fuzz::admission);
}

#[test]
fn annotations_corpus_replays() {
    replay("annotations", sidekey_fuzz::annotations);
}

#[test]
fn reference_corpus_replays() {
    replay("reference", sidekey_fuzz::reference);
}

#[test]
fn yaml_corpus_replays() {
    replay("yaml", sidekey_fuzz::yaml);
}

#[test]
fn agent_config_corpus_replays() {
    replay("agent_config", sidekey_fuzz::agent_config);
}

#[test]
fn migrate_corpus_replays() {
    replay("migrate", sidekey_fuzz::migrate);
}

#[test]
fn gotemplate_corpus_replays() {
    replay("gotemplate", sidekey_fuzz::gotemplate);
}

#[test]
fn vault_k8s_corpus_replays() {
    replay("vault_k8s", sidekey_fuzz::vault_k8s);
}
