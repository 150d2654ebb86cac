//! envd over its Unix socket, in-process: Connect framing, errors for bad input, access
//! tokens, process lifetimes and keepalives, `/files`. (The same envd inside a real sandbox,
//! driven by the E2B SDK, is in `coppice-tests`.)
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{envelope, send, stream, unary};
use serde_json::json;

fn start_request(script: &str) -> serde_json::Value {
    json!({"process": {"cmd": "/bin/sh", "args": ["-c", script]}, "stdin": false})
}

async fn assert_still_serving(envd: &common::TestEnvd) {
    let health = send(&envd.socket, "GET", "/health", &[], "").await;
    assert_eq!(health.status, 204);
}

#[tokio::test]
async fn test_start_streams_start_output_end_and_an_end_stream_envelope() {
    let envd = common::start().await;
    let answer = stream(
        &envd.socket,
        "process.Process/Start",
        &start_request("printf out; printf err >&2; exit 3"),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type(), "application/connect+json");
    let envelopes = answer.envelopes();
    assert!(envelopes[0].1["event"]["start"]["pid"].as_u64().unwrap() > 0);
    let text = serde_json::to_string(&envelopes).unwrap();
    assert!(text.contains(r#"{"stdout":"b3V0"}"#), "{text}");
    assert!(text.contains(r#"{"stderr":"ZXJy"}"#), "{text}");
    let (flags, end_stream) = envelopes.last().unwrap();
    assert_eq!((*flags, end_stream), (2, &json!({})));
    let end = &envelopes[envelopes.len() - 2].1["event"]["end"];
    assert_eq!(
        end,
        &json!({"exitCode": 3, "exited": true, "status": "exit status 3", "error": "exit status 3"})
    );
}

#[tokio::test]
async fn test_malformed_json_is_invalid_argument_and_envd_keeps_serving() {
    let envd = common::start().await;
    let answer = unary(&envd.socket, "filesystem.Filesystem/Stat", "{\"path\": ").await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["code"], "invalid_argument");
    assert_still_serving(&envd).await;
}

#[tokio::test]
async fn test_unknown_rpc_is_unimplemented_with_a_string_code() {
    let envd = common::start().await;
    let answer = unary(&envd.socket, "process.Process/Teleport", "{}").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["code"], "unimplemented");
    assert_still_serving(&envd).await;
}

#[tokio::test]
async fn test_oversized_message_is_refused_as_resource_exhausted() {
    let envd = common::start().await;
    let body = json!({ "path": "a".repeat(5 << 20) }).to_string();
    let mut request = format!(
        "POST /filesystem.Filesystem/Stat HTTP/1.1\r\nhost: envd\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body.as_bytes());
    let answer = common::send_raw(&envd.socket, request).await;
    assert!(
        answer.starts_with("HTTP/1.1 429"),
        "{}",
        &answer[..answer.len().min(300)]
    );
    assert!(
        answer.contains(r#""code":"resource_exhausted""#),
        "{answer}"
    );
    assert_still_serving(&envd).await;
}

#[tokio::test]
async fn test_invalid_utf8_paths_are_invalid_argument_in_json_and_binary() {
    let envd = common::start().await;
    let mut body = b"{\"path\": \"/tmp/".to_vec();
    body.extend_from_slice(&[0xff, 0xfe]);
    body.extend_from_slice(b"\"}");
    let answer = send(
        &envd.socket,
        "POST",
        "/filesystem.Filesystem/Stat",
        &[("content-type", "application/json")],
        body,
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["code"], "invalid_argument");
    // Protobuf binary: field 1 (path), length 2, invalid UTF-8.
    let answer = send(
        &envd.socket,
        "POST",
        "/filesystem.Filesystem/Stat",
        &[("content-type", "application/proto")],
        vec![0x0a, 0x02, 0xff, 0xfe],
    )
    .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_still_serving(&envd).await;
}

#[tokio::test]
async fn test_binary_protobuf_clients_are_served_too() {
    let envd = common::start().await;
    // StatRequest{path: "/"}
    let answer = send(
        &envd.socket,
        "POST",
        "/filesystem.Filesystem/Stat",
        &[("content-type", "application/proto")],
        vec![0x0a, 0x01, b'/'],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type(), "application/proto");
    assert!(!answer.body.is_empty());
}

#[tokio::test]
async fn test_binary_streams_are_served_with_a_json_end_stream() {
    let envd = common::start().await;
    // StartRequest{process: ProcessConfig{cmd: "/bin/true"}, stdin: false}
    let message: Vec<u8> = [&[0x0a, 0x0b, 0x0a, 0x09][..], b"/bin/true", &[0x20, 0x00]].concat();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&message);
    let answer = send(
        &envd.socket,
        "POST",
        "/process.Process/Start",
        &[("content-type", "application/connect+proto")],
        framed,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type(), "application/connect+proto");
    let mut rest = &answer.body[..];
    let mut frames = Vec::new();
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        frames.push((rest[0], rest[5..5 + len].to_vec()));
        rest = &rest[5 + len..];
    }
    // start, end, then the end-stream message (JSON even for binary streams).
    assert_eq!(frames.len(), 3, "{frames:?}");
    assert_eq!(frames[2], (2, b"{}".to_vec()));
}

#[tokio::test]
async fn test_watchers_on_missing_dirs_are_not_found_unary_and_streamed() {
    let envd = common::start().await;
    let answer = unary(
        &envd.socket,
        "filesystem.Filesystem/CreateWatcher",
        r#"{"path": "/nonexistent/dir", "recursive": true}"#,
    )
    .await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["code"], "not_found");
    let answer = stream(
        &envd.socket,
        "filesystem.Filesystem/WatchDir",
        &json!({"path": "/nonexistent/dir"}),
        &[],
    )
    .await;
    assert_eq!(
        answer.status, 200,
        "streams report errors in the end-stream message"
    );
    let envelopes = answer.envelopes();
    let (flags, end) = envelopes.last().unwrap();
    assert_eq!(*flags, 2);
    assert_eq!(end["error"]["code"], "not_found");
}

#[tokio::test]
async fn test_signal_to_a_dead_or_unknown_pid_is_not_found() {
    let envd = common::start().await;
    let answer = unary(
        &envd.socket,
        "process.Process/SendSignal",
        r#"{"process": {"pid": 999999}, "signal": "SIGNAL_SIGKILL"}"#,
    )
    .await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["code"], "not_found");
    let started = stream(
        &envd.socket,
        "process.Process/Start",
        &start_request("true"),
        &[],
    )
    .await;
    let pid = started.envelopes()[0].1["event"]["start"]["pid"]
        .as_u64()
        .unwrap();
    let answer = unary(
        &envd.socket,
        "process.Process/SendSignal",
        &json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}).to_string(),
    )
    .await;
    assert_eq!(answer.json()["code"], "not_found");
    assert_still_serving(&envd).await;
}

