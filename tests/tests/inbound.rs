//! Received mail through process_message on a real cluster: every message of CPython's email
//! test corpus and of sisimai's bounces (tests/corpora) is stored byte for byte, none stops anything.

use std::path::{Path, PathBuf};

use mail_gateway_tests::Gateway;

/// The repository's corpora (tests/corpora): CPython's email test messages, sisimai's bounces,
/// complaints and auto-replies, ordinary messages.
fn corpora() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpora")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("eml" | "txt")
        ) && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n != "README.txt")
        {
            out.push(path);
        }
    }
}

#[test]
fn every_corpus_message_is_stored_byte_for_byte() {
    let mut paths = vec![];
    let cpython = corpora().join("cpython-email");
    for entry in std::fs::read_dir(&cpython).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("msg_"))
        {
            paths.push(path);
        }
    }
    let cpython_count = paths.len();
    assert!(
        cpython_count >= 40,
        "{cpython_count} CPython messages in {}",
        cpython.display()
    );
    for folder in ["bounces", "not-bounces"] {
        files(&corpora().join(folder), &mut paths);
    }
    assert!(
        paths.len() > cpython_count + 100,
        "the corpora are there: {}",
        corpora().display()
    );

    let (_cluster, mut db) = Gateway::new().without_preload().start();
    let mut ids = std::collections::HashMap::new();
    for path in &paths {
        let raw = std::fs::read(path).unwrap();
        let id: i64 = db
            .query_one("SELECT mail_gateway.process_message($1)", &[&raw])
            .unwrap_or_else(|e| {
                panic!("{}: {}", path.display(), mail_gateway_tests::error_text(&e))
            })
            .get(0);
        let stored: Vec<u8> = db
            .query_one("SELECT raw FROM mail_gateway.inbound WHERE id = $1", &[&id])
            .unwrap()
            .get(0);
        // A corpus may hold the same message twice (same Message-ID): then it is stored once.
        if stored != raw {
            let same_id: bool = db
                .query_one(
                    "SELECT message_id IS NOT NULL FROM mail_gateway.inbound WHERE id = $1",
                    &[&id],
                )
                .unwrap()
                .get(0);
            assert!(same_id, "{} stored differently", path.display());
        }
        ids.insert(id, path.clone());
    }
    let summaries: i64 = db
        .query_one(
            "SELECT count(*) FROM mail_gateway.inbound WHERE summary ? 'message_id'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        summaries as usize,
        ids.len(),
        "every stored message has a summary"
    );
    // Processing everything again stores nothing new.
    for path in paths.iter().take(50) {
        let raw = std::fs::read(path).unwrap();
        let id: i64 = db
            .query_one("SELECT mail_gateway.process_message($1)", &[&raw])
            .unwrap()
            .get(0);
        assert!(ids.contains_key(&id), "{} stored twice", path.display());
    }
    let total: i64 = db
        .query_one("SELECT count(*) FROM mail_gateway.inbound", &[])
        .unwrap()
        .get(0);
    assert_eq!(total as usize, ids.len());
}
