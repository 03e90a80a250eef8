fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().unwrap())
        .unwrap_or(200_000);
    let mut raw = String::from(
        "From: MAILER-DAEMON@mx.example\r\nTo: bounce@mycompany.com\r\nSubject: Undelivered Mail Returned to Sender\r\nX-Failed-Recipients: ",
    );
    let mut body = String::new();
    for i in 0..n {
        body.push_str(&format!("user{i}@example{}.com\n", i % 97));
    }
    let mut xf = String::new();
    for i in 0..n.min(20000) {
        xf.push_str(&format!("x{i}@y.example, "));
    }
    raw.push_str(&xf);
    raw.push_str("\r\n\r\nThe following addresses could not be delivered: user unknown\n\n");
    raw.push_str(&body);
    let t = std::time::Instant::now();
    let r = mail_gateway_core::mime::bounce::analyse(raw.as_bytes());
    println!(
        "{} bytes: {:?} {} failed in {:?}",
        raw.len(),
        r.kind,
        r.failed.len(),
        t.elapsed()
    );
    let raw2 = raw.replace("X-Failed-Recipients: ", "X-Other: ");
    let t = std::time::Instant::now();
    let r = mail_gateway_core::mime::bounce::analyse(raw2.as_bytes());
    println!(
        "text only {} bytes: {:?} {} failed in {:?}",
        raw2.len(),
        r.kind,
        r.failed.len(),
        t.elapsed()
    );
    let t = std::time::Instant::now();
    let s = mail_gateway_core::mime::summary::summarise(raw2.as_bytes());
    println!("summary in {:?} notes {:?}", t.elapsed(), s.notes);
}