#[tokio::test]
async fn test_missing_cwd_ends_the_stream_with_invalid_argument() {
    let envd = common::start().await;
    let request = json!({"process": {"cmd": "/bin/true", "cwd": "/nope/here"}, "stdin": false});
    let answer = stream(&envd.socket, "process.Process/Start", &request, &[]).await;
    assert_eq!(answer.status, 200);
    let envelopes = answer.envelopes();
    assert_eq!(envelopes.len(), 1);
    assert_eq!(
        envelopes[0].1["error"],
        json!({"code": "invalid_argument", "message": "cwd '/nope/here' does not exist"})
    );
}

#[tokio::test]
async fn test_connect_timeout_is_the_process_lifetime() {
    let envd = common::start().await;
    let started = Instant::now();
    let answer = stream(
        &envd.socket,
        "process.Process/Start",
        &start_request("sleep 30"),
        &[("connect-timeout-ms", "300")],
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let envelopes = answer.envelopes();
    let end = &envelopes[envelopes.len() - 2].1["event"]["end"];
    assert_eq!(end["status"], "signal: killed", "{envelopes:?}");
    assert_eq!(end["exitCode"], -1);
}

#[tokio::test]
async fn test_zero_connect_timeout_means_no_lifetime_limit() {
    let envd = common::start().await;
    let answer = stream(
        &envd.socket,
        "process.Process/Start",
        &start_request("sleep 0.3; printf ok"),
        &[("connect-timeout-ms", "0")],
    )
    .await;
    let envelopes = answer.envelopes();
    let end = &envelopes[envelopes.len() - 2].1["event"]["end"];
    assert_eq!(
        end,
        &json!({"exited": true, "status": "exit status 0"}),
        "{envelopes:?}"
    );
}

#[tokio::test]
async fn test_idle_streams_get_keepalives_at_the_requested_interval() {
    let envd = common::start().await;
    let answer = stream(
        &envd.socket,
        "process.Process/Start",
        &start_request("sleep 2.5; echo done"),
        &[("keepalive-ping-interval", "1")],
    )
    .await;
    let keepalives = answer
        .envelopes()
        .iter()
        .filter(|(_, m)| m["event"].get("keepalive").is_some())
        .count();
    assert!((1..=3).contains(&keepalives), "{keepalives} keepalives");
}

#[tokio::test]
async fn test_access_token_guards_rpcs_but_not_health() {
    let envd = common::start().await;
    let init = send(
        &envd.socket,
        "POST",
        "/init",
        &[("content-type", "application/json")],
        r#"{"accessToken": "s3cret", "envVars": {"FROM_INIT": "yes"}}"#,
    )
    .await;
    assert_eq!(init.status, 204);
    let refused = unary(&envd.socket, "process.Process/List", "{}").await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["code"], 401);
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("access token")
    );
    assert_still_serving(&envd).await;
    let allowed = send(
        &envd.socket,
        "POST",
        "/process.Process/Start",
        &[
            ("content-type", "application/connect+json"),
            ("x-access-token", "s3cret"),
        ],
        envelope(&start_request("printf $FROM_INIT")),
    )
    .await;
    assert!(
        serde_json::to_string(&allowed.envelopes())
            .unwrap()
            .contains("eWVz")
    );
}

