//! SPDY/3.1 as Kubernetes streaming uses it: the subset moby/spdystream (kubectl, client-go,
//! containerd's streaming server) speaks. Frames SYN_STREAM, SYN_REPLY, RST_STREAM, DATA, PING,
//! GOAWAY are handled; SETTINGS, HEADERS and WINDOW_UPDATE are read and ignored.
//!
//! Header blocks are one zlib stream per direction for the life of the connection, compressed
//! with the SPDY/3 dictionary. Decoding primes a raw inflater's window with the dictionary (a
//! stored deflate block fed before the peer's data), so no zlib dictionary API is needed; our
//! own header blocks are compressed without the dictionary, which a zlib reader accepts (the
//! FDICT bit is unset).
//!
//! Flow control: spdystream neither sends WINDOW_UPDATE nor honours it, so the send windows of
//! SPDY/3.1 are not enforced either way. Memory stays bounded by TCP backpressure instead, as in
//! spdystream: each stream has a queue of [`STREAM_QUEUE`] DATA frames, and when it is full the
//! connection's reader waits (and so stops reading the socket) until the stream's consumer
//! catches up. Writes go through one lock per connection, so a peer that stops reading stops
//! every writer.
//!
//! A [`Session`] is either the server side (the peer opens streams, [`Session::accept`] hands
//! them out) or the client side ([`Session::open`]). Dropping the session stops its reader; the
//! socket closes once the session and all its streams are gone.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::Tasks;

/// The largest DATA payload this side writes (kubectl's io.Copy writes 32 KiB too).
pub const MAX_DATA: usize = 32 * 1024;
/// DATA frames queued per stream before the connection's reader waits for the consumer.
pub const STREAM_QUEUE: usize = 8;
/// Control frames larger than this are a protocol error (header blocks are tiny in practice).
const MAX_CONTROL: usize = 1 << 20;
/// Decompressed header blocks larger than this are a protocol error.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

const VERSION: u16 = 3;
const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status codes used here.
pub mod status {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
}

/// A header block: lowercase names, one entry per value.
pub type Headers = Vec<(String, String)>;

/// The first value of header `name` (lowercase).
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One SPDY/3 frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        associated: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        id: u32,
        delta: u32,
    },
    /// SETTINGS and unknown control frames: read and ignored.
    Ignored(u16),
    Data {
        id: u32,
        fin: bool,
        data: Bytes,
    },
}

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1).
const HEADER_DICTIONARY: &[u8; 1423] = b"\
    \x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\
    \x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-char\
    set\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-\
    ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\
    \x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10c\
    ontent-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\
    \x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\
    \x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\
    \x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\
    \x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\
    \x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\
    \x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\
    \x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0br\
    etry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\
    \x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04va\
    ry\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\
    \x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\
    \x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\
    \x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin10010120120220520630030230\
    3304305306307402405406407408409410411412413414415416417502504505203 Non-Authoritative In\
    formation204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden\
    404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb \
    Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
    chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,te\
    xt/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-\
    8859-1,utf-,*,enq=0.";

fn protocol_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Decompresses the peer's header blocks (one zlib stream for the connection).
struct HeaderDecoder {
    z: Decompress,
    /// Bytes of the zlib header seen, and its length (2, or 6 with a dictionary id).
    hdr_pos: usize,
    hdr_len: usize,
}

impl HeaderDecoder {
    fn new() -> Self {
        let mut z = Decompress::new(false);
        // A stored, non-final deflate block holding the dictionary: inflating it puts the
        // dictionary into the window, where the peer's back-references expect it.
        let n = HEADER_DICTIONARY.len() as u16;
        let mut block = Vec::with_capacity(5 + HEADER_DICTIONARY.len());
        block.push(0x00);
        block.extend_from_slice(&n.to_le_bytes());
        block.extend_from_slice(&(!n).to_le_bytes());
        block.extend_from_slice(HEADER_DICTIONARY);
        let mut sink = Vec::with_capacity(HEADER_DICTIONARY.len() + 64);
        z.decompress_vec(&block, &mut sink, FlushDecompress::Sync)
            .expect("priming the inflater with a stored block");
        debug_assert_eq!(sink.as_slice(), HEADER_DICTIONARY);
        Self {
            z,
            hdr_pos: 0,
            hdr_len: 2,
        }
    }

