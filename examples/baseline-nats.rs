//! Machine baseline for calls across hosts: a bare async-nats request/reply between two
//! processes, through a NATS server. Nothing of the messenger runs: it bounds what calls
//! carried over NATS can reach on this machine.
//!
//! This binary (the requester) starts a second copy of itself as the responder, which answers
//! every request on `baseline.echo` with its payload, then sends 64-byte requests one at a time
//! (`serial`) and with `--in-flight` outstanding (`pipelined`) for `--seconds` each.
//!
//! ```sh
//! nats-server -a 127.0.0.1 -p 4222 &
//! cargo run --release --features nats --example baseline-nats -- --url nats://127.0.0.1:4222
//! ```
//!
//! Prints one JSON object: `{"serial": per_s, "pipelined": per_s, "in_flight": n}`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use multiprocess::uplink::async_nats;

const ROLE_ENV: &str = "BASELINE_NATS_ROLE";
const SUBJECT: &str = "baseline.echo";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let mut url = "nats://127.0.0.1:4222".to_owned();
    let (mut seconds, mut in_flight) = (2.0_f64, 64_usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => url = value()?,
            "--seconds" => seconds = value()?.parse()?,
            "--in-flight" => in_flight = value()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let client = async_nats::connect(url.as_str()).await?;
    if std::env::var_os(ROLE_ENV).is_some() {
        return respond(client).await;
    }
    let mut responder = Command::new(std::env::current_exe()?)
        .args(["--url", &url])
        .env(ROLE_ENV, "respond")
        .stdin(Stdio::null())
        .spawn()?;
    let measured = async {
        // The responder is subscribed once a request gets through.
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.request(SUBJECT, vec![0; 64].into()).await.is_err() {
            if Instant::now() > deadline {
                return Err::<_, BoxError>("the responder never answered".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let serial = rate(&client, 1, seconds).await?;
        let pipelined = rate(&client, in_flight, seconds).await?;
        Ok((serial, pipelined))
    }
    .await;
    let _ = responder.kill();
    let _ = responder.wait();
    let (serial, pipelined) = measured?;
    println!(
        "{}",
        serde_json::json!({"serial": serial, "pipelined": pipelined, "in_flight": in_flight})
    );
    Ok(())
}

async fn respond(client: async_nats::Client) -> Result<(), BoxError> {
    let mut requests = client.subscribe(SUBJECT).await?;
    client.flush().await?;
    while let Some(message) = requests.next().await {
        if let Some(reply) = message.reply {
            client.publish(reply, message.payload).await?;
        }
    }
    Ok(())
}

/// Round trips per second with `in_flight` outstanding, for `seconds`.
async fn rate(
    client: &async_nats::Client,
    in_flight: usize,
    seconds: f64,
) -> Result<f64, BoxError> {
    let one = || {
        let client = client.clone();
        async move { client.request(SUBJECT, vec![0; 64].into()).await }
    };
    let started = Instant::now();
    let mut calls: FuturesUnordered<_> = (0..in_flight).map(|_| one()).collect();
    let mut done = 0_u64;
    while let Some(answer) = calls.next().await {
        answer?;
        done += 1;
        if started.elapsed().as_secs_f64() < seconds {
            calls.push(one());
        }
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}