#[tokio::test]
async fn test_files_round_trip_multipart_and_octet_stream_with_gzip() {
    let envd = common::start().await;
    let target = envd.dir.path().join("nested/deeper/a.bin");
    let boundary = "XyZ";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
        target.display()
    )
    .into_bytes();
    body.extend_from_slice(&[0u8, 1, 2, 255]);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let answer = send(
        &envd.socket,
        "POST",
        "/files",
        &[("content-type", "multipart/form-data; boundary=XyZ")],
        body,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.json(),
        json!([{"path": target.display().to_string(), "name": "a.bin", "type": "file"}])
    );
    let download = send(
        &envd.socket,
        "GET",
        &format!("/files?path={}", target.display()),
        &[],
        "",
    )
    .await;
    assert_eq!(download.status, 200);
    assert_eq!(&download.body[..], &[0u8, 1, 2, 255]);

    let gz_target = envd.dir.path().join("g.txt");
    let gzipped = {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"hello gzip\n").unwrap();
        encoder.finish().unwrap()
    };
    let answer = send(
        &envd.socket,
        "POST",
        &format!("/files?path={}", gz_target.display()),
        &[
            ("content-type", "application/octet-stream"),
            ("content-encoding", "gzip"),
        ],
        gzipped,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(std::fs::read(&gz_target).unwrap(), b"hello gzip\n");

    let missing = send(&envd.socket, "GET", "/files?path=/no/such/file", &[], "").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], 404);
    let wrong_type = send(
        &envd.socket,
        "POST",
        "/files?path=/tmp/x",
        &[("content-type", "text/plain")],
        "x",
    )
    .await;
    assert_eq!(wrong_type.status, 400);
}

