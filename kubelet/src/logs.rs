//! Container logs for `kubectl logs`: the CRI log format, the file layout, and a reader that
//! implements upstream's log options (`pkg/kubelet/kuberuntime/logs`).
//!
//! containerd writes each container's output to `<pod-log-dir>/<ns>_<pod>_<uid>/<container>/
//! <attempt>.log`, one record per line: `<RFC3339Nano> <stdout|stderr> <F|P> <msg>`, where `P`
//! marks a fragment of a longer line that continues in the next record. The current container's
//! file is the highest attempt number; `previous` is the one before it.
//!
//! Decisions are pure and table-tested: [`parse_line`] reads one record, [`LogOptions`] turns the
//! query kubectl sends into options, [`LogWriter`] renders records as upstream does (fragments
//! joined, the timestamp prefix only at the start of a joined line, `sinceTime` per record,
//! `limitBytes` cutting mid-line), and [`tail_offset`] finds where the last N lines start.
//! [`stream`] does the IO: it reads the file from that offset and, when following, polls for
//! more until the container stops or a newer attempt's file appears, then drains and ends.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Timelike, Utc};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often a followed file is polled for new data.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Every this many idle polls, a follower asks whether the container still runs (a CRI call).
const RUNNING_CHECK_EVERY: u32 = 5;
/// Read size, and the largest chunk one body frame carries.
const READ_BUF: usize = 64 * 1024;

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One parsed CRI log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord<'a> {
    pub timestamp: DateTime<FixedOffset>,
    pub stream: Stream,
    /// Tag `P`: the line continues in the next record.
    pub partial: bool,
    /// The message without the line's newline.
    pub content: &'a [u8],
}

/// Why a record could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("timestamp is not found")]
    NoTimestamp,
    #[error("unexpected timestamp format {0:?}")]
    BadTimestamp(String),
    #[error("stream type is not found")]
    NoStream,
    #[error("unexpected stream type {0:?}")]
    BadStream(String),
    #[error("log tag is not found")]
    NoTag,
}

/// Parse one record (with or without its trailing newline) as upstream's `parseCRILog`.
pub fn parse_line(line: &[u8]) -> Result<LogRecord<'_>, ParseError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let (ts, rest) = split_space(line).ok_or(ParseError::NoTimestamp)?;
    let ts = std::str::from_utf8(ts)
        .ok()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .ok_or_else(|| ParseError::BadTimestamp(String::from_utf8_lossy(ts).into_owned()))?;
    let (stream, rest) = split_space(rest).ok_or(ParseError::NoStream)?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => {
            return Err(ParseError::BadStream(
                String::from_utf8_lossy(other).into_owned(),
            ))
        }
    };
    // Tags are `:`-separated; the first one says full or partial.
    let (tags, content) = split_space(rest).ok_or(ParseError::NoTag)?;
    let partial = tags.split(|b| *b == b':').next() == Some(b"P");
    Ok(LogRecord {
        timestamp: ts,
        stream,
        partial,
        content,
    })
}

fn split_space(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|c| *c == b' ')?;
    Some((&b[..i], &b[i + 1..]))
}

/// Go's `time.RFC3339Nano`: fractional seconds without trailing zeros, `Z` for UTC.
pub fn format_rfc3339_nano(t: &DateTime<FixedOffset>) -> String {
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    if t.offset().local_minus_utc() == 0 {
        s.push('Z');
    } else {
        s.push_str(&t.format("%:z").to_string());
    }
    s
}

