//! The load loop of the messaging benchmarks (`bench-cluster`, `bench-hosts`).

use std::time::{Duration, Instant};

use multiprocess::BoxError;

/// `in_flight` tasks each calling `call` one after the other until `secs` have passed.
/// Returns every call's latency and the time until the last call finished.
pub async fn run_load<F, Fut>(
    secs: f64,
    in_flight: usize,
    call: F,
) -> Result<(Vec<Duration>, f64), BoxError>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), multiprocess::CallError>> + Send,
{
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(4096);
                // One clock reading per call: it ends this call and starts the next.
                let mut t = Instant::now();
                while t < end {
                    call().await?;
                    let done = Instant::now();
                    lat.push(done - t);
                    t = done;
                }
                Ok::<_, multiprocess::CallError>(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((all, start.elapsed().as_secs_f64()))
}