/// What a shell's `echo $i > file` does: truncate, then write.
fn rewrite_in_place(path: &std::path::Path, contents: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(contents).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_file_rewritten_while_it_is_downloaded_is_answered_whole() {
    let envd = common::start().await;
    let file = envd.dir.path().join("counter");
    let contents: [&[u8]; 3] = [b"7\n", b"1234567\n", b"12\n"];
    rewrite_in_place(&file, contents[0]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (file, stop) = (file.clone(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut round = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                rewrite_in_place(&file, contents[round % contents.len()]);
                round += 1;
            }
        })
    };
    let url = format!("/files?path={}", file.display());
    // `send` fails the test on an answer that breaks off or disagrees with its length.
    for _ in 0..400 {
        let answer = send(&envd.socket, "GET", &url, &[], "").await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(
            contents.iter().any(|whole| whole.starts_with(&answer.body)),
            "{:?} is none of the file's contents",
            answer.body
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
}

#[tokio::test]
async fn test_signed_file_urls_work_without_the_token_header() {
    let envd = common::start().await;
    envd.envd
        .update_settings(|s| s.access_token = Some("tok".into()))
        .unwrap();
    let file = envd.dir.path().join("s.txt");
    std::fs::write(&file, "signed").unwrap();
    let path = file.display().to_string();
    let unsigned = send(&envd.socket, "GET", &format!("/files?path={path}"), &[], "").await;
    assert_eq!(unsigned.status, 401);
    let signature = coppice_envd::auth::file_signature(
        &path,
        coppice_envd::auth::FileOperation::Read,
        "",
        "tok",
        None,
    )
    .replace('+', "%2B")
    .replace('/', "%2F");
    let signed = send(
        &envd.socket,
        "GET",
        &format!("/files?path={path}&signature={signature}"),
        &[],
        "",
    )
    .await;
    assert_eq!(signed.status, 200);
    assert_eq!(&signed.body[..], b"signed");
}

/// One HTTP/1.1 answer read off `stream`: its status line and headers, then `content-length`
/// bytes of body.
async fn read_answer(stream: &mut tokio::net::UnixStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(
            read > 0,
            "envd closed the connection: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .map_or(0, |value| value.trim().parse().unwrap());
            if body.len() >= length {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn test_chunked_multipart_upload_is_answered_and_keeps_the_connection() {
    use tokio::io::AsyncWriteExt;
    let envd = common::start().await;
    let target = envd.dir.path().join("chunked.txt");
    let part = format!(
        "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\r\nhello\r\n--B--\r\n",
        target.display()
    );
    let mut stream = tokio::net::UnixStream::connect(&envd.socket).await.unwrap();
    let head = "POST /files HTTP/1.1\r\nHost: envd\r\nContent-Type: multipart/form-data; boundary=B\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunk = format!("{:x}\r\n{part}\r\n", part.len());
    stream
        .write_all(format!("{head}{chunk}").as_bytes())
        .await
        .unwrap();
    // The closing boundary is in; the body's last chunk comes later, as from a slow client.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "hello");

    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: envd\r\n\r\n")
        .await
        .unwrap();
    let health = read_answer(&mut stream).await;
    assert!(
        health.starts_with("HTTP/1.1 204") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );
}

#[tokio::test]
async fn test_tunnel_splices_to_a_local_port_and_refuses_a_closed_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let envd = common::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut peer, _) = listener.accept().await.unwrap();
        let mut greeting = [0u8; 5];
        peer.read_exact(&mut greeting).await.unwrap();
        peer.write_all(&greeting).await.unwrap();
        peer.write_all(b"!").await.unwrap();
    });
    let open = |port: u16, upgrade: bool| {
        let upgrade = if upgrade {
            "Connection: upgrade\r\nUpgrade: coppice-tunnel\r\n"
        } else {
            ""
        };
        format!("GET /tunnel/{port} HTTP/1.1\r\nHost: envd\r\n{upgrade}\r\n")
    };

    let mut stream = tokio::net::UnixStream::connect(&envd.socket).await.unwrap();
    stream.write_all(open(port, true).as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    stream.write_all(b"hello").await.unwrap();
    let mut echoed = [0u8; 6];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello!");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut stream = tokio::net::UnixStream::connect(&envd.socket).await.unwrap();
    stream
        .write_all(open(closed, true).as_bytes())
        .await
        .unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("nothing accepts connections"), "{answer}");

    let mut stream = tokio::net::UnixStream::connect(&envd.socket).await.unwrap();
    stream
        .write_all(open(port, false).as_bytes())
        .await
        .unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}