    fn decode(&mut self, mut input: &[u8]) -> io::Result<Vec<u8>> {
        while self.hdr_pos < self.hdr_len && !input.is_empty() {
            let b = input[0];
            if self.hdr_pos == 0 && b & 0x0f != 8 {
                return Err(protocol_error("header block is not a zlib stream"));
            }
            if self.hdr_pos == 1 && b & 0x20 != 0 {
                // FDICT: the dictionary's adler32 follows.
                self.hdr_len = 6;
            }
            self.hdr_pos += 1;
            input = &input[1..];
        }
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            let before = self.z.total_in();
            self.z
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|e| protocol_error(format!("header block: {e}")))?;
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            if out.len() < out.capacity() && input.is_empty() {
                return Ok(out);
            }
            if out.len() >= MAX_HEADER_BLOCK {
                return Err(protocol_error("header block too large"));
            }
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(256));
            } else if used == 0 {
                return Err(protocol_error("truncated header block"));
            }
        }
    }
}

/// Compresses our header blocks (one zlib stream for the connection, sync-flushed per frame).
struct HeaderEncoder {
    z: Compress,
}

impl HeaderEncoder {
    fn new() -> Self {
        Self {
            z: Compress::new(Compression::fast(), true),
        }
    }

    fn encode(&mut self, block: &[u8], out: &mut Vec<u8>) {
        let mut input = block;
        out.reserve(block.len() + 64);
        loop {
            let before = self.z.total_in();
            self.z
                .compress_vec(input, out, FlushCompress::Sync)
                .expect("deflate into a growable buffer");
            input = &input[(self.z.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return;
            }
            out.reserve(256);
        }
    }
}

fn encode_header_block(h: &Headers) -> Vec<u8> {
    // Values of one name travel together, separated by NUL.
    let mut names: Vec<(String, Vec<&str>)> = Vec::new();
    for (k, v) in h {
        let k = k.to_ascii_lowercase();
        match names.iter_mut().find(|(n, _)| *n == k) {
            Some((_, vs)) => vs.push(v),
            None => names.push((k, vec![v])),
        }
    }
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&(names.len() as u32).to_be_bytes());
    for (k, vs) in names {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        let v = vs.join("\0");
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn parse_header_block(b: &[u8]) -> io::Result<Headers> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> io::Result<&'a [u8]> {
        if b.len() < n {
            return Err(protocol_error("short header block"));
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h)
    }
    fn len(b: &mut &[u8]) -> io::Result<usize> {
        let s = take(b, 4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
    }
    let mut b = b;
    let n = len(&mut b)?;
    let mut out = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let l = len(&mut b)?;
        let name = String::from_utf8_lossy(take(&mut b, l)?).to_ascii_lowercase();
        let l = len(&mut b)?;
        let value = String::from_utf8_lossy(take(&mut b, l)?).into_owned();
        for v in value.split('\0') {
            out.push((name.clone(), v.to_string()));
        }
    }
    Ok(out)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Read one frame; `None` at a clean end of the connection.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    dec: &mut HeaderDecoder,
) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let fin = flags & FLAG_FIN != 0;
    if head[0] & 0x80 == 0 {
        let id = be32(&head[..4]) & 0x7fff_ffff;
        let mut data = BytesMut::zeroed(len);
        r.read_exact(&mut data).await?;
        return Ok(Some(Frame::Data {
            id,
            fin,
            data: data.freeze(),
        }));
    }
    let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
    let kind = u16::from_be_bytes([head[2], head[3]]);
    if version != VERSION {
        return Err(protocol_error(format!(
            "unsupported SPDY version {version}"
        )));
    }
    if len > MAX_CONTROL {
        return Err(protocol_error(format!("control frame of {len} bytes")));
    }
    let mut p = vec![0u8; len];
    r.read_exact(&mut p).await?;
    let need = |n: usize| {
        if p.len() < n {
            Err(protocol_error(format!("short control frame type {kind}")))
        } else {
            Ok(())
        }
    };
    let id = |p: &[u8]| be32(p) & 0x7fff_ffff;
    Ok(Some(match kind {
        TYPE_SYN_STREAM => {
            need(10)?;
            Frame::SynStream {
                id: id(&p),
                associated: id(&p[4..]),
                priority: p[8] >> 5,
                fin,
                unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                headers: parse_header_block(&dec.decode(&p[10..])?)?,
            }
        }
        TYPE_SYN_REPLY => {
            need(4)?;
            Frame::SynReply {
                id: id(&p),
                fin,
                headers: parse_header_block(&dec.decode(&p[4..])?)?,
            }
        }
        TYPE_HEADERS => {
            need(4)?;
            Frame::Headers {
                id: id(&p),
                fin,
                headers: parse_header_block(&dec.decode(&p[4..])?)?,
            }
        }
        TYPE_RST_STREAM => {
            need(8)?;
            Frame::RstStream {
                id: id(&p),
                status: be32(&p[4..]),
            }
        }
        TYPE_PING => {
            need(4)?;
            Frame::Ping(be32(&p))
        }
        TYPE_GOAWAY => {
            need(4)?;
            Frame::GoAway {
                last_good: id(&p),
                status: if p.len() >= 8 { be32(&p[4..]) } else { 0 },
            }
        }
        TYPE_WINDOW_UPDATE => {
            need(8)?;
            Frame::WindowUpdate {
                id: id(&p),
                delta: be32(&p[4..]) & 0x7fff_ffff,
            }
        }
        other => Frame::Ignored(other),
    }))
}

