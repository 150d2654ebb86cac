//! `coppice-envd-bench`: envd's latency and throughput inside a real sandbox, over the Unix
//! socket the host holds. Prints p50/p95 of `Process/Start` of `/bin/true` until its end event
//! beside the host spawning `/bin/true` itself (the floor) and `bwrap /bin/true` in the same
//! run, then `/files` upload and download of a large file beside the host writing and
//! reading the same amount on the same file system, and envd's peak RSS. Ends with one JSON
//! line (`RESULT {...}`). Root only. Also acts as the sandbox init and as envd.
//!
//! Usage: `coppice-envd-bench [--iterations N] [--file-mib N]`.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    coppice_benches::harness_main("coppice-envd-bench", linux::run)
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("coppice-envd-bench needs Linux");
    std::process::ExitCode::FAILURE
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use bytes::Bytes;
    use coppice_benches::bwrap_true;
    use coppice_core::SandboxSpec;
    use coppice_tests::harness::{ENVD_SUBCOMMAND, ManagerEnv};
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::TokioIo;

    const CHUNK: usize = 1 << 20;
    const SANDBOX_MEMORY_MB: u32 = 3072;

    struct Options {
        iterations: usize,
        file_mib: usize,
    }

    fn options() -> anyhow::Result<Options> {
        let mut options = Options {
            iterations: 500,
            file_mib: 1024,
        };
        coppice_benches::read_counts(&mut [
            ("iterations", &mut options.iterations, 1),
            ("file-mib", &mut options.file_mib, 1),
        ])?;
        Ok(options)
    }

    type Sender<B> = hyper::client::conn::http1::SendRequest<B>;

    async fn connect<B>(socket: &Path) -> anyhow::Result<Sender<B>>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = tokio::net::UnixStream::connect(socket).await?;
        // A large read buffer, so that the client is not what limits download throughput.
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(CHUNK * 4)
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// One `Process/Start` of `/bin/true`, until the end-stream envelope.
    async fn start_true(sender: &mut Sender<Full<Bytes>>, body: &Bytes) -> anyhow::Result<()> {
        sender.ready().await?;
        let request = hyper::Request::post("/process.Process/Start")
            .header("host", "envd")
            .header("content-type", "application/connect+json")
            .header("connect-protocol-version", "1")
            .body(Full::new(body.clone()))?;
        let response = sender.send_request(request).await?;
        let bytes = response.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        anyhow::ensure!(
            text.contains(r#""exited":true"#) && !text.contains("exitCode"),
            "unexpected stream: {text}"
        );
        Ok(())
    }

    /// One unary `Process/List`.
    async fn list(sender: &mut Sender<Full<Bytes>>) -> anyhow::Result<()> {
        sender.ready().await?;
        let request = hyper::Request::post("/process.Process/List")
            .header("host", "envd")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))?;
        let response = sender.send_request(request).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "List: {}",
            response.status()
        );
        response.into_body().collect().await?;
        Ok(())
    }

    fn report(label: &str, samples: &mut [Duration]) -> (f64, f64) {
        coppice_benches::report(label, 44, samples)
    }

    /// envd's host pid, found by its arguments.
    fn envd_pid(sandbox_id: &str) -> Option<u32> {
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
                let is_envd = args.first() == Some(&&b"coppice-envd"[..])
                    && args
                        .windows(2)
                        .any(|w| w[0] == b"--sandbox-id" && w[1] == sandbox_id.as_bytes());
                is_envd.then_some(pid)
            })
    }

    fn peak_rss_kib(pid: u32) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status.lines().find_map(|line| {
                    line.strip_prefix("VmHWM:")?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
            })
            .unwrap_or(0)
    }

    /// Runs `measure` on a thread of its own under a single-threaded runtime, so that the
    /// measuring client adds no thread hand-offs of its own to the latencies it records.
    async fn apart<F, Fut, T>(measure: F) -> anyhow::Result<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
        T: Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(measure()));
            let _ = done.send(outcome);
        });
        result.await.context("the measuring thread ended early")?
    }

    #[derive(Clone, Copy)]
    enum Rpc {
        StartTrue,
        List,
    }

    /// `iterations` timed calls on one connection to `socket`, `settle` apart, after a warm-up.
    async fn timed_calls(
        socket: PathBuf,
        rpc: Rpc,
        iterations: usize,
        settle: Duration,
    ) -> anyhow::Result<Vec<Duration>> {
        let body = coppice_benches::start_true_envelope();
        let mut sender = loop {
            match connect(&socket).await {
                Ok(sender) => break sender,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let mut samples = Vec::with_capacity(iterations);
        for round in 0..iterations + 20 {
            tokio::time::sleep(settle).await;
            let started = Instant::now();
            match rpc {
                Rpc::StartTrue => start_true(&mut sender, &body).await?,
                Rpc::List => list(&mut sender).await?,
            }
            // The first rounds warm the connection and envd up.
            if round >= 20 {
                samples.push(started.elapsed());
            }
        }
        Ok(samples)
    }

    fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let bytes = bytes as f64;
        bytes / 1e6 / elapsed.as_secs_f64()
    }

    async fn upload(socket: &Path, path: &str, mib: usize) -> anyhow::Result<Duration> {
        let chunk = Bytes::from(vec![0x5au8; CHUNK]);
        let frames = futures_util::stream::iter(0..mib)
            .map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone())));
        let mut sender = connect(socket).await?;
        let request = hyper::Request::post(format!("/files?path={path}"))
            .header("host", "envd")
            .header("content-type", "application/octet-stream")
            .body(StreamBody::new(frames))?;
        let started = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(status.is_success(), "upload: {status} {body:?}");
        Ok(started.elapsed())
    }

    async fn download(socket: &Path, path: &str, expected: usize) -> anyhow::Result<Duration> {
        let mut sender: Sender<Full<Bytes>> = connect(socket).await?;
        let request = hyper::Request::get(format!("/files?path={path}"))
            .header("host", "envd")
            .body(Full::new(Bytes::new()))?;
        let started = Instant::now();
        let response = sender.send_request(request).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "download: {}",
            response.status()
        );
        let mut body = response.into_body();
        let mut received = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                received += data.len();
            }
        }
        anyhow::ensure!(
            received == expected,
            "downloaded {received} of {expected} bytes"
        );
        Ok(started.elapsed())
    }

    /// The host writing then reading `mib` MiB on the file system of `dir` (the floor).
    fn host_copy(dir: &Path, mib: usize) -> anyhow::Result<(Duration, Duration)> {
        let path: PathBuf = dir.join("host-peer.bin");
        let chunk = vec![0x5au8; CHUNK];
        let started = Instant::now();
        let mut file = std::fs::File::create(&path)?;
        for _ in 0..mib {
            file.write_all(&chunk)?;
        }
        drop(file);
        let write = started.elapsed();
        let started = Instant::now();
        let mut file = std::fs::File::open(&path)?;
        let mut buffer = vec![0u8; CHUNK];
        while file.read(&mut buffer)? > 0 {}
        let read = started.elapsed();
        std::fs::remove_file(&path)?;
        Ok((write, read))
    }

    pub async fn run() -> anyhow::Result<()> {
        let options = options()?;
        let exe = std::env::current_exe()?;
        let env = ManagerEnv::start(&exe, true).await?;
        // Room for the transferred file in the sandbox's page cache (its memory cgroup holds it),
        // so that the disk is not what is measured.
        let mut spec = SandboxSpec::new("base".parse()?);
        spec.memory_mb = SANDBOX_MEMORY_MB;
        let sandbox = env.manager.create(spec).await?;
        let socket = env.manager.endpoints(&sandbox.id)?.envd_socket;
        println!(
            "envd inside one sandbox ({SANDBOX_MEMORY_MB} MiB), {} iterations, /files of {} MiB",
            options.iterations, options.file_mib
        );

        // One block per contender, with a pause between measurements, so that one's clean-up
        // (bwrap's namespaces, reaped children) does not land in another's samples.
        let settle = Duration::from_millis(
            std::env::var("SETTLE_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(5),
        );
        let iterations = options.iterations;
        let sandbox_socket = socket.clone();
        let mut envd_samples =
            apart(move || timed_calls(sandbox_socket, Rpc::StartTrue, iterations, settle)).await?;
        // The same envd outside any sandbox, as root: what the sandbox itself adds.
        let host_socket = env.dir.path().join("host-envd.sock");
        let mut host_envd = tokio::process::Command::new(&exe)
            .args([
                ENVD_SUBCOMMAND,
                "--port",
                "0",
                "--default-user",
                "root",
                "--unix",
            ])
            .arg(&host_socket)
            .kill_on_drop(true)
            .spawn()?;
        let mut host_envd_samples =
            apart(move || timed_calls(host_socket, Rpc::StartTrue, iterations, settle)).await?;
        host_envd.kill().await?;
        let list_socket = socket.clone();
        let mut list_samples =
            apart(move || timed_calls(list_socket, Rpc::List, iterations, settle)).await?;
        report("envd Process/List (round trip)", &mut list_samples);
        let mut spawn_samples = apart(move || async move {
            let mut samples = Vec::with_capacity(iterations);
            for _ in 0..iterations {
                tokio::time::sleep(settle).await;
                let started = Instant::now();
                let status = tokio::process::Command::new("/bin/true").status().await?;
                anyhow::ensure!(status.success(), "/bin/true failed");
                samples.push(started.elapsed());
            }
            Ok(samples)
        })
        .await?;
        let mut bwrap_samples = Vec::with_capacity(options.iterations);
        for _ in 0..options.iterations {
            tokio::time::sleep(settle).await;
            let started = Instant::now();
            let status = bwrap_true().status()?;
            anyhow::ensure!(status.success(), "bwrap /bin/true failed");
            bwrap_samples.push(started.elapsed());
        }
        let (envd_p50, envd_p95) = report(
            "envd Process/Start /bin/true → end (Unix socket)",
            &mut envd_samples,
        );
        let (host_envd_p50, _) = report(
            "envd outside a sandbox, as root (breakdown)",
            &mut host_envd_samples,
        );
        let (spawn_p50, _) = report("host spawn /bin/true (floor)", &mut spawn_samples);
        let (bwrap_p50, _) = report("bwrap /bin/true (peer)", &mut bwrap_samples);
        println!(
            "ratio envd/host-spawn p50 {:.2}, envd/bwrap p50 {:.2}",
            envd_p50 / spawn_p50,
            envd_p50 / bwrap_p50
        );

        let bytes = options.file_mib * CHUNK;
        let pid = envd_pid(sandbox.id.as_str()).context("cannot find envd's pid")?;
        let rss_before = peak_rss_kib(pid);
        let upload_time = upload(&socket, "/home/user/bench.bin", options.file_mib).await?;
        let download_time = download(&socket, "/home/user/bench.bin", bytes).await?;
        let rss_after = peak_rss_kib(pid);
        let (host_write, host_read) = host_copy(env.dir.path(), options.file_mib)?;
        let upload_rate = mb_per_s(bytes, upload_time);
        let download_rate = mb_per_s(bytes, download_time);
        println!(
            "/files upload   {upload_rate:>8.0} MB/s   host write (floor) {:>8.0} MB/s",
            mb_per_s(bytes, host_write)
        );
        println!(
            "/files download {download_rate:>8.0} MB/s   host read  (floor) {:>8.0} MB/s",
            mb_per_s(bytes, host_read)
        );
        println!("envd peak RSS {rss_before} KiB before, {rss_after} KiB after the transfers");
        println!(
            "RESULT {}",
            serde_json::json!({
                "start_true_p50_ms": envd_p50,
                "start_true_p95_ms": envd_p95,
                "host_spawn_p50_ms": spawn_p50,
                "unsandboxed_envd_p50_ms": host_envd_p50,
                "bwrap_p50_ms": bwrap_p50,
                "upload_mb_s": upload_rate,
                "download_mb_s": download_rate,
                "host_write_mb_s": mb_per_s(bytes, host_write),
                "host_read_mb_s": mb_per_s(bytes, host_read),
                "envd_peak_rss_kib": rss_after,
            })
        );
        env.manager.kill(&sandbox.id).await?;
        Ok(())
    }
}
