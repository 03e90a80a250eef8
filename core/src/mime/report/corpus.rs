//! How the analyser does on a corpus of real reports (`tests/corpora`): asserted by a unit
//! test here and printed by `tests/src/bin/bounce_corpus.rs`.

use std::path::Path;

use super::{Kind, Report, analyse};

/// How the analyser does on a corpus laid out like `tests/corpora/bounces` (an
/// `expected.json` of kinds and failed recipients) plus a directory of ordinary messages.
#[derive(Debug, Default)]
pub struct CorpusScore {
    pub bounces: usize,
    pub recognised: usize,
    pub reports: usize,
    pub reports_recognised: usize,
    pub with_recipients: usize,
    pub right_count: usize,
    pub right_class: usize,
    pub right_hard: usize,
    pub right_status_and_hard: usize,
    /// Complaints, auto-replies and ordinary messages taken for bounces.
    pub false_bounces: Vec<String>,
}

pub fn score_corpus(bounces: &Path, ordinary: &Path) -> std::io::Result<CorpusScore> {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bounces.join("expected.json"))?)
            .map_err(std::io::Error::other)?;
    let mut score = CorpusScore::default();
    for (file, want) in expected.as_object().into_iter().flatten() {
        let got = analyse(&std::fs::read(bounces.join(file))?);
        match want["kind"].as_str().unwrap_or_default() {
            "bounce" => score.bounce(want, &got),
            kind => score.other_report(kind, file, &got),
        }
    }
    for entry in std::fs::read_dir(ordinary)? {
        let path = entry?.path();
        if analyse(&std::fs::read(&path)?).kind == Kind::Bounce {
            score.false_bounces.push(path.display().to_string());
        }
    }
    Ok(score)
}

impl CorpusScore {
    /// A bounce: recognised, and with the recipients, status classes and hard flags expected.
    fn bounce(&mut self, want: &serde_json::Value, got: &Report) {
        self.bounces += 1;
        self.recognised += (got.kind == Kind::Bounce) as usize;
        let Some(want) = want["recipients"].as_array().filter(|r| !r.is_empty()) else {
            return;
        };
        self.with_recipients += 1;
        if got.failed.len() != want.len() {
            return;
        }
        self.right_count += 1;
        let pairs = || want.iter().zip(&got.failed);
        let class = pairs()
            .all(|(w, g)| w["status"].as_str().unwrap_or_default().get(..1) == g.status.get(..1));
        let hard = pairs().all(|(w, g)| w["hard"].as_bool() == Some(g.hard));
        self.right_class += class as usize;
        self.right_hard += hard as usize;
        self.right_status_and_hard += (class && hard) as usize;
    }

    /// A complaint or an auto-reply: recognised, and never taken for a bounce.
    fn other_report(&mut self, kind: &str, file: &str, got: &Report) {
        self.reports += 1;
        let right = match kind {
            "complaint" => got.kind == Kind::Complaint,
            _ => got.kind == Kind::AutoReply,
        };
        self.reports_recognised += right as usize;
        if got.kind == Kind::Bounce {
            self.false_bounces.push(file.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_bounce_corpus_is_read_by_general_rules() {
        let corpora = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpora");
        let s = score_corpus(&corpora.join("bounces"), &corpora.join("not-bounces")).unwrap();
        let pct = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
        println!("{s:?}");
        assert!(
            s.bounces > 300 && s.with_recipients > 250,
            "the corpus is there: {s:?}"
        );
        assert!(
            s.false_bounces.is_empty(),
            "taken for bounces: {:?}",
            s.false_bounces
        );
        assert!(pct(s.recognised, s.bounces) >= 98.0, "{s:?}");
        assert!(pct(s.right_count, s.with_recipients) >= 95.0, "{s:?}");
        // Measured 94 % (class) and 86 % (hard flag): see docs/DECISIONS.md. These floors
        // catch a regression; they are not the target.
        assert!(pct(s.right_class, s.with_recipients) >= 93.0, "{s:?}");
        assert!(pct(s.right_hard, s.with_recipients) >= 84.0, "{s:?}");
        assert_eq!(
            s.reports_recognised, s.reports,
            "complaints and auto-replies: {s:?}"
        );
    }
}
