//! A local stand-in for the Hugging Face Hub (127.0.0.1 only), shared by the
//! hub tests of ijepa-encoder and ijepa-cli.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;

/// The commit every served file claims to be at.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Serves `files` of repository `repo` at `/{repo}/resolve/main/{file}` with
/// the headers hf-hub reads (ETag, X-Repo-Commit, Content-Range); everything
/// else is 404. Answers at most `max_requests` requests, then stops.
pub fn serve(
    repo: &str,
    files: HashMap<String, Vec<u8>>,
    max_requests: usize,
) -> (String, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let prefix = format!("/{repo}/resolve/main/");
    let handle = std::thread::spawn(move || {
        let mut seen = vec![];
        for stream in listener.incoming().take(max_requests) {
            let mut stream = stream.unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut range = None;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, b) = v.trim().split_once('-').unwrap();
                    range = Some((a.parse::<usize>().unwrap(), b.parse::<usize>().ok()));
                }
            }
            seen.push(path.clone());
            match path
                .strip_prefix(&prefix)
                .and_then(|f| files.get(f).map(|d| (f, d)))
            {
                Some((file, data)) => {
                    let (start, end) = match range {
                        Some((a, b)) => (a, b.unwrap_or(data.len() - 1).min(data.len() - 1)),
                        None => (0, data.len() - 1),
                    };
                    let body = &data[start..=end];
                    let etag = format!("{:0>40}", file.len() * 7919 + data.len());
                    write!(
                        stream,
                        "HTTP/1.1 206 Partial Content\r\nETag: \"{etag}\"\r\nX-Repo-Commit: {COMMIT}\r\n\
                         Content-Range: bytes {start}-{end}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        data.len(),
                        body.len()
                    )
                    .unwrap();
                    stream.write_all(body).unwrap();
                }
                None => {
                    write!(
                        stream,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .unwrap();
                }
            }
        }
        seen
    });
    (endpoint, handle)
}
