//! `coppice-api-bench`: time to interactive over HTTP, through the gateway in process over
//! the real backends: `POST /v2/sandboxes`, then `process.Process/Start` of `/bin/true` through
//! the sandbox-traffic proxy until its end event. Prints p50/p95 sequentially and for bursts
//! of concurrent creates, beside `bwrap /bin/true` in the same run, and the proxy's overhead
//! on a unary envd call against calling envd's socket directly. Ends with one JSON line
//! (`RESULT {...}`). Root only. Also acts as the sandbox init and as envd.
//!
//! Usage: `coppice-api-bench [--iterations N] [--burst N] [--bursts N]`.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    coppice_benches::harness_main("coppice-api-bench", linux::run)
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("coppice-api-bench needs Linux");
    std::process::ExitCode::FAILURE
}

#[cfg(target_os = "linux")]
mod linux {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use coppice_benches::bwrap_true;
    use coppice_gateway::auth::ApiKeys;
    use coppice_gateway::{AppState, router};

    use coppice_linux::EnvdSettings;
    use coppice_tests::harness::{ManagerEnv, workspace_binary};
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;

    const KEY: &str = "bench-key";

    struct Options {
        iterations: usize,
        burst: usize,
        bursts: usize,
    }

    fn options() -> anyhow::Result<Options> {
        let mut options = Options {
            iterations: 100,
            burst: 20,
            bursts: 5,
        };
        coppice_benches::read_counts(&mut [
            ("iterations", &mut options.iterations, 1),
            ("burst", &mut options.burst, 1),
            ("bursts", &mut options.bursts, 1),
        ])?;
        Ok(options)
    }

    type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