fn control(out: &mut Vec<u8>, kind: u16, flags: u8, payload: &[u8]) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
}

fn encode_frame(f: &Frame, enc: &mut HeaderEncoder, out: &mut Vec<u8>) {
    let fl = |fin: bool| if fin { FLAG_FIN } else { 0 };
    match f {
        Frame::SynStream {
            id,
            associated,
            priority,
            fin,
            unidirectional,
            headers,
        } => {
            let mut p = Vec::with_capacity(64);
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&associated.to_be_bytes());
            p.push(priority << 5);
            p.push(0);
            enc.encode(&encode_header_block(headers), &mut p);
            let flags = fl(*fin)
                | if *unidirectional {
                    FLAG_UNIDIRECTIONAL
                } else {
                    0
                };
            control(out, TYPE_SYN_STREAM, flags, &p);
        }
        Frame::SynReply { id, fin, headers } | Frame::Headers { id, fin, headers } => {
            let kind = if matches!(f, Frame::SynReply { .. }) {
                TYPE_SYN_REPLY
            } else {
                TYPE_HEADERS
            };
            let mut p = Vec::with_capacity(32);
            p.extend_from_slice(&id.to_be_bytes());
            enc.encode(&encode_header_block(headers), &mut p);
            control(out, kind, fl(*fin), &p);
        }
        Frame::RstStream { id, status } => {
            let mut p = [0u8; 8];
            p[..4].copy_from_slice(&id.to_be_bytes());
            p[4..].copy_from_slice(&status.to_be_bytes());
            control(out, TYPE_RST_STREAM, 0, &p);
        }
        Frame::Ping(id) => control(out, TYPE_PING, 0, &id.to_be_bytes()),
        Frame::GoAway { last_good, status } => {
            let mut p = [0u8; 8];
            p[..4].copy_from_slice(&last_good.to_be_bytes());
            p[4..].copy_from_slice(&status.to_be_bytes());
            control(out, TYPE_GOAWAY, 0, &p);
        }
        Frame::WindowUpdate { id, delta } => {
            let mut p = [0u8; 8];
            p[..4].copy_from_slice(&id.to_be_bytes());
            p[4..].copy_from_slice(&delta.to_be_bytes());
            control(out, TYPE_WINDOW_UPDATE, 0, &p);
        }
        Frame::Ignored(kind) => {
            // Only SETTINGS is ever written this way: an empty one.
            let kind = if *kind == 0 { TYPE_SETTINGS } else { *kind };
            control(out, kind, 0, &0u32.to_be_bytes());
        }
        Frame::Data { id, fin, data } => {
            out.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
            out.push(fl(*fin));
            out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(data);
        }
    }
}

type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

struct Writer {
    io: BoxWrite,
    enc: HeaderEncoder,
    buf: Vec<u8>,
    /// The next stream id this side opens.
    next_id: u32,
    broken: bool,
}

/// What the reader keeps per open stream.
struct Entry {
    /// `None` once the peer half-closed (FIN) the stream.
    tx: Option<mpsc::Sender<Bytes>>,
    /// The opener waiting for SYN_REPLY (client side).
    reply: Option<oneshot::Sender<bool>>,
    /// Cancelled when the peer resets the stream or the connection ends.
    reset: CancellationToken,
}

