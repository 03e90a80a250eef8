//! Prints how the bounce analyser (core/src/mime/report/) does on the
//! corpus of real bounces, complaints and auto-replies. The same figures are asserted by
//! the unit test `the_shared_bounce_corpus_is_read_by_general_rules`.
//! Usage: bounce_corpus [CORPORA_DIR]   (default tests/corpora)

use mail_gateway_core::mime::report;
use mail_gateway_tests::bench_row;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/corpora").into());
    let dir = std::path::Path::new(&dir);
    let s =
        report::score_corpus(&dir.join("bounces"), &dir.join("not-bounces")).expect("the corpus");
    let pct = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
    println!(
        "{:<52} {:>4} of {:<4} {:>6.1} %",
        "bounces recognised",
        s.recognised,
        s.bounces,
        pct(s.recognised, s.bounces)
    );
    println!(
        "{:<52} {:>4} of {:<4} {:>6.1} %",
        "right number of failed recipients",
        s.right_count,
        s.with_recipients,
        pct(s.right_count, s.with_recipients)
    );
    println!(
        "{:<52} {:>4} of {:<4} {:>6.1} %",
        "right status class (2/4/5)",
        s.right_class,
        s.with_recipients,
        pct(s.right_class, s.with_recipients)
    );
    println!(
        "{:<52} {:>4} of {:<4} {:>6.1} %",
        "right hard/soft flag (sisimai's)",
        s.right_hard,
        s.with_recipients,
        pct(s.right_hard, s.with_recipients)
    );
    println!(
        "{:<52} {:>4} of {:<4} {:>6.1} %",
        "right status class and hard/soft flag",
        s.right_status_and_hard,
        s.with_recipients,
        pct(s.right_status_and_hard, s.with_recipients)
    );
    println!(
        "{:<52} {:>4} of {:<4}",
        "complaints and auto-replies recognised", s.reports_recognised, s.reports
    );
    bench_row(
        "bounce corpus: recognised / right recipients / right status class",
        &format!(
            "{:.1} % / {:.1} % / {:.1} %",
            pct(s.recognised, s.bounces),
            pct(s.right_count, s.with_recipients),
            pct(s.right_class, s.with_recipients)
        ),
        "98 % / 95 % / 95 %",
    );
    println!(
        "{:<52} {:>4}  {:?}",
        "taken for bounces though they are not",
        s.false_bounces.len(),
        s.false_bounces
    );
}