/// `kubectl logs` options as the kubelet receives them (upstream `PodLogOptions`, validated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    /// Only the last N lines (`tailLines`).
    pub tail_lines: Option<u64>,
    /// Only records at or after this time (`sinceSeconds` resolved against now, or `sinceTime`).
    pub since: Option<DateTime<Utc>>,
    /// Stop after this many bytes (`limitBytes`).
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// Options from query pairs (`follow=true&tailLines=10`, as the API server forwards them).
    /// Unknown keys (`container`, `insecureSkipTLSVerifyBackend`) are ignored. Errors read like
    /// upstream's validation.
    pub fn from_query(pairs: &[(String, String)], now: DateTime<Utc>) -> Result<Self, String> {
        let mut o = LogOptions::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for (k, v) in pairs {
            let int = |name: &str| -> Result<i64, String> {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{name}: invalid value {v:?}: not an integer"))
            };
            match k.as_str() {
                "follow" => o.follow = query_bool(v),
                "previous" => o.previous = query_bool(v),
                "timestamps" => o.timestamps = query_bool(v),
                "tailLines" => {
                    let n = int("tailLines")?;
                    if n < 0 {
                        return Err(format!(
                            "tailLines: Invalid value: {n}: must be greater than or equal to 0"
                        ));
                    }
                    o.tail_lines = Some(n as u64);
                }
                "limitBytes" => {
                    let n = int("limitBytes")?;
                    if n < 1 {
                        return Err(format!(
                            "limitBytes: Invalid value: {n}: must be greater than 0"
                        ));
                    }
                    o.limit_bytes = Some(n as u64);
                }
                "sinceSeconds" => {
                    let n = int("sinceSeconds")?;
                    if n < 1 {
                        return Err(format!(
                            "sinceSeconds: Invalid value: {n}: must be greater than 0"
                        ));
                    }
                    since_seconds = Some(n);
                }
                "sinceTime" => {
                    let t = DateTime::parse_from_rfc3339(v.trim()).map_err(|_| {
                        format!("sinceTime: invalid value {v:?}: not an RFC3339 time")
                    })?;
                    since_time = Some(t.with_timezone(&Utc));
                }
                _ => {}
            }
        }
        o.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into())
            }
            (Some(s), None) => Some(now - chrono::Duration::seconds(s)),
            (None, t) => t,
        };
        Ok(o)
    }
}

/// Go's query-parameter bool conversion: `0`, `f`, `false`, `n`, `no` (any case) are false,
/// anything else true.
fn query_bool(v: &str) -> bool {
    !matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "0" | "f" | "false" | "n" | "no"
    )
}

/// Renders records for the client as upstream's `logWriter`.
#[derive(Debug, Clone)]
pub struct LogWriter {
    timestamps: bool,
    since: Option<DateTime<Utc>>,
    remaining: Option<u64>,
    at_line_start: bool,
}

impl LogWriter {
    pub fn new(opts: &LogOptions) -> Self {
        LogWriter {
            timestamps: opts.timestamps,
            since: opts.since,
            remaining: opts.limit_bytes,
            at_line_start: true,
        }
    }

    /// Append `rec` to `out`. Returns `false` once `limitBytes` is used up (stop reading).
    pub fn write(&mut self, rec: &LogRecord<'_>, out: &mut Vec<u8>) -> bool {
        let at_start = self.at_line_start;
        // The next record starts a line unless this one is a fragment with content.
        self.at_line_start = !rec.partial || rec.content.is_empty();
        if self.remaining == Some(0) {
            return false;
        }
        if self.since.is_some_and(|s| rec.timestamp < s) {
            return true;
        }
        let mut line = Vec::with_capacity(rec.content.len() + 40);
        if self.timestamps && at_start {
            line.extend_from_slice(format_rfc3339_nano(&rec.timestamp).as_bytes());
            line.push(b' ');
        }
        line.extend_from_slice(rec.content);
        if !rec.partial {
            line.push(b'\n');
        }
        if let Some(rem) = self.remaining.as_mut() {
            let n = (line.len() as u64).min(*rem) as usize;
            out.extend_from_slice(&line[..n]);
            *rem -= n as u64;
            return *rem > 0;
        }
        out.extend_from_slice(&line);
        true
    }

    /// Feed every complete raw line in `buf` (up to its last `\n`) through [`LogWriter::write`],
    /// leaving an unfinished line in `buf`. Unparseable lines are skipped, as upstream does.
    /// Returns `false` once the byte limit is reached.
    pub fn write_lines(&mut self, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
        let Some(last_nl) = buf.iter().rposition(|b| *b == b'\n') else {
            return true;
        };
        let mut more = true;
        for raw in buf[..last_nl].split(|b| *b == b'\n') {
            match parse_line(raw) {
                Ok(rec) => {
                    if !self.write(&rec, out) {
                        more = false;
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "skipping unparseable log line");
                }
            }
        }
        buf.drain(..=last_nl);
        more
    }
}