struct Shared {
    writer: Mutex<Writer>,
    streams: StdMutex<HashMap<u32, Entry>>,
    /// Cancelled when the reader stops (peer closed, error, or the session was dropped).
    closed: CancellationToken,
    server: bool,
    goaway: AtomicBool,
}

impl Shared {
    async fn write(&self, f: &Frame) -> io::Result<()> {
        let mut w = self.writer.lock().await;
        write_locked(&mut w, f).await
    }
}

async fn write_locked(w: &mut Writer, f: &Frame) -> io::Result<()> {
    if w.broken {
        return Err(io::ErrorKind::BrokenPipe.into());
    }
    let Writer { io, enc, buf, .. } = w;
    buf.clear();
    encode_frame(f, enc, buf);
    let r = async {
        io.write_all(buf).await?;
        io.flush().await
    }
    .await;
    if r.is_err() {
        w.broken = true;
    }
    if buf.capacity() > 4 * MAX_DATA {
        *buf = Vec::new();
    }
    r
}

/// One SPDY connection. See the module docs.
pub struct Session {
    shared: Arc<Shared>,
    incoming: Option<mpsc::Receiver<Stream>>,
    _stop: DropGuard,
}

impl Session {
    /// The server side over `io` (already upgraded): the peer opens streams.
    pub fn server<T>(io: T, tasks: &Tasks) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::new(io, true, tasks)
    }

    /// The client side over `io` (already upgraded): this side opens streams.
    pub fn client<T>(io: T, tasks: &Tasks) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::new(io, false, tasks)
    }

    fn new<T>(io: T, server: bool, tasks: &Tasks) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let shared = Arc::new(Shared {
            writer: Mutex::new(Writer {
                io: Box::new(wr),
                enc: HeaderEncoder::new(),
                buf: Vec::with_capacity(MAX_DATA + 16),
                next_id: if server { 2 } else { 1 },
                broken: false,
            }),
            streams: StdMutex::new(HashMap::new()),
            closed: CancellationToken::new(),
            server,
            goaway: AtomicBool::new(false),
        });
        let stop = CancellationToken::new();
        let (tx, rx) = if server {
            let (tx, rx) = mpsc::channel(16);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let reader = read_loop(
            BufReader::with_capacity(64 * 1024, rd),
            shared.clone(),
            tx,
            tasks.clone(),
        );
        let (s, st) = (shared.clone(), stop.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = reader => {}
                _ = st.cancelled() => {}
            }
            s.closed.cancel();
            s.streams.lock().unwrap().clear();
        });
        Self {
            shared,
            incoming: rx,
            _stop: stop.drop_guard(),
        }
    }

    /// The next stream the peer opened; `None` once the connection is gone (server side).
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.as_mut()?.recv().await
    }

    /// Open a stream with `headers` (client side). Wait for the peer's SYN_REPLY with
    /// [`Stream::wait_reply`].
    pub async fn open(&self, headers: Headers, fin: bool) -> io::Result<Stream> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let (rtx, rrx) = oneshot::channel();
        let mut w = self.shared.writer.lock().await;
        // Ids go out in increasing order: allocate under the writer lock.
        let id = w.next_id;
        w.next_id += 2;
        let reset = self.shared.closed.child_token();
        self.shared.streams.lock().unwrap().insert(
            id,
            Entry {
                tx: (!fin).then_some(tx),
                reply: Some(rtx),
                reset: reset.clone(),
            },
        );
        let frame = Frame::SynStream {
            id,
            associated: 0,
            priority: 0,
            fin,
            unidirectional: false,
            headers: headers.clone(),
        };
        write_locked(&mut w, &frame).await?;
        Ok(Stream {
            reader: StreamReader {
                id,
                rx,
                shared: self.shared.clone(),
            },
            writer: StreamWriter {
                id,
                shared: self.shared.clone(),
                reset,
            },
            headers,
            reply: Some(rrx),
        })
    }

    /// Resolves when the connection is gone.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Whether the peer sent GOAWAY.
    pub fn gone_away(&self) -> bool {
        self.shared.goaway.load(Ordering::Relaxed)
    }

    /// Send GOAWAY and close our side of the connection.
    pub async fn shutdown(&self) {
        let mut w = self.shared.writer.lock().await;
        let _ = write_locked(
            &mut w,
            &Frame::GoAway {
                last_good: 0,
                status: 0,
            },
        )
        .await;
        let _ = w.io.shutdown().await;
        w.broken = true;
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    shared: Arc<Shared>,
    incoming: Option<mpsc::Sender<Stream>>,
    tasks: Tasks,
) {
    let mut dec = HeaderDecoder::new();
    let mut last_peer_id = 0u32;
    let peer_parity = if shared.server { 1 } else { 0 };
    // Control answers are written from their own task: the reader never waits for the
    // writer, so a peer that is busy writing to us and not reading cannot deadlock us.
    let answer = |f: Frame| {
        let s = shared.clone();
        tasks.spawn(async move {
            let _ = s.write(&f).await;
        });
    };
    loop {
        let frame = match read_frame(&mut rd, &mut dec).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "SPDY connection read failed");
                break;
            }
        };
        match frame {
            Frame::SynStream {
                id, fin, headers, ..
            } => {
                let Some(incoming) = incoming.as_ref() else {
                    answer(Frame::RstStream {
                        id,
                        status: status::REFUSED_STREAM,
                    });
                    continue;
                };
                if id % 2 != peer_parity || id <= last_peer_id {
                    answer(Frame::RstStream {
                        id,
                        status: status::PROTOCOL_ERROR,
                    });
                    continue;
                }
                last_peer_id = id;
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                let reset = shared.closed.child_token();
                shared.streams.lock().unwrap().insert(
                    id,
                    Entry {
                        tx: (!fin).then_some(tx),
                        reply: None,
                        reset: reset.clone(),
                    },
                );
                let stream = Stream {
                    reader: StreamReader {
                        id,
                        rx,
                        shared: shared.clone(),
                    },
                    writer: StreamWriter {
                        id,
                        shared: shared.clone(),
                        reset,
                    },
                    headers,
                    reply: None,
                };
                if incoming.send(stream).await.is_err() {
                    answer(Frame::RstStream {
                        id,
                        status: status::REFUSED_STREAM,
                    });
                }
            }
            Frame::SynReply { id, fin, .. } => {
                let mut m = shared.streams.lock().unwrap();
                if let Some(e) = m.get_mut(&id) {
                    if let Some(r) = e.reply.take() {
                        let _ = r.send(true);
                    }
                    if fin {
                        e.tx = None;
                    }
                }
            }
            Frame::Headers { id, fin: true, .. } => {
                if let Some(e) = shared.streams.lock().unwrap().get_mut(&id) {
                    e.tx = None;
                }
            }
            Frame::Data { id, fin, data } => {
                let tx = shared
                    .streams
                    .lock()
                    .unwrap()
                    .get(&id)
                    .and_then(|e| e.tx.clone());
                if let Some(tx) = tx {
                    // Waits while the stream's queue is full: backpressure onto the socket.
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        shared.streams.lock().unwrap().remove(&id);
                        continue;
                    }
                }
                if fin {
                    if let Some(e) = shared.streams.lock().unwrap().get_mut(&id) {
                        e.tx = None;
                    }
                }
            }
            Frame::RstStream { id, .. } => {
                if let Some(e) = shared.streams.lock().unwrap().remove(&id) {
                    e.reset.cancel();
                    if let Some(r) = e.reply {
                        let _ = r.send(false);
                    }
                }
            }
            Frame::Ping(id) => {
                if id % 2 == peer_parity {
                    answer(Frame::Ping(id));
                }
            }
            Frame::GoAway { .. } => shared.goaway.store(true, Ordering::Relaxed),
            Frame::Headers { .. } | Frame::WindowUpdate { .. } | Frame::Ignored(_) => {}
        }
    }
}