    async fn tcp(addr: SocketAddr) -> anyhow::Result<Sender> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    async fn unix(path: &Path) -> anyhow::Result<Sender> {
        let stream = tokio::net::UnixStream::connect(path).await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    async fn send(
        sender: &mut Sender,
        request: hyper::Request<Full<Bytes>>,
    ) -> anyhow::Result<(u16, Bytes)> {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }

    /// A created sandbox: its id and envd token.
    async fn create(sender: &mut Sender) -> anyhow::Result<(String, String)> {
        let request = hyper::Request::post("/v2/sandboxes")
            .header("host", "localhost")
            .header("x-api-key", KEY)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"templateID":"base"}"#)))?;
        let (status, body) = send(sender, request).await?;
        anyhow::ensure!(status == 201, "create: {status} {body:?}");
        let json: serde_json::Value = serde_json::from_slice(&body)?;
        Ok((
            json["sandboxID"].as_str().unwrap_or_default().to_owned(),
            json["envdAccessToken"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ))
    }

    async fn start_true(sender: &mut Sender, id: &str, token: &str) -> anyhow::Result<()> {
        let request = hyper::Request::post("/process.Process/Start")
            .header("host", "localhost")
            .header("e2b-sandbox-id", id)
            .header("e2b-sandbox-port", "49983")
            .header("x-access-token", token)
            .header("content-type", "application/connect+json")
            .body(Full::new(coppice_benches::start_true_envelope()))?;
        let (status, body) = send(sender, request).await?;
        let text = String::from_utf8_lossy(&body);
        anyhow::ensure!(
            status == 200 && text.contains(r#""exited":true"#) && !text.contains("exitCode"),
            "start: {status} {text}"
        );
        Ok(())
    }

    async fn kill(sender: &mut Sender, id: &str) -> anyhow::Result<()> {
        let request = hyper::Request::delete(format!("/sandboxes/{id}"))
            .header("host", "localhost")
            .header("x-api-key", KEY)
            .body(Full::new(Bytes::new()))?;
        let (status, _) = send(sender, request).await?;
        anyhow::ensure!(status == 204, "kill: {status}");
        Ok(())
    }

    /// One create + Start /bin/true, timed; the sandbox is killed afterwards, untimed.
    async fn interactive(addr: SocketAddr) -> anyhow::Result<Duration> {
        let mut sender = tcp(addr).await?;
        let started = Instant::now();
        let (id, token) = create(&mut sender).await?;
        start_true(&mut sender, &id, &token).await?;
        let elapsed = started.elapsed();
        kill(&mut sender, &id).await?;
        Ok(elapsed)
    }

    fn list_request(headers: &[(&str, &str)]) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
        let mut request = hyper::Request::post("/process.Process/List")
            .header("host", "localhost")
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Ok(request.body(Full::new(Bytes::from_static(b"{}")))?)
    }

    fn report(label: &str, samples: &mut [Duration]) -> (f64, f64) {
        coppice_benches::report(label, 52, samples)
    }

    pub async fn run() -> anyhow::Result<()> {
        let options = options()?;
        let exe = std::env::current_exe()?;
        // Like coppiced, use the dedicated envd binary when it is built beside this one.
        let envd_binary = workspace_binary("coppice-envd");
        let env = if envd_binary.is_file() {
            ManagerEnv::start_with_envd(&exe, EnvdSettings::new(envd_binary.clone())).await?
        } else {
            ManagerEnv::start(&exe, true).await?
        };
        let state = AppState {
            manager: env.manager.clone(),
            api_keys: ApiKeys::new(vec![KEY.to_owned()]),
            envd_version: coppice_envd::ENVD_VERSION,
            envd_init: Arc::new(coppice_gateway::envd::UnixEnvdInit),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(coppice_gateway::serve(
            listener,
            router(state),
            std::future::pending::<()>(),
        ));
        println!(
            "gateway in process over the real backends; {} sequential, {} bursts of {}",
            options.iterations, options.bursts, options.burst
        );
        for _ in 0..3 {
            interactive(addr).await?;
        }
        let settle = Duration::from_millis(20);
        let mut sequential = Vec::with_capacity(options.iterations);
        for _ in 0..options.iterations {
            tokio::time::sleep(settle).await;
            sequential.push(interactive(addr).await?);
        }
        let mut burst_samples = Vec::new();
        for _ in 0..options.bursts {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let tasks: Vec<_> = (0..options.burst)
                .map(|_| tokio::spawn(interactive(addr)))
                .collect();
            for task in tasks {
                burst_samples.push(task.await??);
            }
        }
        let mut bwrap = Vec::with_capacity(options.iterations);
        for _ in 0..options.iterations {
            tokio::time::sleep(settle).await;
            let started = Instant::now();
            let status = bwrap_true().status()?;
            anyhow::ensure!(status.success(), "bwrap /bin/true failed");
            bwrap.push(started.elapsed());
        }

        // Proxy overhead: one sandbox, unary List through the gateway and directly.
        let mut sender = tcp(addr).await?;
        let (id, token) = create(&mut sender).await?;
        let sandbox_id = id.parse()?;
        let socket = env.manager.endpoints(&sandbox_id)?.envd_socket;
        let mut direct = unix(&socket).await?;
        let mut via_gateway = Vec::with_capacity(options.iterations * 5);
        let mut to_envd = Vec::with_capacity(options.iterations * 5);
        let proxied_headers = [
            ("e2b-sandbox-id", id.as_str()),
            ("e2b-sandbox-port", "49983"),
            ("x-access-token", token.as_str()),
        ];
        for _ in 0..options.iterations * 5 {
            let started = Instant::now();
            let (status, _) = send(&mut sender, list_request(&proxied_headers)?).await?;
            anyhow::ensure!(status == 200, "proxied List: {status}");
            via_gateway.push(started.elapsed());
            let started = Instant::now();
            let (status, _) = send(
                &mut direct,
                list_request(&[("x-access-token", token.as_str())])?,
            )
            .await?;
            anyhow::ensure!(status == 200, "direct List: {status}");
            to_envd.push(started.elapsed());
        }
        kill(&mut sender, &id).await?;

        let (seq_p50, seq_p95) = report(
            "create + Start /bin/true → end, sequential",
            &mut sequential,
        );
        let (burst_p50, burst_p95) = report(
            &format!(
                "create + Start /bin/true → end, bursts of {}",
                options.burst
            ),
            &mut burst_samples,
        );
        let (bwrap_p50, _) = report("bwrap /bin/true (peer)", &mut bwrap);
        let (gateway_p50, _) = report("Process/List through the gateway proxy", &mut via_gateway);
        let (direct_p50, _) = report("Process/List straight to envd's socket", &mut to_envd);
        println!(
            "ratio sequential/bwrap p50 {:.2}; proxy overhead p50 {:.3} ms",
            seq_p50 / bwrap_p50,
            gateway_p50 - direct_p50
        );
        println!(
            "RESULT {}",
            serde_json::json!({
                "sequential_p50_ms": seq_p50,
                "sequential_p95_ms": seq_p95,
                "burst": options.burst,
                "burst_p50_ms": burst_p50,
                "burst_p95_ms": burst_p95,
                "bwrap_p50_ms": bwrap_p50,
                "proxy_overhead_p50_ms": gateway_p50 - direct_p50,
            })
        );
        Ok(())
    }
}