/// Render a whole CRI log (complete lines) with `opts` (tail excluded): the pure core of a
/// non-follow read, for tests and small files.
pub fn render(log: &[u8], opts: &LogOptions) -> Vec<u8> {
    let mut w = LogWriter::new(opts);
    let mut buf = log.to_vec();
    if !buf.ends_with(b"\n") && !buf.is_empty() {
        buf.push(b'\n');
    }
    let mut out = Vec::new();
    w.write_lines(&mut buf, &mut out);
    out
}

/// The byte offset where the last `n` lines of a CRI log start. A line is a joined record:
/// `P` fragments count together with the `F` record that ends them, and an unfinished trailing
/// group of fragments counts as a line. Reads backwards in blocks, so large files cost only
/// the tail.
pub fn tail_offset<R: Read + Seek>(f: &mut R, n: u64) -> io::Result<u64> {
    let len = f.seek(SeekFrom::End(0))?;
    if n == 0 {
        return Ok(len);
    }
    const BLOCK: u64 = 64 * 1024;
    // `carry` holds bytes [pos, end_of_unprocessed) not yet split into lines.
    let mut pos = len;
    let mut carry: Vec<u8> = Vec::new();
    let mut seen: u64 = 0;
    let mut first = true;
    loop {
        // Split off complete lines at the end of `carry`.
        loop {
            if carry.is_empty() {
                if pos == 0 {
                    return Ok(0);
                }
                break;
            }
            let body_len = carry.len() - usize::from(carry.ends_with(b"\n"));
            let start = match carry[..body_len].iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None if pos == 0 => 0,
                None => break,
            };
            let line_end = pos + carry.len() as u64;
            // Unparseable lines are skipped when writing, so they do not count.
            if let Ok(rec) = parse_line(&carry[start..body_len]) {
                if first {
                    first = false;
                    if rec.partial {
                        // An unfinished line at the end of the file counts as one.
                        seen = 1;
                    }
                }
                if !rec.partial {
                    if seen == n {
                        return Ok(line_end);
                    }
                    seen += 1;
                }
            }
            carry.truncate(start);
        }
        let from = pos.saturating_sub(BLOCK);
        let mut block = vec![0u8; (pos - from) as usize];
        f.seek(SeekFrom::Start(from))?;
        f.read_exact(&mut block)?;
        block.extend_from_slice(&carry);
        carry = block;
        pos = from;
    }
}

/// Why a container's log cannot be served; the messages are upstream's (the API server passes
/// them through to kubectl as a BadRequest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("previous terminated container {container:?} in pod {pod:?} not found")]
    NoPrevious { container: String, pod: String },
    #[error("container {container:?} in pod {pod:?} is waiting to start: {reason}")]
    Waiting {
        container: String,
        pod: String,
        reason: String,
    },
    #[error("container {container:?} in pod {pod:?} is not available")]
    NotAvailable { container: String, pod: String },
    #[error("failed to read log directory {}: {message}", dir.display())]
    Io { dir: PathBuf, message: String },
}

/// `<pod-log-dir>/<namespace>_<pod>_<uid>/<container>`.
pub fn container_log_dir(
    pod_log_dir: &Path,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
) -> PathBuf {
    pod_log_dir
        .join(format!("{namespace}_{pod}_{uid}"))
        .join(container)
}

/// The attempt-numbered log files (`<n>.log`) in a container's log directory, ascending. A
/// missing directory has none.
pub fn log_files(dir: &Path) -> io::Result<Vec<(u32, PathBuf)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_suffix(".log"))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        files.push((n, entry.path()));
    }
    files.sort();
    Ok(files)
}

