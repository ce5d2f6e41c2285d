//! Models by Hugging Face name (feature `hf-hub`), against a loopback server that answers like the Hub's
//! `resolve` endpoint: no test reaches the internet. The file served is the test model.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use slm_agents::model::{HfFile, LanguageModel, LlamaModel, Request};
use slm_agents::Error;

const REPO: &str = "test-owner/tiny-gguf";
const FILE: &str = "model.Q4_1.gguf";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Serves `body` at `/{REPO}/resolve/main/{FILE}` (HTTP range requests, as hf-hub makes them) and 404 for
/// anything else; counts the requests. Returns the endpoint URL.
fn serve(body: Arc<Vec<u8>>, requests: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            requests.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, b) = v.trim().split_once('-').unwrap();
                    range = Some((a.parse::<usize>().unwrap(), b.parse::<usize>().ok()));
                }
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
            if path != format!("/{REPO}/resolve/main/{FILE}") {
                let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            }
            let (start, end) = match range {
                Some((a, b)) => (a, b.unwrap_or(body.len() - 1).min(body.len() - 1)),
                None => (0, body.len() - 1),
            };
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{}\r\n\
                 ETag: \"etag-of-the-test-model\"\r\nX-Repo-Commit: {COMMIT}\r\nConnection: close\r\n\r\n",
                end + 1 - start,
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body[start..=end]);
            let _ = stream.flush();
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        }
    });
    url
}

#[test]
fn a_model_by_name_is_downloaded_once_with_progress_then_taken_from_the_cache() {
    let body = Arc::new(std::fs::read(support::smollm2_path()).unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let endpoint = serve(body.clone(), requests.clone());
    let cache = support::scratch_dir("hf-cache");
    let _ = std::fs::remove_dir_all(&cache);
    let file = HfFile::new(REPO, FILE).endpoint(&endpoint).cache_dir(&cache);
    assert_eq!(file.cached(), None);

    let mut seen = Vec::new();
    let path = file.download(|p| seen.push(p)).unwrap();
    assert!(path.starts_with(&cache), "{}", path.display());
    assert_eq!(std::fs::read(&path).unwrap(), *body, "the file arrived whole");
    let last = seen.last().unwrap();
    assert_eq!((last.done, last.total), (body.len() as u64, body.len() as u64));
    assert!(seen.len() > 2, "progress is reported as bytes arrive: {}", seen.len());
    let made = requests.load(Ordering::SeqCst);
    assert!(made >= 1);

    // Again: from the cache, with no request at all.
    assert_eq!(HfFile::new(REPO, FILE).endpoint(&endpoint).cache_dir(&cache).download(|_| {}).unwrap(), path);
    assert_eq!(requests.load(Ordering::SeqCst), made, "the second call made no request");

    // The downloaded model runs.
    let model = LlamaModel::builder(&path).threads(1).load().unwrap();
    let c = futures::executor::block_on(model.complete(Request::raw("Hello").with_max_tokens(4))).unwrap();
    assert!(c.usage.completion_tokens > 0);
}

#[test]
fn a_missing_file_or_server_is_a_download_error() {
    let requests = Arc::new(AtomicUsize::new(0));
    let endpoint = serve(Arc::new(b"GGUF".to_vec()), requests);
    let cache = support::scratch_dir("hf-cache-missing");
    let missing = HfFile::new(REPO, "no-such-file.gguf").endpoint(&endpoint).cache_dir(&cache).download(|_| {});
    let Err(Error::Download { repo, file, reason }) = missing else { panic!("{missing:?}") };
    assert_eq!((repo.as_str(), file.as_str()), (REPO, "no-such-file.gguf"));
    assert!(reason.contains("404"), "{reason}");

    // Nothing listens on this port.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = HfFile::new(REPO, FILE).endpoint(format!("http://{closed}")).cache_dir(&cache).download(|_| {});
    assert!(matches!(down, Err(Error::Download { .. })), "{down:?}");
}

#[test]
fn from_hf_reads_hf_endpoint_and_hf_home() {
    let body = Arc::new(std::fs::read(support::smollm2_path()).unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let endpoint = serve(body, requests.clone());
    let home = support::scratch_dir("hf-home");
    let _ = std::fs::remove_dir_all(&home);
    // SAFETY (of the environment): this test binary's other tests do not read these variables.
    std::env::set_var("HF_ENDPOINT", &endpoint);
    std::env::set_var("HF_HOME", &home);
    let model = LlamaModel::from_hf(REPO, FILE).unwrap().threads(1).load().unwrap();
    assert!(model.path().starts_with(home.join("hub")), "{}", model.path().display());
    assert!(requests.load(Ordering::SeqCst) >= 1);
}