/// One stream: its headers, a receiving half and a sending half.
pub struct Stream {
    pub reader: StreamReader,
    pub writer: StreamWriter,
    headers: Headers,
    reply: Option<oneshot::Receiver<bool>>,
}

impl Stream {
    pub fn id(&self) -> u32 {
        self.writer.id
    }
    pub fn headers(&self) -> &Headers {
        &self.headers
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
    /// Acknowledge a stream the peer opened (server side).
    pub async fn reply(&self) -> io::Result<()> {
        self.writer
            .shared
            .write(&Frame::SynReply {
                id: self.writer.id,
                fin: false,
                headers: Vec::new(),
            })
            .await
    }
    /// Wait for the peer's SYN_REPLY to a stream this side opened; an error if it reset the
    /// stream or the connection ended first.
    pub async fn wait_reply(&mut self) -> io::Result<()> {
        match self.reply.take() {
            None => Ok(()),
            Some(rx) => match rx.await {
                Ok(true) => Ok(()),
                Ok(false) => Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "stream reset by peer",
                )),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "connection closed before the stream was accepted",
                )),
            },
        }
    }
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.reader.recv().await
    }
    pub fn split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }
}

/// The receiving half: DATA from the peer until it half-closes, resets or disconnects.
pub struct StreamReader {
    id: u32,
    rx: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
}

