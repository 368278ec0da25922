//! TEMPORARY STUB — replaced by the real statistics module.
use std::time::Duration;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass { S2xx, S3xx, S4xx, S5xx, Error }
impl StatusClass { pub fn from_status(s: u16) -> Self { match s { 100..=299 => Self::S2xx, 300..=399 => Self::S3xx, 400..=499 => Self::S4xx, 500..=599 => Self::S5xx, _ => Self::Error } } }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind { ConnectRefused, ConnectTimeout, ReadTimeout, WriteTimeout, Reset, Tls, Other }
pub fn now_ms() -> u64 { 0 }
#[derive(Debug)]
pub struct PoolStats { window: Duration }
impl PoolStats {
    pub fn new(window: Duration) -> Self { PoolStats { window } }
    pub fn record(&self, _now_ms: u64, _c: StatusClass, _l: Duration) {}
    pub fn record_failure(&self, _now_ms: u64, _k: FailureKind) {}
    pub fn window_len(&self) -> Duration { self.window }
}
