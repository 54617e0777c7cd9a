//! A raw TCP upstream that records every byte it receives and answers with
//! a scripted behaviour: for smuggling tests ("the upstream saw nothing it
//! should not") and upstream faults.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the upstream answers each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// `200 ok`, keep-alive.
    Ok,
    /// Answers one request per connection, then closes the connection after
    /// a short idle pause (a pool that keeps it sees it go stale).
    OnePerConnection,
    /// Answers the first request of a connection; reads the second whole and
    /// closes without answering (the app closing a kept-alive connection just
    /// as a request arrives: the request was written, then the connection reset).
    DropsSecondRequest,
    /// Sends a head promising 1,000,000 bytes, 1,000 bytes of body, then closes.
    ResetMidBody,
    /// Sends bytes that are not HTTP.
    Garbage,
    /// Answers `200` as soon as a request head is in, before its body, then
    /// only records what comes until the connection closes (an app refusing
    /// or acknowledging an upload early).
    AnswersBeforeBody,
    /// Sends a head promising 100 bytes, 10 of them, then nothing while
    /// keeping the connection open (an app stuck in the middle of a body).
    StallsMidBody,
}

/// A running raw upstream.
pub struct RawUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every connection's received bytes, in order.
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawUpstream {
    /// Starts on 127.0.0.1:0.
    pub async fn start(behaviour: Behaviour) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let rec = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let index = {
                    let mut r = rec.lock().unwrap();
                    r.push(Vec::new());
                    r.len() - 1
                };
                tokio::spawn(serve(stream, behaviour, rec.clone(), index));
            }
        });
        RawUpstream { addr, received }
    }

    /// Everything received, all connections concatenated, lossily as text.
    pub fn all_text(&self) -> String {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect()
    }

    /// Number of request heads seen (by counting request lines).
    pub fn requests(&self) -> usize {
        self.all_text().matches(" HTTP/1.1\r\n").count()
    }
}

async fn serve(mut stream: TcpStream, behaviour: Behaviour, rec: Arc<Mutex<Vec<Vec<u8>>>>, index: usize) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut answered = 0u32;
    loop {
        // Read one request: head, then a Content-Length or chunked body.
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
            match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => {
                    rec.lock().unwrap()[index].extend_from_slice(&chunk[..n]);
                    buf.extend_from_slice(&chunk[..n]);
                }
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        if behaviour == Behaviour::AnswersBeforeBody {
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nearly\n")
                .await
                .is_err()
            {
                return;
            }
            while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk)).await {
                if n == 0 {
                    return;
                }
                rec.lock().unwrap()[index].extend_from_slice(&chunk[..n]);
            }
            return;
        }
        let body_end = if head.contains("transfer-encoding: chunked") {
            loop {
                if let Some(p) = find(&buf[head_end..], b"0\r\n\r\n") {
                    break head_end + p + 5;
                }
                match stream.read(&mut chunk).await {
                    Ok(n) if n > 0 => {
                        rec.lock().unwrap()[index].extend_from_slice(&chunk[..n]);
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    _ => return,
                }
            }
        } else {
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < head_end + len {
                match stream.read(&mut chunk).await {
                    Ok(n) if n > 0 => {
                        rec.lock().unwrap()[index].extend_from_slice(&chunk[..n]);
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    _ => return,
                }
            }
            head_end + len
        };
        buf.drain(..body_end);
        match behaviour {
            Behaviour::Ok => {
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Behaviour::DropsSecondRequest if answered > 0 => return,
            Behaviour::DropsSecondRequest => {
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Behaviour::OnePerConnection => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
            Behaviour::ResetMidBody => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                    .await;
                let _ = stream.write_all(&[b'x'; 1000]).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
            Behaviour::Garbage => {
                let _ = stream.write_all(b"\x00\x01garbage that is not HTTP\r\n\r\n").await;
                return;
            }
            Behaviour::AnswersBeforeBody => return,
            Behaviour::StallsMidBody => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                    .await;
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
        }
        answered += 1;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