/// The log file of `container` in `pod` to serve: the newest attempt, or with `previous` the
/// one before it. The pod's status explains a missing file (`waiting to start: <reason>`).
pub fn resolve(
    pod_log_dir: &Path,
    pod: &Pod,
    container: &str,
    previous: bool,
) -> Result<(u32, PathBuf), LogError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let dir = container_log_dir(pod_log_dir, ns, &name, uid, container);
    let files = log_files(&dir).map_err(|e| LogError::Io {
        dir: dir.clone(),
        message: e.to_string(),
    })?;
    let chosen = if previous {
        files.len().checked_sub(2).map(|i| files[i].clone())
    } else {
        files.last().cloned()
    };
    match chosen {
        Some(f) => Ok(f),
        None if previous => Err(LogError::NoPrevious {
            container: container.into(),
            pod: name,
        }),
        None => Err(match waiting_reason(pod, container) {
            Some(reason) => LogError::Waiting {
                container: container.into(),
                pod: name,
                reason,
            },
            None => LogError::NotAvailable {
                container: container.into(),
                pod: name,
            },
        }),
    }
}

fn waiting_reason(pod: &Pod, container: &str) -> Option<String> {
    let st = pod.status.as_ref()?;
    let all = st
        .container_statuses
        .iter()
        .chain(st.init_container_statuses.iter())
        .chain(st.ephemeral_container_statuses.iter())
        .flatten();
    let cs = all.into_iter().find(|c| c.name == container);
    match cs {
        Some(cs) => {
            let w = cs.state.as_ref()?.waiting.as_ref()?;
            Some(
                w.reason
                    .clone()
                    .unwrap_or_else(|| "ContainerCreating".into()),
            )
        }
        // Bound but not reported yet: upstream's status manager says ContainerCreating.
        None => Some("ContainerCreating".into()),
    }
}

/// Whether the container writing a followed log still runs; asked about once a second.
pub type RunningCheck = Box<dyn FnMut() -> BoxFuture<'static, bool> + Send>;

