//! Streaming response compression: a body wrapper that compresses what the
//! app sends as it arrives and never holds a whole body.
//!
//! Flushing: whenever the app's body has nothing more ready (it flushed and
//! is waiting, as Server-Sent Events and long polls do), what was written so
//! far is flushed from the encoder and sent, so an event reaches the client
//! when the app sent it. While the app's data keeps coming, output is sent
//! once at least [`SEND_AT`] bytes are ready, so fast bodies are compressed
//! in large blocks.
//!
//! Memory: each encoder's state is bounded by its window (gzip 32 KiB,
//! brotli 2^18, zstd 2^18 at level 3); on top, every compressing response
//! takes a share of a process-wide budget ([`BUDGET_KIB`]), and a response
//! that finds it spent is sent uncompressed, so a thousand slow downloads
//! cannot grow the process past it.

use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Coding;
use crate::upstream::BoxError;

/// Compressed output gathered before it is sent while input keeps coming.
const SEND_AT: usize = 16 * 1024;
/// Process-wide encoder memory, in KiB.
pub const BUDGET_KIB: u32 = 256 * 1024;
/// brotli's window (2^18 = 256 KiB), and zstd's.
const WINDOW_LOG: u32 = 18;

/// Working memory of one encoder in KiB, rounded up from what
/// bench/compress_memory.sh measured per compressed stream (RSS over the
/// same downloads uncompressed, 1,000 slow downloads): gzip at level 5
/// 317 KiB, brotli quality 4 window 2^18 1.38 MiB, zstd level 3 window
/// 2^18 1.08 MiB.
fn cost_kib(coding: Coding) -> u32 {
    match coding {
        Coding::Gzip => 340,
        Coding::Brotli => 1400,
        Coding::Zstd => 1300,
    }
}

fn budget() -> &'static Arc<Semaphore> {
    static BUDGET: OnceLock<Arc<Semaphore>> = OnceLock::new();
    BUDGET.get_or_init(|| Arc::new(Semaphore::new(BUDGET_KIB as usize)))
}

/// A share of the encoder memory budget; `None` when it is spent.
pub fn reserve(coding: Coding) -> Option<OwnedSemaphorePermit> {
    budget().clone().try_acquire_many_owned(cost_kib(coding)).ok()
}

/// One coding's streaming encoder, writing into a buffer tlsfront empties.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(coding: Coding) -> std::io::Result<Encoder> {
        Ok(match coding {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(5))),
            Coding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(Vec::new(), 4096, 4, WINDOW_LOG))),
            Coding::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3)?;
                e.window_log(WINDOW_LOG)?;
                Encoder::Zstd(e)
            }
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Brotli(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    /// Everything written so far, decodable by the client now.
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Brotli(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        }
    }

    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.output()))
    }

    /// The end of the stream.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Brotli(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

/// A response body compressed on the way to the client.
pub struct CompressedBody<B> {
    inner: B,
    encoder: Option<Encoder>,
    /// Input written since the last flush.
    unflushed: bool,
    /// The app's trailers, sent after the last compressed bytes.
    trailers: Option<HeaderMap>,
    _budget: OwnedSemaphorePermit,
}

impl<B> CompressedBody<B> {
    /// Wraps `inner`; gives it back if the encoder cannot be set up.
    pub fn new(inner: B, coding: Coding, budget: OwnedSemaphorePermit) -> Result<Self, B> {
        let Ok(encoder) = Encoder::new(coding) else {
            return Err(inner);
        };
        Ok(CompressedBody {
            inner,
            encoder: Some(encoder),
            unflushed: false,
            trailers: None,
            _budget: budget,
        })
    }
}

impl<B> Body for CompressedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        encoder.write(&data)?;
                        this.unflushed = true;
                        if encoder.output().len() >= SEND_AT {
                            return Poll::Ready(Some(Ok(Frame::data(encoder.take()))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.trailers = Some(trailers);
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => {
                    let encoder = this.encoder.take().expect("checked above");
                    let rest = encoder.finish()?;
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
                    }
                }
                Poll::Pending => {
                    // The app has nothing more for now: what it sent goes out.
                    if this.unflushed {
                        encoder.flush()?;
                        this.unflushed = false;
                    }
                    if !encoder.output().is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(encoder.take()))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown: an exact hint would become a Content-Length.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Read;

    /// A body fed by a channel: the test plays the app.
    struct Chan(tokio::sync::mpsc::Receiver<Frame<Bytes>>);

    impl Body for Chan {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|f| f.map(Ok))
        }
    }

    fn decode(coding: Coding, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => {
                flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
            }
            Coding::Brotli => {
                brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out).unwrap();
            }
            Coding::Zstd => out = zstd::stream::decode_all(bytes).unwrap(),
        }
        out
    }

    #[tokio::test]
    async fn round_trips_every_coding_with_trailers() {
        let text: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        for coding in Coding::ALL {
            let (tx, rx) = tokio::sync::mpsc::channel(1000);
            for c in text.chunks(7_000) {
                tx.send(Frame::data(Bytes::copy_from_slice(c))).await.unwrap();
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            tx.send(Frame::trailers(trailers)).await.unwrap();
            drop(tx);
            let body = CompressedBody::new(Chan(rx), coding, reserve(coding).unwrap())
                .ok()
                .unwrap();
            let collected = body.collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["grpc-status"], "0", "{coding}");
            let bytes = collected.to_bytes();
            assert!(bytes.len() < text.len() / 3, "{coding}: {}", bytes.len());
            assert_eq!(decode(coding, &bytes), text, "{coding}");
        }
    }

    #[tokio::test]
    async fn what_the_app_flushed_is_sent_before_it_sends_more() {
        for coding in Coding::ALL {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let mut body = CompressedBody::new(Chan(rx), coding, reserve(coding).unwrap())
                .ok()
                .unwrap();
            tx.send(Frame::data(Bytes::from_static(b"data: one\n\n")))
                .await
                .unwrap();
            let first = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
                .await
                .expect("the first event is sent without waiting for the second")
                .unwrap()
                .unwrap()
                .into_data()
                .unwrap();
            // A streaming decoder gets the whole first event from these bytes alone.
            let got = match coding {
                Coding::Gzip => {
                    let mut d = flate2::write::GzDecoder::new(Vec::new());
                    d.write_all(&first).unwrap();
                    d.flush().unwrap();
                    d.get_ref().clone()
                }
                Coding::Brotli => {
                    let mut d = brotli::DecompressorWriter::new(Vec::new(), 4096);
                    d.write_all(&first).unwrap();
                    d.flush().unwrap();
                    d.get_ref().clone()
                }
                Coding::Zstd => {
                    let mut d = zstd::stream::write::Decoder::new(Vec::new()).unwrap();
                    d.write_all(&first).unwrap();
                    d.flush().unwrap();
                    d.get_ref().clone()
                }
            };
            assert_eq!(got, b"data: one\n\n", "{coding}");
            tx.send(Frame::data(Bytes::from_static(b"data: two\n\n")))
                .await
                .unwrap();
            drop(tx);
            let mut all = first.to_vec();
            all.extend_from_slice(&body.collect().await.unwrap().to_bytes());
            assert_eq!(decode(coding, &all), b"data: one\n\ndata: two\n\n", "{coding}");
        }
    }
}