impl StreamReader {
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }
    /// Read everything up to the end of the stream, keeping at most `limit` bytes.
    pub async fn read_to_end(&mut self, limit: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = self.recv().await {
            let room = limit.saturating_sub(out.len());
            out.extend_from_slice(&b[..b.len().min(room)]);
        }
        out
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        if let Ok(mut m) = self.shared.streams.lock() {
            m.remove(&self.id);
        }
    }
}

/// The sending half (cheap to clone).
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    shared: Arc<Shared>,
    reset: CancellationToken,
}

impl StreamWriter {
    pub fn id(&self) -> u32 {
        self.id
    }
    /// Cancelled when the peer resets the stream or the connection ends.
    pub fn cancelled(&self) -> CancellationToken {
        self.reset.clone()
    }
    /// Send `data` as DATA frames of at most [`MAX_DATA`] bytes.
    pub async fn send(&self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(MAX_DATA) {
            self.shared
                .write(&Frame::Data {
                    id: self.id,
                    fin: false,
                    data: Bytes::copy_from_slice(chunk),
                })
                .await?;
        }
        Ok(())
    }
    /// Half-close: an empty DATA frame with FIN.
    pub async fn close(&self) -> io::Result<()> {
        self.shared
            .write(&Frame::Data {
                id: self.id,
                fin: true,
                data: Bytes::new(),
            })
            .await
    }
    pub async fn reset(&self, status: u32) -> io::Result<()> {
        self.shared
            .write(&Frame::RstStream {
                id: self.id,
                status,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adler32(d: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in d {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn dictionary_is_spdy3s() {
        // The dictionary id every SPDY/3 zlib header with FDICT carries.
        assert_eq!(adler32(HEADER_DICTIONARY), 0xe3c6_a7c2);
    }

    /// A zlib stream that uses the dictionary, as Go's `zlib.NewWriterLevelDict` writes one:
    /// header with FDICT and the dictionary id, then deflate blocks referring into the
    /// dictionary. Built by hand: a fixed-Huffman block with one back-reference.
    #[test]
    fn decodes_blocks_compressed_against_the_dictionary() {
        // Copy "options" (7 bytes at offset 4 of the dictionary) = distance 1423-4 = 1419.
        let mut bits = BitWriter::default();
        bits.put(0, 1); // BFINAL = 0
        bits.put(1, 2); // BTYPE = fixed Huffman
        fixed_length(&mut bits, 7);
        fixed_distance(&mut bits, 1419);
        fixed_literal(&mut bits, b'!');
        bits.put(0, 7); // end of block (code 256: 7 zero bits)
                        // Sync flush: an empty stored block.
        bits.put(0, 1);
        bits.put(0, 2);
        let mut data = bits.finish();
        data.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut stream = vec![0x78, 0xbb];
        stream.extend_from_slice(&adler32(HEADER_DICTIONARY).to_be_bytes());
        stream.extend_from_slice(&data);
        let mut dec = HeaderDecoder::new();
        // Split the zlib header across two calls, as nothing guarantees it arrives whole.
        assert_eq!(dec.decode(&stream[..3]).unwrap(), b"");
        assert_eq!(dec.decode(&stream[3..]).unwrap(), b"options!");
    }

    #[derive(Default)]
    struct BitWriter {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl BitWriter {
        /// `n` bits of `v`, least significant first (deflate's bit order for extra bits).
        fn put(&mut self, v: u32, n: u32) {
            self.acc |= (v as u64) << self.n;
            self.n += n;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// A Huffman code: most significant bit first.
        fn code(&mut self, code: u32, len: u32) {
            for i in (0..len).rev() {
                self.put((code >> i) & 1, 1);
            }
        }
        fn finish(mut self) -> Vec<u8> {
            if self.n > 0 {
                self.out.push(self.acc as u8);
            }
            self.out
        }
    }
    fn fixed_literal(b: &mut BitWriter, c: u8) {
        let c = c as u32;
        if c < 144 {
            b.code(0x30 + c, 8)
        } else {
            b.code(0x190 + c - 144, 9)
        }
    }
    fn fixed_length(b: &mut BitWriter, len: u32) {
        // Lengths 3..=10 are codes 257..=264 without extra bits (7-bit codes 1..=8).
        assert!((3..=10).contains(&len));
        b.code(len - 2, 7);
    }
    fn fixed_distance(b: &mut BitWriter, d: u32) {
        // Distance codes: (base, extra bits).
        const T: [(u32, u32); 30] = [
            (1, 0),
            (2, 0),
            (3, 0),
            (4, 0),
            (5, 1),
            (7, 1),
            (9, 2),
            (13, 2),
            (17, 3),
            (25, 3),
            (33, 4),
            (49, 4),
            (65, 5),
            (97, 5),
            (129, 6),
            (193, 6),
            (257, 7),
            (385, 7),
            (513, 8),
            (769, 8),
            (1025, 9),
            (1537, 9),
            (2049, 10),
            (3073, 10),
            (4097, 11),
            (6145, 11),
            (8193, 12),
            (12289, 12),
            (16385, 13),
            (24577, 13),
        ];
        let code = T.iter().rposition(|(base, _)| *base <= d).unwrap();
        b.code(code as u32, 5);
        let (base, extra) = T[code];
        b.put(d - base, extra);
    }

    #[test]
    fn frames_round_trip_through_one_compression_context() {
        let frames = vec![
            Frame::SynStream {
                id: 1,
                associated: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: vec![
                    ("streamtype".into(), "error".into()),
                    ("port".into(), "80".into()),
                    ("requestid".into(), "0".into()),
                ],
            },
            Frame::SynReply {
                id: 1,
                fin: false,
                headers: vec![],
            },
            Frame::SynStream {
                id: 3,
                associated: 0,
                priority: 0,
                fin: true,
                unidirectional: false,
                headers: vec![
                    ("streamtype".into(), "data".into()),
                    ("x-multi".into(), "a".into()),
                    ("x-multi".into(), "b".into()),
                ],
            },
            Frame::Data {
                id: 3,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            Frame::RstStream {
                id: 3,
                status: status::CANCEL,
            },
            Frame::Ping(7),
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
            Frame::WindowUpdate { id: 1, delta: 100 },
        ];
        let mut enc = HeaderEncoder::new();
        let mut wire = Vec::new();
        for f in &frames {
            encode_frame(f, &mut enc, &mut wire);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let mut dec = HeaderDecoder::new();
            let mut r = wire.as_slice();
            let mut got = Vec::new();
            while let Some(f) = read_frame(&mut r, &mut dec).await.unwrap() {
                got.push(f);
            }
            got
        });
        assert_eq!(got, frames);
    }

    #[tokio::test]
    async fn sessions_exchange_streams_with_backpressure() {
        let tasks = Tasks::default();
        let (a, b) = tokio::io::duplex(4096);
        let client = Session::client(a, &tasks);
        let mut server = Session::server(b, &tasks);
        let mut s = client
            .open(vec![("streamtype".into(), "data".into())], false)
            .await
            .unwrap();
        let peer = server.accept().await.unwrap();
        assert_eq!(peer.header("streamType"), Some("data"));
        peer.reply().await.unwrap();
        s.wait_reply().await.unwrap();
        // 1 MiB one way while nobody reads: the writer must block, not buffer it all.
        let (mut prd, pwr) = peer.split();
        let (mut crd, cwr) = s.split();
        let sender = tokio::spawn(async move {
            cwr.send(&vec![7u8; 1 << 20]).await.unwrap();
            cwr.close().await.unwrap();
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !sender.is_finished(),
            "a full stream queue stops the sender"
        );
        let got = prd.read_to_end(usize::MAX).await;
        assert_eq!(got.len(), 1 << 20);
        sender.await.unwrap();
        pwr.send(b"pong").await.unwrap();
        pwr.close().await.unwrap();
        assert_eq!(crd.read_to_end(100).await, b"pong");
        drop((prd, pwr, crd));
        drop(server);
        client.closed().await;
        // Every reader task has ended.
        for _ in 0..100 {
            if tasks.live() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(tasks.live(), 0);
    }
}