/// Stream `path` (attempt number `attempt` of its directory) with `opts` as body chunks. Ends
/// at end of file, or, when following, once `running` says no (or a newer attempt's file
/// appears) and the file is drained; also on `shutdown` or when the receiver is dropped.
pub fn stream(
    path: PathBuf,
    attempt: u32,
    opts: LogOptions,
    running: RunningCheck,
    shutdown: CancellationToken,
) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        if let Err(e) = read_file(&path, attempt, &opts, running, &shutdown, &tx).await {
            tracing::debug!(path = %path.display(), error = %e, "log stream failed");
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

async fn read_file(
    path: &Path,
    attempt: u32,
    opts: &LogOptions,
    mut running: RunningCheck,
    shutdown: &CancellationToken,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let start = match opts.tail_lines {
        Some(n) => {
            let p = path.to_path_buf();
            tokio::task::spawn_blocking(move || tail_offset(&mut std::fs::File::open(p)?, n))
                .await
                .map_err(io::Error::other)??
        }
        None => 0,
    };
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(SeekFrom::Start(start)).await?;
    let mut writer = LogWriter::new(opts);
    let mut pending = Vec::new();
    let mut buf = vec![0u8; READ_BUF];
    let mut idle_polls = 0u32;
    let mut finishing = false;
    loop {
        let n = file.read(&mut buf).await?;
        if n > 0 {
            pending.extend_from_slice(&buf[..n]);
            let mut out = Vec::new();
            let more = writer.write_lines(&mut pending, &mut out);
            if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                return Ok(()); // client went away
            }
            if !more {
                return Ok(());
            }
            continue;
        }
        if !opts.follow || finishing {
            if !pending.is_empty() && !opts.follow {
                // A last line without its newline (a writer caught mid-line).
                pending.push(b'\n');
                let mut out = Vec::new();
                writer.write_lines(&mut pending, &mut out);
                if !out.is_empty() {
                    let _ = tx.send(Ok(Bytes::from(out))).await;
                }
            }
            return Ok(());
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tx.closed() => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        idle_polls += 1;
        let newer = path
            .parent()
            .and_then(|d| log_files(d).ok())
            .is_some_and(|files| files.iter().any(|(n, _)| *n > attempt));
        if newer || (idle_polls.is_multiple_of(RUNNING_CHECK_EVERY) && !running().await) {
            // Read whatever was written before the container stopped, then end.
            finishing = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn ts(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn parses_cri_records() {
        type Want = Result<(&'static str, Stream, bool, &'static str), ParseError>;
        let cases: Vec<(&str, Want)> = vec![
            (
                "2026-11-22T05:07:54.425596743Z stdout F started as pid 1\n",
                Ok((
                    "2026-11-22T05:07:54.425596743Z",
                    Stream::Stdout,
                    false,
                    "started as pid 1",
                )),
            ),
            (
                "2026-11-22T05:07:54.427115477Z stderr P half a li",
                Ok((
                    "2026-11-22T05:07:54.427115477Z",
                    Stream::Stderr,
                    true,
                    "half a li",
                )),
            ),
            (
                "2026-11-22T05:07:54Z stdout F ",
                Ok(("2026-11-22T05:07:54Z", Stream::Stdout, false, "")),
            ),
            (
                "2026-11-22T06:07:54.5+01:00 stdout F:x two  spaces ",
                Ok((
                    "2026-11-22T06:07:54.5+01:00",
                    Stream::Stdout,
                    false,
                    "two  spaces ",
                )),
            ),
            ("garbage", Err(ParseError::NoTimestamp)),
            (
                "yesterday stdout F x",
                Err(ParseError::BadTimestamp("yesterday".into())),
            ),
            ("2026-11-22T05:07:54Z stdout", Err(ParseError::NoStream)),
            (
                "2026-11-22T05:07:54Z stdin F x",
                Err(ParseError::BadStream("stdin".into())),
            ),
            ("2026-11-22T05:07:54Z stdout F", Err(ParseError::NoTag)),
        ];
        for (line, want) in cases {
            let got = parse_line(line.as_bytes())
                .map(|r| (r.timestamp, r.stream, r.partial, r.content.to_vec()));
            let want = want.map(|(t, s, p, c)| (ts(t), s, p, c.as_bytes().to_vec()));
            assert_eq!(got, want, "{line:?}");
        }
    }

    #[test]
    fn timestamps_print_like_go_rfc3339nano() {
        let cases = [
            (
                "2026-11-22T05:07:54.425596743Z",
                "2026-11-22T05:07:54.425596743Z",
            ),
            ("2026-11-22T05:07:54.420000000Z", "2026-11-22T05:07:54.42Z"),
            ("2026-11-22T05:07:54.000000000Z", "2026-11-22T05:07:54Z"),
            ("2026-11-22T05:07:54.5+01:00", "2026-11-22T05:07:54.5+01:00"),
            ("2026-11-22T05:07:54+00:00", "2026-11-22T05:07:54Z"),
        ];
        for (input, want) in cases {
            assert_eq!(format_rfc3339_nano(&ts(input)), want, "{input}");
        }
    }

    fn q(s: &str) -> Vec<(String, String)> {
        s.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn query_options_parse_and_validate() {
        let now = Utc::now();
        let ok: Vec<(&str, LogOptions)> = vec![
            ("", LogOptions::default()),
            (
                "follow=true&previous=1&timestamps=True&container=c",
                LogOptions {
                    follow: true,
                    previous: true,
                    timestamps: true,
                    ..Default::default()
                },
            ),
            ("follow=false&previous=no", LogOptions::default()),
            (
                "tailLines=0&limitBytes=10",
                LogOptions {
                    tail_lines: Some(0),
                    limit_bytes: Some(10),
                    ..Default::default()
                },
            ),
            (
                "sinceSeconds=60",
                LogOptions {
                    since: Some(now - chrono::Duration::seconds(60)),
                    ..Default::default()
                },
            ),
            (
                "sinceTime=2026-11-22T05:07:54Z",
                LogOptions {
                    since: Some(ts("2026-11-22T05:07:54Z").with_timezone(&Utc)),
                    ..Default::default()
                },
            ),
        ];
        for (query, want) in ok {
            assert_eq!(
                LogOptions::from_query(&q(query), now).unwrap(),
                want,
                "{query}"
            );
        }
        let bad = [
            ("tailLines=-1", "greater than or equal to 0"),
            ("tailLines=ten", "not an integer"),
            ("limitBytes=0", "must be greater than 0"),
            ("sinceSeconds=0", "must be greater than 0"),
            ("sinceTime=yesterday", "RFC3339"),
            (
                "sinceSeconds=5&sinceTime=2026-11-22T05:07:54Z",
                "at most one of `sinceTime` or `sinceSeconds`",
            ),
        ];
        for (query, want) in bad {
            let e = LogOptions::from_query(&q(query), now).unwrap_err();
            assert!(e.contains(want), "{query}: {e}");
        }
    }

    const LOG: &str = "\
2026-01-01T00:00:01Z stdout F one
2026-01-01T00:00:02Z stderr F two
2026-01-01T00:00:03.5Z stdout P thr
2026-01-01T00:00:04Z stdout P e
2026-01-01T00:00:05Z stdout F e!
not a cri line
2026-01-01T00:00:06Z stderr F four
";

    #[test]
    fn rendering_follows_upstream_writer() {
        let since = |s: &str| Some(ts(s).with_timezone(&Utc));
        let cases: Vec<(&str, LogOptions, &str)> = vec![
            ("plain", LogOptions::default(), "one\ntwo\nthree!\nfour\n"),
            (
                "timestamps only at line starts",
                LogOptions {
                    timestamps: true,
                    ..Default::default()
                },
                "2026-01-01T00:00:01Z one\n2026-01-01T00:00:02Z two\n\
                 2026-01-01T00:00:03.5Z three!\n2026-01-01T00:00:06Z four\n",
            ),
            (
                "since filters records, even fragments",
                LogOptions {
                    since: since("2026-01-01T00:00:04Z"),
                    ..Default::default()
                },
                "ee!\nfour\n",
            ),
            (
                "limitBytes cuts mid-line",
                LogOptions {
                    limit_bytes: Some(6),
                    ..Default::default()
                },
                "one\ntw",
            ),
            (
                "limitBytes counts the timestamp prefix",
                LogOptions {
                    limit_bytes: Some(25),
                    timestamps: true,
                    ..Default::default()
                },
                "2026-01-01T00:00:01Z one\n",
            ),
        ];
        for (name, opts, want) in cases {
            let got = render(LOG.as_bytes(), &opts);
            assert_eq!(String::from_utf8(got).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn tail_counts_joined_lines_from_the_end() {
        let cases: Vec<(u64, &str)> = vec![
            (0, ""),
            (1, "four\n"),
            (2, "three!\nfour\n"),
            (3, "two\nthree!\nfour\n"),
            (4, "one\ntwo\nthree!\nfour\n"),
            (100, "one\ntwo\nthree!\nfour\n"),
        ];
        for (n, want) in cases {
            let mut c = Cursor::new(LOG.as_bytes());
            let off = tail_offset(&mut c, n).unwrap() as usize;
            let got = render(&LOG.as_bytes()[off..], &LogOptions::default());
            assert_eq!(String::from_utf8(got).unwrap(), want, "tail {n}");
        }
        // An unfinished group of fragments at the end is a line of its own.
        let unfinished = "2026-01-01T00:00:01Z stdout F a\n2026-01-01T00:00:02Z stdout P b\n";
        let off = tail_offset(&mut Cursor::new(unfinished.as_bytes()), 1).unwrap() as usize;
        assert_eq!(&unfinished[off..], "2026-01-01T00:00:02Z stdout P b\n");
        assert_eq!(tail_offset(&mut Cursor::new(b""), 3).unwrap(), 0);
    }

    #[test]
    fn tail_reads_backwards_across_blocks() {
        let mut log = String::new();
        for i in 0..5000 {
            log.push_str(&format!(
                "2026-01-01T00:00:00Z stdout F line {i} {}\n",
                "x".repeat(50)
            ));
        }
        let off = tail_offset(&mut Cursor::new(log.as_bytes()), 2500).unwrap() as usize;
        let got =
            String::from_utf8(render(&log.as_bytes()[off..], &LogOptions::default())).unwrap();
        assert_eq!(got.lines().count(), 2500);
        assert!(got.starts_with("line 2500 "), "{}", &got[..20]);
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "c"}]},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn resolves_current_and_previous_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod(serde_json::json!({}));
        let e = resolve(dir.path(), &p, "c", true).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"previous terminated container "c" in pod "p" not found"#
        );
        let e = resolve(dir.path(), &p, "c", false).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"container "c" in pod "p" is waiting to start: ContainerCreating"#
        );
        let waiting = pod(serde_json::json!({"containerStatuses": [{
            "name": "c", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": "ErrImagePull"}}}]}));
        let e = resolve(dir.path(), &waiting, "c", false).unwrap_err();
        assert!(
            e.to_string().ends_with("waiting to start: ErrImagePull"),
            "{e}"
        );

        let cdir = container_log_dir(dir.path(), "ns", "p", "u1", "c");
        std::fs::create_dir_all(&cdir).unwrap();
        for f in ["0.log", "2.log", "10.log", "x.log", "1.log.tmp"] {
            std::fs::write(cdir.join(f), "").unwrap();
        }
        assert_eq!(resolve(dir.path(), &p, "c", false).unwrap().0, 10);
        assert_eq!(resolve(dir.path(), &p, "c", true).unwrap().0, 2);
    }

    fn write_log(path: &Path, lines: &[&str]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
    }

    async fn collect(mut rx: mpsc::Receiver<io::Result<Bytes>>) -> String {
        let mut s = Vec::new();
        while let Some(chunk) = rx.recv().await {
            s.extend_from_slice(&chunk.unwrap());
        }
        String::from_utf8(s).unwrap()
    }

    fn never_stops() -> RunningCheck {
        Box::new(|| Box::pin(async { true }))
    }

    #[tokio::test]
    async fn stream_reads_tail_without_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, LOG).unwrap();
        let opts = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        let rx = stream(path, 0, opts, never_stops(), CancellationToken::new());
        assert_eq!(collect(rx).await, "three!\nfour\n");
    }

    #[tokio::test]
    async fn follow_sees_new_lines_and_ends_when_the_container_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write_log(&path, &["2026-01-01T00:00:01Z stdout F first"]);
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let r = running.clone();
        let check: RunningCheck = Box::new(move || {
            let r = r.clone();
            Box::pin(async move { r.load(std::sync::atomic::Ordering::SeqCst) })
        });
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let mut rx = stream(path.clone(), 0, opts, check, CancellationToken::new());
        assert_eq!(&rx.recv().await.unwrap().unwrap()[..], b"first\n");
        write_log(&path, &["2026-01-01T00:00:02Z stderr F second"]);
        assert_eq!(&rx.recv().await.unwrap().unwrap()[..], b"second\n");
        // The container writes its last line and exits: the line is still delivered.
        write_log(&path, &["2026-01-01T00:00:03Z stdout F last words"]);
        running.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(collect(rx).await, "last words\n");
    }

    #[tokio::test]
    async fn follow_ends_when_a_newer_attempt_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write_log(&path, &["2026-01-01T00:00:01Z stdout F old"]);
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let mut rx = stream(
            path.clone(),
            0,
            opts,
            never_stops(),
            CancellationToken::new(),
        );
        assert_eq!(&rx.recv().await.unwrap().unwrap()[..], b"old\n");
        write_log(
            &dir.path().join("1.log"),
            &["2026-01-01T00:00:02Z stdout F new"],
        );
        let rest = tokio::time::timeout(Duration::from_secs(5), collect(rx))
            .await
            .expect("stream ends");
        assert_eq!(rest, "");
    }

    #[tokio::test]
    async fn follow_ends_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write_log(&path, &["2026-01-01T00:00:01Z stdout F x"]);
        let stop = CancellationToken::new();
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let mut rx = stream(path, 0, opts, never_stops(), stop.clone());
        assert!(rx.recv().await.is_some());
        stop.cancel();
        let end = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("stream ends");
        assert!(end.is_none());
    }
}
