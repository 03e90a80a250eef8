//! `delay_proxy LISTEN_PORT UPSTREAM_PORT ONE_WAY_MS`: the harness's delaying proxy as a
//! program, for scripts/bench.sh (a relay 2 × ONE_WAY_MS away). Runs until killed.

use std::time::Duration;

use mail_gateway_tests::proxy::DelayingProxy;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("LISTEN_PORT UPSTREAM_PORT ONE_WAY_MS"))
        .collect();
    let [listen, upstream, one_way] = args[..] else {
        panic!("usage: delay_proxy LISTEN_PORT UPSTREAM_PORT ONE_WAY_MS");
    };
    DelayingProxy::start(
        listen as u16,
        upstream as u16,
        Duration::from_millis(one_way),
    );
    println!("READY");
    loop {
        std::thread::park();
    }
}
